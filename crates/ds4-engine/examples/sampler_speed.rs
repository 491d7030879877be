//! What sampling one token costs on a 129,280-logit vocabulary: `Sampler::sample` against
//! the plain definition that sorts every candidate (`sampling::sample_full_sort`), measured
//! in the same run, with the same draws (the picks are compared). Two logit shapes: a
//! model's (most logits near 0, a few far above) and a flat one (the worst case of top-p).
//!
//!     cargo run --release -p ds4-engine --example sampler_speed

use std::time::Instant;

use ds4_engine::sampling::{Sampler, SamplingParams, sample_full_sort};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn main() {
    let n_vocab = 129_280u32;
    let mut s = 1u64;
    let mut uniform = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    // Sum of four uniforms: near-normal, sd ~2.5; one token in ~10k 14-20 above.
    let peaked: Vec<f32> = (0..n_vocab)
        .map(|i| {
            let g: f32 = (0..4).map(|_| uniform() - 0.5).sum();
            g * 4.25
                + if i % 9973 == 0 {
                    14.0 + (i % 7) as f32
                } else {
                    0.0
                }
        })
        .collect();
    let flat: Vec<f32> = (0..n_vocab)
        .map(|i| ((i.wrapping_mul(2654435761) >> 8) as f32 / 1e6).sin() * 8.0)
        .collect();
    let cases = [
        (0.7f32, 0usize, 0.95f32, 0.0f32),
        (1.0, 0, 1.0, 0.05),
        (0.6, 40, 0.95, 0.0),
        (1.0, 0, 1.0, 0.0),
    ];
    let n = 40;
    for (name, logits) in [("model-like", &peaked), ("flat", &flat)] {
        for (temperature, top_k, top_p, min_p) in cases {
            let p = SamplingParams {
                temperature,
                top_k,
                top_p,
                min_p,
                seed: 1,
            };
            let mut fast = Sampler::new(p);
            let t = Instant::now();
            let picks: Vec<Option<u32>> = (0..n).map(|_| fast.sample(logits, false)).collect();
            let fast_us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
            let mut rng = StdRng::seed_from_u64(p.seed);
            let t = Instant::now();
            let want: Vec<Option<u32>> = (0..n)
                .map(|_| sample_full_sort(p, &mut rng, logits))
                .collect();
            let full_us = t.elapsed().as_secs_f64() / n as f64 * 1e6;
            println!(
                "{name:>10} T {temperature} top-k {top_k} top-p {top_p} min-p {min_p}: {fast_us:.0} us a token, full sort {full_us:.0} us ({:.1}x), same picks: {}",
                full_us / fast_us,
                picks == want
            );
        }
    }
}

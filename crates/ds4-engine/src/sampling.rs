//! Token sampling from logits: greedy, temperature, top-k, top-p, min-p, with a
//! seeded generator so a seed reproduces a run exactly.
//!
//! Order of the filters follows llama.cpp/ds4: top-k, then softmax at the
//! temperature, then top-p over the sorted probabilities, then min-p relative
//! to the best token.

/// Sampling settings of one request. `temperature <= 0` means greedy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
}

impl SamplingParams {
    pub const GREEDY: SamplingParams = SamplingParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
    };

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// splitmix64: small, fast, and fully determined by its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Index of the largest logit; the lowest index wins ties, and NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Reusable sampler: keeps its candidate buffer between tokens so a 129k-entry
/// vocabulary does not allocate per step.
#[derive(Clone, Debug)]
pub struct Sampler {
    rng: Rng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(seed: u64) -> Sampler {
        Sampler {
            rng: Rng::new(seed),
            candidates: Vec::new(),
        }
    }

    pub fn sample(&mut self, logits: &[f32], p: &SamplingParams) -> u32 {
        if p.is_greedy() || logits.len() <= 1 {
            return argmax(logits);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as u32, v)),
        );
        if c.is_empty() {
            return argmax(logits);
        }
        // Sorting the whole vocabulary costs ~1 ms at 129k entries; a partial
        // selection first keeps the common top-k case cheap.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit);
        let max = c[0].1;
        let inv_t = 1.0 / p.temperature as f64;
        let mut probs: Vec<f64> = c
            .iter()
            .map(|&(_, v)| ((v - max) as f64 * inv_t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        for q in &mut probs {
            *q /= total;
        }
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        let mass: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * mass;
        for i in 0..keep {
            r -= probs[i];
            if r < 0.0 {
                return c[i].0;
            }
        }
        c[keep - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: usize, p: f32, m: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            min_p: m,
        }
    }

    #[test]
    fn greedy_is_argmax_with_lowest_index_on_ties() {
        let mut s = Sampler::new(1);
        assert_eq!(
            s.sample(&[0.0, 3.0, 3.0, f32::NAN], &SamplingParams::GREEDY),
            1
        );
        assert_eq!(s.sample(&[0.0, 1.0, 5.0], &params(1.0, 1, 1.0, 0.0)), 2);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        let p = params(0.8, 40, 0.95, 0.05);
        let a: Vec<u32> = {
            let mut s = Sampler::new(42);
            (0..200).map(|_| s.sample(&logits, &p)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(42);
            (0..200).map(|_| s.sample(&logits, &p)).collect()
        };
        let c: Vec<u32> = {
            let mut s = Sampler::new(43);
            (0..200).map(|_| s.sample(&logits, &p)).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn filters_restrict_the_support() {
        let logits = [10.0, 9.0, 8.0, 0.0, -5.0];
        let mut s = Sampler::new(7);
        for _ in 0..500 {
            assert!(s.sample(&logits, &params(1.0, 2, 1.0, 0.0)) < 2, "top-k 2");
            // p(0) ≈ 0.665, p(1) ≈ 0.245: top-p 0.8 keeps two.
            assert!(s.sample(&logits, &params(1.0, 0, 0.8, 0.0)) < 2, "top-p");
            // min-p 0.2 of p(0): keeps 0 and 1 (0.245/0.665 ≈ 0.37), drops 2 (0.09/0.665).
            assert!(s.sample(&logits, &params(1.0, 0, 1.0, 0.2)) < 2, "min-p");
        }
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let logits = [1.0f32, 0.0, -1.0];
        let mut s = Sampler::new(3);
        let mut n = [0usize; 3];
        let draws = 60_000;
        for _ in 0..draws {
            n[s.sample(&logits, &params(1.0, 0, 1.0, 0.0)) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        for i in 0..3 {
            let want = (logits[i] as f64).exp() / z;
            let got = n[i] as f64 / draws as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
    }
}

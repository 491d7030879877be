//! CUDA against the CPU reference on one model file (GGUF or official directory):
//! teacher-forced logits at every position of a pseudo-random prompt, through
//! prefill runs of several sizes and through decode (runs of 1).
//!
//!     cuda_check MODEL [--tokens N] [--runs 1,7,64,512] [--cpu-run 64] [--ctx N] [--no-qat-sim]
//!
//! `--ctx` allocates the GPU states for a longer context than the prompt (default: the
//! prompt), so that kernels sized for a long context are checked at short positions.
//!
//! Per run size it prints the worst relative error over positions
//! (max|gpu − cpu| / max|cpu| of the logit row), how many positions exceed 1e-3, and
//! every greedy (top-1) disagreement together with the CPU's top-2 margin; a
//! disagreement where that margin exceeds 1e-2 fails the check. Exit status 0 on pass.

use std::time::Instant;

use ds4_engine::backend::teacher_forced;
use ds4_engine::{Backend, ForwardOptions};

mod common;
use common::arg;

fn top2(v: &[f32]) -> (usize, f32) {
    let mut b = 0;
    for i in 1..v.len() {
        if v[i] > v[b] {
            b = i;
        }
    }
    let second = v
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != b)
        .fold(f32::NEG_INFINITY, |m, (_, &x)| m.max(x));
    (b, v[b] - second)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "cuda_check MODEL [--tokens N] [--runs 1,7,64] [--cpu-run N] [--ctx N] [--no-qat-sim]";
    let Some(path) = common::model_path(&args, usage) else {
        return;
    };
    let n_tok: usize = arg(&args, "--tokens", 1100);
    let runs: String = arg(&args, "--runs", "1,7,64,512".to_string());
    let cpu_run: usize = arg(&args, "--cpu-run", 64);
    let ctx_alloc: usize = arg(&args, "--ctx", n_tok + 1).max(n_tok + 1);
    let seed: u64 = arg(&args, "--seed", 7);
    let opts = ForwardOptions {
        no_qat_sim: args.iter().any(|a| a == "--no-qat-sim"),
    };
    let model = common::open_model(&path);
    let cfg = &model.cfg;
    println!(
        "model {path}: {} layers x {}, vocab {}, heads {}x{}, experts {}/{}, top-k {}",
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_vocab,
        cfg.n_head,
        cfg.head_dim,
        cfg.n_expert_used,
        cfg.n_expert,
        cfg.indexer_top_k
    );
    // A fixed pseudo-random prompt over the ordinary vocabulary.
    let mut s = seed;
    let toks: Vec<u32> = (0..n_tok)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % (cfg.n_vocab.min(128000) as u64)) as u32
        })
        .collect();
    let t0 = Instant::now();
    let cpu = model
        .teacher_forced_logits(&toks, cpu_run, opts)
        .expect("cpu forward");
    println!(
        "cpu: {n_tok} tokens teacher-forced in runs of {cpu_run}: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let runs: Vec<usize> = runs.split(',').filter_map(|r| r.parse().ok()).collect();
    let max_run = runs.iter().copied().max().unwrap_or(1).max(n_tok);
    let be = common::load_gpu(&model, ctx_alloc, max_run);
    println!(
        "gpu: {} ({}), kernels {}, weights uploaded in {:.1} s",
        be.name(),
        be.gpu.arch,
        if be.gpu.kernels_cached {
            "from cache"
        } else {
            "compiled"
        },
        be.upload_s
    );
    // Layer by layer: the GPU runs the whole prompt in one traced run; the CPU runs
    // each layer over all tokens from the GPU's own inputs to that layer (building its
    // own cache from them), so errors do not compound. A position whose output differs
    // by more than 1e-3 must be explained by a discrete decision that flipped there
    // (routed experts or indexer selection, from ulp-level input differences).
    let (layer_ok, single_run) = {
        use ds4_engine::ForwardState;
        use ds4_engine::layer::{LayerCtx, LayerTrace, layer_forward};
        let mut st = be.state(ctx_alloc, opts).expect("state");
        st.enable_trace();
        let logits = st.forward(&toks, ds4_engine::LogitsFor::All).expect("gpu");
        let tr = st.take_trace();
        let he = cfg.hc_width();
        let k = cfg.n_expert_used;
        let mut cache = model.new_cache_for(n_tok + 1);
        let mut all_ok = true;
        for l in 0..cfg.n_layer {
            let xs: Vec<Vec<f32>> = tr.hidden[2 * l].chunks(he).map(|c| c.to_vec()).collect();
            let want: Vec<&[f32]> = tr.hidden[2 * l + 2].chunks(he).collect();
            let mut lts = vec![LayerTrace::default(); n_tok];
            let ctx = LayerCtx {
                cfg,
                layer: l,
                rope: model.rope_for(l),
                opts,
            };
            let t0 = Instant::now();
            // In runs no longer than the window, so every raw row can be read back
            // from the cache before it slides out (results equal one long run).
            let hd = cfg.head_dim;
            let step = cfg.sliding_window.clamp(1, 256);
            let mut out = Vec::with_capacity(n_tok);
            let mut cpu_raw: Vec<Vec<f32>> = Vec::with_capacity(n_tok);
            for c0 in (0..n_tok).step_by(step) {
                let c1 = (c0 + step).min(n_tok);
                let part = layer_forward(
                    &ctx,
                    &model.weights.layers[l],
                    &mut cache.layers[l],
                    xs[c0..c1].to_vec(),
                    &toks[c0..c1],
                    c0,
                    &mut lts[c0..c1],
                )
                .expect("cpu layer");
                out.extend(part);
                let raw = &cache.layers[l].raw;
                cpu_raw.extend(raw.iter().skip(raw.len() - (c1 - c0)).cloned());
            }
            // Stored rows that came out different: an fp8/fp4/f16 rounding of the
            // simulations went the other way (a step, not an error).
            let row_flip = |a: &[f32], b: &[f32]| {
                let sc = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
                a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3 * sc)
            };
            let gpu_ring = &tr.raw[l];
            let ring_rows = gpu_ring.len() / hd;
            let raw_flip: Vec<bool> = (0..n_tok)
                .map(|p| {
                    row_flip(
                        &cpu_raw[p],
                        &gpu_ring[(p % ring_rows) * hd..(p % ring_rows + 1) * hd],
                    )
                })
                .collect();
            let cpu_comp = cache.layers[l].comp.as_flat();
            let comp_flip: Vec<bool> = cpu_comp
                .chunks(hd)
                .zip(tr.comp[l].chunks(hd))
                .map(|(a, b)| row_flip(a, b))
                .collect();
            let ratio = cfg.attn_kind(l).ratio();
            let row_explains = |i: usize| {
                let lo = (i + 1).saturating_sub(cfg.sliding_window);
                raw_flip[lo..=i].iter().any(|&f| f)
                    || (ratio > 0 && comp_flip.iter().take((i + 1) / ratio).any(|&f| f))
            };
            let n_raw_flips = raw_flip.iter().filter(|&&f| f).count();
            let n_comp_flips = comp_flip.iter().filter(|&&f| f).count();
            let cpu_s = t0.elapsed().as_secs_f64();
            // The reference's own sensitivity: the same layer from inputs moved by one or
            // two parts in 8·10^6, either way (activation quantization and the fp8/fp4
            // simulations turn ulp-level input differences into steps). The most steps
            // and the largest step over the three nudges: one nudge alone is a noisy
            // estimate (the same layer's count moved between 50 and 123 positions when
            // its inputs changed at the ulp level between two GPU builds).
            let (mut self_worst, mut self_over) = (0f32, 0usize);
            for nudge in [1.0 + 1.2e-7f32, 1.0 - 1.2e-7, 1.0 + 2.4e-7] {
                let xs_p: Vec<Vec<f32>> = tr.hidden[2 * l]
                    .chunks(he)
                    .map(|c| c.iter().map(|v| v * nudge).collect())
                    .collect();
                let mut cache_p = model.new_cache_for(n_tok + 1);
                let mut lts_p = vec![LayerTrace::default(); n_tok];
                let out_p = layer_forward(
                    &ctx,
                    &model.weights.layers[l],
                    &mut cache_p.layers[l],
                    xs_p,
                    &toks,
                    0,
                    &mut lts_p,
                )
                .expect("cpu layer");
                let mut n_over = 0usize;
                for i in 0..n_tok {
                    let scale = out[i].iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
                    let d = out[i]
                        .iter()
                        .zip(&out_p[i])
                        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
                        / scale;
                    self_worst = self_worst.max(d);
                    n_over += (d > 1e-3) as usize;
                }
                self_over = self_over.max(n_over);
            }
            let (mut worst, mut worst_pos, mut over, mut unexplained) = (0f32, 0, 0, 0);
            let (mut route_flips, mut sel_flips) = (0, 0);
            for i in 0..n_tok {
                let scale = out[i].iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
                let d = out[i]
                    .iter()
                    .zip(want[i])
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
                    / scale;
                let cpu_ids: Vec<i32> = lts[i].experts.iter().map(|&(e, _)| e as i32).collect();
                let rf = cpu_ids.as_slice() != &tr.experts[l][i * k..(i + 1) * k];
                let kvf = row_explains(i);
                let mut cpu_sel: Vec<i32> = lts[i]
                    .indexer_selected
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .map(|&x| x as i32)
                    .collect();
                cpu_sel.sort();
                let sf = tr.selected.get(l).is_some_and(|s| s[i] != cpu_sel);
                route_flips += rf as usize;
                sel_flips += sf as usize;
                if (d > worst || d.is_nan()) && !rf && !sf && !kvf {
                    worst = d;
                    worst_pos = i;
                }
                if d > 1e-3 || d.is_nan() {
                    over += 1;
                    if !rf && !sf && !kvf {
                        unexplained += 1;
                        if unexplained <= 3 {
                            println!(
                                "    layer {l} pos {i}: rel err {d:.3e} with no decision flip"
                            );
                        }
                    }
                }
            }
            // Exact where the reference is smooth (no unexplained step); where it is not,
            // no more steps than the reference takes from a one-ulp nudge (with slack
            // for sampling) and no larger ones.
            let pass = unexplained == 0
                || (unexplained <= 2 * self_over + 2 && worst <= 2.0 * self_worst.max(1e-3));
            all_ok &= pass;
            println!(
                "  layer {l} ({:?}): max unexplained rel err {worst:.3e} at pos {worst_pos}; positions > 1e-3: {over} \
                 (unexplained {unexplained}); routing flips {route_flips}, indexer selection flips {sel_flips}, \
                 stored rows rounded the other way: raw {n_raw_flips}, compressed {n_comp_flips}; \
                 cpu vs cpu(input x(1±1.2e-7, 1+2.4e-7)): max {self_worst:.3e}, positions > 1e-3: {self_over} [cpu {cpu_s:.1} s] {}",
                cfg.attn_kind(l),
                if pass { "ok" } else { "FAIL" }
            );
        }
        (all_ok, logits)
    };
    println!(
        "per-layer check: {}",
        if layer_ok { "PASS" } else { "FAIL" }
    );
    let ok = layer_ok;
    for &run in &runs {
        let mut st = be.new_state(ctx_alloc, opts).expect("state");
        let t0 = Instant::now();
        let gpu = teacher_forced(st.as_mut(), &toks, run).expect("gpu forward");
        let dt = t0.elapsed().as_secs_f64();
        let mut worst = (0.0f32, 0usize);
        let mut over = 0;
        let mut flips = Vec::new();
        let mut compared = 0;
        for (i, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
            let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
            let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
                if (x - y).is_nan() {
                    f32::INFINITY
                } else {
                    m.max((x - y).abs())
                }
            });
            let rel = diff / scale;
            if rel > worst.0 || rel.is_nan() {
                worst = (rel, i);
            }
            if rel > 1e-3 || rel.is_nan() {
                over += 1;
            }
            let (ca, margin) = top2(a);
            let (ga, _) = top2(b);
            if margin > 1e-2 {
                compared += 1;
            }
            if ca != ga {
                flips.push((i, ca, ga, margin));
            }
        }
        let hard_flips = flips.iter().filter(|f| f.3 > 1e-2).count();
        let same = gpu
            .iter()
            .zip(&single_run)
            .map(|(a, b)| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())))
            .fold(0f32, f32::max);
        println!("run {run:>4}: max |diff| against the GPU's single {n_tok}-token run: {same:.3e}");
        // End to end, discrete flips compound through later layers and positions on a
        // random-weight model; the per-layer check above is the correctness gate, these
        // numbers are reported without a verdict of their own.
        println!(
            "run {run:>4}: {:.1} tok/s, max rel err {:.3e} at pos {}, positions > 1e-3: {over}/{n_tok}, \
             greedy compared (margin > 1e-2): {compared}, flips: {} ({hard_flips} above margin) \
             (reported; the per-layer check is the gate)",
            n_tok as f64 / dt,
            worst.0,
            worst.1,
            flips.len(),
        );
        for (i, ca, ga, m) in flips.iter().take(10) {
            println!("    flip at pos {i}: cpu {ca} gpu {ga}, cpu top-2 margin {m:.3e}");
        }
    }
    println!("{}", if ok { "ALL PASS" } else { "SOME FAILED" });
    if !ok {
        std::process::exit(1);
    }
}

//! The GPU time of one captured decode step, replayed back to back (see
//! `CudaState::time_decode_graph`): a steady figure for same-call A/B runs of kernel and
//! graph changes, set by environment switches, without a generation loop's host work.
//!
//!     cuda_step MODEL [--ctx 4096] [--prefill 2048] [--reps 200] [--rounds 5]
//!               [--whatif "a,b;c;..."]
//!
//! Prints the host loop a generation makes around the step (forward and greedy pick per
//! token, a greedy step picked on the GPU as ds4-bench makes it, and the host's time to
//! queue one replay), the same steps split into their host
//! and GPU parts (`CudaState::decode_timed`), then each round's mean step time and the
//! median of the rounds, after the capture time and a step from an idle GPU. With
//! `--whatif`, then the step recaptured without each `;`-separated set of kernels (names
//! joined by `,`; see `DS4_CUDA_WHATIF_SKIP`): what each set costs on the critical path,
//! in one process (the results of those steps are wrong; only their time counts).

use ds4_engine::{ForwardOptions, ForwardState, LogitsFor};

mod common;
use common::arg;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "cuda_step MODEL [--ctx N] [--prefill N] [--reps N] [--rounds N] [--whatif SETS]";
    let Some(path) = common::model_path(&args, usage) else {
        return;
    };
    let ctx: usize = arg(&args, "--ctx", 4096);
    let prefill = arg(&args, "--prefill", 2048).clamp(1, ctx.saturating_sub(2).max(1));
    let reps = arg(&args, "--reps", 200).max(1);
    let rounds = arg(&args, "--rounds", 5).max(1);
    let model = common::open_model(&path);
    // Long prompts in batches of at most 8,192 (the scratch grows with the batch).
    let batch = prefill.min(ds4_cuda::AUTO_BATCHES[0]);
    let be = common::load_gpu(&model, ctx, batch);
    let n_vocab = model.cfg.n_vocab.min(128000) as u32;
    let toks: Vec<u32> = (0..prefill as u32 + 1)
        .map(|i| i.wrapping_mul(2654435761) % n_vocab)
        .collect();
    let mut st = be.state(ctx, ForwardOptions::default()).expect("state");
    for c in toks[..prefill].chunks(batch) {
        st.forward(c, LogitsFor::Last).expect("prefill");
    }
    let timed: Vec<(f64, f64)> = (0..rounds)
        .map(|_| st.time_decode_graph(toks[prefill], reps).expect("replay"))
        .collect();
    let idle_ms = st.time_decode_idle(toks[prefill], 20).expect("replay");
    let capture_ms = st.recapture_decode().expect("capture");
    let mut ms: Vec<f64> = timed.iter().map(|t| t.0).collect();
    let launch_ms = timed.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
    // The same steps through the API a generation loop uses (upload, replay, wait, logits
    // back) and a greedy pick on the host: what a token costs beyond the GPU's step.
    let (mut fwd_s, mut pick_s) = (0.0f64, 0.0f64);
    let mut tok = toks[prefill];
    let n_loop = reps.min(64);
    for _ in 0..n_loop {
        let t = std::time::Instant::now();
        let logits = st
            .forward(&[tok], LogitsFor::Last)
            .expect("decode")
            .remove(0);
        let t2 = std::time::Instant::now();
        fwd_s += (t2 - t).as_secs_f64();
        tok = ds4_engine::sampling::argmax(&logits).unwrap_or(0);
        pick_s += t2.elapsed().as_secs_f64();
    }
    // Greedy steps as ds4-bench makes them: the pick on the GPU, one id back.
    let t = std::time::Instant::now();
    for _ in 0..n_loop {
        tok = st.forward_greedy(tok, None).expect("decode").unwrap_or(0);
    }
    let greedy_s = t.elapsed().as_secs_f64();
    println!(
        "host loop of {n_loop}: forward {:.1} us a token, greedy pick {:.1} us; greedy steps (picked on the GPU) {:.1} us a token; queuing a replay {:.1} us",
        fwd_s / n_loop as f64 * 1e6,
        pick_s / n_loop as f64 * 1e6,
        greedy_s / n_loop as f64 * 1e6,
        launch_ms * 1e3
    );
    // The same again, split: where a token's time goes between the host and the GPU.
    let mut tm = ds4_cuda::StepTiming::default();
    for _ in 0..n_loop {
        let logits = st.decode_timed(tok, &mut tm).expect("decode");
        tok = ds4_engine::sampling::argmax(&logits).unwrap_or(0);
    }
    let per = |x: f64| x / tm.steps.max(1) as f64;
    println!(
        "a token's parts: upload {:.1}, launch {:.1}, wait {:.1} (GPU from idle {:.1}), copy {:.1} us",
        per(tm.upload_us),
        per(tm.launch_us),
        per(tm.wait_us),
        per(tm.gpu_us),
        per(tm.copy_us)
    );
    println!(
        "graph captured in {capture_ms:.1} ms; one step from an idle GPU (same token) {:.1} us",
        idle_ms * 1e3
    );
    let each: Vec<String> = ms.iter().map(|m| format!("{:.1}", m * 1e3)).collect();
    ms.sort_by(f64::total_cmp);
    let med = ms[ms.len() / 2];
    println!(
        "decode step at {prefill}: median {:.1} us ({:.2} tok/s); rounds of {reps}: {} us",
        med * 1e3,
        1e3 / med,
        each.join(" ")
    );
    let sets = args
        .iter()
        .position(|a| a == "--whatif")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    if sets.is_empty() {
        return;
    }
    // The loops above moved the position on: the sweep's own baseline, at its position.
    let mut timed_without = |names: &[&str]| {
        ds4_cuda::device::set_what_if_skip(names);
        st.recapture_decode().expect("capture");
        let mut w: Vec<f64> = (0..rounds)
            .map(|_| st.time_decode_graph(tok, reps).expect("replay").0)
            .collect();
        w.sort_by(f64::total_cmp);
        w[w.len() / 2]
    };
    let base = timed_without(&[]);
    println!("what if: the step at this position {:.1} us", base * 1e3);
    for set in sets.split(';').filter(|s| !s.is_empty()) {
        let names: Vec<&str> = set.split(',').filter(|s| !s.is_empty()).collect();
        let m = timed_without(&names);
        println!(
            "what if without {set}: {:.1} us ({:+.1} us, {:+.1}%)",
            m * 1e3,
            (m - base) * 1e3,
            (m / base - 1.0) * 100.0
        );
    }
}

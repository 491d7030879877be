//! The GPU time of one captured decode step, replayed back to back (see
//! `CudaState::time_decode_graph`): a steady figure for same-call A/B runs of kernel and
//! graph changes, set by environment switches, without a generation loop's host work.
//!
//!     cuda_step MODEL [--ctx 4096] [--prefill 2048] [--reps 200] [--rounds 5]
//!
//! Prints each round's mean step time, then the median of the rounds.

use std::path::Path;

use ds4_cuda::CudaBackend;
use ds4_engine::{ForwardOptions, ForwardState, LogitsFor, Model};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: cuda_step MODEL [--ctx N] [--prefill N] [--reps N] [--rounds N]");
        std::process::exit(2);
    };
    if let Err(e) = ds4_cuda::available() {
        println!("SKIP: {e}");
        return;
    }
    let ctx = arg(&args, "--ctx", 4096);
    let prefill = arg(&args, "--prefill", 2048).clamp(1, ctx.saturating_sub(2).max(1));
    let reps = arg(&args, "--reps", 200).max(1);
    let rounds = arg(&args, "--rounds", 5).max(1);
    let model = Model::open(Path::new(path)).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let be = CudaBackend::load(&model, 0, ctx, prefill, &mut |_, _| {}).unwrap_or_else(|e| {
        eprintln!("cuda: {e}");
        std::process::exit(1)
    });
    let n_vocab = model.cfg.n_vocab.min(128000) as u32;
    let toks: Vec<u32> = (0..prefill as u32 + 1)
        .map(|i| i.wrapping_mul(2654435761) % n_vocab)
        .collect();
    let mut st = be.state(ctx, ForwardOptions::default()).expect("state");
    st.forward(&toks[..prefill], LogitsFor::Last)
        .expect("prefill");
    let mut ms: Vec<f64> = (0..rounds)
        .map(|_| st.time_decode_graph(toks[prefill], reps).expect("replay"))
        .collect();
    let each: Vec<String> = ms.iter().map(|m| format!("{:.1}", m * 1e3)).collect();
    ms.sort_by(f64::total_cmp);
    let med = ms[ms.len() / 2];
    println!(
        "decode step at {prefill}: median {:.1} us ({:.2} tok/s); rounds of {reps}: {} us",
        med * 1e3,
        1e3 / med,
        each.join(" ")
    );
}

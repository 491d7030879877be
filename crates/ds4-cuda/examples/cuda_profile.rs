//! Where the GPU time goes: per-kernel times of one decode step and one prefill chunk,
//! decode speed with and without the captured graph, and the check that both decode
//! paths give bit-identical logits.
//!
//!     cuda_profile MODEL [--ctx 8192] [--prefill 4096] [--chunk 2048] [--gen 32] [--seq]
//!
//! `--seq` also lists the prefill chunk's launches in order (which product a launch of a
//! shared kernel is; a small file keeps the list short).
//!
//! The prompt is pseudo-random token ids (speed does not depend on the text). The byte
//! figures count the weights one decode step reads (dense matrices, the output head,
//! and k routed experts per layer), so GB/s is comparable with the copy bandwidth.

use std::time::Instant;

use ds4_engine::{ForwardOptions, ForwardState, LogitsFor};

mod common;
use common::arg;

fn report(title: &str, prof: &[ds4_cuda::device::KernelTime], scale: f64) {
    let total: f64 = prof.iter().map(|k| k.ms).sum();
    println!("{title}: {:.3} ms of kernel time", total * scale);
    println!(
        "  {:<16} {:>8} {:>10} {:>6}",
        "kernel", "launches", "ms", "share"
    );
    for k in prof {
        println!(
            "  {:<16} {:>8} {:>10.3} {:>5.1}%",
            k.name,
            (k.launches as f64 * scale).round(),
            k.ms * scale,
            100.0 * k.ms / total
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "cuda_profile MODEL [--ctx N] [--prefill N] [--chunk N] [--gen N] [--seq]";
    let seq = args.iter().any(|a| a == "--seq");
    let Some(path) = common::model_path(&args, usage) else {
        return;
    };
    let ctx: usize = arg(&args, "--ctx", 8192);
    let prefill = arg(&args, "--prefill", 4096)
        .min(ctx.saturating_sub(64))
        .max(1);
    let chunk = arg(&args, "--chunk", 2048).max(1);
    let gen_n = arg(&args, "--gen", 32).max(2);
    let model = common::open_model(&path);
    let cfg = model.cfg.clone();
    let mut be = common::load_gpu(&model, ctx, chunk);
    println!(
        "gpu {} ({}), weights uploaded in {:.1} s",
        be.gpu.name, be.gpu.arch, be.upload_s
    );
    // The ceiling: device-to-device copy, bytes read plus bytes written.
    let copy_gbs = {
        let n = 2usize << 30;
        let (a, b) = (
            be.gpu.alloc(n).expect("alloc"),
            be.gpu.alloc(n).expect("alloc"),
        );
        let copy = || unsafe {
            cudarc::driver::result::memcpy_dtod_async(b.ptr, a.ptr, n, be.gpu.stream.cu_stream())
                .expect("copy")
        };
        copy();
        be.gpu.sync().expect("sync");
        let t = Instant::now();
        let reps = 10;
        for _ in 0..reps {
            copy();
        }
        be.gpu.sync().expect("sync");
        let bw = (2 * n * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("copy bandwidth (read + write): {bw:.0} GB/s");
        bw
    };
    let mut s = 12345u64;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % (cfg.n_vocab.min(128000) as u64)) as u32
    };
    let toks: Vec<u32> = (0..prefill + gen_n.max(chunk)).map(|_| rnd()).collect();
    let opts = ForwardOptions::default();

    // Prefill, then decode the same continuation twice: replayed graph, plain launches.
    let mut st = be.state(ctx, opts).expect("state");
    let t0 = Instant::now();
    for c in toks[..prefill].chunks(chunk) {
        st.forward(c, LogitsFor::Last).expect("prefill");
    }
    let pre_s = t0.elapsed().as_secs_f64();
    println!(
        "prefill {prefill} tokens in chunks of {chunk}: {:.2} s = {:.1} tok/s",
        pre_s,
        prefill as f64 / pre_s
    );
    let snap = st.snapshot().expect("snapshot");
    let decode = |st: &mut ds4_cuda::CudaState, graph: bool| -> (f64, Vec<Vec<f32>>) {
        st.restore(&snap).expect("restore");
        st.set_graph(graph);
        // First step outside the timing (captures the graph).
        let mut out = vec![
            st.forward(&toks[prefill..prefill + 1], LogitsFor::Last)
                .expect("decode")
                .remove(0),
        ];
        let t = Instant::now();
        for i in 1..gen_n {
            out.push(
                st.forward(&toks[prefill + i..prefill + i + 1], LogitsFor::Last)
                    .expect("decode")
                    .remove(0),
            );
        }
        ((gen_n - 1) as f64 / t.elapsed().as_secs_f64(), out)
    };
    let (tps_graph, with_graph) = decode(&mut st, true);
    let (tps_plain, plain) = decode(&mut st, false);
    let same = with_graph == plain;
    println!(
        "decode at {prefill}..{}: graph {tps_graph:.2} tok/s, plain launches {tps_plain:.2} tok/s ({:.2}x); logits bit-identical: {same}",
        prefill + gen_n,
        tps_graph / tps_plain
    );
    // The same graph captured without programmatic dependent launch.
    let pdl = be.gpu.pdl();
    let mut same_pdl = true;
    if pdl {
        be.gpu.set_pdl(false);
        st.set_graph(false);
        let (tps_nopdl, nopdl) = decode(&mut st, true);
        be.gpu.set_pdl(true);
        st.set_graph(false);
        same_pdl = nopdl == with_graph;
        println!(
            "decode graph without programmatic dependent launch: {tps_nopdl:.2} tok/s (with: {tps_graph:.2}, {:.2}x); logits bit-identical: {same_pdl}",
            tps_graph / tps_nopdl
        );
    } else {
        println!("programmatic dependent launch: off (DS4_CUDA_PDL=0 or before Hopper)");
    }
    let bytes = ds4_cuda::decode_weight_bytes(&model);
    println!(
        "decode reads {:.2} GB of weights per token: {:.0} GB/s with the graph",
        bytes as f64 / 1e9,
        bytes as f64 * tps_graph / 1e9
    );

    // One layer's decode products alone, launched back to back (no profiler events).
    let layer = (0..cfg.n_layer)
        .find(|&l| cfg.attn_kind(l).ratio() == 4)
        .unwrap_or(0);
    let reps = 50;
    match be.time_decode_products(layer, reps) {
        Ok(times) => {
            println!(
                "decode products of layer {layer}, {reps} launches each (copy bandwidth {copy_gbs:.0} GB/s):"
            );
            println!(
                "  {:<14} {:<8} {:>6} {:>6} {:>9} {:>8} {:>7}",
                "product", "type", "rows", "cols", "MB", "us", "GB/s"
            );
            for t in times {
                println!(
                    "  {:<14} {:<8} {:>6} {:>6} {:>9.2} {:>8.2} {:>7.0}",
                    t.name,
                    format!("{:?}", t.ty),
                    t.rows,
                    t.cols,
                    t.bytes as f64 / 1e6,
                    t.us,
                    t.bytes as f64 / t.us / 1e3
                );
            }
        }
        Err(e) => println!("decode products: {e}"),
    }

    // One decode step and one prefill chunk with every launch timed.
    drop(st);
    be.gpu.set_profiling(true);
    let mut st = be.state(ctx, opts).expect("state");
    st.restore(&snap).expect("restore");
    let reps = 4;
    for i in 0..reps {
        st.forward(&toks[prefill + i..prefill + i + 1], LogitsFor::Last)
            .expect("decode");
    }
    let prof = be.gpu.take_profile().expect("profile");
    report(
        &format!("one decode step at {prefill} (mean of {reps})"),
        &prof,
        1.0 / reps as f64,
    );
    st.restore(&snap).expect("restore");
    let n = chunk.min(ctx - prefill - 1);
    st.set_graph(false);
    st.forward(&toks[prefill..prefill + n], LogitsFor::Last)
        .expect("chunk");
    let launches = be.gpu.take_launches().expect("profile");
    report(
        &format!("one prefill chunk of {n} at {prefill}"),
        &ds4_cuda::device::by_kernel(&launches),
        1.0,
    );
    if seq {
        println!("the chunk's launches in order:");
        for (i, (name, ms)) in launches.iter().enumerate() {
            println!("  {i:>5} {name:<24} {:>9.1} us", ms * 1e3);
        }
    }
    if !same || !same_pdl {
        std::process::exit(1);
    }
}

//! What one dependent step costs on this GPU, by the two ways a decode step can chain its
//! work: a launch per step (a captured graph of launches, with and without programmatic
//! dependent launch) or one persistent kernel whose blocks meet at a grid barrier per step.
//!
//!     cuda_sync [--steps 400] [--reps 20]
//!
//! Each step every block streams its share of a weight-like buffer (read before the
//! dependency, as the products' early loads are; 0, 8 or 32 KB a block over 32 rotating
//! slices, more than L2 holds) and then reads what another block wrote the step before.
//! Prints microseconds a step for each grid shape and way, and the bytes' rate. The
//! numbers decide what a persistent per-layer decode kernel could save (bench/CUDA-SPEED.md
//! v20).

use cudarc::driver::sys;
use ds4_cuda::device::Gpu;
use ds4_cuda::launch;

/// The value after `name` in `args`, else `default`.
fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = arg(&args, "--steps", 400).max(1);
    let reps: usize = arg(&args, "--reps", 20).max(1);
    if let Err(e) = ds4_cuda::available() {
        println!("SKIP: {e}");
        return;
    }
    let gpu = Gpu::open(0).unwrap_or_else(|e| {
        eprintln!("cuda: {e}");
        std::process::exit(1)
    });
    println!("gpu {} ({}), {} SMs", gpu.name, gpu.arch, gpu.sms);
    let threads = 256u32;
    let resident = gpu
        .resident_blocks("sync_persistent", threads, 0)
        .expect("occupancy");
    for per_sm in [1u32, 2, 4] {
        let blocks = gpu.sms * per_sm;
        if blocks > resident {
            println!("{blocks} blocks: more than the {resident} resident, skipped");
            continue;
        }
        for per_block in [0usize, 512, 2048] {
            let w_len = 32 * blocks as usize * per_block.max(1);
            let w = gpu.upload(&vec![0f32; 4 * w_len]).expect("alloc");
            let x = gpu
                .upload(&vec![0f32; 2 * blocks as usize + 1])
                .expect("alloc");
            let bar = gpu.upload(&[0u32; 2]).expect("alloc");
            let pb = per_block as i32;
            let mut line = format!(
                "{blocks:4} blocks of {threads}, {:2} KB a block a step:",
                per_block * 16 / 1024
            );
            for pdl in [false, true] {
                let us = chain_us(&gpu, pdl, blocks, threads, x.ptr, w.ptr, pb, steps, reps);
                line += &format!(" chain{} {us:6.2} us", if pdl { "+PDL" } else { "" });
            }
            let persistent_us = {
                let g = gpu.with_pdl(false);
                let run = || {
                    launch!(&g, "sync_persistent", (blocks, 1, 1), threads, 0;
                        x.ptr, w.ptr, pb, steps as i32, bar.ptr)
                    .expect("launch")
                };
                run();
                g.sync().expect("sync");
                let t0 = event(&g);
                for _ in 0..reps {
                    run();
                }
                let t1 = event(&g);
                let ms = t0.elapsed_ms(&t1).expect("timing") as f64;
                ms * 1e3 / (reps * steps) as f64
            };
            line += &format!(" persistent {persistent_us:6.2} us");
            if per_block > 0 {
                let bytes = (blocks as usize * per_block * 16) as f64;
                line += &format!(" ({:.0} GB/s)", bytes / persistent_us / 1e3);
            }
            println!("{line}");
        }
    }
}

fn event(g: &Gpu) -> cudarc::driver::CudaEvent {
    g.stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .expect("event")
}

/// Microseconds a step of `steps` launches of `sync_chain` captured in one graph,
/// replayed `reps` times back to back.
#[allow(clippy::too_many_arguments)]
fn chain_us(
    gpu: &Gpu,
    pdl: bool,
    blocks: u32,
    threads: u32,
    x: u64,
    w: u64,
    per_block: i32,
    steps: usize,
    reps: usize,
) -> f64 {
    let stream = gpu.ctx.new_stream().expect("stream");
    let g = gpu.on_stream(stream.clone());
    g.set_pdl(pdl);
    stream
        .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .expect("capture");
    for i in 0..steps {
        launch!(&g, "sync_chain", (blocks, 1, 1), threads, 0; x, w, per_block, i as i32)
            .expect("launch");
    }
    let graph = stream
        .end_capture(sys::CUgraphInstantiate_flags(0))
        .expect("graph")
        .expect("graph recorded nothing");
    graph.launch().expect("replay");
    g.sync().expect("sync");
    let t0 = event(&g);
    for _ in 0..reps {
        graph.launch().expect("replay");
    }
    let t1 = event(&g);
    let ms = t0.elapsed_ms(&t1).expect("timing") as f64;
    ms * 1e3 / (reps * steps) as f64
}

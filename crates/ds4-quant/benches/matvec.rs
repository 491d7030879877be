//! Matrix × vector throughput per weight format, against the machine's read
//! bandwidth measured in the same run.
//!
//! For each format a weight matrix of ≥ 256 MiB (4096 columns, the model's
//! hidden size) is streamed once per iteration: scalar and SIMD kernels on one
//! core, and the SIMD kernel on all cores (rayon). The baseline is a sum over a
//! 256 MiB buffer on one core and on all cores. At the end a table prints GB/s
//! of weight bytes, the ratio to the bandwidth of the same thread count, and
//! the scalar → SIMD speedup. Run: `cargo bench -p ds4-quant --bench matvec`.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ds4_quant::{DotKernel, GgmlType, KernelPath, quantize, selected_path};
use rayon::prelude::*;

const COLS: usize = 4096;
const TARGET_BYTES: usize = 256 << 20;

/// Best seconds per iteration, recorded from criterion's own timings.
static RESULTS: Mutex<Vec<(String, usize, f64)>> = Mutex::new(Vec::new());

fn record(name: &str, bytes: usize, per_iter: f64) {
    let mut r = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    match r.iter_mut().find(|(n, _, _)| n == name) {
        Some(e) => e.2 = e.2.min(per_iter),
        None => r.push((name.to_string(), bytes, per_iter)),
    }
}

fn timed<F: FnMut()>(name: &str, bytes: usize, iters: u64, mut f: F) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let d = t.elapsed();
    record(name, bytes, d.as_secs_f64() / iters as f64);
    d
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random blocks with every code pattern and moderate f16 scales (f16 fields
/// forced to |x| ∈ [2^-4, 2^-3)); float formats get small random values.
fn weights(ty: GgmlType, rows: usize) -> Vec<u8> {
    let rb = COLS / ty.block_size() * ty.type_size();
    let mut s = 0x5EED ^ ty.id() as u64;
    let mut w: Vec<u8> = Vec::with_capacity(rows * rb + 8);
    while w.len() < rows * rb {
        w.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    w.truncate(rows * rb);
    let f16_offs: &[usize] = match ty {
        GgmlType::Q8_0 | GgmlType::Iq2Xxs => &[0],
        GgmlType::Q4K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        _ => &[],
    };
    match ty {
        GgmlType::F32 => {
            for c in w.chunks_exact_mut(4) {
                let v = (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 9) as f32
                    / (1 << 23) as f32
                    - 0.5;
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 | GgmlType::Bf16 => {
            for c in w.chunks_exact_mut(2) {
                let h = u16::from_le_bytes([c[0], c[1]]);
                let h = if ty == GgmlType::F16 {
                    (h & 0x83ff) | 0x3400
                } else {
                    (h & 0x807f) | 0x3e80
                };
                c.copy_from_slice(&h.to_le_bytes());
            }
        }
        _ => {
            for blk in w.chunks_exact_mut(ty.type_size()) {
                for &o in f16_offs {
                    let h = (u16::from_le_bytes([blk[o], blk[o + 1]]) & 0x83ff) | 0x2c00;
                    blk[o..o + 2].copy_from_slice(&h.to_le_bytes());
                }
            }
        }
    }
    w
}

fn sum_u64(b: &[u64]) -> u64 {
    // Sixteen independent lanes: the compiler turns this into vector adds, so
    // the loop is limited by memory, not by add latency.
    let mut a = [0u64; 16];
    for c in b.chunks_exact(16) {
        for i in 0..16 {
            a[i] = a[i].wrapping_add(c[i]);
        }
    }
    a.iter().fold(0, |x, y| x.wrapping_add(*y))
}

fn bandwidth(c: &mut Criterion) {
    let buf: Vec<u64> = (0..TARGET_BYTES / 8).map(|i| i as u64).collect();
    let bytes = TARGET_BYTES;
    let mut g = c.benchmark_group("read_bandwidth");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("1core", |b| {
        b.iter_custom(|n| {
            timed("bw 1core", bytes, n, || {
                black_box(sum_u64(black_box(&buf)));
            })
        })
    });
    g.bench_function("allcores", |b| {
        b.iter_custom(|n| {
            timed("bw allcores", bytes, n, || {
                let s: u64 = buf
                    .par_chunks(1 << 16)
                    .map(sum_u64)
                    .reduce(|| 0, |x, y| x.wrapping_add(y));
                black_box(s);
            })
        })
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    let simd = selected_path();
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Iq2Xxs,
        GgmlType::F16,
        GgmlType::F32,
        GgmlType::Bf16,
    ];
    let x: Vec<f32> = {
        let mut s = 7u64;
        (0..COLS)
            .map(|_| (splitmix(&mut s) >> 40) as f32 / (1 << 24) as f32 - 0.5)
            .collect()
    };
    for ty in types {
        let rb = COLS / ty.block_size() * ty.type_size();
        let rows = TARGET_BYTES.div_ceil(rb);
        let w = weights(ty, rows);
        let bytes = w.len();
        let mut g = c.benchmark_group(format!("matvec_{}", ty.name()));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        g.throughput(Throughput::Bytes(bytes as u64));
        let mut y = vec![0.0f32; rows];
        let mut paths = vec![KernelPath::Scalar];
        if simd != KernelPath::Scalar {
            paths.push(simd);
        }
        // Q2_K is the one format with its own AVX-512 kernel: time AVX2 too.
        if simd == KernelPath::Avx512 && ty == GgmlType::Q2K {
            paths.insert(1, KernelPath::Avx2);
        }
        for &p in &paths {
            let k = DotKernel::with_path(ty, p).expect("kernel");
            let act = k.quantize_activations(&x).expect("activations");
            let name = format!("{} {} 1core", ty.name(), p);
            g.bench_function(format!("{p}_1core"), |b| {
                b.iter_custom(|n| {
                    timed(&name, bytes, n, || {
                        k.matvec_rows(&w, COLS, &act, 0..rows, &mut y)
                            .expect("matvec");
                        black_box(&y);
                    })
                })
            });
        }
        let k = DotKernel::with_path(ty, simd).expect("kernel");
        let act = k.quantize_activations(&x).expect("activations");
        let name = format!("{} {} allcores", ty.name(), simd);
        g.bench_function(format!("{simd}_allcores"), |b| {
            b.iter_custom(|n| {
                timed(&name, bytes, n, || {
                    k.matvec(&w, rows, COLS, &act, &mut y).expect("matvec");
                    black_box(&y);
                })
            })
        });
        g.finish();
        // Keep the quantizer linked in so the bench exercises the public API
        // end to end on a small matrix too.
        black_box(quantize(ty, &x, COLS, None).ok());
    }
}

fn summary(_: &mut Criterion) {
    let r = RESULTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let gbs = |name: &str| {
        r.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, b, t)| *b as f64 / t / 1e9)
    };
    let bw1 = gbs("bw 1core").unwrap_or(f64::NAN);
    let bwn = gbs("bw allcores").unwrap_or(f64::NAN);
    let simd = selected_path();
    println!(
        "\n== matvec summary: {} rayon threads, SIMD path {simd}; weight bytes per pass ≥ {} MiB ==",
        rayon::current_num_threads(),
        TARGET_BYTES >> 20
    );
    println!("read bandwidth (sum over 256 MiB): 1 core {bw1:.2} GB/s, all cores {bwn:.2} GB/s");
    println!(
        "{:8} | {:>12} | {:>12} | {:>7} | {:>13} | {:>7} | {:>8}",
        "format", "scalar 1c", "simd 1c", "%bw 1c", "simd all", "%bw all", "speedup"
    );
    if let (Some(a2), Some(a5)) = (gbs("Q2_K avx2 1core"), gbs("Q2_K avx512 1core")) {
        println!(
            "Q2_K one core: avx2 {a2:.2} GB/s, avx512 {a5:.2} GB/s ({:.2}x)",
            a5 / a2
        );
    }
    for ty in ["Q8_0", "Q2_K", "Q4_K", "IQ2_XXS", "F16", "F32", "BF16"] {
        let s1 = gbs(&format!("{ty} scalar 1core")).unwrap_or(f64::NAN);
        let v1 = gbs(&format!("{ty} {simd} 1core")).unwrap_or(s1);
        let va = gbs(&format!("{ty} {simd} allcores")).unwrap_or(f64::NAN);
        println!(
            "{ty:8} | {s1:>7.2} GB/s | {v1:>7.2} GB/s | {:>6.0}% | {va:>8.2} GB/s | {:>6.0}% | {:>7.2}x",
            100.0 * v1 / bw1,
            100.0 * va / bwn,
            v1 / s1
        );
    }
}

criterion_group!(benches, bandwidth, kernels, summary);
criterion_main!(benches);

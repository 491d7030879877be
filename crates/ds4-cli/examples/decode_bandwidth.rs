//! CPU decode speed on a full-width synthetic model against the machine's
//! memory bandwidth, measured in the same run.
//!
//!     cargo run --release -p ds4-cli --example decode_bandwidth -- DIR [LAYERS...]
//!
//! For each layer count (default 2 and 4) it writes a full-width q2 file in the
//! published layout (`ds4-quantize --synthetic` with fewer layers) into DIR,
//! decodes 16 tokens after a 32-token prompt, and prints the time per step
//! next to the time it would take to stream the bytes a step reads (all dense
//! weights, the 6 routed experts of each layer, the LM head) at the measured
//! read bandwidth. The difference between two layer counts gives the cost of
//! one layer without the head.

use std::path::PathBuf;
use std::time::Instant;

use ds4_cli::layout::{Recipe, Role, Shape, tensors};
use ds4_cli::synthetic::{SyntheticOptions, write_atomic};
use ds4_cli::tokenizer_meta::TokenizerMeta;
use ds4_engine::{ForwardOptions, Model, Session, sampling::argmax};
use rayon::prelude::*;

/// Read bandwidth: all threads summing a buffer far larger than the caches.
fn read_bandwidth() -> f64 {
    let n = 1usize << 28; // 2 GiB of u64
    let buf: Vec<u64> = (0..n as u64)
        .into_par_iter()
        .map(|i| i.wrapping_mul(0x9e37))
        .collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((n * 8) as f64 / secs);
    }
    best
}

/// Weight bytes one decode step touches: everything but the unselected experts.
fn step_bytes(shape: &Shape) -> (u64, u64) {
    let mut head = 0u64;
    let mut layers = 0u64;
    for t in tensors(shape, Recipe::Q2).unwrap() {
        let b = t.ty.bytes_for(t.n_elements()).unwrap();
        let b = match t.role {
            Role::ExpertGateUp | Role::ExpertDown => {
                b / u64::from(shape.n_expert) * u64::from(shape.n_expert_used)
            }
            // One embedding row and one tid2eid row per token.
            _ if t.name == "token_embd.weight" || t.name.ends_with("tid2eid.weight") => 0,
            _ => b,
        };
        if t.name.starts_with("blk.") {
            layers += b;
        } else {
            head += b;
        }
    }
    (head, layers)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| std::env::temp_dir().display().to_string()),
    );
    let counts: Vec<u32> = {
        let v: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
        if v.is_empty() { vec![2, 4] } else { v }
    };
    let bw = read_bandwidth();
    println!(
        "threads {}, measured read bandwidth {:.1} GB/s",
        rayon::current_num_threads(),
        bw / 1e9
    );
    let tok = TokenizerMeta::bundled()?;
    let mut rows = Vec::new();
    for &n_layer in &counts {
        let shape = Shape {
            n_layer,
            n_hash_layer: n_layer.min(3),
            ..Shape::default()
        };
        let path = dir.join(format!("synthetic-q2-{n_layer}l.gguf"));
        if !path.exists() {
            let r = write_atomic(&SyntheticOptions {
                shape: shape.clone(),
                recipe: Recipe::Q2,
                seed: 1,
                out: &path,
                tokenizer: &tok,
                progress: false,
            })?;
            println!(
                "wrote {} ({:.2} GB) in {:.1} s",
                path.display(),
                r.bytes as f64 / 1e9,
                r.seconds
            );
        }
        let model = Model::from_gguf(&path)?;
        let mut s = Session::new(&model, 4096, ForwardOptions::default());
        let prompt: Vec<u32> = (0..32).map(|i| 1000 + i * 101).collect();
        s.sync(&prompt)?;
        let mut next = argmax(s.logits()?).unwrap_or(0);
        // Warm the page cache and the experts the first steps pick.
        for _ in 0..4 {
            next = argmax(s.decode(next)?).unwrap_or(0);
        }
        let steps = 16;
        let t = Instant::now();
        for _ in 0..steps {
            next = argmax(s.decode(next)?).unwrap_or(0);
        }
        let per_step = t.elapsed().as_secs_f64() / steps as f64;
        let (head, layer_bytes) = step_bytes(&shape);
        let ideal = (head + layer_bytes) as f64 / bw;
        println!(
            "{n_layer} layers: {:.1} ms/step ({:.2} tok/s), reads {:.2} GB/step, ideal {:.1} ms at {:.1} GB/s: ratio {:.2}x",
            per_step * 1e3,
            1.0 / per_step,
            (head + layer_bytes) as f64 / 1e9,
            ideal * 1e3,
            bw / 1e9,
            per_step / ideal
        );
        rows.push((n_layer, per_step, layer_bytes));
    }
    if rows.len() >= 2 {
        let (l0, t0, b0) = rows[0];
        let (l1, t1, b1) = rows[rows.len() - 1];
        let dl = f64::from(l1 - l0);
        let per_layer = (t1 - t0) / dl;
        let layer_bytes = (b1 - b0) as f64 / dl;
        println!(
            "per layer: {:.2} ms, reads {:.3} GB, ideal {:.2} ms: ratio {:.2}x",
            per_layer * 1e3,
            layer_bytes / 1e9,
            layer_bytes / bw * 1e3,
            per_layer / (layer_bytes / bw)
        );
    }
    Ok(())
}

//! Decode and prefill speed of the CPU engine on a synthetic model with ds4's q2
//! recipe (IQ2_XXS gate/up + Q2_K down experts, Q8_0 attention/shared/head, F16
//! HC/router/compressors/indexer), loaded from a GGUF through the mmap.
//!
//!     cargo run --release -p ds4-engine --example engine_speed [n_embd] [n_layer]
//!
//! Prints tokens/s and the weight bytes one decode step reads, as an effective
//! bandwidth to compare with the machine's memory bandwidth.

use std::time::Instant;

use ds4_engine::{ForwardOptions, GgufSource, Model, ModelConfig, SyntheticSource, build_gguf};
use ds4_gguf::{GgmlType, GgufFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_embd = args.first().copied().unwrap_or(1024);
    let n_layer = args.get(1).copied().unwrap_or(4);
    let mut cfg = ModelConfig::flash();
    cfg.n_layer = n_layer;
    cfg.compress_ratios.truncate(n_layer);
    cfg.swiglu_clamp.truncate(n_layer);
    cfg.n_hash_layer = cfg.n_hash_layer.min(n_layer);
    cfg.n_embd = n_embd;
    cfg.n_vocab = 16384;
    cfg.n_head = 16;
    cfg.q_lora = 512;
    cfg.o_lora = 512;
    cfg.o_groups = 4;
    cfg.n_expert = 16;
    cfg.expert_ff = 512;
    cfg.validate()?;
    let recipe = |name: &str| {
        if name.contains("ffn_gate_exps") || name.contains("ffn_up_exps") {
            GgmlType::Iq2Xxs
        } else if name.contains("ffn_down_exps") {
            GgmlType::Q2K
        } else if ["token_embd", "hc_", "ffn_gate_inp", "compressor", "indexer"]
            .iter()
            .any(|p| name.contains(p))
        {
            GgmlType::F16
        } else {
            GgmlType::Q8_0
        }
    };
    let t = Instant::now();
    let bytes = build_gguf(&cfg, &SyntheticSource::new(cfg.clone(), 7), &recipe)?.to_bytes()?;
    let dir = std::env::temp_dir().join(format!("ds4-engine-speed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("synthetic-q2.gguf");
    std::fs::write(&path, &bytes)?;
    eprintln!(
        "built {:.1} MB GGUF in {:.1}s",
        bytes.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let (cfg, src) = GgufSource::from_file(GgufFile::open(&path)?)?;
    let model = Model::new(cfg.clone(), &src)?;

    // Bytes a decode step reads: everything but the unused experts and the
    // embedding table (one row).
    let w = &model.weights;
    let per_expert: usize = {
        let l = &w.layers[0];
        [&l.gate_exps[0], &l.up_exps[0], &l.down_exps[0]]
            .iter()
            .map(|m| m.rows * m.cols * m.ty().type_size() / m.ty().block_size())
            .sum()
    };
    let unused = cfg.n_layer * (cfg.n_expert - cfg.n_expert_used) * per_expert;
    let embd = w.token_embd.rows * w.token_embd.cols * 2;
    let step_bytes = bytes.len() - unused - embd;

    let opts = ForwardOptions::default();
    let toks: Vec<u32> = (0..512u32)
        .map(|i| (i * 7919) % cfg.n_vocab as u32)
        .collect();
    let mut prefill = Vec::new();
    let mut cache = model.new_cache();
    for chunk in [1, 16, 256] {
        cache = model.new_cache();
        let t = Instant::now();
        model.prefill(&mut cache, &toks, chunk, opts)?;
        prefill.push((chunk, toks.len() as f64 / t.elapsed().as_secs_f64()));
    }
    let n_dec = 32;
    let t = Instant::now();
    for i in 0..n_dec {
        model.forward_token(&mut cache, (i * 31) % cfg.n_vocab as u32, opts)?;
    }
    let dt = t.elapsed().as_secs_f64() / n_dec as f64;
    println!(
        "n_embd {n_embd}, {n_layer} layers, {} threads: prefill tok/s by chunk {prefill:.1?}; \
         decode {:.1} tok/s at ctx 512, {:.1} MB weights/step = {:.2} GB/s effective",
        rayon::current_num_threads(),
        1.0 / dt,
        step_bytes as f64 / 1e6,
        step_bytes as f64 / dt / 1e9
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

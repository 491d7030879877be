//! The GGUF path: the tiny official checkpoint written as a ds4 GGUF (ds4 tensor
//! names, `deepseek4.*` metadata, 3-D expert tensors), read back through the mmap
//! reader, and run against the transformers logits.

use std::path::PathBuf;

use ds4_engine::{ForwardOptions, GgufSource, Model, OfficialCheckpoint, build_gguf};
use ds4_gguf::{GgmlType, GgufFile};
use safetensors::SafeTensors;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4")
}

fn golden() -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(data_dir().join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let ids = ids
        .data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let lg = st.tensor("logits").unwrap();
    let lg = lg
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (ids, lg)
}

/// Max relative error over positions and argmax agreement against HF.
fn run(model: &Model, ids: &[u32], logits: &[f32]) -> (f32, usize) {
    let v = model.cfg.n_vocab;
    let mut cache = model.new_cache();
    let (mut worst, mut agree) = (0.0f32, 0);
    let opts = ForwardOptions { no_qat_sim: true };
    for (t, &tok) in ids.iter().enumerate() {
        let out = model.forward_token(&mut cache, tok, opts).unwrap();
        let want = &logits[t * v..(t + 1) * v];
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = out
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(d / scale);
        let am = |x: &[f32]| (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b });
        agree += (am(&out) == am(want)) as usize;
    }
    (worst, agree)
}

/// The tiny checkpoint written as a GGUF file by `build_gguf`, then opened
/// through the mmap like any model file. (The user-facing converter,
/// `ds4-quantize --from-official`, has its own end-to-end test against
/// transformers in ds4-cli's tests/ladder_hf.rs.)
fn gguf_model(recipe: &dyn Fn(&str) -> GgmlType) -> Model {
    let (cfg, ckpt) = OfficialCheckpoint::open(&data_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    build_gguf(&cfg, &ckpt, recipe)
        .unwrap()
        .write_file(&path)
        .unwrap();
    let (cfg2, src) = GgufSource::from_file(GgufFile::open(&path).unwrap()).unwrap();
    assert_eq!(cfg2, cfg, "metadata round trip");
    Model::new(cfg2, &src).unwrap()
}

#[test]
fn f32_gguf_matches_transformers() {
    let (ids, logits) = golden();
    let model = gguf_model(&|_| GgmlType::F32);
    let (worst, agree) = run(&model, &ids, &logits);
    eprintln!(
        "F32 GGUF: max rel err {worst:.3e}, argmax {agree}/{}",
        ids.len()
    );
    assert!(worst < 1e-4);
    assert_eq!(agree, ids.len());
}

#[test]
fn q8_0_head_gguf_has_q8_0_sized_error() {
    // Quantizing only the LM head keeps every discrete decision (indexer top-k,
    // routing) intact, so the error is pure Q8_0 weight + activation rounding:
    // about 1% of the logit range, far above the f32 noise, far below a bug.
    let (ids, logits) = golden();
    let ids = &ids[..320];
    let model = gguf_model(&|n| {
        if n == "output.weight" {
            GgmlType::Q8_0
        } else {
            GgmlType::F32
        }
    });
    assert_eq!(model.weights.output.ty(), GgmlType::Q8_0);
    let (worst, agree) = run(&model, ids, &logits);
    eprintln!(
        "Q8_0 LM head: max rel err {worst:.3e}, argmax {agree}/{}",
        ids.len()
    );
    assert!((1e-4..3e-2).contains(&worst), "{worst}");
    assert!(agree * 100 >= ids.len() * 97);
}

#[test]
fn ds4_recipe_gguf_runs_every_block_type() {
    // ds4's types where the tiny shapes allow: Q8_0 attention/shared/experts/output,
    // F16 embedding, HC, router, compressors and indexer (K-quant experts need rows
    // of 256; the tiny model has 64). The tiny random model is chaotic: its top-k
    // decisions have margins down to 2e-5, so any weight rounding flips some of
    // them (all-F16 weights already move logits by 0.3 of their range). This test
    // checks the quantized path end to end, not closeness.
    let (ids, logits) = golden();
    let ids = &ids[..320];
    let recipe = |name: &str| {
        let f16 = ["token_embd", "hc_", "ffn_gate_inp", "compressor", "indexer"];
        if f16.iter().any(|p| name.contains(p)) {
            GgmlType::F16
        } else {
            GgmlType::Q8_0
        }
    };
    let model = gguf_model(&recipe);
    let l2 = &model.weights.layers[2];
    assert_eq!(l2.q_a.ty(), GgmlType::Q8_0);
    assert_eq!(l2.gate_exps[0].ty(), GgmlType::Q8_0);
    assert_eq!(l2.router.ty(), GgmlType::F16);
    assert_eq!(model.weights.token_embd.ty(), GgmlType::F16);
    let (worst, agree) = run(&model, ids, &logits);
    eprintln!(
        "ds4-style recipe GGUF: max rel err {worst:.3e}, argmax {agree}/{}",
        ids.len()
    );
    assert!(worst.is_finite() && worst > 1e-3);
    assert!(
        agree * 10 >= ids.len() * 8,
        "argmax agreement {agree}/{}",
        ids.len()
    );
}

#[test]
fn quantized_prefill_equals_decode() {
    // The batched products of a quantized model use the same row kernels as decode.
    let (ids, _) = golden();
    let ids = &ids[..120];
    let model = gguf_model(&|n| {
        if n.contains("hc_") {
            GgmlType::F16
        } else {
            GgmlType::Q8_0
        }
    });
    let opts = ForwardOptions::default();
    let mut dec = model.new_cache();
    let mut last = Vec::new();
    for &t in ids {
        last = model.forward_token(&mut dec, t, opts).unwrap();
    }
    let mut c = model.new_cache();
    assert_eq!(model.prefill(&mut c, ids, 17, opts).unwrap(), last);
    assert!(c == dec);
}

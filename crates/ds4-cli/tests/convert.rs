//! `ds4-quantize --from-official`: decoding of the official micro-float formats
//! against PyTorch, end-to-end conversion of official-format checkpoints, and the
//! error lines bad input gets. Fixtures: tools/gen_convert_fixtures.py.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ds4_cli::layout::{Recipe, tensors};
use ds4_engine::names::{gguf_expert_to_official, gguf_to_official};
use ds4_gguf::{GgmlType, GgufFile};
use ds4_quant::microfloat as fp;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert")
}

fn quantize_bin(dir: &Path, recipe: &str, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ds4-quantize"))
        .arg("--from-official")
        .arg(dir)
        .args(["--recipe", recipe, "--quiet", "--overwrite", "-o"])
        .arg(out)
        .output()
        .expect("running ds4-quantize")
}

fn convert(dir: &Path, recipe: &str, out: &Path) -> GgufFile {
    let o = quantize_bin(dir, recipe, out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "ds4-quantize failed:\n{stderr}");
    GgufFile::open(out).unwrap()
}

/// Every tensor of every `*.safetensors` in `dir`, widened: floats to f32,
/// integers to i64 (both by value, so exact for F32/BF16/F16/I32/I64).
enum Vals {
    F(Vec<f32>),
    I(Vec<i64>),
}

fn widen(v: &TensorView<'_>) -> Vals {
    let d = v.data();
    match v.dtype() {
        Dtype::F32 => Vals::F(
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::BF16 => Vals::F(
            d.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::I64 => Vals::I(
            d.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I32 => Vals::I(
            d.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
        ),
        other => panic!("test reader: unexpected dtype {other}"),
    }
}

fn load_all(files: &[PathBuf]) -> HashMap<String, (Vec<usize>, Vals)> {
    let mut out = HashMap::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, v) in st.tensors() {
            if matches!(
                v.dtype(),
                Dtype::F32 | Dtype::BF16 | Dtype::I64 | Dtype::I32
            ) {
                out.insert(name, (v.shape().to_vec(), widen(&v)));
            }
        }
    }
    out
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    v
}

/// The official tensors a GGUF tensor comes from, in GGUF row order.
fn officials(name: &str, dims: &[u64]) -> Vec<String> {
    if dims.len() == 3 {
        (0..dims[2] as usize)
            .map(|e| gguf_expert_to_official(name, e).unwrap())
            .collect()
    } else {
        vec![gguf_to_official(name).unwrap()]
    }
}

fn gguf_f32(g: &GgufFile, name: &str) -> Vec<f32> {
    let t = g.tensor(name).unwrap();
    let mut out = vec![0f32; t.n_elements as usize];
    ds4_quant::dequantize(t.ty, g.tensor_data(t), &mut out).unwrap();
    out
}

#[test]
fn micro_float_codes_match_pytorch_exhaustively() {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("codes.json")).unwrap()).unwrap();
    let bits = |k: &str| -> Vec<u32> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32 as u32)
            .collect()
    };
    let check = |name: &str, want: Vec<u32>, ours: &dyn Fn(u8) -> f32, n: usize| {
        assert_eq!(want.len(), n, "{name}");
        let mut nans = 0;
        for (c, w) in want.iter().enumerate() {
            let w = f32::from_bits(*w);
            let o = ours(c as u8);
            if w.is_nan() {
                nans += 1;
                assert!(o.is_nan(), "{name} code {c:#04x}: torch NaN, ours {o}");
            } else {
                assert_eq!(o.to_bits(), w.to_bits(), "{name} code {c:#04x}: {o} vs {w}");
            }
        }
        nans
    };
    // E4M3FN: two NaN codes (±0x7f), everything else finite up to ±448.
    assert_eq!(
        check("e4m3fn", bits("e4m3fn_f32_bits"), &fp::e4m3fn_to_f32, 256),
        2
    );
    // E8M0: code 255 is NaN; 0 is 2^-127 (an f32 subnormal).
    assert_eq!(
        check("e8m0", bits("e8m0_f32_bits"), &fp::e8m0_to_f32, 256),
        1
    );
    assert_eq!(
        check("e2m1", bits("e2m1_f32_bits"), &fp::e2m1_to_f32, 16),
        0
    );
}

/// --recipe f32 of the PyTorch-written FP8/FP4 checkpoint: every GGUF tensor
/// equals PyTorch's dequantization (FP8/FP4) or the stored value (BF16/F32/I64)
/// bit for bit, in the layout's order, shapes and types.
#[test]
fn f32_conversion_equals_pytorch_dequantization() {
    let dir = data().join("official");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f32.gguf");
    let o = quantize_bin(&dir, "f32", &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // The MTP weight and its scale are reported, not converted; no tokenizer fits
    // vocab 160, which is said.
    assert!(
        stderr.contains("skipping 2 official tensor(s)") && stderr.contains("mtp.0.e_proj.weight"),
        "{stderr}"
    );
    assert!(stderr.contains("carries no tokenizer"), "{stderr}");
    let g = GgufFile::open(&out).unwrap();
    assert!(g.get("tokenizer.ggml.tokens").is_none());
    assert_eq!(g.metadata().get_uint("deepseek4.block_count").unwrap(), 3);
    assert_eq!(
        g.metadata().get_uint("deepseek4.embedding_length").unwrap(),
        32
    );

    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let shape = ds4_cli::convert::shape_from_config(&cfg).unwrap();
    let layout = tensors(&shape, Recipe::F32).unwrap();
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = layout.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, want);

    let expected = load_all(&[data().join("expected.safetensors")]);
    let stored = load_all(&shards(&dir));
    let mut from_torch = 0;
    for (t, spec) in g.tensors().iter().zip(&layout) {
        assert_eq!(t.dims, spec.dims, "{}", t.name);
        assert_eq!(t.ty, spec.ty, "{}", t.name);
        let mut want_f = Vec::new();
        let mut want_i = Vec::new();
        for off in officials(&t.name, &t.dims) {
            let (_, v) = match expected.get(&off) {
                Some(e) => {
                    from_torch += 1;
                    e
                }
                None => stored
                    .get(&off)
                    .unwrap_or_else(|| panic!("no source for {off}")),
            };
            match v {
                Vals::F(v) => want_f.extend_from_slice(v),
                Vals::I(v) => want_i.extend_from_slice(v),
            }
        }
        if t.ty == GgmlType::I32 {
            let got: Vec<i64> = g.tensor_i32(t).unwrap().iter().map(|&x| x as i64).collect();
            assert_eq!(got, want_i, "{}", t.name);
        } else {
            let got = g.tensor_f32(t).unwrap();
            assert_eq!(got.len(), want_f.len(), "{}", t.name);
            for (i, (a, b)) in got.iter().zip(&want_f).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{}[{i}]: {a} vs {b}", t.name);
            }
        }
    }
    // Every FP8/FP4 weight PyTorch dequantized was compared.
    assert_eq!(from_torch, expected.len());
}

/// The importance ds4 uses for IQ2_XXS when no imatrix is given: Σ_rows w².
fn column_energy(f: &[f32], cols: usize) -> Vec<f32> {
    let mut e = vec![0f32; cols];
    for row in f.chunks_exact(cols) {
        for (a, &x) in e.iter_mut().zip(row) {
            *a += x * x;
        }
    }
    e.iter().map(|a| a.max(1e-30)).collect()
}

fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Quantized recipes write exactly what ds4-quant makes of the f32 conversion
/// (importance for IQ2_XXS: per-expert column energy), and the dequantized values
/// stay within each type's usual error.
fn check_quantized(dir: &Path, recipes: &[&str]) -> Vec<(String, GgmlType, f64)> {
    let tmp = tempfile::tempdir().unwrap();
    let reference = convert(dir, "f32", &tmp.path().join("f32.gguf"));
    let mut worst: HashMap<GgmlType, f64> = HashMap::new();
    for recipe in recipes {
        let g = convert(dir, recipe, &tmp.path().join(format!("{recipe}.gguf")));
        assert_eq!(g.tensors().len(), reference.tensors().len());
        for t in g.tensors() {
            let f = reference.tensor_f32(reference.tensor(&t.name).unwrap());
            let bytes = g.tensor_data(t);
            if t.ty == GgmlType::I32 {
                assert_eq!(
                    bytes,
                    reference.tensor_data(reference.tensor(&t.name).unwrap())
                );
                continue;
            }
            let f = f.unwrap();
            let cols = t.dims[0] as usize;
            let per_part = if t.dims.len() == 3 {
                cols * t.dims[1] as usize
            } else {
                f.len()
            };
            let mut want = Vec::with_capacity(bytes.len());
            for part in f.chunks(per_part) {
                let imp = (t.ty == GgmlType::Iq2Xxs).then(|| column_energy(part, cols));
                want.extend(ds4_quant::quantize(t.ty, part, cols, imp.as_deref()).unwrap());
            }
            assert!(
                bytes == want.as_slice(),
                "{recipe} {}: bytes differ",
                t.name
            );
            let err = rel_rms(&gguf_f32(&g, &t.name), f);
            let bound = match t.ty {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => 1e-3,
                GgmlType::Q8_0 => 0.01,
                GgmlType::Q4K => 0.12,
                GgmlType::Q2K => 0.45,
                GgmlType::Iq2Xxs => 0.6,
                other => panic!("unexpected type {other}"),
            };
            assert!(
                err <= bound,
                "{recipe} {} ({}): rel RMS {err}",
                t.name,
                t.ty
            );
            let w = worst.entry(t.ty).or_default();
            *w = w.max(err);
        }
    }
    let mut v: Vec<_> = worst
        .into_iter()
        .map(|(ty, e)| (ty.name().to_string(), ty, e))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn q8_and_f16_conversions_of_the_pytorch_checkpoint() {
    let worst = check_quantized(&data().join("official"), &["q8", "f16"]);
    let types: Vec<GgmlType> = worst.iter().map(|w| w.1).collect();
    assert!(types.contains(&GgmlType::Q8_0) && types.contains(&GgmlType::F16));
    eprintln!("worst relative RMS error per type: {worst:?}");
}

/// An official-format checkpoint large enough for the K-quant recipes (rows of
/// 256), written here with random FP8/FP4 codes and E8M0 scales.
fn write_random_checkpoint(dir: &Path) {
    let config = serde_json::json!({
        "vocab_size": 256, "hidden_size": 256, "moe_intermediate_size": 256,
        "num_hidden_layers": 3, "num_hash_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 64, "qk_rope_head_dim": 16,
        "q_lora_rank": 64, "o_groups": 1, "o_lora_rank": 64, "n_routed_experts": 2,
        "n_shared_experts": 1, "num_experts_per_tok": 1, "scoring_func": "sqrtsoftplus",
        "routed_scaling_factor": 1.5, "swiglu_limit": 10.0, "sliding_window": 16,
        "compress_ratios": [0, 4, 128], "compress_rope_theta": 160000.0,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 16.0,
            "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1},
        "index_n_heads": 2, "index_head_dim": 32, "index_topk": 4, "hc_mult": 4,
        "hc_sinkhorn_iters": 20, "hc_eps": 1e-6, "rms_norm_eps": 1e-6
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let shape = ds4_cli::convert::shape_from_config(&config.to_string()).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut store: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for spec in tensors(&shape, Recipe::F32).unwrap() {
        use ds4_cli::layout::Role;
        let d: Vec<usize> = spec.dims.iter().map(|&x| x as usize).collect();
        for off in officials(&spec.name, &spec.dims) {
            let (rows, cols) = (d[1.min(d.len() - 1)], d[0]);
            let rows = if d.len() == 1 { 1 } else { rows };
            let shape_of = |r, c| if d.len() == 1 { vec![c] } else { vec![r, c] };
            match spec.role {
                Role::Dense => {
                    // Sign, exponent 4..9 (≈ 2^-3 .. 2^2), random mantissa.
                    let w = (0..rows * cols)
                        .map(|_| {
                            let x = next();
                            ((x & 0x80) as u8)
                                | ((4 + (x >> 8) % 6) as u8) << 3
                                | (x >> 16) as u8 & 7
                        })
                        .collect();
                    let s = (0..rows.div_ceil(128) * cols.div_ceil(128))
                        .map(|_| 120 + (next() % 4) as u8)
                        .collect();
                    let stem = off.strip_suffix(".weight").unwrap();
                    store.push((off.clone(), Dtype::F8_E4M3, shape_of(rows, cols), w));
                    store.push((
                        format!("{stem}.scale"),
                        Dtype::F8_E8M0,
                        vec![rows.div_ceil(128), cols.div_ceil(128)],
                        s,
                    ));
                }
                Role::ExpertGateUp | Role::ExpertDown => {
                    let w = (0..rows * cols / 2).map(|_| next() as u8).collect();
                    let s = (0..rows * cols / 32)
                        .map(|_| 122 + (next() % 3) as u8)
                        .collect();
                    let stem = off.strip_suffix(".weight").unwrap();
                    store.push((off.clone(), Dtype::I8, vec![rows, cols / 2], w));
                    store.push((
                        format!("{stem}.scale"),
                        Dtype::F8_E8M0,
                        vec![rows, cols / 32],
                        s,
                    ));
                }
                Role::Index => {
                    let w = (0..rows * cols)
                        .flat_map(|_| ((next() % shape.n_expert as u64) as i64).to_le_bytes())
                        .collect();
                    store.push((off, Dtype::I64, vec![rows, cols], w));
                }
                Role::Small => {
                    let w = (0..rows * cols)
                        .flat_map(|_| {
                            let u = (next() >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
                            half::bf16::from_f32(u * 0.2).to_le_bytes()
                        })
                        .collect();
                    store.push((off, Dtype::BF16, shape_of(rows, cols), w));
                }
                Role::Norm => {
                    let w = (0..rows * cols)
                        .flat_map(|_| (1.0 + (next() % 100) as f32 / 1000.0).to_le_bytes())
                        .collect();
                    store.push((off, Dtype::F32, shape_of(rows, cols), w));
                }
            }
        }
    }
    let views: Vec<(String, TensorView<'_>)> = store
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn k_quant_recipes_of_a_random_fp8_fp4_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    write_random_checkpoint(tmp.path());
    let worst = check_quantized(tmp.path(), &["q2", "q4", "q8"]);
    let types: Vec<GgmlType> = worst.iter().map(|w| w.1).collect();
    for ty in [
        GgmlType::Iq2Xxs,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Q8_0,
    ] {
        assert!(types.contains(&ty), "{ty} not exercised");
    }
    eprintln!("worst relative RMS error per type: {worst:?}");
}

fn tiny_hf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4")
}

/// A copy of the engine's tiny HF model (official names, plain f32) without its
/// golden-output file.
fn tiny_copy(dir: &Path) -> bool {
    let src = tiny_hf();
    if !src.join("model.safetensors").exists() {
        return false;
    }
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    true
}

#[test]
fn tiny_hf_model_round_trips_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    std::fs::create_dir(&dir).unwrap();
    if !tiny_copy(&dir) {
        eprintln!("skipped: no tiny HF fixture in ds4-engine");
        return;
    }
    let g = convert(&dir, "f32", &tmp.path().join("t.gguf"));
    let stored = load_all(&[dir.join("model.safetensors")]);
    let mut used = 0;
    for t in g.tensors() {
        for off in officials(&t.name, &t.dims) {
            assert!(stored.contains_key(&off), "{off}");
        }
        let offs = officials(&t.name, &t.dims);
        used += offs.len();
        if t.ty == GgmlType::I32 {
            let want: Vec<i64> = offs
                .iter()
                .flat_map(|o| match &stored[o].1 {
                    Vals::I(v) => v.clone(),
                    Vals::F(_) => panic!("{o} is not integer"),
                })
                .collect();
            let got: Vec<i64> = g.tensor_i32(t).unwrap().iter().map(|&x| x as i64).collect();
            assert_eq!(got, want, "{}", t.name);
        } else {
            let want: Vec<u32> = offs
                .iter()
                .flat_map(|o| match &stored[o].1 {
                    Vals::F(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    Vals::I(_) => panic!("{o} is not float"),
                })
                .collect();
            let got: Vec<u32> = g
                .tensor_f32(t)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert!(got == want, "{}: values differ", t.name);
        }
    }
    // Every tensor of the HF model has a place in the GGUF.
    assert_eq!(used, stored.len());
}

/// Runs the converter on `dir` expecting failure: one line on stderr holding
/// every `needles`, a non-zero exit, and no output file left behind.
fn expect_error(dir: &Path, needles: &[&str]) {
    let out = dir.join("out.gguf");
    let o = quantize_bin(dir, "f32", &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "unexpected success:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("ds4-quantize: "), "{stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {stderr}");
    }
    assert!(!out.exists() && !dir.join("out.gguf.partial").exists());
}

/// Rewrites `dir/file` with `edit` applied to its tensor list.
fn rewrite(
    dir: &Path,
    file: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut list: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut list);
    let views: Vec<(String, TensorView<'_>)> = list
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn copy_fixture(to: &Path) {
    for e in std::fs::read_dir(data().join("official")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn bad_input_gets_one_clear_error_line() {
    let tmp = tempfile::tempdir().unwrap();

    // No config.json.
    let d = tmp.path().join("noconfig");
    std::fs::create_dir(&d).unwrap();
    copy_fixture(&d);
    std::fs::remove_file(d.join("config.json")).unwrap();
    expect_error(&d, &["config.json"]);

    // Not a directory at all.
    expect_error(&tmp.path().join("nowhere"), &["nowhere", "config.json"]);

    // A truncated shard.
    let d = tmp.path().join("truncated");
    std::fs::create_dir(&d).unwrap();
    copy_fixture(&d);
    let shard = d.join("model-00002-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    expect_error(
        &d,
        &[
            "model-00002-of-00002.safetensors",
            "not a valid safetensors",
        ],
    );

    // An FP8 weight whose scale is gone (single-file checkpoint, no index).
    let d = tmp.path().join("noscale");
    std::fs::create_dir(&d).unwrap();
    copy_fixture(&d);
    std::fs::remove_file(d.join("model.safetensors.index.json")).unwrap();
    let victim = "layers.1.attn.wkv.scale";
    for f in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        rewrite(&d, f, |l| l.retain(|t| t.0 != victim));
    }
    expect_error(&d, &["layers.1.attn.wkv.weight", "scale", "missing"]);

    if !tiny_hf().join("model.safetensors").exists() {
        return;
    }
    // A missing tensor.
    let d = tmp.path().join("missing");
    std::fs::create_dir(&d).unwrap();
    tiny_copy(&d);
    rewrite(&d, "model.safetensors", |l| {
        l.retain(|t| t.0 != "layers.3.attn.wq_b.weight")
    });
    expect_error(
        &d,
        &[
            "missing official tensor layers.3.attn.wq_b.weight",
            "blk.3.attn_q_b.weight",
        ],
    );

    // A tensor of the wrong shape.
    let d = tmp.path().join("shape");
    std::fs::create_dir(&d).unwrap();
    tiny_copy(&d);
    rewrite(&d, "model.safetensors", |l| {
        let t = l
            .iter_mut()
            .find(|t| t.0 == "layers.2.attn.wkv.weight")
            .unwrap();
        t.2 = vec![63, 64];
        t.3.truncate(63 * 64 * 4);
    });
    expect_error(
        &d,
        &[
            "layers.2.attn.wkv.weight",
            "expected shape [64, 64]",
            "found [63, 64]",
        ],
    );
}

fn imatrix_file(path: &Path, entries: &[(&str, i32, Vec<f32>)]) {
    let mut b = (entries.len() as i32).to_le_bytes().to_vec();
    for (name, calls, vals) in entries {
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend(calls.to_le_bytes());
        b.extend((vals.len() as i32).to_le_bytes());
        for v in vals {
            b.extend(v.to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

/// `--imatrix`: entries found by GGUF name (a packed per-expert vector, divided
/// by its call count) or by official name steer the quantizer; tensors without
/// an entry keep the default; a size mismatch is one error line.
#[test]
fn imatrix_entries_steer_the_quantizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    std::fs::create_dir(&dir).unwrap();
    write_random_checkpoint(&dir);
    let reference = convert(&dir, "f32", &tmp.path().join("f32.gguf"));
    let plain = convert(&dir, "q2", &tmp.path().join("plain.gguf"));
    let gate_imp: Vec<f32> = (0..2 * 256).map(|i| 1.0 + (i % 7) as f32).collect();
    let kv_imp: Vec<f32> = (0..256).map(|i| 0.5 + (i % 5) as f32).collect();
    let im = tmp.path().join("im.dat");
    imatrix_file(
        &im,
        &[
            ("blk.1.ffn_gate_exps.weight", 2, gate_imp.clone()),
            ("layers.1.attn.wkv.weight", 1, kv_imp.clone()),
        ],
    );
    let out = tmp.path().join("im.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_ds4-quantize"))
        .arg("--from-official")
        .arg(&dir)
        .args(["--recipe", "q2", "--quiet", "--imatrix"])
        .arg(&im)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 entries, used for 2 tensor(s)"),
        "{stderr}"
    );
    let g = GgufFile::open(&out).unwrap();

    let f = reference
        .tensor_f32(reference.tensor("blk.1.ffn_gate_exps.weight").unwrap())
        .unwrap();
    let mut want = Vec::new();
    for (e, part) in f.chunks(256 * 256).enumerate() {
        let imp: Vec<f32> = gate_imp[e * 256..(e + 1) * 256]
            .iter()
            .map(|v| v / 2.0)
            .collect();
        want.extend(ds4_quant::quantize(GgmlType::Iq2Xxs, part, 256, Some(&imp)).unwrap());
    }
    assert!(g.tensor_bytes("blk.1.ffn_gate_exps.weight").unwrap() == want.as_slice());
    assert!(
        plain.tensor_bytes("blk.1.ffn_gate_exps.weight").unwrap() != want.as_slice(),
        "the imatrix made no difference"
    );
    let f = reference
        .tensor_f32(reference.tensor("blk.1.attn_kv.weight").unwrap())
        .unwrap();
    let want = ds4_quant::quantize(GgmlType::Q8_0, f, 256, Some(&kv_imp)).unwrap();
    assert!(g.tensor_bytes("blk.1.attn_kv.weight").unwrap() == want.as_slice());
    for other in ["blk.1.ffn_up_exps.weight", "blk.2.ffn_gate_exps.weight"] {
        assert_eq!(
            g.tensor_bytes(other).unwrap(),
            plain.tensor_bytes(other).unwrap(),
            "{other}"
        );
    }

    imatrix_file(&im, &[("blk.1.ffn_gate_exps.weight", 1, vec![1.0; 100])]);
    let o = Command::new(env!("CARGO_BIN_EXE_ds4-quantize"))
        .arg("--from-official")
        .arg(&dir)
        .args(["--recipe", "q2", "--quiet", "--overwrite", "--imatrix"])
        .arg(&im)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("blk.1.ffn_gate_exps.weight has 100 values, expected 256 or 512"),
        "{stderr}"
    );
}

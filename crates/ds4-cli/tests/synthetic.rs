//! `ds4-quantize --synthetic`: the file has exactly the published layout, reads
//! back through our reader, its values are finite with the intended magnitudes,
//! and the same seed gives the same bytes.

use std::path::Path;
use std::process::Command;

use ds4_cli::layout::{Recipe, Shape, tensors};
use ds4_gguf::GgufFile;

const TINY: &str = r#"{"n_layer": 4, "n_embd": 256, "n_head": 4, "head_dim": 128, "n_rot": 64,
  "q_lora_rank": 256, "o_lora_rank": 64, "o_groups": 2, "n_expert": 4, "n_expert_used": 2,
  "ff_exp": 256, "n_hash_layer": 1, "indexer_heads": 4, "indexer_dim": 64, "indexer_top_k": 8}"#;

fn quantize(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ds4-quantize"))
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, recipe: &str, seed: &str, name: &str) -> std::path::PathBuf {
    let cfg = dir.join("tiny.json");
    std::fs::write(&cfg, TINY).unwrap();
    let out = dir.join(name);
    let o = quantize(&[
        "--synthetic",
        "--quiet",
        "--config",
        cfg.to_str().unwrap(),
        "--recipe",
        recipe,
        "--seed",
        seed,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn tiny_synthetic_files_have_the_layout_and_sane_values() {
    let dir = tempfile::tempdir().unwrap();
    let shape: Shape = serde_json::from_str(TINY).unwrap();
    for recipe in ["q2", "q4", "q8", "f16", "f32"] {
        let path = write(dir.path(), recipe, "7", &format!("{recipe}.gguf"));
        let f = GgufFile::open(&path).unwrap();
        let want = tensors(&shape, Recipe::parse(recipe).unwrap()).unwrap();
        assert_eq!(f.tensors().len(), want.len());
        for (got, w) in f.tensors().iter().zip(&want) {
            assert_eq!(
                (&got.name, &got.dims, got.ty),
                (&w.name, &w.dims, w.ty),
                "{recipe}"
            );
            let mut x = vec![0f32; got.n_elements as usize];
            ds4_quant::dequantize(got.ty, f.tensor_data(got), &mut x).unwrap();
            assert!(x.iter().all(|v| v.is_finite()), "{recipe} {}", got.name);
            if got.name.ends_with("tid2eid.weight") {
                for row in x.chunks(shape.n_expert_used as usize) {
                    assert!(row.iter().all(|&e| e >= 0.0 && e < shape.n_expert as f32));
                    assert!(row[0] != row[1], "experts of a token must differ");
                }
                continue;
            }
            if got.dims.len() >= 2 {
                // Matrices: RMS within a factor 2 of 1/sqrt(fan_in).
                let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
                let target = 1.0 / (got.dims[0] as f32).sqrt();
                assert!(
                    rms > target / 2.0 && rms < target * 2.0,
                    "{recipe} {}: rms {rms} target {target}",
                    got.name
                );
            }
        }
        assert_eq!(f.get_str("general.architecture").unwrap(), "deepseek4");
        assert_eq!(
            f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
            129_280
        );
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::fs::read(write(dir.path(), "q2", "3", "a.gguf")).unwrap();
    let b = std::fs::read(write(dir.path(), "q2", "3", "b.gguf")).unwrap();
    let c = std::fs::read(write(dir.path(), "q2", "4", "c.gguf")).unwrap();
    assert!(a == b, "same seed must reproduce the file");
    assert_eq!(a.len(), c.len());
    assert!(a != c);
}

#[test]
fn bad_requests_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let o = quantize(&["--synthetic", "--recipe", "q3", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown recipe `q3`"));
    let cfg = dir.path().join("bad.json");
    std::fs::write(&cfg, r#"{"n_embd": 100}"#).unwrap();
    let o = quantize(&[
        "--synthetic",
        "--config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a multiple"), "{err}");
    std::fs::write(&cfg, r#"{"n_embed": 256}"#).unwrap();
    let o = quantize(&[
        "--synthetic",
        "--config",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("n_embed"),
        "unknown fields are named"
    );
    assert!(!out.exists(), "no partial output is left behind");
}

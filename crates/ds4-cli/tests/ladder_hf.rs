//! Rung 4 of the validation ladder, end to end through the user's commands: the
//! tiny DeepseekV4 built with transformers (official checkpoint names, f32) is
//! converted by `ds4-quantize --from-official`, and `ds4 --dump-logits
//! --no-qat-sim` must reproduce transformers' logits at every one of the 640
//! prompt positions, through chunked prefill and through one-token steps.

use std::path::PathBuf;
use std::process::Command;

use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4")
}

fn run(bin: &str, args: &[&str]) {
    let o = Command::new(bin).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn converted_tiny_model_matches_transformers_at_every_position() {
    let golden = std::fs::read(fixture().join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&golden).unwrap();
    let ids: Vec<u32> = st
        .tensor("input_ids")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let want_t = st.tensor("logits").unwrap();
    let (n, vocab) = (want_t.shape()[0], want_t.shape()[1]);
    let want: Vec<f32> = want_t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(n >= 600 && n == ids.len());

    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny-f32.gguf");
    let fx = fixture();
    run(
        env!("CARGO_BIN_EXE_ds4-quantize"),
        &[
            "--from-official",
            fx.to_str().unwrap(),
            "--recipe",
            "f32",
            "-o",
            gguf.to_str().unwrap(),
        ],
    );
    let ids_path = dir.path().join("ids.json");
    std::fs::write(&ids_path, serde_json::to_string(&ids).unwrap()).unwrap();
    // 37 divides neither the ratio-4 nor the ratio-32 boundaries; 1 is decode.
    for chunk in ["37", "1"] {
        let out = dir.path().join(format!("logits-{chunk}.f32"));
        run(
            env!("CARGO_BIN_EXE_ds4"),
            &[
                "-m",
                gguf.to_str().unwrap(),
                "--dump-logits",
                out.to_str().unwrap(),
                "--prompt-tokens",
                ids_path.to_str().unwrap(),
                "--no-qat-sim",
                "--prefill-chunk",
                chunk,
            ],
        );
        let got: Vec<f32> = std::fs::read(&out)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), n * vocab);
        let mut worst = 0f32;
        for p in 0..n {
            let (g, w) = (
                &got[p * vocab..(p + 1) * vocab],
                &want[p * vocab..(p + 1) * vocab],
            );
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(d / scale);
        }
        eprintln!("chunk {chunk}: max relative error over {n} positions {worst:.2e}");
        assert!(worst <= 1e-4, "chunk {chunk}: {worst}");
    }
}

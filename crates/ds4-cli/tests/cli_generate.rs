//! The `ds4` binary end to end on the demo model: generation, reproducibility,
//! and the numeric dumps parsed back and checked.

use std::path::PathBuf;
use std::process::{Command, Output};

use ds4_cli::diagnostics::compare_logprobs;

/// Every test shares one cache directory, so the demo model is generated once
/// (concurrent first uses write separate partial files and rename).
fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ds4-demo-cache")
}

fn ds4(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_ds4"))
        .args(args)
        .env("DS4_CACHE_DIR", cache())
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ds4 {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn one_shot_generation_is_reproducible() {
    let a = ds4(&["-p", "Ciao, come stai?", "-n", "12", "--temp", "0"]);
    let b = ds4(&["-p", "Ciao, come stai?", "-n", "12", "--temp", "0"]);
    assert_eq!(a.stdout, b.stdout, "greedy runs must agree");
    assert!(!a.stdout.is_empty());
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(err.contains("demo model"), "{err}");
    assert!(
        err.contains("prefill:") && err.contains("generation:") && err.contains("t/s"),
        "{err}"
    );

    let s1 = ds4(&[
        "-p", "Ciao", "-n", "12", "--temp", "1", "--seed", "5", "--min-p", "0",
    ]);
    let s2 = ds4(&[
        "-p", "Ciao", "-n", "12", "--temp", "1", "--seed", "5", "--min-p", "0",
    ]);
    assert_eq!(s1.stdout, s2.stdout, "a seed reproduces a sampled run");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.txt");
    std::fs::write(&f, "Ciao, come stai?").unwrap();
    let c = ds4(&[
        "--prompt-file",
        f.to_str().unwrap(),
        "-n",
        "12",
        "--temp",
        "0",
    ]);
    assert_eq!(a.stdout, c.stdout, "--prompt-file is the same prompt as -p");
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn dump_logits_is_the_same_for_any_prefill_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u32> = (0..70).map(|i| 1000 + i * 37).collect();
    let ids_path = dir.path().join("ids.json");
    std::fs::write(&ids_path, serde_json::to_string(&ids).unwrap()).unwrap();
    let mut outs = Vec::new();
    for chunk in ["1", "7", "2048"] {
        let out = dir.path().join(format!("l{chunk}.f32"));
        ds4(&[
            "--dump-logits",
            out.to_str().unwrap(),
            "--prompt-tokens",
            ids_path.to_str().unwrap(),
            "--prefill-chunk",
            chunk,
        ]);
        outs.push(read_f32(&out));
    }
    assert_eq!(outs[0].len(), 70 * 129_280);
    assert!(outs[0].iter().all(|x| x.is_finite()));
    assert!(
        outs[0] == outs[1] && outs[1] == outs[2],
        "chunked prefill must not change logits"
    );
    let out = dir.path().join("nosim.f32");
    ds4(&[
        "--dump-logits",
        out.to_str().unwrap(),
        "--prompt-tokens",
        ids_path.to_str().unwrap(),
        "--no-qat-sim",
    ]);
    assert_ne!(read_f32(&out), outs[0], "--no-qat-sim changes the numerics");
}

#[test]
fn dump_logprobs_passes_ds4s_vector_check_against_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    ds4(&[
        "--dump-logprobs",
        a.to_str().unwrap(),
        "--temp",
        "0",
        "-n",
        "6",
        "-p",
        "Quel ramo del lago di Como",
    ]);
    ds4(&[
        "--dump-logprobs",
        b.to_str().unwrap(),
        "--temp",
        "0",
        "-n",
        "6",
        "-p",
        "Quel ramo del lago di Como",
    ]);
    let ta = std::fs::read_to_string(&a).unwrap();
    let j: serde_json::Value = serde_json::from_str(&ta).unwrap();
    assert_eq!(j["source"], "ds4");
    assert_eq!(j["top_k"], 20);
    let steps = j["steps"].as_array().unwrap();
    assert!(!steps.is_empty() && steps.len() <= 6);
    for s in steps {
        let tops = s["top_logprobs"].as_array().unwrap();
        assert_eq!(tops.len(), 20);
        assert_eq!(
            tops[0]["token"]["id"], s["selected"]["id"],
            "greedy picks the best"
        );
        let lps: Vec<f64> = tops
            .iter()
            .map(|t| t["logprob"].as_f64().unwrap())
            .collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0);
    }
    assert_eq!(
        compare_logprobs(&ta, &std::fs::read_to_string(&b).unwrap(), 4.0).unwrap(),
        steps.len()
    );

    // The checker rejects a different greedy token.
    let mut broken = j.clone();
    broken["steps"][0]["selected"]["bytes"] = serde_json::json!([1, 2, 3]);
    assert!(compare_logprobs(&broken.to_string(), &ta, 4.0).is_err());
    // ... and a logprob off by more than the tolerance.
    let mut off = j.clone();
    let lp = off["steps"][0]["top_logprobs"][3]["logprob"]
        .as_f64()
        .unwrap();
    off["steps"][0]["top_logprobs"][3]["logprob"] = serde_json::json!(lp - 4.5);
    assert!(compare_logprobs(&off.to_string(), &ta, 4.0).is_err());
}

#[test]
fn perplexity_prints_ds4s_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    std::fs::write(&f, "Quel ramo del lago di Como, che volge a mezzogiorno, tra due catene non interrotte di monti, tutto a seni e a golfi, a seconda dello sporgere e del rientrare di quelli, vien, quasi a un tratto, a ristringersi.").unwrap();
    let o = ds4(&["--perplexity-file", f.to_str().unwrap(), "-n", "10"]);
    let s = String::from_utf8(o.stdout).unwrap();
    let fields: std::collections::HashMap<&str, f64> = s
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, v.parse().unwrap())
        })
        .collect();
    assert_eq!(fields["scored"], 10.0, "{s}");
    assert!((fields["avg_nll"] - fields["nll"] / 10.0).abs() < 1e-6);
    assert!((fields["ppl"] - fields["avg_nll"].exp()).abs() / fields["ppl"] < 1e-6);
    // The demo model was trained on this novel (the opening is in its training
    // chapters): far below uniform over 129,280 tokens, ln(129280) ≈ 11.77
    // (measured 3.62).
    assert!(fields["avg_nll"] > 0.5 && fields["avg_nll"] < 6.0, "{s}");
}

//! `ds4 --inspect`, `--dump-tensor` and `--dump-tokens` run as a user runs them.

use std::process::{Command, Output};

use ds4_gguf::{GgmlType, GgufBuilder, MetaValue};

fn ds4(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ds4"))
        .args(args)
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap()
}

fn small_file(path: &std::path::Path) -> Vec<f32> {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
    let mut q = vec![0u8; 68];
    ds4_quant::quantize_row(GgmlType::Q8_0, &x, None, &mut q).unwrap();
    let mut b = GgufBuilder::new();
    b.add_meta("general.architecture", MetaValue::from("llama"))
        .unwrap();
    b.add_meta("some.array", MetaValue::from(vec![1u32, 2, 3]))
        .unwrap();
    let f: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    b.add_tensor("plain", &[16, 4], GgmlType::F32, f).unwrap();
    b.add_tensor("quant", &[64], GgmlType::Q8_0, q.clone())
        .unwrap();
    b.write_file(path).unwrap();
    let mut deq = vec![0f32; 64];
    ds4_quant::dequantize(GgmlType::Q8_0, &q, &mut deq).unwrap();
    deq
}

#[test]
fn inspect_and_dump_tensor_on_any_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    let deq = small_file(&path);
    let p = path.to_str().unwrap();
    let o = ds4(&["--inspect", "-m", p]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("GGUF v3") && s.contains("2 tensors"), "{s}");
    assert!(s.contains("some.array") && s.contains("[u32; 3]"), "{s}");
    assert!(
        s.lines().any(|l| l.contains("quant")
            && l.contains("Q8_0")
            && l.contains("[64]")
            && l.contains("68")),
        "{s}"
    );

    let out = dir.path().join("q.f32");
    let o = ds4(&[
        "--dump-tensor",
        "quant",
        "--out",
        out.to_str().unwrap(),
        "-m",
        p,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<f32> = std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, deq);

    let o = ds4(&[
        "--dump-tensor",
        "nope",
        "--out",
        out.to_str().unwrap(),
        "-m",
        p,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tensor named `nope`"));
}

#[test]
fn malformed_or_missing_files_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    small_file(&path);
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = ds4(&["--inspect", "-m", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("ds4: cannot read"), "{err}");

    let o = ds4(&[
        "--inspect",
        "-m",
        dir.path().join("absent.gguf").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

#[test]
fn dump_tokens_prints_ids_then_pieces() {
    let o = ds4(&["--dump-tokens", "-p", "Hello <｜User｜> 世界"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8(o.stdout).unwrap();
    let mut lines = s.lines();
    let ids: Vec<u32> = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(lines.count(), ids.len());
    assert!(
        ids.contains(&128803),
        "<｜User｜> is recognised by default: {ids:?}"
    );

    let o = ds4(&["--dump-tokens", "--raw", "-p", "Hello <｜User｜> 世界"]);
    let raw: Vec<u32> =
        serde_json::from_str(String::from_utf8(o.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert!(!raw.contains(&128803), "--raw recognises no added token");
    assert!(raw.len() > ids.len());

    let o = ds4(&["--dump-tokens", "--chat", "--nothink", "-p", "Hi"]);
    let chat: Vec<u32> =
        serde_json::from_str(String::from_utf8(o.stdout).unwrap().lines().next().unwrap()).unwrap();
    // BOS, system text, <｜User｜>, "Hi", <｜Assistant｜>, </think>
    assert_eq!(chat[0], 0);
    assert_eq!(chat.last(), Some(&128822));

    let o = ds4(&["--dump-tokens"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs -p TEXT"));
}

#[test]
fn generation_refuses_a_gguf_that_is_not_deepseek_v4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    small_file(&path);
    let o = ds4(&["-m", path.to_str().unwrap(), "-p", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is a `llama` model, not DeepSeek V4"), "{err}");
}

#[test]
fn backend_and_thread_flags() {
    let o = Command::new(env!("CARGO_BIN_EXE_ds4"))
        .args(["--cuda", "-p", "hi"])
        .output()
        .unwrap();
    if let Err(why) = ds4_cuda::available() {
        // No GPU here: an explicit --cuda fails at once and says why.
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--cuda: no usable CUDA device"), "{err}");
        println!("--cuda refused as expected ({why})");
    } else {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_ds4"))
        .args(["-t", "0", "-p", "hi"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "clap rejects -t 0");
    let o = Command::new(env!("CARGO_BIN_EXE_ds4"))
        .args(["--dump-tokens", "-p", "hi"])
        .env("DS4_THREADS", "many")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid value for DS4_THREADS"));
    let o = ds4(&["-t", "1", "--dump-tokens", "-p", "hi"]);
    assert!(o.status.success());
}

//! Our writer's output read back by llama.cpp's reference reader
//! (gguf.GGUFReader) through tools/check_gguf_interop.py. Runs only when
//! DS4_PYTHON names a Python with the `gguf` package (CI sets it to its venv).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Option<String> {
    std::env::var("DS4_PYTHON").ok().filter(|p| !p.is_empty())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/check_gguf_interop.py")
}

fn check(py: &str, gguf: &Path, json: &Path) -> (bool, String) {
    let out = Command::new(py)
        .arg(script())
        .arg(gguf)
        .arg(json)
        .output()
        .unwrap_or_else(|e| panic!("cannot run DS4_PYTHON={py}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn reference_reader_agrees_with_our_writer() {
    let Some(py) = python() else {
        eprintln!("skipped: DS4_PYTHON not set (point it at a python with the gguf package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("interop.gguf");
    let json = dir.path().join("interop.json");
    common::interop::write_interop(gguf.to_str().unwrap(), json.to_str().unwrap()).unwrap();

    let (ok, text) = check(&py, &gguf, &json);
    eprintln!("{text}");
    assert!(ok, "check_gguf_interop.py failed:\n{text}");

    // The check must be able to fail: a manifest with one wrong value.
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    m["metadata"][2]["value"] = serde_json::json!(254);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, m.to_string()).unwrap();
    let (ok, text) = check(&py, &gguf, &bad);
    assert!(
        !ok && text.contains("ds4.u8"),
        "corrupted manifest was accepted:\n{text}"
    );
}

#[test]
fn reference_reader_agrees_with_python_fixture_manifest() {
    let Some(py) = python() else {
        eprintln!("skipped: DS4_PYTHON not set");
        return;
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (ok, text) = check(
        &py,
        &data.join("py_fixture.gguf"),
        &data.join("py_fixture.json"),
    );
    assert!(ok, "{text}");
}

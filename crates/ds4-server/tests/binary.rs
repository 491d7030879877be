//! The `ds4-server` binary refuses bad command lines with one clear line.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ds4-server"))
        .args(args)
        .env_remove("DS4_API_KEY")
        .output()
        .expect("run ds4-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_command_lines_fail_with_a_reason() {
    let (ok, err) = run(&["-m", "/nonexistent/model.gguf", "--port", "1"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/model.gguf") && err.contains("not found"),
        "{err}"
    );
    let (ok, err) = run(&["--bind", "not-an-address", "-m", "/nonexistent"]);
    assert!(!ok);
    assert!(err.contains("not-an-address"), "{err}");
    let (ok, err) = run(&["--queue", "0"]);
    assert!(!ok);
    assert!(err.contains("--queue"), "{err}");
    let (ok, err) = run(&["--ctx", "abc"]);
    assert!(!ok);
    assert!(err.contains("abc"), "{err}");
    let (ok, err) = run(&["--send-stall-ms", "0"]);
    assert!(!ok);
    assert!(err.contains("--send-stall-ms"), "{err}");
}

#[test]
fn an_unwritable_trace_file_is_refused_before_loading() {
    let dir = std::env::temp_dir().join(format!("ds4-server-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let model = dir.join("m.gguf");
    std::fs::write(&model, b"not loaded").expect("write");
    let (ok, err) = run(&[
        "-m",
        model.to_str().expect("utf8"),
        "--trace",
        "/nonexistent-dir/trace.jsonl",
        "--port",
        "1",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok);
    assert!(
        err.contains("--trace /nonexistent-dir/trace.jsonl") && !err.contains("loading"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let dir = std::env::temp_dir().join(format!("ds4-server-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("junk.gguf");
    std::fs::write(&path, b"definitely not a gguf file").expect("write");
    let (ok, err) = run(&["-m", path.to_str().expect("utf8"), "--port", "1"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok);
    assert!(
        err.contains("loading") && err.contains("junk.gguf"),
        "{err}"
    );
}

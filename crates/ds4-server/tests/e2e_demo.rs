//! End to end: the real `ds4-server` binary on the bundled demo model, driven by
//! the official `openai`/`anthropic` Python SDKs (tests/python/e2e_demo_model.py)
//! and checked afterwards through /metrics, the --trace file and the server log.
//! Skipped with the reason printed when `DS4_PYTHON` lacks the SDKs.

mod common;

use common::{ServerProcess, demo_model, python_with_clients, run_python_tests};

const CTX: usize = 1024;
const KEY: &str = "e2e-key";

#[test]
fn official_clients_against_the_binary_on_the_demo_model() {
    let Some(python) = python_with_clients("official_clients_against_the_binary_on_the_demo_model")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.jsonl");
    // A stale line must not survive: the trace is truncated at open (ds4's rule).
    std::fs::write(&trace, "stale\n").expect("write");
    let model = demo_model();
    let ctx = CTX.to_string();
    let server = ServerProcess::start(
        &model,
        &[
            "--ctx",
            &ctx,
            "--api-key",
            KEY,
            "-n",
            "64",
            // One live session, as ds4: the test's "reset" requests must really
            // replace it, so the repeated request runs cold (parked sessions
            // have their own tests in kv_disk.rs).
            "--kv-ram-mb",
            "0",
            "--trace",
            trace.to_str().expect("utf8"),
        ],
    );
    let log = run_python_tests(
        &python,
        &server,
        "tests/python/e2e_demo_model.py",
        &[
            ("DS4_CTX", ctx.as_str()),
            ("DS4_TRACE_FILE", trace.to_str().expect("utf8")),
        ],
    );
    assert!(log.contains("OK"), "{log}");

    // Every generation request the server accepted has one request record and one
    // done record in the trace, each a JSON object.
    let text = std::fs::read_to_string(&trace).expect("trace");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("trace line {l:?}: {e}")))
        .collect();
    let count = |ev: &str| records.iter().filter(|r| r["event"] == ev).count();
    let accepted: f64 = ["chat", "completions", "responses", "messages"]
        .iter()
        .map(|api| server.metric(&format!("ds4_requests_total{{api=\"{api}\"}}")))
        .sum();
    assert_eq!(count("request") as f64, accepted, "trace vs /metrics");
    assert_eq!(count("done"), count("request"));
    assert!(count("rejected") >= 5, "4xx requests are traced too");
    assert_eq!(server.metric("ds4_queue_depth"), 0.0);
    let slog = server.log();
    assert!(!slog.contains("panicked"), "{slog}");
}

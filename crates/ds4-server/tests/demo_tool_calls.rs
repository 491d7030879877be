//! The trained demo model calls tools through the real `ds4-server` binary: the
//! official `openai`/`anthropic` clients send held-out tool prompts
//! (tools/demo_data/tool_prompts.eval.json) through /v1/chat/completions
//! (streamed and not), /v1/responses and /v1/messages, greedy and without
//! thinking, and tests/python/demo_tool_calls.py counts the answers whose first
//! call names the right tool with arguments that parse and fit the schema
//! ("valid"), and those whose arguments are exactly the requested ones ("exact").
//! Skipped with the reason printed when `DS4_PYTHON` lacks the SDKs.
//!
//! The model copies the requested city, path or numbers in 96.7% of the first 60
//! held-out prompts per API (README, "The demo model"): this guards the path
//! through every API and the rates measured.

mod common;

use common::{ServerProcess, python_with_clients, run_python};

/// Prompts per API here (CI has 2 cores); `DS4_TOOL_N` raises it (300 held-out
/// prompts exist).
const N: &str = "5";
/// Measured on the first 60 prompts of each API: valid 1.0, exact 0.967 (the 90%
/// goal, checked with `DS4_TOOL_N=60`); on the first 5 and 10, both 1.0 (README).
/// One miss among the 5 still passes (another CPU's kernels may round a near tie
/// the other way); 10 prompts per API take about twice as long here.
const MIN_RATE: &str = "0.8";
const MIN_EXACT: &str = "0.8";

#[test]
fn trained_demo_model_calls_tools_through_every_api() {
    let Some(python) = python_with_clients("trained_demo_model_calls_tools_through_every_api")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = ds4_cli::demo::ensure_in(dir.path()).expect("unpacking the demo model");
    let server = ServerProcess::start(&model, &["--ctx", "2048"]);
    let n = std::env::var("DS4_TOOL_N").unwrap_or_else(|_| N.to_owned());
    let r = run_python(
        &python,
        "tests/python/demo_tool_calls.py",
        &[],
        &[
            ("DS4_SERVER_URL", server.base.as_str()),
            ("DS4_TOOL_N", n.as_str()),
            ("DS4_TOOL_MIN_RATE", MIN_RATE),
            ("DS4_TOOL_MIN_EXACT", MIN_EXACT),
        ],
    );
    eprintln!("{}{}", r.stdout, r.stderr);
    assert!(
        r.ok,
        "tool-call rate below {MIN_RATE} (valid) or {MIN_EXACT} (exact) on some API:\n{}\n{}\nserver log:\n{}",
        r.stdout,
        r.stderr,
        server.log()
    );
    let summary: serde_json::Value =
        serde_json::from_str(r.stdout.lines().last().unwrap_or("")).expect("summary JSON");
    for api in ["chat", "chat_stream", "responses", "messages"] {
        let valid = summary[api]["valid"].as_f64().expect("rate");
        let exact = summary[api]["exact"].as_f64().expect("rate");
        assert!(
            valid >= 0.8 && exact >= 0.8,
            "{api}: valid {valid}, exact {exact}"
        );
    }
}

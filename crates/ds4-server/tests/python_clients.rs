//! Runs tests/python (the official `openai` and `anthropic` SDKs) against this
//! server over a scripted backend that answers by prompt content. Needs
//! `DS4_PYTHON` with the packages of tools/requirements-ci.txt; skipped (with the
//! reason printed) otherwise.

mod common;

use std::process::Command;
use std::sync::Arc;

use ds4_server::{ScriptControl, ServerConfig};
use ds4_tokenizer::{SpecialMode, Tokenizer};

use common::bundled_tokenizer as tokenizer;

const DSML: &str = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

/// The scripted model: reasoning when the prompt opens a `<think>`, a weather tool
/// call when the last user turn asks about weather, otherwise a greeting.
fn respond(tok: &Tokenizer, prompt: &[u32]) -> Vec<u32> {
    let text = tok.decode(prompt).unwrap_or_default();
    let last_user = text.rsplit("<｜User｜>").next().unwrap_or("");
    let mut out = String::new();
    if text.ends_with("<think>") {
        out.push_str("Let me think.</think>");
    }
    let tools = text.contains("get_weather");
    if tools && last_user.contains("weather") && !last_user.contains("<tool_result>") {
        out.push_str(DSML);
        return tok.encode(&out, SpecialMode::Recognize);
    }
    out.push_str("Hello from ds4.");
    let mut ids = tok.encode(&out, SpecialMode::Recognize);
    ids.push(tok.eos());
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_clients() {
    let Ok(python) = std::env::var("DS4_PYTHON") else {
        eprintln!(
            "SKIP official_python_clients: DS4_PYTHON is not set (see tools/requirements-ci.txt)"
        );
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import openai, anthropic"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP official_python_clients: {python} cannot import openai and anthropic");
        return;
    }
    let tok = tokenizer();
    let control = Arc::new(ScriptControl::default());
    let t2 = tok.clone();
    control.set_responder(Box::new(move |p| respond(&t2, p)));
    let cfg = ServerConfig {
        ctx: 8192,
        default_max_tokens: 512,
        api_key: Some("py-test-key".into()),
        ..ServerConfig::default()
    };
    let (addr, _state) = common::scripted_server(cfg, control).await;
    let url = format!("http://{addr}");

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "unittest", "discover", "-s", dir, "-v"])
            .env("DS4_SERVER_URL", &url)
            .env("DS4_API_KEY", "py-test-key")
            .env("DS4_SCRIPTED", "1")
            .output()
    })
    .await
    .expect("join")
    .expect("run python");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(out.status.success(), "python client tests failed");
    assert!(!log.contains("skipped"), "python client tests were skipped");
}

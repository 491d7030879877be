//! A small robustness run in CI: tools/robustness.py fires malformed, wrong-typed,
//! oversized, slowloris, stalled-body and mid-stream-disconnected requests at the
//! real binary on the demo model, then checks that a normal request, /health and
//! an empty queue remain. The same tool runs by hand with hundreds per class.

mod common;

use common::{ServerProcess, demo_model, run_python};

#[test]
fn hostile_clients_do_not_hurt_the_server() {
    let python = std::env::var("DS4_PYTHON").unwrap_or_else(|_| "python3".into());
    if std::process::Command::new(&python)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP hostile_clients_do_not_hurt_the_server: no {python}");
        return;
    }
    let server = ServerProcess::start(
        &demo_model(),
        &[
            "--ctx",
            "1024",
            "--api-key",
            "robust",
            "--max-body-bytes",
            "65536",
            "--read-timeout-ms",
            "1000",
            "-n",
            "32",
        ],
    );
    let r = run_python(
        &python,
        "tools/robustness.py",
        &[
            "--url",
            &server.base,
            "--api-key",
            "robust",
            "--per-class",
            "24",
            "--body-limit",
            "65536",
            "--ctx",
            "1024",
            "--read-timeout",
            "1",
        ],
        &[],
    );
    eprintln!("{}{}", r.stdout, r.stderr);
    assert!(r.ok, "robustness run failed; server log:\n{}", server.log());
    assert!(r.stdout.contains("ROBUSTNESS OK"));
    assert_eq!(server.metric("ds4_queue_depth"), 0.0);
    assert!(server.metric("ds4_client_disconnects_total") >= 1.0);
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

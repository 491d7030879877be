//! The KV cache on disk and parked sessions, through the HTTP API on a real
//! engine: a small random-weight DeepSeek V4 (the tiny checkpoint's shape with
//! the real 129,280-token vocabulary, so the bundled tokenizer drives it).
//!
//! * a long prompt is cold-saved; after a clean restart, and separately after a
//!   `kill -9` of the binary once the cold save is on disk, the same prompt plus
//!   a suffix prefills only the suffix (`cached_tokens`) and answers exactly as
//!   an uncached server does with greedy sampling;
//! * two conversations alternating resume from parked sessions; many
//!   conversations keep parked RAM within `--kv-ram-mb`, the least recently
//!   used going to disk, from where they resume;
//! * a directory that cannot be used leaves the server serving.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ds4_engine::{Model, ModelConfig, SyntheticSource};
use ds4_server::kvdisk::{KvConfig, model_identity};
use ds4_server::{AppState, EngineBackend, ServerConfig};
use serde_json::{Value, json};

const CTX: usize = 2048;

use common::bundled_tokenizer as tokenizer;

fn config() -> ModelConfig {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4/config.json"),
    )
    .expect("tiny config");
    let mut cfg = ModelConfig::from_official_json(&text).expect("config");
    cfg.n_vocab = 129_280;
    cfg
}

fn model() -> Model {
    let cfg = config();
    Model::new(cfg.clone(), &SyntheticSource::new(cfg, 7)).expect("synthetic model")
}

/// Small knobs so a few hundred tokens exercise every rule.
fn kv(dir: Option<&Path>, ram_mb: u64, identity: ds4_kvstore::Identity) -> KvConfig {
    KvConfig {
        disk_dir: dir.map(Path::to_path_buf),
        disk_space_mb: 64,
        min_tokens: 64,
        cold_max_tokens: 4000,
        continued_interval_tokens: 0,
        boundary_trim_tokens: 8,
        boundary_align_tokens: 32,
        reject_different_quant: false,
        ram_mb,
        identity,
    }
}

struct Server {
    base: String,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl Server {
    async fn start(kv: KvConfig) -> Self {
        let model = model();
        let cfg = ServerConfig {
            ctx: CTX,
            default_max_tokens: 16,
            kv,
            ..ServerConfig::default()
        };
        let state = AppState::start(cfg, tokenizer(), Box::new(EngineBackend::new(model, CTX)))
            .expect("worker");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(ds4_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            base,
            state,
            stop: Some(tx),
            http: reqwest::Client::new(),
        }
    }

    /// Clean shutdown: the worker finishes and writes its shutdown saves.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.state.shutdown();
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || st.join_worker())
            .await
            .expect("join");
    }

    async fn chat(&self, messages: &Value) -> Value {
        chat_at(&self.http, &self.base, messages).await
    }

    async fn metric(&self, name: &str) -> f64 {
        metric_at(&self.http, &self.base, name).await
    }
}

async fn chat_at(http: &reqwest::Client, base: &str, messages: &Value) -> Value {
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "x",
            "messages": messages,
            "max_tokens": 12,
            "temperature": 0,
            "thinking": {"type": "disabled"},
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

async fn metric_at(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn cached(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens")
}

fn prompt_tokens(v: &Value) -> u64 {
    v["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens")
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A system prompt of a few hundred tokens and a question.
fn conversation(topic: &str, words: usize) -> Value {
    let system: String = (0..words)
        .map(|i| format!("{topic}{} ", i * 7 % 101))
        .collect();
    json!([
        {"role": "system", "content": system},
        {"role": "user", "content": format!("Tell me about {topic}.")},
    ])
}

fn extended(conv: &Value, answer: &str, next: &str) -> Value {
    let mut v = conv.as_array().expect("array").clone();
    v.push(json!({"role": "assistant", "content": answer}));
    v.push(json!({"role": "user", "content": next}));
    Value::Array(v)
}

fn kv_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "kv"))
                .collect()
        })
        .unwrap_or_default()
}

/// Token count in a file's header (FORMAT.md: u32 at offset 52).
fn file_tokens(p: &Path) -> u64 {
    let b = std::fs::read(p).expect("read");
    u32::from_le_bytes([b[52], b[53], b[54], b[55]]) as u64
}

fn identity() -> ds4_kvstore::Identity {
    static ID: OnceLock<ds4_kvstore::Identity> = OnceLock::new();
    *ID.get_or_init(|| model_identity(&model(), 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_disk_and_matches_an_uncached_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = identity();
    let conv = conversation("river", 160);

    let s = Server::start(kv(Some(dir.path()), 0, id)).await;
    let first = s.chat(&conv).await;
    assert_eq!(cached(&first), 0);
    let n1 = prompt_tokens(&first);
    assert!(n1 > 300, "a long prompt: {n1} tokens");
    // The cold save stopped at the chat anchor (the last <｜User｜> before the
    // first <｜Assistant｜>) and was written before the prefill went on.
    let files = kv_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let cold = file_tokens(&files[0]);
    assert!(cold >= 64 && cold < n1, "cold save of {cold} tokens");
    assert_eq!(s.metric("ds4_kv_disk_saves_total").await, 1.0);
    s.stop().await;
    // Shutdown saved the whole live session too.
    let files = kv_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");

    let next = extended(&conv, &content(&first), "And then?");
    let s = Server::start(kv(Some(dir.path()), 0, id)).await;
    assert!(s.metric("ds4_kv_disk_bytes").await > 0.0);
    assert_eq!(
        s.metric("ds4_kv_disk_budget_bytes").await,
        (64u64 << 20) as f64
    );
    let resumed = s.chat(&next).await;
    let n2 = prompt_tokens(&resumed);
    let c2 = cached(&resumed);
    assert!(c2 >= cold && c2 < n2, "cached {c2} of {n2}");
    assert_eq!(s.metric("ds4_kv_disk_hits_total").await, 1.0);
    // The same prompt again is all cached (live reuse), as it would be anyway.
    let again = s.chat(&next).await;
    assert_eq!(content(&again), content(&resumed));
    s.stop().await;

    // Greedy output equals a server that never saw the cache.
    let plain = Server::start(kv(None, 0, id)).await;
    let reference = plain.chat(&next).await;
    assert_eq!(cached(&reference), 0);
    assert_eq!(prompt_tokens(&reference), n2);
    assert_eq!(content(&resumed), content(&reference));
    assert!(!content(&reference).is_empty());
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_conversations_resume_from_parked_sessions() {
    let id = identity();
    let s = Server::start(kv(None, 64, id)).await;
    let a = conversation("alpha", 60);
    let b = conversation("beta", 60);
    let ra = s.chat(&a).await;
    let rb = s.chat(&b).await;
    assert_eq!(cached(&rb), 0);
    assert_eq!(s.metric("ds4_kv_parked_sessions").await, 1.0);
    // A continues: its whole previous turn (prompt and answer) is reused, not
    // only the prefix it shares with B.
    let a2 = extended(&a, &content(&ra), "More.");
    let ra2 = s.chat(&a2).await;
    assert!(
        cached(&ra2) >= prompt_tokens(&ra),
        "{} < {}",
        cached(&ra2),
        prompt_tokens(&ra)
    );
    let b2 = extended(&b, &content(&rb), "More.");
    let rb2 = s.chat(&b2).await;
    assert!(cached(&rb2) >= prompt_tokens(&rb));
    assert_eq!(s.metric("ds4_kv_parked_hits_total").await, 2.0);
    s.stop().await;

    let plain = Server::start(kv(None, 0, id)).await;
    assert_eq!(content(&plain.chat(&a2).await), content(&ra2));
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_stay_within_the_ram_budget_and_spill_to_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = identity();
    // One parked session of this model is about 0.5 MB: 1 MB holds one or two.
    let s = Server::start(kv(Some(dir.path()), 1, id)).await;
    let convs: Vec<Value> = (0..5)
        .map(|i| conversation(&format!("topic{i}x"), 40))
        .collect();
    let mut first = Vec::new();
    for c in &convs {
        first.push(s.chat(c).await);
        assert!(s.metric("ds4_kv_parked_bytes").await <= (1u64 << 20) as f64);
    }
    let parked = s.metric("ds4_kv_parked_sessions").await;
    assert!((1.0..4.0).contains(&parked), "{parked} parked");
    // The oldest went to disk (evict saves besides the cold ones), and comes
    // back from there.
    let saves = s.metric("ds4_kv_disk_saves_total").await;
    assert!(saves > 5.0, "{saves} saves");
    let again = extended(&convs[0], &content(&first[0]), "Go on.");
    let r = s.chat(&again).await;
    assert!(cached(&r) >= prompt_tokens(&first[0]), "{}", cached(&r));
    assert_eq!(s.metric("ds4_kv_disk_hits_total").await, 1.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_directory_leaves_the_server_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let s = Server::start(kv(Some(&file), 0, identity())).await;
    let r = s.chat(&conversation("gamma", 80)).await;
    assert!(prompt_tokens(&r) > 64);
    assert_eq!(s.metric("ds4_kv_disk_budget_bytes").await, 0.0);
    s.stop().await;
}

/// The binary on a GGUF of the same model: SIGKILL after the cold save, then a
/// restart resumes from that file; SIGTERM then saves the live session.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_resumes_after_kill_9_following_the_cold_save() {
    use std::process::{Child, Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = dir.path().join("model.gguf");
    let cfg = config();
    ds4_engine::build_gguf(&cfg, &SyntheticSource::new(cfg.clone(), 7), &|_| {
        ds4_gguf::GgmlType::F32
    })
    .expect("gguf")
    .write_file(&gguf)
    .expect("write gguf");
    let kvdir = dir.path().join("kv");

    fn spawn(gguf: &Path, kvdir: &Path, port: u16) -> Child {
        Command::new(env!("CARGO_BIN_EXE_ds4-server"))
            .args([
                "-m",
                gguf.to_str().expect("utf8"),
                "--ctx",
                "2048",
                "--port",
            ])
            .arg(port.to_string())
            .args(["--kv-disk-dir", kvdir.to_str().expect("utf8")])
            .args([
                "--kv-cache-min-tokens",
                "64",
                "--kv-cache-boundary-align-tokens",
                "32",
            ])
            .args([
                "--kv-cache-boundary-trim-tokens",
                "8",
                "--kv-cache-continued-interval-tokens",
                "0",
            ])
            .args(["-t", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ds4-server")
    }
    async fn wait_up(http: &reqwest::Client, base: &str) {
        let t0 = Instant::now();
        while http.get(format!("{base}/v1/models")).send().await.is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let conv = conversation("delta", 120);

    let mut child = spawn(&gguf, &kvdir, port);
    wait_up(&http, &base).await;
    let first = chat_at(&http, &base, &conv).await;
    let files = kv_files(&kvdir);
    assert_eq!(files.len(), 1, "the cold save is on disk: {files:?}");
    let cold = file_tokens(&files[0]);
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert_eq!(kv_files(&kvdir).len(), 1, "no shutdown save after kill -9");

    let mut child = spawn(&gguf, &kvdir, port);
    wait_up(&http, &base).await;
    let next = extended(&conv, &content(&first), "Why?");
    let resumed = chat_at(&http, &base, &next).await;
    assert_eq!(cached(&resumed), cold, "resumed from the cold save");
    assert_eq!(metric_at(&http, &base, "ds4_kv_disk_hits_total").await, 1.0);
    // A clean stop (SIGTERM) writes the live session before the process exits.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let t0 = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let files = kv_files(&kvdir);
    assert_eq!(files.len(), 2, "cold + shutdown save: {files:?}");
    assert!(
        files
            .iter()
            .any(|f| file_tokens(f) > prompt_tokens(&resumed))
    );

    // The same answer as an in-process server without any cache.
    let plain = Server::start(kv(None, 0, identity())).await;
    let reference = plain.chat(&next).await;
    assert_eq!(content(&resumed), content(&reference));
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continued_saves_at_absolute_frontiers_and_one_server_per_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = identity();
    // Interval 50 rounds up to the 32 alignment: saves at 64, 128, 192, ...
    let s = Server::start(KvConfig {
        continued_interval_tokens: 50,
        ..kv(Some(dir.path()), 0, id)
    })
    .await;
    let r = s.chat(&conversation("epsilon", 160)).await;
    let n = prompt_tokens(&r)
        + r["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion");
    let mut saved: Vec<u64> = kv_files(dir.path())
        .iter()
        .map(|f| file_tokens(f))
        .collect();
    saved.sort();
    let continued: Vec<u64> = (1..).map(|k| 64 * k).take_while(|&b| b < n).collect();
    for b in &continued {
        assert!(saved.contains(b), "no continued save at {b}: {saved:?}");
    }
    // Plus the cold save at the chat anchor, which is not a multiple of 64.
    assert_eq!(saved.len(), continued.len() + 1, "{saved:?}");

    // A second server on the same directory runs without the disk cache.
    let other = Server::start(kv(Some(dir.path()), 0, id)).await;
    assert_eq!(other.metric("ds4_kv_disk_budget_bytes").await, 0.0);
    assert!(prompt_tokens(&other.chat(&conversation("zeta", 40)).await) > 0);
    other.stop().await;
    s.stop().await;
}

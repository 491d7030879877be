//! Limits that protect the single worker from clients, over real sockets and a
//! scripted backend whose `decodes` counter shows exactly how far generation ran:
//! a disconnect stops generation within one token, a client that stops reading
//! is dropped after the send-stall limit, slow headers and bodies are cut off,
//! oversized bodies get a JSON 413.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ds4_server::trace::Trace;
use ds4_server::{AppState, ScriptControl, ServerConfig};
use ds4_tokenizer::SpecialMode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::bundled_tokenizer as tokenizer;

struct Server {
    addr: String,
    control: Arc<ScriptControl>,
    state: Arc<AppState>,
}

impl Server {
    async fn start(cfg: ServerConfig) -> Self {
        let control = Arc::new(ScriptControl::default());
        let (addr, state) = common::scripted_server(cfg, control.clone()).await;
        Self {
            addr,
            control,
            state,
        }
    }

    fn script(&self, text: &str) {
        let tok = tokenizer();
        let mut ids = tok.encode(text, SpecialMode::Recognize);
        ids.push(tok.eos());
        self.control.push_script(ids);
    }

    fn metric(&self, name: &str) -> u64 {
        let text = self.state.shared.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    fn request(&self, path: &str, body: &Value) -> Vec<u8> {
        let body = body.to_string();
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .into_bytes()
    }

    /// A whole request on a fresh connection: (status, body).
    /// A plain chat request answered by `reply` (scripted): the worker is free again.
    async fn chat_scripted(&self, reply: &str) -> (u16, String) {
        self.script(reply);
        self.roundtrip(&self.request(
            "/v1/chat/completions",
            &json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]}),
        ))
        .await
    }

    async fn roundtrip(&self, raw: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).await.expect("connect");
        s.write_all(raw).await.expect("send");
        read_response(&mut s).await
    }
}

/// Reads one response (Content-Length or until close): (status, body).
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if len.is_some_and(|n| body.len() >= n) {
                let status = head[9..12].parse().expect("status");
                return (status, body.to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .unwrap_or(0);
        if n == 0 {
            let text = String::from_utf8_lossy(&buf).into_owned();
            let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
            return (status, body);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Waits until `decodes` has not moved for `quiet` and returns it.
async fn settled(control: &ScriptControl, quiet: Duration) -> usize {
    let mut last = control.decodes.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(quiet).await;
        let now = control.decodes.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Streams a chat request, reads until `want` content deltas arrived, then
/// closes the socket (with an RST when `reset`). Returns the deltas seen.
async fn stream_then_close(s: &Server, want: usize, reset: bool) -> usize {
    let mut c = TcpStream::connect(&s.addr).await.expect("connect");
    let req = s.request(
        "/v1/chat/completions",
        &json!({"model": "deepseek-chat", "stream": true, "max_tokens": 250,
                "messages": [{"role": "user", "content": "sing"}]}),
    );
    c.write_all(&req).await.expect("send");
    let mut text = String::new();
    let mut chunk = [0u8; 4096];
    let seen = loop {
        let n = c.read(&mut chunk).await.expect("read");
        assert!(n > 0, "stream ended early: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        let seen = text.matches("\"content\":").count();
        if seen >= want {
            break seen;
        }
    };
    if reset {
        // Linger 0 makes close send an RST and never blocks.
        #[allow(deprecated)]
        c.set_linger(Some(Duration::ZERO)).expect("linger");
    }
    drop(c);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_stops_generation_within_one_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace_path = dir.path().join("trace.jsonl");
    let s = Server::start(ServerConfig {
        ctx: 4096,
        trace: Some(Arc::new(Trace::create(&trace_path).expect("trace"))),
        ..ServerConfig::default()
    })
    .await;
    // 100 ms per token: far longer than the disconnect takes to reach the worker.
    s.control.decode_delay_ms.store(100, Ordering::SeqCst);

    // RST: the server's first write after the close fails, so the token being
    // decoded while it is written is the last one.
    s.script(&"la ".repeat(200));
    let seen = stream_then_close(&s, 5, true).await;
    let decoded = settled(&s.control, Duration::from_millis(400)).await;
    assert!(
        decoded <= seen + 1,
        "RST after {seen} tokens: {decoded} decoded (at most one more)"
    );
    assert!(decoded >= seen, "{decoded} < {seen}");
    assert_eq!(s.metric("ds4_client_disconnects_total"), 1);

    // FIN: the first write after a FIN still succeeds (the peer answers it with
    // an RST), so the server learns at the second one; one token after that.
    let before = s.control.decodes.load(Ordering::SeqCst);
    s.script(&"la ".repeat(200));
    let seen = stream_then_close(&s, 5, false).await;
    let decoded = settled(&s.control, Duration::from_millis(400)).await - before;
    assert!(
        decoded <= seen + 2,
        "FIN after {seen} tokens: {decoded} decoded"
    );
    assert_eq!(s.metric("ds4_client_disconnects_total"), 2);

    // The worker is free: a normal request goes through.
    s.control.decode_delay_ms.store(0, Ordering::SeqCst);
    let (status, body) = s.chat_scripted("ok").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "ok");

    // The trace says the client left.
    let trace = std::fs::read_to_string(&trace_path).expect("trace");
    let gone = trace
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "done" && r["finish"] == "client_gone")
        .count();
    assert_eq!(gone, 2, "{trace}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_generation_stops() {
    let s = Server::start(ServerConfig {
        ctx: 1 << 20,
        send_stall: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    // The kernel buffers on both sides (up to 4 MB) fill first: about 16k
    // tokens of this script, about 15 s of scripted generation.
    const N: usize = 100_000;
    s.script(&"la ".repeat(N));
    // A small receive window: the server's sends block soon.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut c = sock
        .connect(s.addr.parse().expect("addr"))
        .await
        .expect("connect");
    let req = s.request(
        "/v1/chat/completions",
        &json!({"model": "deepseek-chat", "stream": true, "max_tokens": N, "temperature": 0,
                "messages": [{"role": "user", "content": "flood"}]}),
    );
    c.write_all(&req).await.expect("send");
    // Never read. The stall limit drops the connection and the worker stops.
    let stalled = wait_until(Duration::from_secs(90), || {
        s.state.shared.metrics.send_stalls.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(stalled, "no send stall detected");
    let decoded = settled(&s.control, Duration::from_millis(300)).await;
    assert!(decoded < N / 2, "generation ran on: {decoded} of {N}");
    assert_eq!(s.metric("ds4_client_disconnects_total"), 1);
    let (status, _) = s.chat_scripted("ok").await;
    assert_eq!(status, 200);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_stalled_bodies_are_cut_off_and_big_bodies_refused() {
    let s = Server::start(ServerConfig {
        ctx: 4096,
        read_timeout: Duration::from_millis(300),
        body_limit: 10_000,
        ..ServerConfig::default()
    })
    .await;
    // Half a request line, then nothing: closed after the read timeout.
    let mut c = TcpStream::connect(&s.addr).await.expect("connect");
    c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .expect("send");
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "slow headers: {answer:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(250));
    // An idle connection is closed too.
    let mut idle = TcpStream::connect(&s.addr).await.expect("connect");
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("idle closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Complete headers, part of the body, then nothing: a JSON 408.
    let mut c = TcpStream::connect(&s.addr).await.expect("connect");
    c.write_all(
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n{{\"messages\"",
            s.addr
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let (status, body) = read_response(&mut c).await;
    assert_eq!(status, 408, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["type"], "error", "Anthropic's shape on /v1/messages");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stalled"))
    );

    // Declared too large: 413 before the body is read.
    let (status, body) = s
        .roundtrip(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Length: 20000\r\n\r\n",
                s.addr
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--max-body-bytes")),
        "{v}"
    );
    // Chunked, no length, over the limit: 413 once the limit is crossed.
    let mut c = TcpStream::connect(&s.addr).await.expect("connect");
    let mut raw = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.addr
    )
    .into_bytes();
    for _ in 0..4 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend_from_slice(&[b'x'; 0x1000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let _ = c.write_all(&raw).await;
    let (status, _) = read_response(&mut c).await;
    assert_eq!(status, 413);
    assert_eq!(s.metric("ds4_requests_invalid_total"), 3);

    // Nothing reached the worker, and it still answers.
    assert_eq!(s.control.syncs.load(Ordering::SeqCst), 0);
    let (status, body) = s.chat_scripted("fine").await;
    assert_eq!(status, 200, "{body}");
}

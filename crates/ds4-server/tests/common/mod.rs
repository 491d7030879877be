//! End-to-end harness shared by the test files that drive the real `ds4-server`
//! binary: the bundled demo model (generated once per target dir), the server as
//! a child process on a free port, a tiny blocking HTTP client for `/health` and
//! `/metrics`, and the official Python SDKs through `DS4_PYTHON`.
//!
//! Use from a test file with `mod common;` (each test binary compiles its own
//! copy, so not every item is used everywhere).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The server on a free local port over a scripted backend (`control` forces the
/// generated tokens; tokenizer, chat encoder and DSML parser are the real ones), served
/// on the calling test's tokio runtime. Returns its address (`host:port`) and state.
pub async fn scripted_server(
    cfg: ds4_server::ServerConfig,
    control: Arc<ds4_server::ScriptControl>,
) -> (String, Arc<ds4_server::AppState>) {
    let tok = bundled_tokenizer();
    let backend = ds4_server::ScriptedBackend::new(tok.vocab_size(), cfg.ctx, tok.eos(), control);
    let state = ds4_server::AppState::start(cfg, tok, Box::new(backend)).expect("worker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(ds4_server::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (addr, state)
}

/// The tokenizer bundled with the repository (the real 129,280-token vocabulary),
/// loaded once per test binary.
pub fn bundled_tokenizer() -> Arc<ds4_tokenizer::Tokenizer> {
    static TOK: OnceLock<Arc<ds4_tokenizer::Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/tokenizer/deepseek-v4-tokenizer.json.gz"
        );
        let gz = std::fs::read(path).expect("bundled tokenizer");
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut json)
            .expect("gunzip");
        Arc::new(ds4_tokenizer::Tokenizer::from_json_bytes(&json).expect("tokenizer"))
    })
    .clone()
}

/// The demo model (random weights, real tokenizer, published q2 layout), made by
/// the same generator as `ds4`'s first run, into this target dir's temp space.
pub fn demo_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ds4-demo-model");
        ds4_cli::demo::ensure_random_in(&dir).expect("generating the demo model")
    })
    .clone()
}

/// The venv Python with the official clients, or `None` after printing why the
/// caller is skipped.
pub fn python_with_clients(test: &str) -> Option<String> {
    let Ok(python) = std::env::var("DS4_PYTHON") else {
        eprintln!("SKIP {test}: DS4_PYTHON is not set (see tools/requirements-ci.txt, .ci/run)");
        return None;
    };
    let probe = Command::new(&python)
        .args(["-c", "import openai, anthropic"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP {test}: {python} cannot import openai and anthropic");
        return None;
    }
    Some(python)
}

/// A running `ds4-server` child; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub addr: String,
    pub api_key: Option<String>,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Start the binary on `model` with `args` (e.g. `--ctx`, `--api-key`) on a
    /// free loopback port, and wait until `/health` answers.
    pub fn start(model: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ds4-server"));
        cmd.arg("-m")
            .arg(model)
            .args(["--bind", "127.0.0.1:0", "-t", "2"])
            .args(args)
            .env_remove("DS4_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ds4-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            // Drain stderr for the whole run: a full pipe would block the server.
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(a) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(a.trim().to_owned());
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let api_key = args
            .iter()
            .position(|a| *a == "--api-key")
            .and_then(|i| args.get(i + 1))
            .map(|s| s.to_string());
        let addr = match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "ds4-server did not start:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        let s = Self {
            child,
            base: format!("http://{addr}"),
            addr,
            api_key,
            log,
        };
        let t0 = Instant::now();
        loop {
            if let Ok((200, _)) = s.request("GET", "/health", None, false) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "/health never answered:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// One HTTP/1.1 request on a fresh connection (with the key when `auth`):
    /// (status, body). Enough for `/health`, `/metrics` and small JSON posts.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: bool,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if auth && let Some(k) = &self.api_key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        if let Some(b) = body {
            s.write_all(b.as_bytes())?;
        }
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }

    /// A Prometheus sample's value from `/metrics` (`name` with its labels).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, text) = self
            .request("GET", "/metrics", None, true)
            .expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    /// Process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit on its own (after a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The result of one Python run.
pub struct PyRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run a Python file from the repository (`tests/python/...` or `tools/...`)
/// with `args` and extra environment; stdout/stderr are captured.
pub fn run_python(python: &str, repo_file: &str, args: &[&str], env: &[(&str, &str)]) -> PyRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(repo_file);
    let mut cmd = Command::new(python);
    cmd.arg(&path).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python");
    PyRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run a unittest file against `server`: asserts that it passed and that no test
/// was skipped; returns the unittest log.
pub fn run_python_tests(
    python: &str,
    server: &ServerProcess,
    repo_file: &str,
    env: &[(&str, &str)],
) -> String {
    let mut all_env = vec![("DS4_SERVER_URL", server.base.as_str())];
    if let Some(k) = &server.api_key {
        all_env.push(("DS4_API_KEY", k.as_str()));
    }
    all_env.extend_from_slice(env);
    let r = run_python(python, repo_file, &["-v"], &all_env);
    let log = format!("{}{}", r.stdout, r.stderr);
    eprintln!("{log}");
    assert!(r.ok, "{repo_file} failed; server log:\n{}", server.log());
    assert!(!log.contains("skipped"), "{repo_file}: tests were skipped");
    log
}

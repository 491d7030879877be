//! `--trace FILE`: a debugging log of what the server was asked and what it
//! generated, one JSON object per line (ds4 writes a free-text log; JSON lines
//! are our choice, so `jq` and scripts can read it).
//!
//! Records, all with `"event"`, `"id"` (the request's trace sequence number) and
//! `"time"` (Unix seconds, fractional):
//! * `request`: api, model, stream, tools, thinking, max_tokens, sampling, stops,
//!   prompt_tokens, the raw request `body` and the rendered `prompt`;
//! * `done`: finish (`stop`, `length`, `tool_calls`, `error`, `cancelled`, or
//!   `client_gone` when the client left before the worker finished), error,
//!   prompt/cached/completion tokens, `reasoning`, `content`, `tool_calls`,
//!   seconds to the first token and in total;
//! * `rejected`: a request refused before the worker (4xx, 429): path, status,
//!   message and the raw body.
//!
//! The file is truncated at open (ds4's rule) and each record is one `write` under
//! a lock, so lines never interleave. Write errors are reported once on stderr
//! and never fail a request.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use crate::worker::{Api, Finish, GenRequest, Usage, WorkerEvent};

pub struct Trace {
    file: Mutex<File>,
    seq: AtomicU64,
    failed: AtomicBool,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn api_name(api: Api) -> &'static str {
    crate::metrics::API_LABELS[api.index()]
}

impl Trace {
    /// Create or truncate `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: Mutex::new(File::create(path)?),
            seq: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    fn write(&self, mut v: Value) {
        v["time"] = now().into();
        let mut line = v.to_string();
        line.push('\n');
        let r = match self.file.lock() {
            Ok(mut f) => f.write_all(line.as_bytes()),
            Err(_) => Ok(()),
        };
        if let Err(e) = r
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            eprintln!("ds4-server: writing the trace file failed: {e}");
        }
    }

    /// Prepare a request's record; [`TraceRun::accepted`] writes it once the job
    /// is queued, and the run then logs its outcome.
    pub fn begin(self: &Arc<Self>, req: &GenRequest, model: &str, body: &[u8]) -> TraceRun {
        let s = &req.sampling;
        let record = json!({
            "event": "request", "api": api_name(req.api), "model": model,
            "stream": req.stream, "tools": req.tools, "thinking": req.thinking,
            "max_tokens": req.max_tokens,
            "sampling": {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                         "min_p": s.min_p, "seed": s.seed},
            "stops": req.stops, "prompt_tokens": req.tokens.len(),
            "body": String::from_utf8_lossy(body), "prompt": req.prompt_text,
        });
        TraceRun {
            trace: self.clone(),
            id: 0,
            record: Some(record),
            t0: Instant::now(),
            first_token_s: None,
            usage: Usage::default(),
            reasoning: String::new(),
            content: String::new(),
            calls: Vec::new(),
            done: false,
        }
    }

    /// Log a request refused before it reached the worker.
    pub fn rejected(&self, path: &str, status: u16, message: &str, body: &[u8]) {
        let id = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.write(json!({
            "event": "rejected", "id": id, "path": path, "status": status,
            "message": message, "body": String::from_utf8_lossy(body),
        }));
    }
}

/// The outcome side of one traced request, fed every worker event.
pub struct TraceRun {
    trace: Arc<Trace>,
    id: u64,
    /// The request record until the job is accepted.
    record: Option<Value>,
    t0: Instant,
    first_token_s: Option<f64>,
    usage: Usage,
    reasoning: String,
    content: String,
    calls: Vec<Value>,
    done: bool,
}

impl TraceRun {
    /// The job is queued: write its request record.
    pub fn accepted(&mut self) {
        if let Some(mut r) = self.record.take() {
            self.id = self.trace.seq.fetch_add(1, Ordering::Relaxed) + 1;
            r["id"] = self.id.into();
            self.trace.write(r);
            self.t0 = Instant::now();
        }
    }

    pub fn on(&mut self, ev: &WorkerEvent) {
        match ev {
            WorkerEvent::Started(u) => {
                self.usage = *u;
                self.first_token_s = Some(self.t0.elapsed().as_secs_f64());
            }
            WorkerEvent::Reasoning(s) => self.reasoning.push_str(s),
            WorkerEvent::Text(s) => self.content.push_str(s),
            WorkerEvent::ToolsAborted { raw, first_index } => {
                self.calls.truncate(*first_index);
                self.content.push_str(raw);
            }
            WorkerEvent::ToolEnd {
                id,
                name,
                arguments_json,
                ..
            } => self
                .calls
                .push(json!({"id": id, "name": name, "arguments": arguments_json})),
            WorkerEvent::Done { finish, usage, .. } => {
                self.usage = *usage;
                let (name, err) = match finish {
                    Finish::Stop => ("stop", None),
                    Finish::Length => ("length", None),
                    Finish::ToolCalls => ("tool_calls", None),
                    Finish::Error(e) => ("error", Some(e.as_str())),
                    Finish::Cancelled => ("cancelled", None),
                };
                self.finish(name, err);
            }
            _ => {}
        }
    }

    fn finish(&mut self, finish: &str, error: Option<&str>) {
        if self.done || self.id == 0 {
            return;
        }
        self.done = true;
        let u = self.usage;
        self.trace.write(json!({
            "event": "done", "id": self.id, "finish": finish, "error": error,
            "prompt_tokens": u.prompt_tokens, "cached_tokens": u.cached_tokens,
            "completion_tokens": u.completion_tokens,
            "reasoning": self.reasoning, "content": self.content, "tool_calls": self.calls,
            "first_token_s": self.first_token_s, "elapsed_s": self.t0.elapsed().as_secs_f64(),
        }));
    }
}

impl Drop for TraceRun {
    fn drop(&mut self) {
        // The handler went away before the worker's Done: the client left.
        self.finish("client_gone", None);
    }
}

//! ds4-server: OpenAI- and Anthropic-compatible HTTP API over one live session.
//!
//! * Routes: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`,
//!   `/v1/completions`, `/v1/responses`, `/v1/messages`, `GET /health`, `GET /metrics`.
//! * One inference worker thread owns the [`Backend`] (see [`worker`]); handlers
//!   parse, render and tokenize, then queue a job (bounded: a full queue is a 429)
//!   and turn the worker's events into a JSON body or an SSE stream in the API's
//!   own shape ([`format`]). Dropping a stream (client gone) stops generation at
//!   the next token.
//! * With an API key, every route but `/health` needs `Authorization: Bearer KEY`
//!   or `x-api-key: KEY` (compared in constant time).

pub mod api;
pub mod backend;
pub mod error;
pub mod format;
pub mod kvdisk;
pub mod metrics;
pub mod net;
pub mod prompt;
pub mod replay;
pub use ds4_engine::sampling;
pub mod trace;
pub mod worker;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ds4_tokenizer::Tokenizer;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use backend::{
    Backend, BackendError, EngineBackend, ScriptControl, ScriptedBackend, SyncStats,
};
pub use error::ApiError;
pub use worker::{Api, Finish, Usage, WorkerEvent};

use format::{Collected, Meta, StreamFormat};
use worker::{Job, Shared, Worker};

/// The model id ds4 reports (any requested name is accepted and echoed).
pub const MODEL_ID: &str = "deepseek-v4-flash";
/// ds4's fixed `created` timestamp for the model object.
const MODEL_CREATED: u64 = 1_767_225_600;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub ctx: usize,
    /// Output budget when the request sets none (`-n`).
    pub default_max_tokens: usize,
    pub api_key: Option<String>,
    pub cors: bool,
    /// Jobs that may wait behind the running one.
    pub queue_capacity: usize,
    pub body_limit: usize,
    pub exact_replay: bool,
    pub tool_memory_max_ids: usize,
    /// Disk KV cache and parked sessions (`kvdisk`).
    pub kv: kvdisk::KvConfig,
    /// Longest wait for request headers (from the first byte of a request, or
    /// on an idle connection) and between two pieces of a request body: a
    /// slowloris client is cut off after this (ds4: 10 s socket timeouts).
    pub read_timeout: Duration,
    /// Longest a write to a client may make no progress before its connection
    /// is dropped (and its generation stopped): a client that stops reading
    /// its stream cannot hold the worker (ds4: 2000 ms).
    pub send_stall: Duration,
    /// `--trace FILE`.
    pub trace: Option<Arc<trace::Trace>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ctx: 32_768,
            default_max_tokens: 393_216,
            api_key: None,
            cors: false,
            queue_capacity: 16,
            body_limit: 64 << 20,
            exact_replay: true,
            tool_memory_max_ids: 100_000,
            kv: kvdisk::KvConfig::default(),
            read_timeout: Duration::from_secs(10),
            send_stall: Duration::from_millis(2000),
            trace: None,
        }
    }
}

pub struct AppState {
    pub cfg: ServerConfig,
    pub tokenizer: Arc<Tokenizer>,
    pub shared: Arc<Shared>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    seq: AtomicU64,
    worker_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AppState {
    /// Start the worker thread over `backend` and return the state the router uses.
    pub fn start(
        cfg: ServerConfig,
        tokenizer: Arc<Tokenizer>,
        backend: Box<dyn Backend>,
    ) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            metrics: metrics::Metrics::default(),
            replay: Mutex::new(replay::ReplayMap::new(cfg.tool_memory_max_ids, 512 << 20)),
            exact_replay: cfg.exact_replay,
        });
        // `sync_channel(n)` holds n waiting jobs; the running one is off the queue.
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue_capacity);
        let kv = kvdisk::KvState::open(cfg.kv.clone(), cfg.ctx, &shared.replay, &shared.metrics);
        let worker = Worker::new(backend, tokenizer.clone(), shared.clone()).with_kv(kv);
        let worker_thread = std::thread::Builder::new()
            .name("ds4-worker".into())
            .spawn(move || worker.run(rx))?;
        Ok(Arc::new(Self {
            cfg,
            tokenizer,
            shared,
            jobs: Mutex::new(Some(tx)),
            seq: AtomicU64::new(0),
            worker_thread: Mutex::new(Some(worker_thread)),
        }))
    }

    /// After [`AppState::shutdown`]: wait until the worker has finished the
    /// queued jobs and its shutdown saves.
    pub fn join_worker(&self) {
        let h = self.worker_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    /// Stop accepting jobs; the worker drains the queue and exits.
    pub fn shutdown(&self) {
        if let Ok(mut j) = self.jobs.lock() {
            j.take();
        }
    }

    /// Queue a job; `model` and `body` are for the trace.
    fn submit(
        &self,
        req: worker::GenRequest,
        model: &str,
        body: &[u8],
    ) -> Result<Events, ApiError> {
        let api = req.api;
        let trace = self.cfg.trace.as_ref().map(|t| t.begin(&req, model, body));
        let (tx, rx) = unbounded_channel();
        let sender = self.jobs.lock().ok().and_then(|j| j.clone());
        let Some(sender) = sender else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "server shutting down",
            )
            .for_api(api));
        };
        let m = &self.shared.metrics;
        m.queue_depth.fetch_add(1, Ordering::SeqCst);
        match sender.try_send(Job { req, tx }) {
            Ok(()) => Ok(Events {
                rx,
                trace: trace.map(|mut t| {
                    t.accepted();
                    t
                }),
                state: self.shared.clone(),
                done: false,
            }),
            Err(e) => {
                m.queue_depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => {
                        m.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
                        ApiError {
                            code: Some("rate_limit_exceeded"),
                            ..ApiError::new(
                                StatusCode::TOO_MANY_REQUESTS,
                                "rate_limit_error",
                                format!("server busy: the request queue is full ({} waiting); retry later", self.cfg.queue_capacity),
                            )
                        }
                        .for_api(api)
                    }
                    TrySendError::Disconnected(_) => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        "server shutting down",
                    )
                    .for_api(api),
                })
            }
        }
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The router over a started state.
pub fn router(state: Arc<AppState>) -> Router {
    let cfg = state.cfg.clone();
    let mut r = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn(options_no_content))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            declared_too_large,
        ))
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            cfg.read_timeout,
        ))
        .with_state(state);
    if cfg.cors {
        use axum::http::{Method, header};
        r = r.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers(tower_http::cors::Any)
                .expose_headers([header::CONTENT_TYPE])
                .max_age(Duration::from_secs(600)),
        );
    }
    r
}

/// Bind and serve until `shutdown` resolves (see [`net::serve`]).
pub use net::serve;

async fn auth(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &s.cfg.api_key else {
        return next.run(req).await;
    };
    let h = req.headers();
    let given = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()));
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.as_bytes())));
    if ok {
        return next.run(req).await;
    }
    let api = if req.uri().path() == "/v1/messages" {
        Api::Messages
    } else {
        Api::Chat
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid or missing API key",
    )
    .for_api(api)
    .into_response()
}

/// A `Content-Length` over the limit is refused before any of the body is read
/// (the body limit alone would wait for bytes that are never coming).
async fn declared_too_large(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.cfg.body_limit as u64) {
        let api = if req.uri().path() == "/v1/messages" {
            Api::Messages
        } else {
            Api::Chat
        };
        let e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "request body is larger than {} bytes (--max-body-bytes)",
                s.cfg.body_limit
            ),
        )
        .for_api(api);
        return reject(&s, req.uri().path(), e, b"");
    }
    next.run(req).await
}

/// `OPTIONS` on any path → 204 (CORS headers come from the CORS layer, when on).
async fn options_no_content(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    next.run(req).await
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown endpoint",
    )
    .into_response()
}

fn model_object(cfg: &ServerConfig) -> serde_json::Value {
    json!({
        "id": MODEL_ID, "object": "model", "created": MODEL_CREATED, "owned_by": "ds4",
        "name": "DeepSeek V4 Flash", "context_length": cfg.ctx,
        "top_provider": {"context_length": cfg.ctx, "max_completion_tokens": cfg.default_max_tokens.min(cfg.ctx), "is_moderated": false},
        "supported_parameters": ["tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "stream", "reasoning_effort"],
    })
}

async fn list_models(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [model_object(&s.cfg)]})).into_response()
}

async fn get_model(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id == MODEL_ID || id == "deepseek-chat" || id == "deepseek-reasoner" {
        let mut m = model_object(&s.cfg);
        m["id"] = id.into();
        axum::Json(m).into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("model {id:?} not found"),
        )
        .into_response()
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.shared.metrics.render(),
    )
        .into_response()
}

/// A job's worker events as its handler sees them. Dropping it before `Done`
/// (the client went away) closes the channel, which the worker checks before
/// every token.
pub struct Events {
    rx: UnboundedReceiver<WorkerEvent>,
    trace: Option<trace::TraceRun>,
    state: Arc<Shared>,
    done: bool,
}

impl Events {
    async fn recv(&mut self) -> Option<WorkerEvent> {
        let Some(ev) = self.rx.recv().await else {
            self.done = true;
            return None;
        };
        if let Some(t) = &mut self.trace {
            t.on(&ev);
        }
        if matches!(ev, WorkerEvent::Done { .. }) {
            self.done = true;
        }
        Some(ev)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // Close first, so the worker stops even while the trace record is written.
        self.rx.close();
        if !self.done {
            self.state
                .metrics
                .client_disconnects
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn collect(mut rx: Events) -> Collected {
    let mut c = Collected::default();
    while let Some(ev) = rx.recv().await {
        let done = matches!(ev, WorkerEvent::Done { .. });
        c.apply(&ev);
        if done {
            break;
        }
    }
    if c.finish.is_none() {
        c.finish = Some(Finish::Error("the inference worker stopped".into()));
    }
    c.finalize_for_body();
    c
}

fn sse_response(rx: Events, fmt: impl StreamFormat) -> Response {
    struct St<F> {
        rx: Events,
        fmt: F,
        pending: VecDeque<Event>,
        done: bool,
    }
    let st = St {
        rx,
        fmt,
        pending: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(e), st));
            }
            if st.done {
                return None;
            }
            let mut out = Vec::new();
            match st.rx.recv().await {
                Some(ev) => {
                    st.done = matches!(ev, WorkerEvent::Done { .. });
                    st.fmt.on(&ev, &mut out);
                }
                None => {
                    st.done = true;
                    out.push(format::sse_error(false, "the inference worker stopped"));
                }
            }
            st.pending.extend(out);
        }
    });
    // Comments keep proxies and clients from timing out during a long prefill.
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(5))
                .text("prefill"),
        )
        .into_response()
}

fn early_error(c: &Collected, api: Api) -> Option<Response> {
    c.early_error().map(|m| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", m)
            .for_api(api)
            .into_response()
    })
}

fn meta(state: &AppState, prefix: &str, model: &str) -> Meta {
    Meta {
        id: state.next_id(prefix),
        model: model.to_owned(),
        created: now(),
    }
}

/// The body, or the error for one that could not be read: too large
/// (`--max-body-bytes`) → 413, stalled (`read_timeout`) → 408, else 400.
fn read_body(
    s: &AppState,
    api: Api,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let r = match body {
        Ok(b) => return Ok(b),
        Err(r) => r,
    };
    let e = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "request body is larger than {} bytes (--max-body-bytes)",
                s.cfg.body_limit
            ),
        )
    } else if format!("{r:?}").contains("TimeoutError") {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "request body stalled: no data for {} ms",
                s.cfg.read_timeout.as_millis()
            ),
        )
    } else {
        ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
    };
    Err(e.for_api(api))
}

/// Count, trace and answer a request refused before the worker.
fn reject(s: &AppState, path: &str, e: ApiError, body: &[u8]) -> Response {
    s.shared
        .metrics
        .invalid_requests
        .fetch_add(1, Ordering::Relaxed);
    if let Some(t) = &s.cfg.trace {
        t.rejected(path, e.status.as_u16(), &e.message, body);
    }
    e.into_response()
}

type Body = Result<Bytes, BytesRejection>;

/// A request that was read, built and queued.
struct Admitted {
    rx: Events,
    stream: bool,
    model: String,
    include_usage: bool,
    reasoning_summary: bool,
}

/// The common front of every generation endpoint: read the body, build the request
/// with the API's `build`, queue it. Any refusal is already the API's error response.
fn admit(
    s: &AppState,
    api: Api,
    path: &str,
    body: Body,
    build: fn(&ServerConfig, &AppState, &[u8]) -> Result<api::Built, ApiError>,
) -> Result<Admitted, Box<Response>> {
    let refuse = |e, body: &[u8]| Box::new(reject(s, path, e, body));
    let body = read_body(s, api, body).map_err(|e| refuse(e, b""))?;
    let built = build(&s.cfg, s, &body).map_err(|e| refuse(e.for_api(api), &body))?;
    let stream = built.req.stream;
    let rx = s
        .submit(built.req, &built.model, &body)
        .map_err(|e| refuse(e, &body))?;
    Ok(Admitted {
        rx,
        stream,
        model: built.model,
        include_usage: built.include_usage,
        reasoning_summary: built.reasoning_summary,
    })
}

async fn chat(State(s): State<Arc<AppState>>, body: Body) -> Response {
    let path = "/v1/chat/completions";
    let a = match admit(&s, Api::Chat, path, body, api::chat) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (rx, stream) = (a.rx, a.stream);
    let m = meta(&s, "chatcmpl-", &a.model);
    if stream {
        return sse_response(rx, format::ChatStream::new(m, a.include_usage, false));
    }
    let c = collect(rx).await;
    early_error(&c, Api::Chat)
        .unwrap_or_else(|| axum::Json(format::chat_body(&c, &m)).into_response())
}

async fn completions(State(s): State<Arc<AppState>>, body: Body) -> Response {
    let path = "/v1/completions";
    let a = match admit(&s, Api::Completions, path, body, api::completions) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (rx, stream) = (a.rx, a.stream);
    let m = meta(&s, "cmpl-", &a.model);
    if stream {
        return sse_response(rx, format::ChatStream::new(m, a.include_usage, true));
    }
    let c = collect(rx).await;
    early_error(&c, Api::Completions)
        .unwrap_or_else(|| axum::Json(format::completion_body(&c, &m)).into_response())
}

async fn messages(State(s): State<Arc<AppState>>, body: Body) -> Response {
    let path = "/v1/messages";
    let a = match admit(&s, Api::Messages, path, body, api::messages) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (rx, stream) = (a.rx, a.stream);
    let m = meta(&s, "msg_", &a.model);
    if stream {
        return sse_response(rx, format::AnthropicStream::new(m));
    }
    let c = collect(rx).await;
    early_error(&c, Api::Messages)
        .unwrap_or_else(|| axum::Json(format::anthropic_body(&c, &m)).into_response())
}

async fn responses(State(s): State<Arc<AppState>>, body: Body) -> Response {
    let path = "/v1/responses";
    let a = match admit(&s, Api::Responses, path, body, api::responses) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let (rx, stream) = (a.rx, a.stream);
    let m = Meta {
        id: format!("resp_{:024x}", rand::random::<u128>() >> 32),
        model: a.model.clone(),
        created: now(),
    };
    let ids = format::ResponsesIds::new();
    if stream {
        return sse_response(
            rx,
            format::ResponsesStream::new(m, ids, a.reasoning_summary),
        );
    }
    let c = collect(rx).await;
    early_error(&c, Api::Responses).unwrap_or_else(|| {
        axum::Json(format::responses_body(&c, &m, &ids, a.reasoning_summary)).into_response()
    })
}

//! `ds4-server`: serve a ds4 GGUF over the OpenAI and Anthropic HTTP APIs.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use ds4_server::trace::Trace;
use ds4_server::{AppState, EngineBackend, ServerConfig};

/// The official tokenizer.json, bundled so the server needs only the GGUF.
static TOKENIZER_GZ: &[u8] =
    include_bytes!("../../../assets/tokenizer/deepseek-v4-tokenizer.json.gz");

#[derive(Parser, Debug)]
#[command(
    name = "ds4-server",
    about = "OpenAI- and Anthropic-compatible server for DeepSeek V4 Flash"
)]
struct Args {
    /// Model file (ds4 GGUF).
    #[arg(short = 'm', long = "model", default_value = "ds4flash.gguf")]
    model: PathBuf,
    /// Context allocated at startup (one session).
    #[arg(short = 'c', long = "ctx", default_value_t = 32_768)]
    ctx: usize,
    /// Default max output tokens when a request gives no limit.
    #[arg(short = 'n', long = "tokens", default_value_t = 393_216)]
    tokens: usize,
    /// Listen address (IP:PORT); overrides --host/--port.
    #[arg(long)]
    bind: Option<String>,
    /// Bind host, IPv4 (`localhost` = 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Require this key on every endpoint but /health.
    #[arg(long = "api-key", env = "DS4_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Send permissive CORS headers.
    #[arg(long)]
    cors: bool,
    /// Requests that may wait behind the running one before new ones get 429.
    #[arg(long = "queue", default_value_t = 16)]
    queue: usize,
    /// Largest request body in bytes.
    #[arg(long = "max-body-bytes", default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Render tool-call history canonically instead of replaying sampled DSML.
    #[arg(long = "disable-exact-dsml-tool-replay")]
    disable_exact_replay: bool,
    /// Tool ids remembered for exact replay (LRU).
    #[arg(long = "tool-memory-max-ids", default_value_t = 100_000)]
    tool_memory_max_ids: usize,
    /// Worker threads for the CPU engine (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Directory of the disk KV cache (created, mode 0700); off without it.
    #[arg(long = "kv-disk-dir", value_name = "DIR")]
    kv_disk_dir: Option<PathBuf>,
    /// Disk KV cache budget in MB (least recently used files go first).
    #[arg(long = "kv-disk-space-mb", default_value_t = 4096)]
    kv_disk_space_mb: u64,
    /// Smallest prefix, in tokens, saved to or loaded from disk.
    #[arg(long = "kv-cache-min-tokens", default_value_t = 512)]
    kv_cache_min_tokens: usize,
    /// Cold-save fresh prompts of at most this many tokens (0: no cold saves).
    #[arg(long = "kv-cache-cold-max-tokens", default_value_t = 30_000)]
    kv_cache_cold_max_tokens: usize,
    /// Save at every absolute multiple of this many tokens (rounded up to the
    /// alignment; 0: off).
    #[arg(long = "kv-cache-continued-interval-tokens", default_value_t = 10_000)]
    kv_cache_continued_interval_tokens: usize,
    /// Tail tokens left out of a cold save.
    #[arg(long = "kv-cache-boundary-trim-tokens", default_value_t = 32)]
    kv_cache_boundary_trim_tokens: usize,
    /// Cold saves end on a multiple of this many tokens (0: anywhere).
    #[arg(long = "kv-cache-boundary-align-tokens", default_value_t = 2048)]
    kv_cache_boundary_align_tokens: usize,
    /// Refuse cache files written with the other routed-expert quantization.
    #[arg(long = "kv-cache-reject-different-quant")]
    kv_cache_reject_different_quant: bool,
    /// RAM for sessions parked besides the live one, in MB (0: one live
    /// session, as ds4).
    #[arg(long = "kv-ram-mb", default_value_t = 4096)]
    kv_ram_mb: u64,
    /// Log every request, its rendered prompt and its output to FILE, one JSON
    /// object per line (truncated at start).
    #[arg(long = "trace", value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Milliseconds a client may take to send its headers, or leave a request
    /// body without new data, before the connection is closed.
    #[arg(long = "read-timeout-ms", default_value_t = 10_000)]
    read_timeout_ms: u64,
    /// Milliseconds a send to a client may make no progress (it stopped
    /// reading) before its connection is dropped and its generation stopped.
    #[arg(long = "send-stall-ms", default_value_t = 2_000)]
    send_stall_ms: u64,
}

fn bind_addr(a: &Args) -> anyhow::Result<SocketAddr> {
    let text = match &a.bind {
        Some(b) => b.clone(),
        None => {
            let host = if a.host == "localhost" {
                "127.0.0.1"
            } else {
                a.host.as_str()
            };
            format!("{host}:{}", a.port)
        }
    };
    text.parse()
        .with_context(|| format!("--bind/--host: {text:?} is not an IP:PORT address"))
}

fn load_tokenizer() -> anyhow::Result<ds4_tokenizer::Tokenizer> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(TOKENIZER_GZ)
        .read_to_end(&mut json)
        .context("bundled tokenizer")?;
    Ok(ds4_tokenizer::Tokenizer::from_json_bytes(&json)?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.ctx < 16 {
        bail!("--ctx {} is too small", args.ctx);
    }
    if args.queue == 0 {
        bail!("--queue must be at least 1");
    }
    if args.read_timeout_ms == 0 || args.send_stall_ms == 0 {
        bail!("--read-timeout-ms and --send-stall-ms must be at least 1");
    }
    let addr = bind_addr(&args)?;
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("--threads")?;
    }
    let tokenizer = Arc::new(load_tokenizer()?);
    if !args.model.exists() {
        bail!(
            "model file {} not found (pass -m FILE)",
            args.model.display()
        );
    }
    let trace = match &args.trace {
        Some(p) => Some(Arc::new(
            Trace::create(p).with_context(|| format!("--trace {}", p.display()))?,
        )),
        None => None,
    };
    eprintln!("ds4-server: loading {}", args.model.display());
    let model = ds4_engine::Model::from_gguf(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let kv = ds4_server::kvdisk::KvConfig {
        disk_dir: args.kv_disk_dir.clone(),
        disk_space_mb: args.kv_disk_space_mb,
        min_tokens: args.kv_cache_min_tokens,
        cold_max_tokens: args.kv_cache_cold_max_tokens,
        continued_interval_tokens: args.kv_cache_continued_interval_tokens,
        boundary_trim_tokens: args.kv_cache_boundary_trim_tokens,
        boundary_align_tokens: args.kv_cache_boundary_align_tokens,
        reject_different_quant: args.kv_cache_reject_different_quant,
        ram_mb: args.kv_ram_mb,
        identity: ds4_server::kvdisk::model_identity(
            &model,
            ds4_server::kvdisk::quant_bits(&args.model),
        ),
    };
    kv.validate().map_err(anyhow::Error::msg)?;
    let backend = EngineBackend::new(model, args.ctx);
    let cfg = ServerConfig {
        ctx: args.ctx,
        default_max_tokens: args.tokens,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        cors: args.cors,
        queue_capacity: args.queue,
        body_limit: args.max_body_bytes,
        exact_replay: !args.disable_exact_replay,
        tool_memory_max_ids: args.tool_memory_max_ids,
        kv,
        read_timeout: Duration::from_millis(args.read_timeout_ms),
        send_stall: Duration::from_millis(args.send_stall_ms),
        trace,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = AppState::start(cfg, tokenizer, Box::new(backend))?;
        let worker_state = state.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        eprintln!("ds4-server: listening on http://{}", listener.local_addr()?);
        ds4_server::serve(listener, state, shutdown_signal()).await?;
        // The worker finishes queued jobs and its shutdown KV saves first.
        tokio::task::spawn_blocking(move || worker_state.join_worker()).await?;
        eprintln!("ds4-server: shut down");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

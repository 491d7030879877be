//! Prometheus text exposition of the server's counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub requests: [AtomicU64; 4],
    pub rejected_queue_full: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub live_prefix_hits: AtomicU64,
    pub queue_depth: AtomicU64,
    /// Sums for the rates: tokens and microseconds.
    pub prefill_tokens: AtomicU64,
    pub prefill_us: AtomicU64,
    pub decode_us: AtomicU64,
    /// Requests whose client left before the worker finished.
    pub client_disconnects: AtomicU64,
    /// Connections dropped because a write made no progress (`send_stall`).
    pub send_stalls: AtomicU64,
    /// Requests refused before the worker (4xx, 429).
    pub invalid_requests: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    /// Disk KV cache and parked sessions (issue #7).
    pub kv_disk_hits: AtomicU64,
    pub kv_parked_hits: AtomicU64,
    pub kv_disk_saves: AtomicU64,
    pub kv_disk_bytes: AtomicU64,
    pub kv_disk_budget_bytes: AtomicU64,
    pub kv_parked_sessions: AtomicU64,
    pub kv_parked_bytes: AtomicU64,
}

pub const API_LABELS: [&str; 4] = ["chat", "completions", "responses", "messages"];

impl Metrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let _ = writeln!(s, "# HELP ds4_requests_total Generation requests accepted.");
        let _ = writeln!(s, "# TYPE ds4_requests_total counter");
        for (label, c) in API_LABELS.iter().zip(&self.requests) {
            let _ = writeln!(s, "ds4_requests_total{{api=\"{label}\"}} {}", g(c));
        }
        let rate = |tokens: u64, us: u64| {
            if us == 0 {
                0.0
            } else {
                tokens as f64 * 1e6 / us as f64
            }
        };
        let rows: [(&str, &str, &str, String); 13] = [
            (
                "ds4_requests_rejected_total",
                "counter",
                "Requests refused because the queue was full.",
                g(&self.rejected_queue_full).to_string(),
            ),
            (
                "ds4_prompt_tokens_total",
                "counter",
                "Prompt tokens of finished requests.",
                g(&self.prompt_tokens).to_string(),
            ),
            (
                "ds4_cached_prompt_tokens_total",
                "counter",
                "Prompt tokens reused from the live session.",
                g(&self.cached_tokens).to_string(),
            ),
            (
                "ds4_generated_tokens_total",
                "counter",
                "Generated tokens.",
                g(&self.generated_tokens).to_string(),
            ),
            (
                "ds4_live_prefix_hits_total",
                "counter",
                "Requests that reused a prefix of the live session.",
                g(&self.live_prefix_hits).to_string(),
            ),
            (
                "ds4_queue_depth",
                "gauge",
                "Requests waiting for the inference worker.",
                g(&self.queue_depth).to_string(),
            ),
            (
                "ds4_client_disconnects_total",
                "counter",
                "Requests whose client went away before generation finished (generation stopped).",
                g(&self.client_disconnects).to_string(),
            ),
            (
                "ds4_send_stalls_total",
                "counter",
                "Connections dropped because the client stopped reading.",
                g(&self.send_stalls).to_string(),
            ),
            (
                "ds4_requests_invalid_total",
                "counter",
                "Requests refused before inference (bad request, too large, queue full).",
                g(&self.invalid_requests).to_string(),
            ),
            (
                "ds4_connections_total",
                "counter",
                "Accepted connections.",
                g(&self.connections_total).to_string(),
            ),
            (
                "ds4_connections_open",
                "gauge",
                "Open client connections.",
                g(&self.connections_open).to_string(),
            ),
            (
                "ds4_prefill_tokens_per_second",
                "gauge",
                "Prefill throughput over all requests.",
                format!("{:.3}", rate(g(&self.prefill_tokens), g(&self.prefill_us))),
            ),
            (
                "ds4_generation_tokens_per_second",
                "gauge",
                "Generation throughput over all requests.",
                format!("{:.3}", rate(g(&self.generated_tokens), g(&self.decode_us))),
            ),
        ];
        let kv = [
            (
                "ds4_kv_disk_hits_total",
                "counter",
                "Requests resumed from a disk KV cache file.",
                &self.kv_disk_hits,
            ),
            (
                "ds4_kv_parked_hits_total",
                "counter",
                "Requests resumed from a session parked in RAM.",
                &self.kv_parked_hits,
            ),
            (
                "ds4_kv_disk_saves_total",
                "counter",
                "Sessions written to the disk KV cache.",
                &self.kv_disk_saves,
            ),
            (
                "ds4_kv_disk_bytes",
                "gauge",
                "Bytes of the disk KV cache files.",
                &self.kv_disk_bytes,
            ),
            (
                "ds4_kv_disk_budget_bytes",
                "gauge",
                "The disk KV cache budget (--kv-disk-space-mb).",
                &self.kv_disk_budget_bytes,
            ),
            (
                "ds4_kv_parked_sessions",
                "gauge",
                "Sessions parked in RAM besides the live one.",
                &self.kv_parked_sessions,
            ),
            (
                "ds4_kv_parked_bytes",
                "gauge",
                "Bytes of the parked sessions (--kv-ram-mb).",
                &self.kv_parked_bytes,
            ),
        ];
        let rows: Vec<(&str, &str, &str, String)> = rows
            .into_iter()
            .chain(kv.map(|(n, k, h, v)| (n, k, h, g(v).to_string())))
            .collect();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        s
    }
}

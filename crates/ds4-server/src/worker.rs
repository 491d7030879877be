//! The inference worker: one OS thread owns the [`Backend`] and runs queued jobs
//! one at a time. It chooses how much of the live session to reuse, prefills,
//! samples (greedily inside DSML syntax), runs the DSML parser, applies stop
//! sequences, and sends [`WorkerEvent`]s back to the request's handler.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ds4_chat::{DsmlParser, Event, ParserOptions, Prompt};
use ds4_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{Backend, BackendError, SyncStats};
use crate::kvdisk::KvState;
use crate::metrics::Metrics;
use crate::prompt::tokenize_from;
use crate::replay::ReplayMap;
use crate::sampling::{Sampler, SamplingParams};

/// Which API a request came through (shapes ids and output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Responses,
    Messages,
}

impl Api {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rendered, tokenized request ready for the worker.
pub struct GenRequest {
    pub api: Api,
    pub prompt: Prompt,
    /// `prompt` rendered to text (the byte form the live session is matched by).
    pub prompt_text: String,
    /// `prompt` tokenized from scratch.
    pub tokens: Vec<u32>,
    /// The prompt ends with `<think>`.
    pub thinking: bool,
    /// Tools are active: parse DSML and sample its syntax greedily.
    pub tools: bool,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stops: Vec<String>,
    pub stream: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    Error(String),
    /// The client went away.
    Cancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    /// Newly prefilled prompt tokens (ds4's `cache_write_tokens`).
    pub fn written(&self) -> usize {
        self.prompt_tokens - self.cached_tokens.min(self.prompt_tokens)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Prefill {
        done: usize,
        total: usize,
    },
    /// Prefill finished; generation starts.
    Started(Usage),
    /// Generated text as released to the parser (after stop-sequence hold-back).
    Raw(String),
    Reasoning(String),
    Text(String),
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolArgs {
        index: usize,
        delta: String,
    },
    ToolEnd {
        index: usize,
        id: String,
        name: String,
        arguments_json: String,
    },
    /// A tool block failed to parse after calls `first_index..` were announced:
    /// those calls are void and `raw` is plain text.
    ToolsAborted {
        raw: String,
        first_index: usize,
    },
    Done {
        finish: Finish,
        usage: Usage,
        /// Generation ended inside `<think>`.
        ended_in_reasoning: bool,
    },
}

pub struct Job {
    pub req: GenRequest,
    pub tx: UnboundedSender<WorkerEvent>,
}

/// State shared between the worker and the HTTP handlers.
pub struct Shared {
    pub metrics: Metrics,
    pub replay: Mutex<ReplayMap>,
    pub exact_replay: bool,
}

pub struct Worker {
    backend: Box<dyn Backend>,
    tokenizer: Arc<Tokenizer>,
    shared: Arc<Shared>,
    /// The live tokens as text, while they are known to be a clean transcript
    /// (cleared after a stop-sequence hit, whose tokens run past the stop).
    live_text: Option<String>,
    /// After a tool-less thinking answer: the transcript a client will send back
    /// (`prompt − <think> + </think> + content + EOS`, reasoning dropped by the
    /// renderer) and how many live tokens it stands for. A request extending it
    /// keeps the live KV, hidden reasoning included, instead of re-prefilling.
    thinking_visible: Option<(String, usize)>,
    /// Parked sessions and the disk KV cache.
    kv: Option<KvState>,
}

/// A fresh tool-call id: `call_`/`toolu_` + 32 hex digits.
pub fn new_tool_id(api: Api) -> String {
    let prefix = if api == Api::Messages {
        "toolu_"
    } else {
        "call_"
    };
    format!("{prefix}{:032x}", rand::random::<u128>())
}

impl Worker {
    pub fn new(backend: Box<dyn Backend>, tokenizer: Arc<Tokenizer>, shared: Arc<Shared>) -> Self {
        Self {
            backend,
            tokenizer,
            shared,
            live_text: None,
            thinking_visible: None,
            kv: None,
        }
    }

    /// Adds parked sessions and the disk cache (see [`crate::kvdisk`]).
    pub fn with_kv(mut self, kv: KvState) -> Self {
        self.kv = Some(kv);
        self
    }

    /// Whether the live session is worth keeping when it is replaced.
    fn keeps_sessions(&self) -> bool {
        self.kv
            .as_ref()
            .is_some_and(|k| k.cfg.ram_mb > 0 || k.store.is_some())
    }

    /// Parks the live session in RAM (or, with no RAM budget, saves it to disk
    /// as `evict`) before something else replaces it.
    fn park_live(&mut self) {
        let n = self.backend.tokens().len();
        if n == 0 || !self.keeps_sessions() {
            return;
        }
        let Ok(text) = self.tokenizer.decode(self.backend.tokens()) else {
            return;
        };
        let Ok(bytes) = self.backend.save_state() else {
            return;
        };
        let shared = self.shared.clone();
        let Some(kv) = self.kv.as_mut() else { return };
        if kv.cfg.ram_mb > 0 {
            kv.park(text, n, bytes, &shared.replay, &shared.metrics);
        } else if n > kv.live_saved {
            kv.save(
                ds4_kvstore::Reason::Evict,
                &text,
                n,
                &bytes,
                &shared.replay,
                &shared.metrics,
            );
        }
    }

    /// Saves the live session to disk when the store is on, it is long enough
    /// and beyond what is already saved; with `prefix_of`, only if its text is a
    /// byte prefix of that prompt (a key a later request can find).
    fn save_live(&mut self, reason: ds4_kvstore::Reason, prefix_of: Option<&str>) {
        let n = self.backend.tokens().len();
        let Some(kv) = self.kv.as_ref() else { return };
        if kv.store.is_none() || n < kv.cfg.min_tokens || n <= kv.live_saved {
            return;
        }
        let Ok(text) = self.tokenizer.decode(self.backend.tokens()) else {
            return;
        };
        if prefix_of.is_some_and(|p| !p.starts_with(text.as_str())) {
            return;
        }
        let Ok(bytes) = self.backend.save_state() else {
            return;
        };
        let shared = self.shared.clone();
        if let Some(kv) = self.kv.as_mut() {
            kv.save(reason, &text, n, &bytes, &shared.replay, &shared.metrics);
            kv.live_saved = n;
        }
    }

    /// When a parked session or a disk file covers more of the prompt than the
    /// live session, park the live one and load it: returns the tokens to sync
    /// (its exact tokens, then the rest of the prompt tokenized from its byte
    /// boundary).
    fn resume(&mut self, req: &GenRequest, live_common: usize) -> Option<Vec<u32>> {
        let ctx = self.backend.ctx();
        let kv = self.kv.as_mut()?;
        let parked = kv
            .best_parked(&req.prompt_text)
            .filter(|&(_, _, n)| n > live_common && n < ctx);
        let floor = parked.map_or(live_common, |p| p.2);
        let min = kv.cfg.min_tokens.max(floor + 1);
        let disk = kv
            .store
            .as_mut()
            .and_then(|s| s.lookup(&req.prompt_text, min as u32, ctx as u32));
        let (text_len, bytes, source) = match (disk, parked) {
            (Some(hit), _) => {
                let cold_max = kv.cfg.cold_max_tokens;
                if cold_max > 0
                    && hit.tokens as usize > cold_max
                    && let Some(s) = kv.store.as_mut()
                {
                    // Consumed: evict and shutdown saves write it back (ds4).
                    s.remove(&hit.file);
                }
                (hit.text_len, hit.payload, Source::Disk)
            }
            (None, Some((i, text_len, _))) => {
                let p = kv.take_parked(i);
                (text_len, p.bytes, Source::Parked)
            }
            (None, None) => return None,
        };
        let suffix = tokenize_from(&self.tokenizer, &req.prompt, text_len).ok()??;
        self.park_live();
        if let Err(e) = self.backend.load_state(&bytes) {
            eprintln!("ds4-server: warning: could not resume a saved session: {e}");
            return None;
        }
        let m = &self.shared.metrics;
        match source {
            Source::Disk => m.kv_disk_hits.fetch_add(1, Ordering::Relaxed),
            Source::Parked => m.kv_parked_hits.fetch_add(1, Ordering::Relaxed),
        };
        let loaded = self.backend.tokens().len();
        if let Some(kv) = self.kv.as_mut() {
            kv.live_saved = if source == Source::Disk { loaded } else { 0 };
            kv.update_metrics(m);
        }
        self.live_text = None;
        let mut t = self.backend.tokens().to_vec();
        t.extend(suffix);
        Some(t)
    }

    /// Syncs to `tokens`, stopping at the cold-save point and at continued-save
    /// frontiers to write them to disk on the way.
    fn sync_with_saves(
        &mut self,
        req: &GenRequest,
        tokens: &[u32],
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<SyncStats, BackendError> {
        let live_common = common_prefix(self.backend.tokens(), tokens);
        let mut cuts: Vec<(usize, ds4_kvstore::Reason)> = Vec::new();
        // Nothing is reused when the live tokens are not a prefix (the engine
        // then replays from scratch): a cold prompt, even if it shares a BOS.
        let reuses = live_common > 0 && live_common == self.backend.tokens().len();
        if let Some(kv) = self.kv.as_ref().filter(|k| k.store.is_some()) {
            if !reuses {
                let user = self.tokenizer.id_of(ds4_chat::SpecialToken::User.text());
                let asst = self
                    .tokenizer
                    .id_of(ds4_chat::SpecialToken::Assistant.text());
                if let Some(n) = kv.cfg.cold_store_len(tokens, user, asst) {
                    cuts.push((n, ds4_kvstore::Reason::Cold));
                }
            }
            let step = kv.cfg.continued_step();
            let from = live_common.max(kv.live_saved);
            if let Some(k) = from.checked_div(step) {
                let mut b = (k + 1) * step;
                while b <= tokens.len() {
                    if b >= kv.cfg.min_tokens && !cuts.iter().any(|c| c.0 == b) {
                        cuts.push((b, ds4_kvstore::Reason::Continued));
                    }
                    b += step;
                }
            }
            cuts.sort_by_key(|c| c.0);
        }
        if live_common < self.backend.tokens().len()
            && let Some(kv) = self.kv.as_mut()
        {
            kv.live_saved = kv.live_saved.min(live_common);
        }
        let mut stats: Option<SyncStats> = None;
        let mut done_before = 0usize;
        let total_guess = tokens.len() - live_common.min(tokens.len());
        for (cut, reason) in cuts
            .into_iter()
            .chain([(tokens.len(), ds4_kvstore::Reason::Unknown)])
        {
            let mut seg = |d: usize, _t: usize| progress(done_before + d, total_guess);
            let s = self.backend.sync(&tokens[..cut], &mut seg)?;
            done_before += s.prefilled;
            stats = Some(match stats {
                None => s,
                Some(first) => SyncStats {
                    reused: first.reused,
                    prefilled: first.prefilled + s.prefilled,
                },
            });
            if reason != ds4_kvstore::Reason::Unknown {
                self.save_live(reason, Some(&req.prompt_text));
            }
        }
        stats.ok_or(BackendError::NoLogits)
    }

    /// Run jobs until every sender is gone, then save the live and parked
    /// sessions to disk (`shutdown`).
    pub fn run(mut self, jobs: std::sync::mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.shared
                .metrics
                .queue_depth
                .fetch_sub(1, Ordering::SeqCst);
            let tx = job.tx.clone();
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_job(job)));
            if r.is_err() {
                // The backend state is unknown after a panic: forget the live text
                // so nothing is reused by bytes; token reuse stays exact.
                self.live_text = None;
                self.thinking_visible = None;
                let _ = tx.send(WorkerEvent::Done {
                    finish: Finish::Error("internal error in the inference worker".into()),
                    usage: Usage::default(),
                    ended_in_reasoning: false,
                });
            }
        }
        self.save_live(ds4_kvstore::Reason::Shutdown, None);
        let shared = self.shared.clone();
        if let Some(kv) = self.kv.as_mut() {
            kv.shutdown(&shared.replay, &shared.metrics);
        }
    }

    /// The token sequence to sync: the live tokens plus the tokenized byte suffix
    /// when the live text is a byte prefix of the prompt (two token spellings of the
    /// same bytes still hit, and the BPE boundary is never re-cut), else the full
    /// tokenization.
    fn choose_tokens(&self, req: &GenRequest) -> Vec<u32> {
        let live = self.backend.tokens();
        if let Some((visible, n_live)) = &self.thinking_visible
            && live.len() == *n_live
            && req.prompt_text.len() > visible.len()
            && req.prompt_text.starts_with(visible.as_str())
            && let Ok(Some(suffix)) = tokenize_from(&self.tokenizer, &req.prompt, visible.len())
        {
            let mut t = live.to_vec();
            t.push(self.tokenizer.eos());
            t.extend(suffix);
            return t;
        }
        if let Some(text) = &self.live_text
            && !live.is_empty()
            && req.prompt_text.len() > text.len()
            && req.prompt_text.starts_with(text.as_str())
            && live.len() < self.backend.ctx()
            && let Ok(Some(suffix)) = tokenize_from(&self.tokenizer, &req.prompt, text.len())
            && !suffix.is_empty()
        {
            let mut t = live.to_vec();
            t.extend(suffix);
            return t;
        }
        req.tokens.clone()
    }

    fn run_job(&mut self, job: Job) {
        let Job { req, tx } = job;
        let shared = self.shared.clone();
        let m = &shared.metrics;
        m.requests[req.api.index()].fetch_add(1, Ordering::Relaxed);
        let mut tokens = self.choose_tokens(&req);
        let live_common = common_prefix(self.backend.tokens(), &tokens);
        if let Some(t) = self.resume(&req, live_common) {
            tokens = t;
        } else if live_common < self.backend.tokens().len() && tokens.len() < self.backend.ctx() {
            // The live session is about to be replaced: keep it.
            self.park_live();
        }
        // Any request that did not continue the binding ends it (ds4's rule).
        self.thinking_visible = None;
        let ctx = self.backend.ctx();
        let done = |finish: Finish, usage: Usage, in_reasoning: bool| WorkerEvent::Done {
            finish,
            usage,
            ended_in_reasoning: in_reasoning,
        };
        if tokens.len() >= ctx {
            let _ = tx.send(done(
                Finish::Error(format!(
                    "prompt has {} tokens, but the configured context size is {ctx} tokens",
                    tokens.len()
                )),
                Usage::default(),
                false,
            ));
            return;
        }

        let t0 = Instant::now();
        let mut progress = |d: usize, t: usize| {
            let _ = tx.send(WorkerEvent::Prefill { done: d, total: t });
            !tx.is_closed()
        };
        let stats = match self.sync_with_saves(&req, &tokens, &mut progress) {
            Ok(s) => s,
            Err(e) => {
                self.live_text = None;
                let finish = match e {
                    BackendError::Cancelled => Finish::Cancelled,
                    e => Finish::Error(e.to_string()),
                };
                let _ = tx.send(done(finish, Usage::default(), false));
                return;
            }
        };
        let prefill_us = t0.elapsed().as_micros() as u64;
        m.prefill_us.fetch_add(prefill_us, Ordering::Relaxed);
        m.prefill_tokens
            .fetch_add(stats.prefilled as u64, Ordering::Relaxed);
        if stats.reused > 0 {
            m.live_prefix_hits.fetch_add(1, Ordering::Relaxed);
        }
        let mut usage = Usage {
            prompt_tokens: tokens.len(),
            cached_tokens: stats.reused,
            completion_tokens: 0,
        };
        let _ = tx.send(WorkerEvent::Started(usage));

        let t1 = Instant::now();
        let (finish, in_reasoning, stop_hit, content) = self.generate(&req, &tx, &mut usage);
        if req.thinking
            && !req.tools
            && finish == Finish::Stop
            && !stop_hit
            && !in_reasoning
            && let Some(head) = req.prompt_text.strip_suffix("<think>")
        {
            let eos = ds4_chat::SpecialToken::Eos.text();
            let visible = format!("{head}</think>{content}{eos}");
            self.thinking_visible = Some((visible, self.backend.tokens().len()));
        }
        m.decode_us
            .fetch_add(t1.elapsed().as_micros() as u64, Ordering::Relaxed);
        m.prompt_tokens
            .fetch_add(usage.prompt_tokens as u64, Ordering::Relaxed);
        m.cached_tokens
            .fetch_add(usage.cached_tokens as u64, Ordering::Relaxed);
        m.generated_tokens
            .fetch_add(usage.completion_tokens as u64, Ordering::Relaxed);
        // A stop hit leaves tokens past the stop in the KV: its text no longer
        // matches any transcript the client will send.
        self.live_text = if stop_hit || matches!(finish, Finish::Error(_)) {
            None
        } else {
            self.tokenizer.decode(self.backend.tokens()).ok()
        };
        let _ = tx.send(done(finish, usage, in_reasoning));
    }

    /// Returns (finish, ended in reasoning, stop sequence hit, visible content).
    fn generate(
        &mut self,
        req: &GenRequest,
        tx: &UnboundedSender<WorkerEvent>,
        usage: &mut Usage,
    ) -> (Finish, bool, bool, String) {
        let eos = self.tokenizer.eos();
        let mut sampler = Sampler::new(req.sampling);
        let mut parser = DsmlParser::new(ParserOptions {
            start_in_reasoning: req.thinking,
            tools: req.tools,
        });
        let mut decoder = self.tokenizer.stream_decoder();
        let hold = req.stops.iter().map(String::len).max().unwrap_or(1).max(1) - 1;
        let mut raw = String::new();
        let mut fed = 0usize;
        let mut calls = CallTracker::new(req.api);
        let ctx = self.backend.ctx();

        let mut finish = Finish::Length;
        let mut stop_hit = false;
        for _ in 0..req.max_tokens {
            if tx.is_closed() {
                finish = Finish::Cancelled;
                break;
            }
            let greedy = req.tools && parser.in_syntax();
            let next = match self.backend.logits() {
                Ok(l) => sampler.sample(l, greedy),
                Err(e) => {
                    finish = Finish::Error(e.to_string());
                    break;
                }
            };
            let Some(tok) = next else {
                finish = Finish::Error("the model produced no finite logits".into());
                break;
            };
            usage.completion_tokens += 1;
            if tok == eos {
                finish = Finish::Stop;
                break;
            }
            let piece = decoder.push(&self.tokenizer, tok).unwrap_or_default();
            raw.push_str(&piece);
            // Stops are matched on the raw text, reasoning included (ds4's rule).
            let search_from = floor_char(&raw, fed.saturating_sub(hold));
            if let Some(at) = earliest_stop(&raw[search_from..], &req.stops) {
                let end = search_from + at;
                if end > fed {
                    self.release(&raw[fed..end], &mut parser, &mut calls, tx);
                }
                raw.truncate(end);
                fed = end;
                finish = Finish::Stop;
                stop_hit = true;
                break;
            }
            let safe = floor_char(&raw, raw.len().saturating_sub(hold));
            if safe > fed {
                let chunk = raw[fed..safe].to_owned();
                fed = safe;
                self.release(&chunk, &mut parser, &mut calls, tx);
            }
            if calls.block_done {
                // Keep the closing tag in the KV so the next turn extends it.
                if let Err(e) = self.backend.decode(tok) {
                    finish = Finish::Error(e.to_string());
                } else {
                    finish = Finish::ToolCalls;
                }
                break;
            }
            if self.backend.tokens().len() >= ctx {
                break;
            }
            if let Err(e) = self.backend.decode(tok) {
                finish = Finish::Error(e.to_string());
                break;
            }
            // Continued saves at absolute frontiers, never inside or after a
            // tool block (its ids are not known yet).
            let step = self.kv.as_ref().map_or(0, |k| k.cfg.continued_step());
            let n = self.backend.tokens().len();
            if step > 0 && n.is_multiple_of(step) && !(req.tools && raw.contains("tool_calls>")) {
                self.save_live(ds4_kvstore::Reason::Continued, None);
            }
        }
        if finish != Finish::Cancelled {
            let tail = decoder.finish();
            raw.push_str(&tail);
            if fed < raw.len() {
                let chunk = raw[fed..].to_owned();
                self.release(&chunk, &mut parser, &mut calls, tx);
            }
        }
        let in_reasoning = parser.in_reasoning();
        let events = parser.finish();
        calls.forward(events, tx);
        if calls.block_done
            && !calls.ids.is_empty()
            && self.shared.exact_replay
            && let Some(block) = raw_block(&raw)
            && let Ok(mut map) = self.shared.replay.lock()
        {
            map.insert_block(&calls.ids, block);
        }
        if calls.aborted_after_start && req.stream && !matches!(finish, Finish::Cancelled) {
            // Streamed calls cannot be retracted.
            finish = Finish::Error("unterminated tool call".into());
        } else if (finish == Finish::Stop || finish == Finish::Length)
            && calls.block_done
            && !calls.ids.is_empty()
        {
            finish = Finish::ToolCalls;
        }
        (finish, in_reasoning, stop_hit, calls.content)
    }

    fn release(
        &self,
        chunk: &str,
        parser: &mut DsmlParser,
        calls: &mut CallTracker,
        tx: &UnboundedSender<WorkerEvent>,
    ) {
        let _ = tx.send(WorkerEvent::Raw(chunk.to_owned()));
        let events = parser.feed(chunk);
        calls.forward(events, tx);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Disk,
    Parked,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Assigns ids to streamed calls and forwards parser events.
struct CallTracker {
    api: Api,
    /// Id per call index of the current block.
    ids: Vec<String>,
    names: Vec<String>,
    block_done: bool,
    aborted_after_start: bool,
    /// Visible text so far.
    content: String,
}

impl CallTracker {
    fn new(api: Api) -> Self {
        Self {
            api,
            ids: Vec::new(),
            names: Vec::new(),
            block_done: false,
            aborted_after_start: false,
            content: String::new(),
        }
    }

    fn forward(&mut self, events: Vec<Event>, tx: &UnboundedSender<WorkerEvent>) {
        for ev in events {
            let out = match ev {
                Event::Reasoning(s) if !s.is_empty() => WorkerEvent::Reasoning(s),
                Event::Text(s) if !s.is_empty() => {
                    self.content.push_str(&s);
                    WorkerEvent::Text(s)
                }
                Event::Reasoning(_) | Event::Text(_) | Event::End => continue,
                Event::ToolCallStart { index, name } => {
                    let id = new_tool_id(self.api);
                    if self.ids.len() <= index {
                        self.ids.resize(index + 1, String::new());
                        self.names.resize(index + 1, String::new());
                    }
                    self.ids[index] = id.clone();
                    self.names[index] = name.clone();
                    WorkerEvent::ToolStart { index, id, name }
                }
                Event::ToolCallArgs { index, delta } => WorkerEvent::ToolArgs { index, delta },
                Event::ToolCallEnd { index, call } => WorkerEvent::ToolEnd {
                    index,
                    id: self.ids.get(index).cloned().unwrap_or_default(),
                    name: call.name,
                    arguments_json: call.arguments_json,
                },
                Event::ToolCallsDone => {
                    self.block_done = true;
                    continue;
                }
                Event::ToolCallsAborted { raw, first_index } => {
                    self.aborted_after_start = true;
                    self.ids.truncate(first_index);
                    self.names.truncate(first_index);
                    WorkerEvent::ToolsAborted { raw, first_index }
                }
            };
            let _ = tx.send(out);
        }
    }
}

/// The last DSML block in `raw` after the last `</think>`, with its leading
/// `"\n\n"`: the bytes exact replay substitutes for the canonical rendering.
fn raw_block(raw: &str) -> Option<&str> {
    let visible_from = raw.rfind("</think>").map_or(0, |i| i + "</think>".len());
    let visible = &raw[visible_from..];
    let start = ["<｜DSML｜tool_calls>", "<DSML｜tool_calls>", "<tool_calls>"]
        .iter()
        .filter_map(|open| visible.rfind(open))
        .max()?;
    let start = if visible[..start].ends_with("\n\n") {
        start - 2
    } else {
        start
    };
    Some(&visible[start..])
}

fn earliest_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_block_skips_reasoning_and_keeps_separator() {
        let raw = "<tool_calls>x</think>Sure.\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>";
        assert_eq!(
            raw_block(raw),
            Some("\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>")
        );
        assert_eq!(raw_block("no block</think>text"), None);
    }

    #[test]
    fn earliest_stop_wins() {
        let stops = vec!["b".to_owned(), "xyz".to_owned(), String::new()];
        assert_eq!(earliest_stop("aaxyzb", &stops), Some(2));
        assert_eq!(earliest_stop("aaa", &stops), None);
    }
}

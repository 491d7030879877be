//! ds4-cuda: the DeepSeek V4 Flash forward pass on one NVIDIA GPU.
//!
//! * Builds on machines without CUDA: the driver and NVRTC are loaded at run time
//!   (cudarc, dynamic loading); [`available`] says whether this machine has them.
//! * Kernels are CUDA C text ([`source`]) compiled by NVRTC for the device's exact
//!   architecture on first use and cached on disk ([`compile`]).
//! * Weights stay in their stored formats in GPU memory ([`weights`]); the KV state
//!   lives on the GPU, sized from the context ([`forward`]).
//! * [`CudaBackend`] implements ds4-engine's [`Backend`] trait, so every caller that
//!   runs the CPU reference runs this too, and tests compare the two.

pub mod bench;
pub mod compile;
pub mod device;
pub mod forward;
pub mod source;
pub mod weights;

use std::time::Instant;

use ds4_engine::{
    Backend, EngineError, ForwardOptions, ForwardState, LogitsFor, Model, ModelConfig,
    StateSnapshot,
};

use crate::device::{DevBuf, Gpu};
use crate::forward::{Fwd, GpuTrace, LayerState, Scratch, kv_rows_f16, scratch_bytes, state_bytes};
use crate::weights::{DevWeights, weight_bytes};

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no usable CUDA device: {0}")]
    NoDriver(String),
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("kernel compilation: {0}")]
    Compile(String),
    #[error("out of GPU memory allocating {bytes} bytes: {msg}")]
    OutOfMemory { bytes: usize, msg: String },
    #[error("{0}")]
    TooBig(String),
    #[error("model: {0}")]
    Model(String),
}

impl From<CudaError> for EngineError {
    fn from(e: CudaError) -> Self {
        EngineError::Backend {
            backend: "cuda".into(),
            msg: e.to_string(),
        }
    }
}

/// Whether the CUDA driver and NVRTC libraries are present and a device answers.
/// `Err` carries the reason, for a message or a skipped test.
pub fn available() -> Result<(), CudaError> {
    device::libraries_present()?;
    let n = std::panic::catch_unwind(cudarc::driver::CudaContext::device_count)
        .map_err(|_| CudaError::NoDriver("the CUDA driver failed to initialize".into()))?
        .map_err(|e| CudaError::NoDriver(format!("device count: {e}")))?;
    if n <= 0 {
        return Err(CudaError::NoDriver("no CUDA device present".into()));
    }
    Ok(())
}

/// Default longest run per forward call (ds4's prefill chunk).
pub const DEFAULT_MAX_BATCH: usize = 2048;

/// The batches [`CudaBackend::load`] tries, largest first, when asked to choose
/// (`max_batch` 0). A larger batch prefills faster — each routed expert's weights are
/// decoded for fuller groups of items, the dense products' tiles are fuller (an 8k
/// prompt on the H200: 3,812 / 4,059 / 4,201 t/s at 2,048 / 4,096 / 8,192) — at the
/// cost of scratch that grows with batch × context (6.9 against 1.8 GiB at a 32k
/// context), so it is taken only where the card has room for it.
pub const AUTO_BATCHES: [usize; 3] = [8192, 4096, 2048];

/// GPU memory a chosen batch leaves free beyond the estimate (the context, the kernels'
/// modules, the decode graph, the driver's own allocations).
pub const AUTO_RESERVE: usize = 4 << 30;

/// The largest of [`AUTO_BATCHES`] whose total need fits in `free` with
/// [`AUTO_RESERVE`] to spare; the smallest when none does (the load then says what
/// is missing).
pub fn choose_batch(need: impl Fn(usize) -> usize, free: usize) -> usize {
    AUTO_BATCHES
        .into_iter()
        .find(|&b| need(b).saturating_add(AUTO_RESERVE) <= free)
        .unwrap_or(AUTO_BATCHES[AUTO_BATCHES.len() - 1])
}

/// GPU bytes needed: weights, KV state of `ctx` tokens, scratch of `batch`-token runs. The
/// state as the default options keep it (rows in f16, see [`forward::kv_rows_f16`]); a
/// `--no-qat-sim` state keeps f32 rows, twice the rows' bytes, and fails its allocation
/// with the bytes asked for where they do not fit.
pub fn memory_estimate(model: &Model, ctx: usize, batch: usize) -> (usize, usize, usize) {
    (
        weight_bytes(&model.weights),
        state_bytes(
            &model.cfg,
            ctx,
            batch,
            kv_rows_f16(&ForwardOptions::default()),
        ),
        scratch_bytes(&model.cfg, ctx, batch),
    )
}

/// Weight bytes one decode step reads (see [`weights::decode_weight_bytes`]).
pub fn decode_weight_bytes(model: &Model) -> usize {
    weights::decode_weight_bytes(&model.weights, model.cfg.n_expert_used)
}

fn gib(b: usize) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// The model resident on one GPU.
pub struct CudaBackend {
    pub gpu: Gpu,
    cfg: ModelConfig,
    weights: DevWeights,
    rope_main: DevBuf,
    rope_comp: DevBuf,
    max_batch: usize,
    /// Seconds spent uploading weights.
    pub upload_s: f64,
}

impl CudaBackend {
    /// The longest run one forward call takes (a state's scratch is sized for it).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Uploads `model`'s weights to GPU `ordinal`. Refuses, before allocating, when
    /// the weights plus a `ctx`-token state would not fit, saying how much is needed.
    /// `max_batch` 0 lets it choose from [`AUTO_BATCHES`] by the card's free memory.
    pub fn load(
        model: &Model,
        ordinal: usize,
        ctx: usize,
        max_batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<CudaBackend, CudaError> {
        // DS4_CUDA_FUSE=0 keeps every matrix its own launch (for comparisons).
        let fuse = std::env::var("DS4_CUDA_FUSE").map_or(true, |v| v != "0");
        Self::load_with(model, ordinal, ctx, max_batch, fuse, progress)
    }

    /// [`CudaBackend::load`] choosing whether products over the same input (q_a and
    /// kv, a compressor's values and scores, gate and up) are fused into one matrix
    /// each. Either way every output value is the same row dot product.
    pub fn load_with(
        model: &Model,
        ordinal: usize,
        ctx: usize,
        max_batch: usize,
        fuse_pairs: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<CudaBackend, CudaError> {
        if model.cfg.hc * model.cfg.hc > 32 {
            // hc_pre keeps the hc × hc mixing in one warp, one entry per lane.
            return Err(CudaError::Model(format!(
                "{} hyper-connection streams: the CUDA kernels support at most 5",
                model.cfg.hc
            )));
        }
        let gpu = Gpu::open(ordinal)?;
        let free = gpu.free_mem()?;
        let max_batch = if max_batch == 0 {
            choose_batch(
                |b| {
                    let (w, st, sc) = memory_estimate(model, ctx, b);
                    w + st + sc
                },
                free,
            )
        } else {
            max_batch
        };
        let (w, st, sc) = memory_estimate(model, ctx, max_batch);
        let need = w + st + sc;
        if need > free {
            return Err(CudaError::TooBig(format!(
                "the model needs {:.1} GiB of GPU memory (weights {:.1} GiB, KV state for \
                 {ctx} tokens {:.2} GiB, scratch for {max_batch}-token batches {:.2} GiB) but \
                 {} has {:.1} GiB free; use a larger card (an H200 holds the q2 file), a \
                 smaller --ctx or batch, or --cpu",
                gib(need),
                gib(w),
                gib(st),
                gib(sc),
                gpu.name,
                gib(free)
            )));
        }
        let t0 = Instant::now();
        let weights = DevWeights::upload(&gpu, &model.cfg, &model.weights, fuse_pairs, progress)?;
        gpu.sync()?;
        let upload_s = t0.elapsed().as_secs_f64();
        let n_layer = model.cfg.n_layer;
        let rope_main = gpu.upload(&model.rope_for(0).freqs)?;
        // Compressed layers share one YaRN table; a model of window layers only has none.
        let comp_layer = (0..n_layer).find(|&l| model.cfg.attn_kind(l).ratio() > 0);
        let rope_comp = gpu.upload(&model.rope_for(comp_layer.unwrap_or(0)).freqs)?;
        Ok(CudaBackend {
            gpu,
            cfg: model.cfg.clone(),
            weights,
            rope_main,
            rope_comp,
            max_batch,
            upload_s,
        })
    }
}

/// One context on the GPU.
pub struct CudaState<'b> {
    be: &'b CudaBackend,
    layers: Vec<LayerState>,
    scratch: Scratch,
    opts: ForwardOptions,
    ctx: usize,
    n_tokens: usize,
    trace: Option<std::cell::RefCell<GpuTrace>>,
    /// Decode steps (one token, last logits) replay this graph once captured.
    graph: Option<DecodeGraph>,
    use_graph: bool,
    /// Whether a run returning its last logits captures the decode graph while the GPU
    /// runs it (see [`CudaState::set_capture_ahead`]).
    capture_ahead: bool,
    /// Page-locked host memory a decode step's logits come back through (allocated on
    /// the first step): a pageable copy is staged by the driver at a fraction of the
    /// bus's speed.
    logits_host: Option<cudarc::driver::PinnedHostSlice<f32>>,
    /// The same for a greedy step's chosen id (`forward_greedy`).
    pick_host: Option<cudarc::driver::PinnedHostSlice<i32>>,
}

/// Whether decode steps read their logits back through page-locked memory
/// (`DS4_CUDA_PINNED=0` copies into pageable memory, for comparisons).
fn pinned_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_PINNED").map_or(true, |v| v != "0"))
}

/// `n` values at `src` on the device, after the work queued on `gpu`'s stream, through
/// page-locked memory kept in `slot` (allocated on first use: a pageable copy is staged by
/// the driver at a fraction of the bus's speed).
fn copy_back<'a, T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    gpu: &Gpu,
    slot: &'a mut Option<cudarc::driver::PinnedHostSlice<T>>,
    src: u64,
    n: usize,
) -> Result<&'a [T], cudarc::driver::DriverError> {
    if slot.is_none() {
        // SAFETY: the memory is written by the copy below before anything reads it.
        *slot = Some(unsafe { gpu.ctx.alloc_pinned_with_flags::<T>(n, 0) }?);
    }
    let host = slot.as_mut().expect("allocated above");
    let dst = host.as_mut_slice()?;
    // SAFETY: `dst` holds the `n` values of `src` (the caller's device buffer holds at
    // least as many); the stream is synchronized before the slice is read.
    unsafe {
        cudarc::driver::result::memcpy_dtoh_async(&mut dst[..n], src, gpu.stream.cu_stream())
    }?;
    gpu.stream.synchronize()?;
    Ok(&dst[..n])
}

/// Whether greedy decode steps pick on the GPU (`DS4_CUDA_GPU_PICK=0`: the logits row
/// copied back and scanned on the host, for comparisons).
fn gpu_pick_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_GPU_PICK").map_or(true, |v| v != "0"))
}

/// Whether a run that returns its last logits captures the decode graph while the GPU
/// runs it (`DS4_CUDA_CAPTURE_AHEAD=0`: at the first decode step, for comparisons).
fn capture_ahead_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_CAPTURE_AHEAD").map_or(true, |v| v != "0"))
}

/// Whether runs of tensor-core length keep programmatic dependent launch
/// (`DS4_CUDA_PDL_RUNS=1`, for comparisons; decode steps always use it where the GPU
/// has it, unless `DS4_CUDA_PDL=0`).
fn pdl_for_runs() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_PDL_RUNS").is_ok_and(|v| v == "1"))
}

/// One decode step captured as a CUDA graph: ~40 launches per layer become one. Valid
/// for the life of the state: every buffer it touches belongs to the state or the
/// backend, and the position is read from device memory.
struct DecodeGraph {
    graph: cudarc::driver::CudaGraph,
    gpu: Gpu,
}

impl DecodeGraph {
    fn launch(&self) -> Result<(), cudarc::driver::DriverError> {
        self.graph.launch()
    }

    /// A timing event recorded on the graph's stream.
    fn event(&self) -> Result<cudarc::driver::CudaEvent, cudarc::driver::DriverError> {
        use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        self.gpu.stream.record_event(Some(CU_EVENT_DEFAULT))
    }
}

/// Where the time of decode steps went, host and GPU, summed over the steps
/// [`CudaState::decode_timed`] ran (microseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTiming {
    pub steps: usize,
    /// Token and position copied to the device.
    pub upload_us: f64,
    /// The host's call that queues the step's graph.
    pub launch_us: f64,
    /// From the launch call to the logits on the host (GPU work and the copy).
    pub wait_us: f64,
    /// The logits copied out of page-locked memory into the returned vector.
    pub copy_us: f64,
    /// GPU time between events recorded just before and just after the graph: the step
    /// as the GPU ran it when launched from idle.
    pub gpu_us: f64,
}

// SAFETY: the graph's handles belong to the backend's context and are only used through
// `&mut CudaState`, one thread at a time; CUDA allows that from any thread.
unsafe impl Send for DecodeGraph {}

impl CudaState<'_> {
    /// Whether decode steps replay a captured graph (default on; `DS4_CUDA_GRAPH=0`
    /// turns it off). Either way the same kernels run with the same arguments.
    pub fn set_graph(&mut self, on: bool) {
        self.use_graph = on;
        if !on {
            self.graph = None;
        }
    }

    /// Whether a run that returns its last logits (a prompt) captures the decode graph
    /// while the GPU runs it (default on; `DS4_CUDA_CAPTURE_AHEAD=0` turns it off, and
    /// the first decode step captures it). The same graph either way.
    pub fn set_capture_ahead(&mut self, on: bool) {
        self.capture_ahead = on;
    }

    /// Whether the decode graph is captured (a prompt's run captures it ahead).
    pub fn has_decode_graph(&self) -> bool {
        self.graph.is_some()
    }

    fn fwd<'a>(&'a self, gpu: &'a Gpu, capture: bool, side: &'a [Gpu]) -> Fwd<'a> {
        Fwd {
            gpu,
            cfg: &self.be.cfg,
            w: &self.be.weights,
            rope_main: &self.be.rope_main,
            rope_comp: &self.be.rope_comp,
            opts: self.opts,
            ctx: self.ctx,
            trace: self.trace.as_ref(),
            capture,
            side,
        }
    }

    /// The decode step captured at the current position (a graph serves every later
    /// position: the kernels read it from device memory).
    fn capture_decode(&self) -> Result<DecodeGraph, CudaError> {
        self.be.gpu.sync()?;
        self.capture_decode_at(self.n_tokens)
    }

    /// The capture itself. Recording launches runs nothing on the GPU, so this may run
    /// while earlier work (a prompt's run) is still executing.
    fn capture_decode_at(&self, pos0: usize) -> Result<DecodeGraph, CudaError> {
        use cudarc::driver::sys;
        let main = &self.be.gpu;
        let stream = main
            .ctx
            .new_stream()
            .map_err(|e| CudaError::Driver(format!("stream: {e}")))?;
        let gpu = main.on_stream(stream.clone());
        // The side streams of the step's parallel branches (see Fwd::fork).
        let n_side = if forward::branches_on() {
            forward::side_streams()
        } else {
            0
        };
        let side = (0..n_side)
            .map(|_| stream.fork().map(|st| main.on_stream(st)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CudaError::Driver(format!("stream: {e}")))?;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| CudaError::Driver(format!("begin capture: {e}")))?;
        let f = self.fwd(&gpu, true, &side);
        crate::device::set_capturing(true);
        let body = f
            .layers_pass(&self.scratch, &self.layers, 1, pos0)
            .and_then(|_| f.head(&self.scratch, 0, 1));
        crate::device::set_capturing(false);
        // The capture is ended whatever happened, so the stream is usable again.
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        body?;
        let graph = graph
            .map_err(|e| CudaError::Driver(format!("graph: {e}")))?
            .ok_or_else(|| CudaError::Driver("graph capture recorded nothing".into()))?;
        Ok(DecodeGraph { graph, gpu })
    }

    /// A run's tokens, batch and room in the context, checked before anything runs.
    fn check_run(&self, toks: &[u32]) -> ds4_engine::Result<()> {
        let cfg = &self.be.cfg;
        if toks.is_empty() {
            return Err(EngineError::NoLogits);
        }
        if let Some(&bad) = toks.iter().find(|&&t| t as usize >= cfg.n_vocab) {
            return Err(EngineError::TokenOutOfRange {
                token: bad,
                vocab: cfg.n_vocab,
            });
        }
        if toks.len() > self.scratch.t {
            return Err(EngineError::Backend {
                backend: "cuda".into(),
                msg: format!(
                    "a run of {} tokens exceeds the batch of {}",
                    toks.len(),
                    self.scratch.t
                ),
            });
        }
        if self.n_tokens + toks.len() > self.ctx {
            return Err(EngineError::ContextFull {
                pos: self.n_tokens + toks.len(),
                ctx: self.ctx,
            });
        }
        Ok(())
    }

    /// A greedy decode step on the captured graph: the graph, then `argmax_row` over its
    /// logits on the same stream, and the chosen id back (4 bytes, page-locked), where
    /// [`Self::decode_with_graph`] copies the whole row for the host to scan (≈ 0.1 ms a
    /// token on the H200's host: bench/CUDA-SPEED.md v22).
    fn decode_greedy_with_graph(
        &mut self,
        tok: u32,
        banned: Option<u32>,
    ) -> Result<Option<u32>, CudaError> {
        if self.graph.is_none() {
            self.graph = Some(self.capture_decode()?);
        }
        let drv = |e: cudarc::driver::DriverError| CudaError::Driver(format!("greedy pick: {e}"));
        let f = self.fwd(&self.be.gpu, false, &[]);
        f.upload_inputs(&self.scratch, &[tok], self.n_tokens)?;
        let dg = self.graph.as_ref().expect("captured above");
        dg.launch()
            .map_err(|e| CudaError::Driver(format!("graph launch: {e}")))?;
        let banned = banned
            .filter(|&b| (b as usize) < self.be.cfg.n_vocab)
            .map_or(-1, |b| b as i32);
        // Not a dependent launch: the graph's last kernel does not signal early.
        let g = dg.gpu.with_pdl(false);
        launch!(&g, "argmax_row", (forward::ARGMAX_BLOCKS, 1, 1), 1024, 0;
            self.scratch.logits.ptr, self.be.cfg.n_vocab as i32, banned, self.scratch.pick.ptr)?;
        let id = copy_back(&g, &mut self.pick_host, self.scratch.pick.ptr, 1).map_err(drv)?;
        Ok(u32::try_from(id[0]).ok())
    }

    fn decode_with_graph(
        &mut self,
        tok: u32,
        mut timing: Option<&mut StepTiming>,
    ) -> Result<Vec<Vec<f32>>, CudaError> {
        if self.graph.is_none() {
            self.graph = Some(self.capture_decode()?);
        }
        let drv = |e: cudarc::driver::DriverError| CudaError::Driver(format!("logits: {e}"));
        let f = self.fwd(&self.be.gpu, false, &[]);
        let t0 = Instant::now();
        // Synchronous copies on the legacy stream: they wait for work queued there
        // (restores, resets) and are done before the graph starts.
        f.upload_inputs(&self.scratch, &[tok], self.n_tokens)?;
        let dg = self.graph.as_ref().expect("captured above");
        let e0 = timing
            .is_some()
            .then(|| dg.event())
            .transpose()
            .map_err(drv)?;
        let t1 = Instant::now();
        dg.launch()
            .map_err(|e| CudaError::Driver(format!("graph launch: {e}")))?;
        let t2 = Instant::now();
        if let (Some(t), Some(e0)) = (timing.as_deref_mut(), &e0) {
            let e1 = dg.event().map_err(drv)?;
            t.upload_us += (t1 - t0).as_secs_f64() * 1e6;
            t.launch_us += (t2 - t1).as_secs_f64() * 1e6;
            t.gpu_us += f64::from(e0.elapsed_ms(&e1).map_err(drv)?) * 1e3;
        }
        let (out, t3) = self.read_step_logits()?;
        if let Some(t) = timing {
            t.wait_us += (t3 - t2).as_secs_f64() * 1e6;
            t.copy_us += t3.elapsed().as_secs_f64() * 1e6;
            t.steps += 1;
        }
        Ok(out)
    }

    /// The decode step's logits, through page-locked memory (or pageable,
    /// `DS4_CUDA_PINNED=0`), and the instant the wait on the graph's stream ended (with
    /// page-locked memory the logits are then on the host; what follows is the copy
    /// into the returned vector).
    fn read_step_logits(&mut self) -> Result<(Vec<Vec<f32>>, Instant), CudaError> {
        let drv = |e: cudarc::driver::DriverError| CudaError::Driver(format!("logits: {e}"));
        let dg = self.graph.as_ref().expect("read after a launch");
        if !pinned_on() {
            dg.gpu.sync()?;
            let t = Instant::now();
            let f = self.fwd(&self.be.gpu, false, &[]);
            return Ok((f.read_logits(&self.scratch, 1)?, t));
        }
        let v = self.be.cfg.n_vocab;
        let row =
            copy_back(&dg.gpu, &mut self.logits_host, self.scratch.logits.ptr, v).map_err(drv)?;
        let t = Instant::now();
        Ok((vec![row.to_vec()], t))
    }

    /// Decode steps of `toks` (one each, greedy or not is the caller's) as a generation
    /// makes them, with the host's and the GPU's share of each measured apart (see
    /// [`StepTiming`]). The GPU time is waited for before the logits are copied, so the
    /// wait is split, not longer. Advances the state like [`ForwardState::forward`].
    pub fn decode_timed(
        &mut self,
        tok: u32,
        timing: &mut StepTiming,
    ) -> Result<Vec<f32>, CudaError> {
        if self.n_tokens + 1 > self.ctx {
            return Err(CudaError::Driver("context full".into()));
        }
        let mut out = self.decode_with_graph(tok, Some(timing))?;
        self.n_tokens += 1;
        Ok(out.remove(0))
    }

    /// The decode graph (captured if need be) with `tok` and the current position
    /// uploaded: what the timers replay.
    fn graph_for_timing(&mut self, tok: u32) -> Result<&DecodeGraph, CudaError> {
        if self.graph.is_none() {
            self.graph = Some(self.capture_decode()?);
        }
        let f = self.fwd(&self.be.gpu, false, &[]);
        f.upload_inputs(&self.scratch, &[tok], self.n_tokens)?;
        Ok(self.graph.as_ref().expect("captured above"))
    }

    /// GPU milliseconds of one captured decode step of `tok` at the current position:
    /// the graph replayed `n` times back to back between two events, no host work in
    /// between (a steadier figure than a timed generation loop, for A/B runs of kernel
    /// changes); and the host's milliseconds to queue one replay. Every replay decodes
    /// at the same position, so the state is fit only for more timing afterwards.
    pub fn time_decode_graph(&mut self, tok: u32, n: usize) -> Result<(f64, f64), CudaError> {
        let dg = self.graph_for_timing(tok)?;
        let drv = |e: cudarc::driver::DriverError| CudaError::Driver(format!("timing: {e}"));
        let launch = || dg.launch().map_err(drv);
        launch()?;
        let t0 = dg.event().map_err(drv)?;
        let host = Instant::now();
        for _ in 0..n {
            launch()?;
        }
        let host_ms = host.elapsed().as_secs_f64() * 1e3;
        let t1 = dg.event().map_err(drv)?;
        let ms = t0.elapsed_ms(&t1).map_err(drv)?;
        let n = n.max(1) as f64;
        Ok((ms as f64 / n, host_ms / n))
    }

    /// GPU milliseconds of one captured decode step launched when the GPU is idle (the
    /// stream synchronized before each of `n` replays, each between its own events),
    /// same token and position every time: against [`CudaState::time_decode_graph`],
    /// what the step loses by starting from an idle GPU. The state is fit only for more
    /// timing afterwards.
    pub fn time_decode_idle(&mut self, tok: u32, n: usize) -> Result<f64, CudaError> {
        let dg = self.graph_for_timing(tok)?;
        let drv = |e: cudarc::driver::DriverError| CudaError::Driver(format!("timing: {e}"));
        let mut sum = 0.0f64;
        for _ in 0..n {
            dg.gpu.sync()?;
            let e0 = dg.event().map_err(drv)?;
            dg.launch().map_err(drv)?;
            let e1 = dg.event().map_err(drv)?;
            sum += f64::from(e0.elapsed_ms(&e1).map_err(drv)?);
        }
        Ok(sum / n.max(1) as f64)
    }

    /// Drops the decode graph and captures it again: the host milliseconds a capture
    /// takes (the first decode step of a state pays it).
    pub fn recapture_decode(&mut self) -> Result<f64, CudaError> {
        self.graph = None;
        let t = Instant::now();
        self.graph = Some(self.capture_decode()?);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    /// Records HC states and discrete decisions on every later forward call
    /// (see [`CudaState::take_trace`]).
    pub fn enable_trace(&mut self) {
        self.trace = Some(Default::default());
    }
    /// What the forward calls since [`CudaState::enable_trace`] recorded.
    pub fn take_trace(&mut self) -> GpuTrace {
        self.trace.as_ref().map(|t| t.take()).unwrap_or_default()
    }
}

impl CudaBackend {
    /// A state with its concrete type (tools that trace); [`Backend::new_state`] boxes it.
    pub fn state(&self, ctx: usize, opts: ForwardOptions) -> ds4_engine::Result<CudaState<'_>> {
        self.state_rows(ctx, opts, kv_rows_f16(&opts))
    }

    /// A state whose rows are f16 (`half`) or f32 regardless of `DS4_CUDA_KV_F16` (tests
    /// compare the two). f16 rows need the QAT simulation, which makes them exact.
    pub fn state_rows(
        &self,
        ctx: usize,
        opts: ForwardOptions,
        half: bool,
    ) -> ds4_engine::Result<CudaState<'_>> {
        if half && opts.no_qat_sim {
            return Err(EngineError::Backend {
                backend: "cuda".into(),
                msg: "f16 KV rows need the QAT simulation (without it rows carry f32 bits)".into(),
            });
        }
        let layers = (0..self.cfg.n_layer)
            .map(|l| LayerState::new(&self.gpu, &self.cfg, l, ctx, self.max_batch, half))
            .collect::<Result<Vec<_>, _>>()?;
        let scratch = Scratch::new(&self.gpu, &self.cfg, ctx, self.max_batch)?;
        Ok(CudaState {
            be: self,
            layers,
            scratch,
            opts,
            ctx,
            n_tokens: 0,
            trace: None,
            graph: None,
            use_graph: std::env::var("DS4_CUDA_GRAPH").map_or(true, |v| v != "0"),
            capture_ahead: capture_ahead_on(),
            logits_host: None,
            pick_host: None,
        })
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda:{} {}", self.gpu.ctx.ordinal(), self.gpu.name)
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn new_state(
        &self,
        ctx: usize,
        opts: ForwardOptions,
    ) -> ds4_engine::Result<Box<dyn ForwardState + '_>> {
        Ok(Box::new(self.state(ctx, opts)?))
    }
}

impl ForwardState for CudaState<'_> {
    fn n_tokens(&self) -> usize {
        self.n_tokens
    }
    fn ctx(&self) -> usize {
        self.ctx
    }
    fn forward(&mut self, toks: &[u32], which: LogitsFor) -> ds4_engine::Result<Vec<Vec<f32>>> {
        self.check_run(toks)?;
        let graphs = self.use_graph
            && which == LogitsFor::Last
            && self.trace.is_none()
            && !self.be.gpu.profiling();
        let graphable = graphs && toks.len() == 1;
        // A run that will likely be followed by decode steps (a prompt) captures their
        // graph while the GPU runs it: the capture (tens of ms for the full model) is
        // host work, off the first generated token's time.
        let capture_ahead = graphs && self.capture_ahead && self.graph.is_none();
        let decode_pos = self.n_tokens + toks.len();
        let mut captured = None;
        let mut ahead = || {
            if capture_ahead {
                captured = Some(self.capture_decode_at(decode_pos)?);
            }
            Ok(())
        };
        let out = if graphable {
            self.decode_with_graph(toks[0], None)?
        } else {
            // Long runs launch without programmatic dependent launch: their kernels fill
            // the GPU, and a next kernel's blocks resident early, waiting, only take
            // room from the current one's last waves (prefill measured 5% faster).
            let no_pdl;
            let gpu = if toks.len() >= forward::MMA_MIN_TOKENS && !pdl_for_runs() {
                no_pdl = self.be.gpu.with_pdl(false);
                &no_pdl
            } else {
                &self.be.gpu
            };
            let f = self.fwd(gpu, false, &[]);
            let pos0 = self.n_tokens;
            f.run(&self.scratch, &self.layers, toks, pos0, which, &mut ahead)?
        };
        if let Some(g) = captured {
            self.graph = Some(g);
        }
        self.n_tokens += toks.len();
        Ok(out)
    }
    fn forward_greedy(&mut self, tok: u32, banned: Option<u32>) -> ds4_engine::Result<Option<u32>> {
        let graphable = self.use_graph && self.trace.is_none() && !self.be.gpu.profiling();
        if !graphable || !gpu_pick_on() {
            return ds4_engine::backend::host_greedy(self, tok, banned);
        }
        self.check_run(&[tok])?;
        let id = self.decode_greedy_with_graph(tok, banned)?;
        self.n_tokens += 1;
        Ok(id)
    }
    fn reset(&mut self) -> ds4_engine::Result<()> {
        for l in &self.layers {
            l.reset(&self.be.gpu)?;
        }
        self.n_tokens = 0;
        Ok(())
    }
    fn max_batch(&self) -> usize {
        self.scratch.t
    }
    fn snapshot(&self) -> ds4_engine::Result<StateSnapshot> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.duplicate(&self.be.gpu))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StateSnapshot {
            n_tokens: self.n_tokens,
            data: Box::new(GpuSnapshot {
                layers,
                ctx: self.ctx,
            }),
        })
    }
    fn restore(&mut self, snap: &StateSnapshot) -> ds4_engine::Result<()> {
        let g = snap
            .data
            .downcast_ref::<GpuSnapshot>()
            .filter(|g| g.ctx == self.ctx)
            .ok_or_else(|| EngineError::Backend {
                backend: "cuda".into(),
                msg: "snapshot of another state".into(),
            })?;
        for (d, s) in self.layers.iter().zip(&g.layers) {
            d.copy_from(&self.be.gpu, s)?;
        }
        self.n_tokens = snap.n_tokens;
        Ok(())
    }
    fn kv_bytes(&self) -> usize {
        ds4_engine::backend::kv_state_bytes(&self.be.cfg, self.n_tokens)
    }
}

/// Device copies of every layer's KV state.
struct GpuSnapshot {
    layers: Vec<LayerState>,
    ctx: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_choice_takes_the_largest_that_fits_with_the_reserve() {
        const G: usize = 1 << 30;
        // 90 GiB fixed, 1 GiB of scratch per 1,024 tokens.
        let need = |b: usize| 90 * G + b / 1024 * G;
        assert_eq!(choose_batch(need, 139 * G), 8192);
        // 8,192 needs 98 + 4 GiB; 4,096 needs 94 + 4.
        assert_eq!(choose_batch(need, 101 * G), 4096);
        assert_eq!(choose_batch(need, 98 * G), 4096);
        assert_eq!(choose_batch(need, 97 * G), 2048);
        // Nothing fits: the smallest, for the load to refuse with the estimate.
        assert_eq!(choose_batch(need, 10 * G), 2048);
        // No overflow on an absurd estimate.
        assert_eq!(choose_batch(|_| usize::MAX, 139 * G), 2048);
    }

    #[test]
    fn scratch_grows_with_the_batch_for_the_flash_shapes() {
        let cfg = ds4_engine::ModelConfig::flash();
        for ctx in [16 * 1024 + 128, 32 * 1024, 128 * 1024, 1 << 20] {
            let sc: Vec<usize> = AUTO_BATCHES
                .iter()
                .map(|&b| scratch_bytes(&cfg, ctx, b))
                .collect();
            println!(
                "ctx {ctx}: scratch {:?} GiB for batches {AUTO_BATCHES:?}, state {:.2} GiB",
                sc.iter()
                    .map(|&b| format!("{:.2}", gib(b)))
                    .collect::<Vec<_>>(),
                gib(state_bytes(&cfg, ctx, 8192, true))
            );
            assert!(sc[0] > sc[1] && sc[1] > sc[2], "ctx {ctx}: {sc:?}");
        }
    }
}

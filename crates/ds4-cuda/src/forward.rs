//! The forward pass on the GPU, one layer top to bottom (spec §3.5–§3.12), in the
//! same order and with the same names as the CPU reference (ds4-engine's layer.rs).
//!
//! A run of T tokens goes through each layer together (layer-major), as on the CPU:
//! products that do not touch the KV state are batched over the run; the compressor
//! walks the run in order inside one kernel; attention and the indexer see, for each
//! token, exactly the rows that token saw on the CPU (raw window up to itself,
//! compressed rows closed at or before it). Nothing returns to the host inside a layer.

use ds4_engine::{AttnKind, ForwardOptions, LogitsFor, ModelConfig};
use ds4_gguf::GgmlType;

use crate::CudaError;
use crate::device::{DevBuf, Gpu};
use crate::launch;
use crate::weights::{DevCompressor, DevHc, DevIndexer, DevLayer, DevMat, DevPair, DevWeights};

/// ds4's router-weight floor (2^−14), as in the CPU reference.
const ROUTER_WEIGHT_FLOOR: f32 = 6.103_515_6e-5;
/// Logits are computed for at most this many tokens at a time (the vocabulary is large).
const HEAD_CHUNK: usize = 64;

/// Arguments of the `mv_*` kernels (must match `struct MvArgs` in ds4.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct MvArgs {
    w: u64,
    mat_bytes: i64,
    pub ids: u64,
    rows: i32,
    cols: i32,
    xf: u64,
    xq: u64,
    xd: u64,
    xs: u64,
    act_div: i32,
    x_stride: i32,
    group_rows: i32,
    group_stride: i32,
    pub y: u64,
    y_stride: i32,
    nb: i32,
    sc: u64,
    sc_mat_bytes: i64,
    nt: i32,
    perm: u64,
    grp: u64,
    ngrp: u64,
    ksplit: i32,
    xsc: u64,
}
unsafe impl cudarc::driver::DeviceRepr for MvArgs {}

/// How activations are prepared for a weight type (what the CPU kernels consume).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ActKind {
    F32,
    Q8_0,
    Q8K,
}

pub fn act_kind(ty: GgmlType) -> ActKind {
    match ty {
        GgmlType::Q8_0 => ActKind::Q8_0,
        GgmlType::Q2K | GgmlType::Q4K | GgmlType::Iq2Xxs => ActKind::Q8K,
        _ => ActKind::F32,
    }
}

/// The matrix-vector kernel for a weight type; `single`: the one-item-per-warp entry.
fn mv_kernel(ty: GgmlType, single: bool) -> &'static str {
    match (ty, single) {
        (GgmlType::F32, false) => "mv_f32",
        (GgmlType::F32, true) => "mv_f32_1",
        (GgmlType::F16, false) => "mv_f16",
        (GgmlType::F16, true) => "mv_f16_1",
        (GgmlType::Bf16, false) => "mv_bf16",
        (GgmlType::Bf16, true) => "mv_bf16_1",
        (GgmlType::Q8_0, false) => "mv_q8_0",
        (GgmlType::Q8_0, true) => "mv_q8_0_1",
        (GgmlType::Q2K, false) => "mv_q2_k",
        (GgmlType::Q2K, true) => "mv_q2_k_1",
        (GgmlType::Q4K, false) => "mv_q4_k",
        (GgmlType::Q4K, true) => "mv_q4_k_1",
        (_, false) => "mv_iq2_xxs",
        (_, true) => "mv_iq2_xxs_1",
    }
}

/// Buffers of a run of up to `t` tokens, reused by every layer.
pub struct Scratch {
    pub t: usize,
    toks: DevBuf,
    x: DevBuf,
    flat: DevBuf,
    z: DevBuf,
    mix: DevBuf,
    y: DevBuf,
    xn: DevBuf,
    qkv_raw: DevBuf,
    qa: DevBuf,
    q: DevBuf,
    ckv: DevBuf,
    ikv: DevBuf,
    qi: DevBuf,
    wi: DevBuf,
    scores: DevBuf,
    sel: DevBuf,
    nsel: DevBuf,
    o: DevBuf,
    /// attention_split partials (decode).
    apart: DevBuf,
    low: DevBuf,
    f: DevBuf,
    rlog: DevBuf,
    ids: DevBuf,
    wts: DevBuf,
    gu: DevBuf,
    mid: DevBuf,
    routed: DevBuf,
    sgu: DevBuf,
    smid: DevBuf,
    sout: DevBuf,
    act_q: DevBuf,
    act_d: DevBuf,
    act_s: DevBuf,
    /// A second Q8_0 activation (qa for q_b, the FFN input for the shared expert),
    /// written by the norm before it while `act_*` holds another product's input.
    act2_q: DevBuf,
    act2_d: DevBuf,
    pub(crate) logits: DevBuf,
    perm: DevBuf,
    grp: DevBuf,
    ngrp: DevBuf,
    /// hc_pre_late's per-token block counters (zero between launches).
    hc_count: DevBuf,
    /// Partial sums of the column-split tensor-core products (runs only).
    part: DevBuf,
    /// The activations of a run's Q8_0 product as f16 (`q8_0_to_f16`, for `mm_q8_0_wh2`).
    act_h: DevBuf,
    /// The run's first position (read by the kernels, so a captured graph can replay).
    pub pos: DevBuf,
    /// A greedy decode step's chosen id (`argmax_row`).
    pub(crate) pick: DevBuf,
    /// The HC state's sums of squares, f64 partials [token][hc_post4 block] (≤ 16 a
    /// token), when `ssq_ok`: written by hc_post4 with the state itself (unless
    /// `DS4_CUDA_HC_SSQ=0`), consumed by the next run HC pre-step's norm factors.
    ssq: DevBuf,
    ssq_ok: std::sync::atomic::AtomicBool,
    /// Indexer rows one token can see at most (scores row stride).
    max_irows: usize,
}

/// One layer's KV state on the GPU (spec §4.1).
pub struct LayerState {
    /// Raw K=V rows in a ring of `ring_rows` (window + run, so a run never overwrites
    /// a row an earlier token of the same run still reads).
    ring: DevBuf,
    /// Compressed rows, then the compressor's frontier values and scores (f32).
    comp: Option<(DevBuf, DevBuf, DevBuf)>,
    icomp: Option<(DevBuf, DevBuf, DevBuf)>,
    /// Rows (raw, compressed, the indexer's) stored as f16: see [`kv_rows_f16`].
    half: bool,
}

/// The kernel over a state's rows: its f16 entry point (`_kh`) where the rows are f16.
fn row_kernel(half: bool, f32_name: &'static str, f16_name: &'static str) -> &'static str {
    if half { f16_name } else { f32_name }
}

/// Whether a state keeps its K=V and indexer rows in f16 rather than f32: where the QAT
/// simulation runs, every stored row has been rounded to f16 (fp8 / fp4 grid values, then
/// f16), so the f16 bits are the row exactly in half the memory, and the kernels that read
/// rows — attention, the indexer's scores — move half the bytes. Without the simulation
/// the rows carry f32 bits and stay f32. `DS4_CUDA_KV_F16=0` keeps f32, for comparisons.
pub fn kv_rows_f16(opts: &ForwardOptions) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !opts.no_qat_sim
        && *ON.get_or_init(|| std::env::var("DS4_CUDA_KV_F16").map_or(true, |v| v != "0"))
}

pub struct Sizes {
    pub ring_rows: usize,
    pub max_irows: usize,
    /// Largest number of rows one attention query reads.
    pub max_attn_rows: usize,
}

/// Most rows one attention query of layer `l` reads in a context of `ctx`: the window,
/// plus the indexer's selection (sparse layers) or every compressed row (heavy ones).
/// Per layer, so that a long context's heavy layers don't size the kernels of the
/// others (a decode graph's launches are fixed at capture for the context allocated).
pub fn layer_attn_rows(cfg: &ModelConfig, l: usize, ctx: usize) -> usize {
    cfg.sliding_window
        + match cfg.attn_kind(l) {
            AttnKind::Window => 0,
            AttnKind::Sparse { .. } => cfg.indexer_top_k,
            AttnKind::Heavy { ratio } => ctx / ratio + 2,
        }
}

pub fn sizes(cfg: &ModelConfig, ctx: usize, t: usize) -> Sizes {
    let mut max_attn_rows = cfg.sliding_window;
    let mut max_irows = 0;
    for l in 0..cfg.n_layer {
        if let AttnKind::Sparse { ratio } = cfg.attn_kind(l) {
            max_irows = max_irows.max(ctx / ratio + 2);
        }
        max_attn_rows = max_attn_rows.max(layer_attn_rows(cfg, l, ctx));
    }
    Sizes {
        ring_rows: cfg.sliding_window + t,
        max_irows,
        max_attn_rows,
    }
}

/// Most expert groups `group_by_expert` can form for a run of `t` tokens: groups of
/// up to `gsize`, at most one partial group per expert.
fn max_expert_groups(cfg: &ModelConfig, t: usize, gsize: usize) -> usize {
    (t * cfg.n_expert_used).div_ceil(gsize) + cfg.n_expert
}

/// Items per expert group: 64 (the `_st64` kernels) or MM_NG (32) when the gate, up and
/// down products all have a tensor-core kernel, else MAXNT (8, the matrix-vector
/// kernels' limit).
fn expert_group_size(g: &Gpu, w: &DevLayer, items: usize) -> usize {
    let mats = w.gate_up_exps.mats().into_iter().chain([&w.down_exps]);
    group_size(mats.into_iter().all(expert_mm), items, f16_expert_runs(g))
}

/// Whether a run's routed items are grouped by 64 for every run: either f16 expert
/// kernel wants them.
fn f16_expert_runs(g: &Gpu) -> bool {
    iq2_f16_runs(g) || q2k_f16_runs(g)
}

/// Whether the Q2_K products of runs take the f16 kernel (`mm_q2_k_wf64`, Hopper).
fn q2k_f16_runs(g: &Gpu) -> bool {
    g.arch == "sm_90a" && q2k_f16_on()
}

/// Whether the IQ2_XXS products of runs take the f16 kernel (`mm_iq2_xxs_wh64`, Hopper),
/// and so routed items are grouped by 64 for every run (its groups of 32 measured slower
/// than the integer kernel, v28: −4.5% at 2k, where the 64s give +1.9%).
fn iq2_f16_runs(g: &Gpu) -> bool {
    g.arch == "sm_90a" && iq2_f16_on()
}

/// Whether routed experts of `m`'s type have a grouped tensor-core kernel.
fn expert_mm(m: &DevMat) -> bool {
    mma_on()
        && match m.ty {
            GgmlType::Iq2Xxs => m.split.is_some(),
            GgmlType::Q2K => true,
            _ => false,
        }
}

/// Items per expert group for a run of `items` routed items: the tensor-core kernels'
/// 32 (or 64: long runs, or every run with `f16_groups`, see [`iq2_f16_runs`]), else
/// MAXNT.
fn group_size(mm: bool, items: usize, f16_groups: bool) -> usize {
    match (mm, f16_groups || expert_groups_of_64(items)) {
        (true, true) => 64,
        (true, false) => 32,
        (false, _) => 8,
    }
}

fn f32s(n: usize) -> usize {
    n * 4
}

/// Most column splits of a tensor-core product, most rows of a split one, and most
/// partial sums a token (splits × rows) the partials buffer holds.
const MM_MAX_SPLITS: usize = 8;
const MM_SPLIT_ROWS: usize = 512;
const MM_SPLIT_PARTS: usize = 1024;

/// Bytes of the split products' partial sums for runs of `t` tokens (none for decode).
pub fn part_bytes(t: usize) -> usize {
    if t < MMA_MIN_TOKENS {
        16
    } else {
        f32s(MM_SPLIT_PARTS * t)
    }
}

/// Column splits for a tensor-core F16 product of `m` over `nb` tokens: a matrix of a few
/// 64-row tiles (the HC mixing's 24 rows over 16,384 columns, the indexer's 64 weights,
/// the router's 256 rows and the indexer compressor's 512 over 4,096) gives few blocks —
/// 32 of 132 SMs for the HC mixing over a 2,048-token chunk, 128 for the router, one
/// block an SM walking all the columns with one stage in flight (v32: the router 79 µs
/// for 34 MB). Split in a power of two that divides its 64-column stages (each split
/// keeps at least four) until the blocks fill two per SM; the partial sums are added in
/// split order (`sum_parts`), so the result does not depend on timing. 1: no split.
/// `DS4_CUDA_MM_SPLIT=0` turns the splits off and `=64` keeps them to one row tile (v17
/// to v31), for comparisons.
pub fn mm_col_splits(gpu: &Gpu, m: &DevMat, nb: usize, part_cap: usize) -> usize {
    static MODE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let max_rows = *MODE.get_or_init(|| match std::env::var("DS4_CUDA_MM_SPLIT").as_deref() {
        Ok("0") => None,
        Ok("64") => Some(64),
        _ => Some(MM_SPLIT_ROWS),
    });
    let Some(max_rows) = max_rows else {
        return 1;
    };
    if m.ty != GgmlType::F16 || m.rows > max_rows {
        return 1;
    }
    let blocks = m.rows.div_ceil(64) * nb.div_ceil(64);
    let stages = m.cols / 64;
    let mut ks = 1;
    while ks < MM_MAX_SPLITS
        && blocks * ks < 2 * gpu.sms as usize
        && stages.is_multiple_of(2 * ks)
        && stages / (2 * ks) >= 4
        && f32s(2 * ks * nb * m.rows) <= part_cap
    {
        ks *= 2;
    }
    ks
}

/// Blocks of `argmax_row` (AM_BLOCKS in ds4.cu).
pub(crate) const ARGMAX_BLOCKS: u32 = 64;

/// Bytes of the per-run scratch for runs of `t` tokens.
pub fn scratch_bytes(cfg: &ModelConfig, ctx: usize, t: usize) -> usize {
    scratch_plan(cfg, ctx, t).iter().sum()
}

fn scratch_plan(cfg: &ModelConfig, ctx: usize, t: usize) -> Vec<usize> {
    let s = sizes(cfg, ctx, t);
    let e = cfg.n_embd;
    let he = cfg.hc_width();
    let qh = cfg.n_head * cfg.head_dim;
    let k = cfg.n_expert_used;
    let ff = cfg.expert_ff;
    let nhi = cfg.indexer_heads;
    let di = cfg.indexer_head_dim;
    let act = t * [
        he,
        e,
        qh,
        cfg.q_lora,
        cfg.o_groups * cfg.o_lora,
        k * ff,
        nhi * di,
    ]
    .into_iter()
    .max()
    .unwrap_or(e);
    let hmax = t.max(HEAD_CHUNK);
    vec![
        t * 4,                                          // toks
        f32s(t * he),                                   // x
        f32s(hmax * he),                                // flat
        f32s(hmax * cfg.hc_mix().max(cfg.hc)),          // z
        f32s(t * (cfg.hc + cfg.hc * cfg.hc)),           // mix
        f32s(hmax * e),                                 // y
        f32s(hmax * e),                                 // xn
        f32s(t * (cfg.q_lora + cfg.head_dim)),          // qkv_raw: [q_a; kv] outputs
        f32s(t * cfg.q_lora),                           // qa
        f32s(t * qh),                                   // q
        f32s(t * 4 * cfg.head_dim),                     // ckv: [kv; gate], coff·hd each
        f32s(t * 4 * di),                               // ikv: [kv; gate], 2·di each
        f32s(t * nhi * di),                             // qi
        f32s(t * nhi),                                  // wi
        f32s(t * s.max_irows.max(1)),                   // scores
        t * cfg.indexer_top_k.max(1) * 4,               // sel
        t * 4,                                          // nsel
        f32s(t * qh),                                   // o
        split_scratch_bytes(cfg, ctx, t),               // apart
        f32s(t * cfg.o_groups * cfg.o_lora),            // low
        f32s(t * e),                                    // f
        f32s(t * cfg.n_expert),                         // rlog
        t * k * 4,                                      // ids
        f32s(t * k),                                    // wts
        f32s(t * k * 2 * ff),                           // gu: [gate; up] per item
        f32s(t * k * ff),                               // mid
        f32s(t * k * e),                                // routed
        f32s(t * 2 * ff),                               // sgu: [gate; up]
        f32s(t * ff),                                   // smid
        f32s(t * e),                                    // sout
        act,                                            // act_q (int8)
        f32s(act / 32 + 1),                             // act_d
        act / 16 * 2 + 2,                               // act_s (int16)
        hmax * e.max(cfg.q_lora),                       // act2_q (int8)
        f32s(hmax * e.max(cfg.q_lora) / 32 + 1),        // act2_d
        f32s(HEAD_CHUNK * cfg.n_vocab),                 // logits
        t * k * 4,                                      // perm
        max_expert_groups(cfg, t, 8) * 3 * 4,           // grp
        16,                                             // ngrp
        MMA_MIN_TOKENS * 4,                             // hc_count
        part_bytes(t),                                  // part
        if t >= MMA_MIN_TOKENS { 2 * act } else { 16 }, // act_h (f16)
        16,                                             // pos
        (4 + 2 * ARGMAX_BLOCKS as usize) * 4,           // pick
        t * HC_SSQ_PARTS * 8,                           // ssq (f64)
    ]
}

impl Scratch {
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, ctx: usize, t: usize) -> Result<Self, CudaError> {
        let p = scratch_plan(cfg, ctx, t);
        let mut it = p.into_iter();
        let mut a = || -> Result<DevBuf, CudaError> { gpu.alloc(it.next().unwrap_or(16)) };
        Ok(Scratch {
            t,
            toks: a()?,
            x: a()?,
            flat: a()?,
            z: a()?,
            mix: a()?,
            y: a()?,
            xn: a()?,
            qkv_raw: a()?,
            qa: a()?,
            q: a()?,
            ckv: a()?,
            ikv: a()?,
            qi: a()?,
            wi: a()?,
            scores: a()?,
            sel: a()?,
            nsel: a()?,
            o: a()?,
            apart: a()?,
            low: a()?,
            f: a()?,
            rlog: a()?,
            ids: a()?,
            wts: a()?,
            gu: a()?,
            mid: a()?,
            routed: a()?,
            sgu: a()?,
            smid: a()?,
            sout: a()?,
            act_q: a()?,
            act_d: a()?,
            act_s: a()?,
            act2_q: a()?,
            act2_d: a()?,
            logits: a()?,
            perm: a()?,
            grp: a()?,
            ngrp: a()?,
            hc_count: a()?,
            part: a()?,
            act_h: a()?,
            pos: a()?,
            pick: a()?,
            ssq: a()?,
            ssq_ok: std::sync::atomic::AtomicBool::new(false),
            max_irows: sizes(cfg, ctx, t).max_irows.max(1),
        })
    }
}

/// Bytes of one stored row value: f16 or f32.
fn row_elem_bytes(half: bool) -> usize {
    if half { 2 } else { 4 }
}

/// Bytes of the KV state of a `ctx`-token context (runs of up to `t` tokens), its rows
/// in f16 when `half` (the frontiers stay f32).
pub fn state_bytes(cfg: &ModelConfig, ctx: usize, t: usize, half: bool) -> usize {
    let s = sizes(cfg, ctx, t);
    let rows = |n: usize| n * row_elem_bytes(half);
    let mut total = 0;
    for l in 0..cfg.n_layer {
        total += rows(s.ring_rows * cfg.head_dim);
        let kind = cfg.attn_kind(l);
        if kind.ratio() > 0 {
            let (r, coff) = (kind.ratio(), kind.coff());
            total += rows((ctx / r + 2) * cfg.head_dim) + f32s(2 * coff * r * coff * cfg.head_dim);
            if matches!(kind, AttnKind::Sparse { .. }) {
                let di = cfg.indexer_head_dim;
                total += rows((ctx / r + 2) * di) + f32s(2 * 2 * r * 2 * di);
            }
        }
    }
    total
}

impl LayerState {
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        l: usize,
        ctx: usize,
        t: usize,
        half: bool,
    ) -> Result<Self, CudaError> {
        let s = sizes(cfg, ctx, t);
        let kind = cfg.attn_kind(l);
        let rows = |n: usize| n * row_elem_bytes(half);
        let front =
            |ratio: usize, coff: usize, d: usize| -> Result<(DevBuf, DevBuf, DevBuf), CudaError> {
                let n = coff * ratio * coff * d;
                Ok((
                    gpu.alloc(rows((ctx / ratio + 2) * d))?,
                    gpu.alloc(f32s(n))?,
                    gpu.alloc(f32s(n))?,
                ))
            };
        let (comp, icomp) = match kind {
            AttnKind::Window => (None, None),
            AttnKind::Heavy { ratio } => (Some(front(ratio, 1, cfg.head_dim)?), None),
            AttnKind::Sparse { ratio } => (
                Some(front(ratio, 2, cfg.head_dim)?),
                Some(front(ratio, 2, cfg.indexer_head_dim)?),
            ),
        };
        let st = LayerState {
            ring: gpu.alloc(rows(s.ring_rows * cfg.head_dim))?,
            comp,
            icomp,
            half,
        };
        st.reset(gpu)?;
        Ok(st)
    }

    /// Slots of the raw-row ring (`hd` values a row).
    fn ring_rows(&self, hd: usize) -> usize {
        self.ring.bytes / row_elem_bytes(self.half) / hd
    }

    /// The first `n` values of a row buffer, as f32 (traces).
    fn read_rows(&self, gpu: &Gpu, b: &DevBuf, n: usize) -> Result<Vec<f32>, CudaError> {
        if self.half {
            let mut h = vec![0u16; n];
            gpu.read(b.ptr, &mut h)?;
            Ok(h.into_iter().map(ds4_quant::half::f16_to_f32).collect())
        } else {
            let mut v = vec![0f32; n];
            gpu.read(b.ptr, &mut v)?;
            Ok(v)
        }
    }

    fn bufs(&self) -> Vec<&DevBuf> {
        let mut v = vec![&self.ring];
        for (a, b, c) in self.comp.iter().chain(self.icomp.iter()) {
            v.extend([a, b, c]);
        }
        v
    }

    /// A copy in fresh device memory (snapshots).
    pub fn duplicate(&self, gpu: &Gpu) -> Result<LayerState, CudaError> {
        let copy = |b: &DevBuf| -> Result<DevBuf, CudaError> {
            let n = gpu.alloc(b.bytes)?;
            copy_dtod(gpu, n.ptr, b.ptr, b.bytes)?;
            Ok(n)
        };
        let three = |t: &Option<(DevBuf, DevBuf, DevBuf)>| -> Result<_, CudaError> {
            t.as_ref()
                .map(|(a, b, c)| Ok((copy(a)?, copy(b)?, copy(c)?)))
                .transpose()
        };
        Ok(LayerState {
            ring: copy(&self.ring)?,
            comp: three(&self.comp)?,
            icomp: three(&self.icomp)?,
            half: self.half,
        })
    }

    /// Overwrites this state with `src` (same shapes).
    pub fn copy_from(&self, gpu: &Gpu, src: &LayerState) -> Result<(), CudaError> {
        let (d, s) = (self.bufs(), src.bufs());
        if d.len() != s.len() || self.half != src.half {
            return Err(CudaError::Model("snapshot of another layer layout".into()));
        }
        for (a, b) in d.iter().zip(&s) {
            if a.bytes != b.bytes {
                return Err(CudaError::Model("snapshot of another context size".into()));
            }
            copy_dtod(gpu, a.ptr, b.ptr, a.bytes)?;
        }
        Ok(())
    }

    /// Empty frontiers: values 0, scores at the empty-slot score.
    pub fn reset(&self, gpu: &Gpu) -> Result<(), CudaError> {
        for (_, kv, score) in self.comp.iter().chain(self.icomp.iter()) {
            let n = (score.bytes / 4) as i64;
            let blocks = (n as usize).div_ceil(256) as u32;
            launch!(gpu, "fill_f32", (blocks, 1, 1), 256, 0; score.ptr, ds4_engine::cache::EMPTY_SCORE, n)?;
            launch!(gpu, "fill_f32", (blocks, 1, 1), 256, 0; kv.ptr, 0.0f32, n)?;
        }
        Ok(())
    }
}

/// Everything one forward call needs.
pub struct Fwd<'a> {
    pub gpu: &'a Gpu,
    pub cfg: &'a ModelConfig,
    pub w: &'a DevWeights,
    pub rope_main: &'a DevBuf,
    pub rope_comp: &'a DevBuf,
    pub opts: ForwardOptions,
    pub ctx: usize,
    /// When set, the HC state of every token entering each layer and after its
    /// attention sublayer (then the final state) is copied back: the CPU's `Trace::hidden`, for locating a divergence.
    pub trace: Option<&'a std::cell::RefCell<GpuTrace>>,
    /// Being captured into a graph that replays at later positions: launch shapes must
    /// not depend on the position (kernels skip what the position excludes).
    pub capture: bool,
    /// Further streams for independent chains of a captured decode step (see
    /// `Fwd::fork`); empty runs everything in order on `gpu`.
    pub side: &'a [Gpu],
}

/// Whether the decode graph starts the compressors and the indexer's head weights
/// (products of xn alone) on side branches beside q_a, right after the HC pre-step,
/// rather than after the q_a norm (default: the H200's step −1.7%, v24c;
/// `DS4_CUDA_EARLY_COMP=0` the old order).
pub fn early_compressors_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_EARLY_COMP").map_or(true, |v| v != "0"))
}

/// Side streams of the decode graph (see [`Fwd::fork`]): 0 the queries, 1 the attention
/// compressor and the routed Q8_K, 2 the HC Sinkhorn and the indexer's queries; 3 and 4
/// the early compressors ([`early_compressors_on`]).
pub fn side_streams() -> usize {
    if early_compressors_on() { 5 } else { 3 }
}

/// Whether the indexer's three products (its compressor's, q_b, proj) read their inputs
/// as floats: then none writes the shared activation buffers, and they may run on branches.
fn indexer_reads_floats(iw: &DevIndexer) -> bool {
    [iw.compressor.kv_gate.a_type(), iw.q_b.ty, iw.proj.ty]
        .into_iter()
        .all(|ty| act_kind(ty) == ActKind::F32)
}

/// The early side branches of one attention sublayer ([`Fwd::early_compressors`]): the
/// attention compressor's and the indexer's (its head weights and compressor), where they
/// ran.
#[derive(Default)]
struct Early<'a> {
    attn: Option<Fwd<'a>>,
    idx: Option<Fwd<'a>>,
}

/// Whether a captured decode step runs independent chains as parallel graph branches
/// (`DS4_CUDA_BRANCHES=0` keeps one chain, for comparisons).
pub fn branches_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_BRANCHES").map_or(true, |v| v != "0"))
}

/// What a traced forward call copies back (see [`Fwd::trace`]).
#[derive(Debug, Default, Clone)]
pub struct GpuTrace {
    /// `[T, hc·n_embd]` entering layer l (index 2l), after its attention (2l + 1),
    /// and the final state (2·n_layer).
    pub hidden: Vec<Vec<f32>>,
    /// Per layer: the routed experts of each token, `[T, k]` in selection order.
    pub experts: Vec<Vec<i32>>,
    /// Per layer: each token's indexer selection (empty when it saw every row).
    pub selected: Vec<Vec<Vec<i32>>>,
    /// Per layer after the call: the raw K=V ring (`ring_rows × head_dim`, row of
    /// position p at p % ring_rows) and the attention compressed rows written so far.
    pub raw: Vec<Vec<f32>>,
    pub comp: Vec<Vec<f32>>,
}

/// A matrix product request: `nb` outputs of `m` over activations `x` (`n_act`
/// vectors of `x_len`), optionally indirect through expert ids and grouped.
#[derive(Clone, Copy, Debug)]
pub struct Mv {
    pub x: u64,
    pub n_act: usize,
    pub x_len: usize,
    pub nb: usize,
    pub act_div: usize,
    pub ids: u64,
    pub group: (usize, usize),
    pub y: u64,
    pub y_stride: usize,
    /// Items grouped by expert (`perm`, `grp`, `ngrp` as `group_by_expert` writes
    /// them, and the most groups there can be); None: items in order.
    pub by_expert: Option<(u64, u64, u64, usize)>,
    /// The activations were quantized for this product's type by the product just
    /// before (same input): skip quantizing them again.
    pub act_ready: bool,
    /// A buffer (address, bytes) for the partial sums of a tensor-core product split
    /// over its columns (see [`mm_col_splits`]); (0, 0): no split. Only one product at a
    /// time may use it (runs are not captured, so they have no parallel branches).
    pub part: (u64, usize),
    /// A buffer (address, bytes) for the activations as f16 (`mm_q8_0_wh2` reads them
    /// there); (0, 0): none. One product at a time, as `part`.
    pub half: (u64, usize),
    /// `half` already holds the activations' f16 in `q8_0_to_f16_p`'s order (the run
    /// attention's epilogue wrote them beside o's Q8_0): a product that takes
    /// `mm_q8_0_wr` skips that conversion; any other ignores this.
    pub half_ready: bool,
    /// Per-token factors (`nb` floats) the f32 activations are multiplied by as they
    /// are read (`MvArgs::xsc` in ds4.cu): only the F16 tensor-core products take them;
    /// 0: none.
    pub x_scale: u64,
}

/// Whether `b` consumes the activations exactly as `a` does (so `b` can reuse them).
fn same_act(a: &DevMat, b: &DevMat) -> bool {
    act_kind(a.ty) == act_kind(b.ty)
}

impl Mv {
    pub fn plain(x: u64, t: usize, x_len: usize, y: u64, y_stride: usize) -> Mv {
        Mv {
            x,
            n_act: t,
            x_len,
            nb: t,
            act_div: 1,
            ids: 0,
            group: (0, 0),
            y,
            y_stride,
            by_expert: None,
            act_ready: false,
            part: (0, 0),
            half: (0, 0),
            half_ready: false,
            x_scale: 0,
        }
    }
}

fn copy_dtod(gpu: &Gpu, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError> {
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, gpu.stream.cu_stream()) }
        .map_err(|e| CudaError::Driver(format!("copy: {e}")))
}

fn ceil_div(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// Warps per row for `m` (see `MvArgs::ksplit` in ds4.cu): matrices with few rows (HC
/// projections, router, compressors) would leave most of the GPU idle with one warp
/// per row, so their rows are split while every warp keeps at least two steps of
/// work and the grid stays under ~8k warps. Depends on the matrix only, so a token
/// gets the same sums whatever run it is in.
pub fn ksplit(m: &DevMat) -> usize {
    // 16-byte pieces per row, and pieces a warp takes per step.
    let (pieces, step) = match m.ty {
        GgmlType::F32 => (m.cols / 4, 32),
        GgmlType::F16 | GgmlType::Bf16 => (m.cols / 8, 32),
        GgmlType::Q8_0 => (m.cols / 16, 64),
        _ => return 1,
    };
    let mut ks = 1;
    while ks < 16 && m.rows * ks * 2 <= 8192 && pieces >= step * ks * 2 * 2 {
        ks *= 2;
    }
    ks
}

/// Tensor-core kernels in use (`DS4_CUDA_MMA=0` turns them off, for comparisons).
fn mma_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_MMA").map_or(true, |v| v != "0"))
}

/// Whether a run's attention takes the tensor-core kernel (decode keeps
/// `attention_split`: a step's few queries would give it too few blocks): rows exact in
/// f16 (the QAT simulation rounds every stored row to f16; without it the rows carry f32
/// bits), 16 heads per block, the head's dimensions in four warp shares of whole n-tiles
/// (a multiple of 64, at most 512), and its shared memory within a Hopper block's 227 KB
/// (the row table grows with the context).
/// `DS4_CUDA_ATTN_MMA=0` keeps `attention_mh`, for comparisons.
fn attention_mma_fits(cfg: &ModelConfig, sim: bool, rows_max: usize, half: bool) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("DS4_CUDA_ATTN_MMA").map_or(true, |v| v != "0"));
    on && mma_on()
        && sim
        && cfg.n_head.is_multiple_of(16)
        && cfg.head_dim.is_multiple_of(64)
        && cfg.head_dim <= 512
        && cfg.n_rot.is_multiple_of(2)
        && {
            let hpb = attention_mma_heads(cfg, rows_max, half);
            attention_mma_shared(cfg.head_dim, hpb, rows_max, att_mma_buffers(hpb, half))
                <= ATT_MMA_SHARED_MAX
        }
}

static ATT_WG: TestSwitch = TestSwitch::new();

/// Whether a run's tensor-core attention takes wgmma (`attention_wg_kh`, Hopper: 32 heads
/// of 512 dimensions a block over f16 rows). The default (v31, H200, 4 full-width layers:
/// a 2,048-token chunk's attention 5.57 → 3.02 ms; same call, full file: prefill +7.4% at
/// 2k, +10.5% for a 6,144-token batch); `DS4_CUDA_ATT_WG=0` keeps `attention_mma_h64_kh`.
/// Taken only where `attention_mma_fits` (its row table's shared memory), though this
/// kernel's own does not grow with the context.
fn attention_wg_on() -> bool {
    ATT_WG.on(|| env_not("DS4_CUDA_ATT_WG", "0"))
}

/// Chooses [`attention_wg_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the kernels.
pub fn set_attention_wg(on: Option<bool>) {
    ATT_WG.set(on);
}

/// Whether `attention_wg_kh` writes o's f16 for out_a's `mm_q8_0_wr` beside its Q8_0 (v32,
/// the default: `q8_0_to_f16_p`'s pass over o, 60 µs a layer for a 2,048-token chunk,
/// skipped); `DS4_CUDA_ATT_F16O=0` leaves that conversion to `q8_0_to_f16_p`.
fn attention_f16_o_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| env_not("DS4_CUDA_ATT_F16O", "0"))
}

/// Whether a run that takes the tensor-core attention takes `attention_wg_kh`: on Hopper,
/// for the shapes it is written for.
fn attention_wg_takes(g: &Gpu, cfg: &ModelConfig, half: bool) -> bool {
    g.arch == "sm_90a" && attention_wg_shapes(cfg, half) && attention_wg_on()
}

/// `attention_wg_kh`'s shapes: the Flash layout's 512 dimensions a head, heads in blocks of
/// 32, rows in f16, a rotation of at most 128 dimensions (its table of cosines and sines).
fn attention_wg_shapes(cfg: &ModelConfig, half: bool) -> bool {
    half && cfg.head_dim == 512 && cfg.n_head.is_multiple_of(32) && cfg.n_rot <= 128
}

/// `attention_wg_kh`'s dynamic shared memory (its layout in ds4.cu): room to align to
/// 1,024 bytes, the queries' hi and lo parts, two tiles of 64 rows, the halves' score
/// exchange, the rotation's cosines and sines (n_rot ≤ 128).
const ATW_SHARED: usize = 1024 + 65536 + 2 * 65536 + 16384 + 512;
const _: () = assert!(ATW_SHARED <= ATT_MMA_SHARED_MAX);

/// Row tiles `attention_mma` stages at once: two for 64 heads over f16 rows (the next
/// tile's cp.async runs under this one's products: one block an SM has no other warps
/// to hide the loads behind), else one.
fn att_mma_buffers(hpb: usize, half: bool) -> usize {
    if hpb == 64 && half { 2 } else { 1 }
}

/// The dynamic shared memory `attention_mma` may take: a Hopper block's 227 KB (the
/// 64-head kernel is one block an SM).
const ATT_MMA_SHARED_MAX: usize = 227 * 1024;

/// Heads per `attention_mma` block: 64 (`attention_mma_h64`) where the head count and
/// the shared memory for `rows_max` rows allow (each staged row serves more heads;
/// `DS4_CUDA_ATTN_H64=0` keeps 32), else 32, else 16.
fn attention_mma_heads(cfg: &ModelConfig, rows_max: usize, half: bool) -> usize {
    static H64: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let h64 = *H64.get_or_init(|| std::env::var("DS4_CUDA_ATTN_H64").map_or(true, |v| v != "0"));
    if h64
        && cfg.n_head.is_multiple_of(64)
        && attention_mma_shared(cfg.head_dim, 64, rows_max, att_mma_buffers(64, half))
            <= ATT_MMA_SHARED_MAX
    {
        64
    } else if cfg.n_head.is_multiple_of(32) {
        32
    } else {
        16
    }
}

/// Dynamic shared memory of `attention_mma` (its layout in ds4.cu): an address per row;
/// the `hpb` heads' queries as f16 hi and lo and `nb` tiles of 32 rows, each row padded
/// by 8 halves; the tile's scores (hpb × 32 f32) and numerators (hi, lo: hpb × 40
/// halves); maximum, denominator and rescale factor per head. The table takes an even
/// number of addresses, so that the f16 rows after it stay 16-byte aligned for ldmatrix.
fn attention_mma_shared(hd: usize, hpb: usize, rows_max: usize, nb: usize) -> usize {
    rows_max.next_multiple_of(2) * 8
        + (2 * hpb + 32 * nb) * (hd + 8) * 2
        + hpb * 32 * 4
        + 2 * hpb * 40 * 2
        + 3 * hpb * 4
}

/// Heads per block of `attention_mh` for a run of `t` tokens: 8 (or the largest power
/// of two dividing the head count) when the run is long enough to fill the GPU, the
/// head has ≤ 512 dimensions (its row sits in registers) and the shared memory fits;
/// 1 means the one-head kernel.
fn attention_heads_per_block(cfg: &ModelConfig, rows_max: usize, t: usize) -> usize {
    if t < MMA_MIN_TOKENS || cfg.head_dim > 512 {
        return 1;
    }
    let mut hb = 8;
    while hb > 1
        && (!cfg.n_head.is_multiple_of(hb)
            || (hb * cfg.head_dim + hb * rows_max + 1) * 4 + rows_max * 8 > 200 * 1024)
    {
        hb /= 2;
    }
    hb
}

/// Decode attention over row ranges (`attention_split`): rows per range and number
/// of ranges for queries reading up to `rows_max` rows, or None where the one-head
/// kernel stays (the split kernel holds a row of ≤ 512 floats in registers).
fn attention_split(cfg: &ModelConfig, rows_max: usize, t: usize) -> Option<(usize, usize)> {
    // DS4_CUDA_ATTN_SPLIT=0 keeps the one-head kernel (for comparisons); read once.
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("DS4_CUDA_ATTN_SPLIT").map_or(true, |v| v != "0"));
    if !on || t >= MMA_MIN_TOKENS || cfg.head_dim > 512 {
        return None;
    }
    // Ranges of 32 rows (a 2k-token decode step's 640 rows of a ratio-4 layer become
    // 20 ranges: 320 blocks, each a short chain of dependent loads), at most 64 of them
    // so the partials stay small for long contexts.
    let nsplit = rows_max.div_ceil(split_rows()).clamp(1, 64);
    let span = rows_max.div_ceil(nsplit).next_multiple_of(16);
    Some((span, rows_max.div_ceil(span)))
}

/// Blocks of decode's attention cluster (`attention_split_cl*`, ATT_CL in ds4.cu): 8
/// (the step 0.9% shorter than split + combine on the H200, 16 0.3%: v22), or
/// `DS4_CUDA_ATTN_CL=16`; `DS4_CUDA_ATTN_CL=0` keeps `attention_split` and
/// `attention_combine`, for comparisons.
pub(crate) fn attention_cluster() -> u32 {
    static N: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *N.get_or_init(|| match std::env::var("DS4_CUDA_ATTN_CL").as_deref() {
        Ok("0") => 0,
        Ok("16") => 16,
        _ => 8,
    })
}

/// The most rows a block of the attention cluster takes: longer ranges (a ratio-128
/// layer's rows at a long context) are a long chain in one block, so such layers keep
/// `attention_split`'s up to 64 ranges.
const CLUSTER_SPAN_MAX: usize = 128;

/// The rows a block of decode's attention cluster takes (`attention_split_cl*`, its
/// launch's `span`), where that kernel serves this layer: a split decode step, 4 heads a
/// block, each block's slice of the merge whole Q8_0 blocks (hd a multiple of 32·ATT_CL,
/// at most 512 threads' worth).
fn attention_cluster_span(
    cfg: &ModelConfig,
    rows_max: usize,
    t: usize,
    half: bool,
) -> Option<usize> {
    let cl = attention_cluster() as usize;
    let hd = cfg.head_dim;
    let span = rows_max.div_ceil(cl.max(1)).next_multiple_of(16);
    (cl > 0
        && attention_split(cfg, rows_max, t).is_some()
        && split_heads_per_block(cfg, half) == 4
        && hd.is_multiple_of(32 * cl)
        && 4 * hd / cl <= 512
        && span <= CLUSTER_SPAN_MAX)
        .then_some(span)
}

/// Rows a range of `attention_split` takes (`DS4_CUDA_SPLIT_ROWS`, 16–128; default 32),
/// for comparisons.
fn split_rows() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("DS4_CUDA_SPLIT_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (16..=128).contains(n))
            .unwrap_or(32)
    })
}

/// Heads per `attention_split` block: each warp's row serves this many heads. Over f16
/// rows not 2: that instantiation of `attention_split_kh` spills under its 64-register
/// cap (NVRTC 13.2), so such head counts take one head a block.
fn split_heads_per_block(cfg: &ModelConfig, half: bool) -> usize {
    let options: &[usize] = if half { &[4, 1] } else { &[4, 2, 1] };
    options
        .iter()
        .copied()
        .find(|h| cfg.n_head.is_multiple_of(*h))
        .unwrap_or(1)
}

/// Bytes of `attention_split`'s partials ([m, den, acc[hd]] per token, head, range)
/// for the runs of up to `t` tokens that take it (those shorter than
/// MMA_MIN_TOKENS: a scratch for long runs still serves decode steps).
fn split_part_bytes(cfg: &ModelConfig, rows_max: usize, t: usize) -> usize {
    let runs = t.min(MMA_MIN_TOKENS - 1);
    attention_split(cfg, rows_max, runs).map_or(16, |(_, nsplit)| {
        f32s(runs * cfg.n_head * nsplit * (cfg.head_dim + 2))
    })
}

/// Whether the q_a norm and the K=V row's store share one launch
/// (`DS4_CUDA_QKV_FUSE=0`: two, for comparisons).
fn qkv_fuse_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_QKV_FUSE").map_or(true, |v| v != "0"))
}

/// Bytes of the partials scratch: the largest of every layer's split (each sized by its
/// own rows, see [`layer_attn_rows`]).
fn split_scratch_bytes(cfg: &ModelConfig, ctx: usize, t: usize) -> usize {
    (0..cfg.n_layer)
        .map(|l| split_part_bytes(cfg, layer_attn_rows(cfg, l, ctx), t))
        .max()
        .unwrap_or(16)
}

/// Threads of a norm block: a wide row (the HC state) gets a wide block. The fused
/// norms use the same count so their sums match `rms_norm`'s.
fn norm_threads(n: usize) -> u32 {
    if n >= 4096 { 1024 } else { 256 }
}

/// Where a norm writes the Q8_0 of its `n`-wide output for a product of type `ty`
/// to read next: the given buffers when that type takes Q8_0 activations and `n` is
/// whole Q8_0 blocks.
fn q8_target(ty: GgmlType, n: usize, act: (&DevBuf, &DevBuf)) -> Option<(u64, u64)> {
    (act_kind(ty) == ActKind::Q8_0 && n.is_multiple_of(32)).then_some((act.0.ptr, act.1.ptr))
}

/// One compressor's launch arguments: the run's values and scores (`input`: values,
/// scores, floats per token), its weights, frontier (values, scores) and rows.
struct Compress {
    input: (u64, u64, usize),
    ape: u64,
    norm: u64,
    front: (u64, u64),
    rows: u64,
    /// `rows` holds f16 (the `_kh` kernels).
    half: bool,
    coff: usize,
    d: usize,
    sim: i32,
}

/// Whether the indexer's scores take the tensor-core kernel: its warps hold 16 heads'
/// queries (at most 4 warps) over at most 128 dimensions in steps of 16.
/// `DS4_CUDA_IDX_MMA=0` keeps the one-warp-per-row kernel, for comparisons.
fn indexer_mma_fits(heads: usize, di: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("DS4_CUDA_IDX_MMA").map_or(true, |v| v != "0"));
    on && heads <= 64 && di.is_multiple_of(16) && di <= 128
}

/// Blocks an SM `indexer_scores_mma` launches at most (`DS4_CUDA_IDX_BLK`, default 4):
/// each loads its token's queries (64 heads × 128) once, so fewer blocks, each walking
/// more ranges, read less at a long context's decode step (16k rows at 64k). H200, step
/// at 65,600: 8,729 µs at 8, 8,688 at 4, 9,044 at 2 (results/h200-v18f-*).
fn idx_blocks_per_sm() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("DS4_CUDA_IDX_BLK")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n: &usize| (1..=64).contains(n))
            .unwrap_or(4)
    })
}

/// Whether `indexer_scores_mma` skips the lo-part products of f16-exact queries and rows
/// (the same bits; `DS4_CUDA_IDX_LOSKIP=0` runs all three, for comparisons).
fn idx_lo_skip_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IDX_LOSKIP").map_or(true, |v| v != "0"))
}

/// Tokens a block of `indexer_scores_tt` (IDX_TT in ds4.cu, defined from this).
pub(crate) const IDX_TT: usize = 4;

/// Whether runs score the indexer's rows a few tokens a block (`indexer_scores_tt`, the
/// same scores) rather than one (`DS4_CUDA_IDX_TT=0`, for comparisons).
fn idx_tt_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IDX_TT").map_or(true, |v| v != "0"))
}

/// Parallel compressor rows for runs (`DS4_CUDA_COMPRESS_ROWS=0` keeps the in-order
/// kernel, for comparisons).
fn compress_rows_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_COMPRESS_ROWS").map_or(true, |v| v != "0"))
}

/// Whether the dense tensor-core products read each stage one ahead, so that its loads
/// overlap the current stage's products: `mm_q8_0_cp` by cp.async into a second shared
/// buffer, `mm_f16_pf` through registers (its activations are split into f16 hi + lo on
/// the way). `DS4_CUDA_MM_PF=0` keeps the one-stage kernels, for comparisons.
fn mm_prefetch_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_MM_PF").map_or(true, |v| v != "0"))
}

/// The Q8_0 tensor-core products of a run by their `DS4_CUDA_MMQ8` names: on Hopper
/// `mm_q8_0_wr` (v30, the default): both operands as f16 summed by wgmma in f32 — as ds4
/// takes these products through cuBLAS in f16 — the activations converted once a product
/// (`q8_0_to_f16_p`, permuted to the fragments' order), the weights' raw bytes turned into
/// wgmma's register operand, 128 rows × 256 tokens a block, five stages of 64 columns and
/// three fragment register sets (two stages' products queued behind the running ones;
/// `wr4`: four stages and two sets); runs of ≤ 128 tokens and matrices whose columns are
/// not whole 64-column stages take `wh2`. H200, 4 full-width layers: a 2,048-token chunk's
/// Q8_0 products 6.50 ms (`wh2`) → 4.30 (`wr4`) → 4.16; same call, full file: prefill
/// +8.1% at 2k and +6.9% for a 6,144-token batch (`wr4` over `wh2`), +1.4% / +0.5% more. `mm_q8_0_wh2` (v28): the weights dequantized on the SM
/// into an f16 tile in shared memory while the previous stage's products run, 128 × 128
/// tiles (bound by shared-memory traffic, ≈1.5× its tensor time); within 5.4e-4 of the
/// CPU's exact block sums in the tests; H200, same call: a 2,048-token chunk's Q8_0
/// products 100.0 ms (`wg`) → 78.3 (`wh`) → 69.5 + 4.9 of conversion (`wh2`), prefill
/// +5.6% / +6.1% at 2k / 8k (`wh`) and +1.2% / +1.3% more (`wh2`). `mm_q8_0_wh` (the same
/// values with the weights in wgmma's registers and the activations converted on the SM,
/// two blocks an SM; the f16 kernels fall back to it where the run has no f16 buffer);
/// `mm_q8_0_wg` (128×128 tiles by int8 wgmma, two accumulator sets; v26), the CPU's
/// outputs bit for bit; `mm_q8_0_big` (128×128 by mma.sync, half the L2 traffic of the
/// 64×64 `mm_q8_0_cp`; v14), the default elsewhere; `big` and `cp` bit for bit too.
const Q8_0_KERNELS: [(&str, &str); 7] = [
    ("wr", "mm_q8_0_wr"),
    ("wr4", "mm_q8_0_wr4"),
    ("wh2", "mm_q8_0_wh2"),
    ("wh", "mm_q8_0_wh"),
    ("wg", "mm_q8_0_wg"),
    ("big", "mm_q8_0_big"),
    ("cp", "mm_q8_0_cp"),
];

/// A test's choice ([`set_q8_0_kernel`]): 0 for the environment's, else 1 + its index in
/// Q8_0_KERNELS.
static Q8_0_KERNEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn q8_0_kernel_index(name: &str) -> Option<usize> {
    Q8_0_KERNELS.iter().position(|(n, _)| *n == name)
}

fn mm_q8_0_kernel(g: &Gpu) -> &'static str {
    static ENV: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let i = match Q8_0_KERNEL.load(std::sync::atomic::Ordering::Relaxed) {
        0 => *ENV.get_or_init(|| {
            std::env::var("DS4_CUDA_MMQ8")
                .ok()
                .and_then(|v| q8_0_kernel_index(&v))
                .unwrap_or(0)
        }),
        v => v as usize - 1,
    };
    match Q8_0_KERNELS[i].1 {
        // wgmma is sm_90a's: elsewhere the kernel is empty.
        k if g.arch != "sm_90a" && (k == "mm_q8_0_wg" || Q8_0_F16_KERNELS.contains(&k)) => {
            "mm_q8_0_big"
        }
        k => k,
    }
}

/// The Q8_0 run products on f16 operands (Hopper's; not the CPU's bit for bit).
const Q8_0_F16_KERNELS: [&str; 4] = ["mm_q8_0_wh", "mm_q8_0_wh2", "mm_q8_0_wr", "mm_q8_0_wr4"];

/// Whether the dense Q8_0 run products now chosen are the CPU's bit for bit (all but
/// `mm_q8_0_wh` and `_wh2`, whose f16 operands round: for tests' tolerances).
pub fn q8_0_runs_exact(g: &Gpu) -> bool {
    !Q8_0_F16_KERNELS.contains(&mm_q8_0_kernel(g))
}

/// Chooses the dense Q8_0 run product for every later launch of this process, overriding
/// `DS4_CUDA_MMQ8`: `"wr"`, `"wr4"`, `"wh2"`, `"wh"` or `"wg"` (Hopper only; elsewhere
/// `"big"`), `"big"`, `"cp"`, or anything else for the environment's choice (by default
/// `"wr"`). For tests that compare the kernels with each other.
pub fn set_q8_0_kernel(name: &str) {
    let v = q8_0_kernel_index(name).map_or(0, |i| i as u8 + 1);
    Q8_0_KERNEL.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the expert kernels take groups of 64 items (`*64`) for a run of `items` routed
/// items: a 2,048-token chunk gives each expert ~48 items, which groups of 32 split in two,
/// decoding the expert's weights twice. Always off until v26: measured slower on the H200 (v12 in
/// bench/CUDA-SPEED.md: 3,022 against 3,083 t/s at 8k; v13 with its kernels: 3,338
/// against 3,498); likely cause, not measured: half as many blocks, each twice as long
/// (and fewer resident: 119–126 registers). Groups of 48 (v22) measured no better either:
/// prefill 1.6% slower at 2k, +0.2% at 8k. With v25's kernels (v26, H200, same call) the
/// 64s gave −0.8% for a 2,048-token batch (≈48 items an expert) and +2.8% for a 6,144-token
/// one (≈144): so they are taken for runs of at least NG64_MIN_ITEMS items (a 4,096-token
/// batch of 6 experts a token), and `DS4_CUDA_EXP_NG64=1` / `=0` forces either.
fn expert_groups_of_64(items: usize) -> bool {
    static ON: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = *ON.get_or_init(|| match std::env::var("DS4_CUDA_EXP_NG64").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    });
    forced.unwrap_or(items >= NG64_MIN_ITEMS)
}

const NG64_MIN_ITEMS: usize = 24_576;

/// Whether the IQ2_XXS kernels take the grid from replicas in shared memory
/// (`iq2_grid_replicas` in ds4.cu): 16 in decode's `mv_iq2_xxs_1ts`, 4 in the prefill
/// kernel `mm_iq2_xxs_st_t4` (8 in `_t8` and the groups of 64; 16 measured slower there:
/// 32 KB a block, fewer blocks resident). `DS4_CUDA_IQ2_TAB=0`: one copy and a float
/// step per mma in prefill (v12's `mm_iq2_xxs_st`), decode on the general one-item body
/// (`mv_iq2_xxs_1`).
fn iq2_replicas_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IQ2_TAB").map_or(true, |v| v != "0"))
}

/// A kernel choice that tests can override for every later launch of the process (they
/// compare kernels), else the environment's, read once.
struct TestSwitch {
    /// 0: the environment's choice, 1: off, 2: on.
    over: std::sync::atomic::AtomicU8,
    env: std::sync::OnceLock<bool>,
}

impl TestSwitch {
    const fn new() -> Self {
        TestSwitch {
            over: std::sync::atomic::AtomicU8::new(0),
            env: std::sync::OnceLock::new(),
        }
    }

    /// The choice, `from_env` deciding when no test has.
    fn on(&self, from_env: impl FnOnce() -> bool) -> bool {
        match self.over.load(std::sync::atomic::Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => *self.env.get_or_init(from_env),
        }
    }

    /// Whether a test has chosen it on (to take a kernel past its sizing rules).
    fn forced_on(&self) -> bool {
        self.over.load(std::sync::atomic::Ordering::Relaxed) == 2
    }

    fn set(&self, on: Option<bool>) {
        let v = on.map_or(0, |on| 1 + u8::from(on));
        self.over.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether `var` is set to anything but `off` (unset: on).
fn env_not(var: &str, off: &str) -> bool {
    std::env::var(var).map_or(true, |v| v != off)
}

/// Whether `var` is set to `on` (unset: off).
fn env_is(var: &str, on: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == on)
}

static IQ2_F16: TestSwitch = TestSwitch::new();

/// The routed IQ2_XXS products of a run in f16 on wgmma (`mm_iq2_xxs_wh64`, Hopper; v28,
/// the default there; `DS4_CUDA_IQ2_WH=0` keeps the integer kernels): the weights
/// dequantized to f16 into the products' registers, within f16's rounding of the CPU's
/// integer sums (8.1e-4 in the tests; 6.9e-4 with `DS4_CUDA_IQ2_WDL=0`) rather than
/// equal to them. H200, same call: a
/// 2,048-token chunk's IQ2_XXS products 123.6 → 105.5 ms, prefill +1.9% at 2k and +6.2%
/// for a 6,144-token batch (with mm_q2_k_sm64 at 2k, since replaced by `_sm_h`).
fn iq2_f16_on() -> bool {
    IQ2_F16.on(|| env_not("DS4_CUDA_IQ2_WH", "0"))
}

/// Chooses [`iq2_f16_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the kernels.
pub fn set_iq2_f16(on: Option<bool>) {
    IQ2_F16.set(on);
}

/// Whether the routed IQ2_XXS run products now chosen are the CPU's bit for bit (not the
/// f16 kernel on Hopper), for tests' tolerances.
pub fn iq2_runs_exact(g: &Gpu) -> bool {
    !iq2_f16_runs(g)
}

static Q2K_F16: TestSwitch = TestSwitch::new();

/// The routed Q2_K products of a run in f16 on wgmma (`mm_q2_k_wf64`, Hopper; v29, the
/// default there; `DS4_CUDA_Q2K_WH=0` keeps the integer kernels): the weights
/// d·sc·q − dmin·m dequantized to f16 into the products' registers; within f16's rounding
/// of the CPU's integer sums (1.4e-3 in the tests) rather than equal to them. H200, 4
/// full-width layers: a 2,048-token chunk's Q2_K products 5.42 ms (`mm_q2_k_sm_h`) →
/// 4.00 + 0.21 of conversion; same call, full file: prefill +2.7% at 2k, +3.8% at 8k
/// (the minimum terms as a separate product a block instead: +0.7% / +3.0%; removed
/// after fed5d93).
fn q2k_f16_on() -> bool {
    Q2K_F16.on(|| env_not("DS4_CUDA_Q2K_WH", "0"))
}

/// Chooses [`q2k_f16_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the kernels.
pub fn set_q2k_f16(on: Option<bool>) {
    Q2K_F16.set(on);
}

static IQ2_R256: TestSwitch = TestSwitch::new();

/// Whether the f16 IQ2_XXS kernel takes 256 rows a block and three stages
/// (`mm_iq2_xxs_wh256`, one block an SM; `DS4_CUDA_IQ2_R256=1` while it is measured).
fn iq2_r256_on() -> bool {
    IQ2_R256.on(|| env_is("DS4_CUDA_IQ2_R256", "1"))
}

/// Chooses [`iq2_r256_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the kernels.
pub fn set_iq2_r256(on: Option<bool>) {
    IQ2_R256.set(on);
}

static F16_WS: TestSwitch = TestSwitch::new();

/// Whether a run's F16 products of at least three quarters of a wave of 128-row × 128-token
/// tiles (a wave until v32) take
/// wgmma (`mm_f16_ws`, v30, the default on Hopper: both operands in shared memory, the
/// activations' hi and lo parts by `f32_to_f16_hl` as one 256-wide tile;
/// `DS4_CUDA_F16_WS=0` keeps `mm_f16_pf`'s mma.sync; `=all` takes it for launches of less
/// than a wave too, for the checks on small files). H200, 4 full-width layers: a
/// 2,048-token chunk's F16 products 2.80 ms → 1.33 (`mm_f16_pf`, the narrow ones) + 0.43;
/// same call, full file: prefill +4.5% at 2k and +4.9% for a 6,144-token batch.
fn f16_ws_on() -> bool {
    F16_WS.on(|| env_not("DS4_CUDA_F16_WS", "0"))
}

fn f16_ws_all() -> bool {
    static ALL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALL.get_or_init(|| env_is("DS4_CUDA_F16_WS", "all"))
}

/// Chooses [`f16_ws_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the kernels.
pub fn set_f16_ws(on: Option<bool>) {
    F16_WS.set(on);
}

static Q2K_R256: TestSwitch = TestSwitch::new();

/// Whether the f16 Q2_K kernel takes 256 rows a block and three stages
/// (`mm_q2_k_wf256`, one block an SM; `DS4_CUDA_Q2K_R256=1` while it is measured).
fn q2k_r256_on() -> bool {
    Q2K_R256.on(|| env_is("DS4_CUDA_Q2K_R256", "1"))
}

/// Chooses [`q2k_r256_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the kernels.
pub fn set_q2k_r256(on: Option<bool>) {
    Q2K_R256.set(on);
}

/// Whether the routed Q2_K run products now chosen are the CPU's bit for bit.
pub fn q2k_runs_exact(g: &Gpu) -> bool {
    !q2k_f16_runs(g)
}

/// Groups of 32 with four grid replicas (`mm_iq2_xxs_st_t4`): 8 KB less shared memory a
/// block, five blocks an SM where `_t8` has four (v27: prefill +1.5% at 2k on the H200;
/// `DS4_CUDA_IQ2_C4=0` keeps `_t8`).
fn iq2_c4_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IQ2_C4").map_or(true, |v| v != "0"))
}

/// The groups of 64 with four grid replicas too (`mm_iq2_xxs_st64_t4`: four blocks an SM
/// where `_t8` has three, shared memory the limit of both). v28, H200, same call: prefill
/// +0.5% for a 6,144-token batch, +0.4% at 2k (within run-to-run noise of ~0.5%; the
/// checks pass with it); `DS4_CUDA_IQ2_C4_64=0` keeps `_st64_t8`.
fn iq2_c4_64_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IQ2_C4_64").map_or(true, |v| v != "0"))
}

/// Decode's IQ2_XXS product reads its activations from a swizzled copy in shared memory
/// (`mv_iq2_xxs_1tx`, v34: the H200's step 0.8% shorter in the same call;
/// `DS4_CUDA_IQ2_XS=0` keeps `mv_iq2_xxs_1ts`).
fn iq2_xs_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IQ2_XS").map_or(true, |v| v != "0"))
}

/// The widest rows it stages (IQ2_XS_MAX in ds4.cu: the Flash release's 4,096), and the
/// copy's bytes: their int8 activations and a float scale per 256 (IQ2_XS_SHARED).
const IQ2_XS_COLS: usize = 4096;
const IQ2_XS_SHARED: usize = IQ2_XS_COLS + 4 * IQ2_XS_COLS / 256;

/// Decode's IQ2_XXS kernel: the sign masks from shared replicas too (`mv_iq2_xxs_1ts`,
/// measured +1.3% decode over computing them), or computed (`DS4_CUDA_IQ2_U=1`:
/// `mv_iq2_xxs_1t`).
fn iq2_decode_kernel() -> &'static str {
    static K: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    K.get_or_init(|| match std::env::var("DS4_CUDA_IQ2_U").as_deref() {
        Ok("1") => "mv_iq2_xxs_1t",
        _ => "mv_iq2_xxs_1ts",
    })
}

/// Whether decode's Q2_K product walks four rows a warp with all loads in flight
/// (`mv_q2_k_1r`; `DS4_CUDA_Q2K_R4=0`: v12's one row a warp).
fn q2k_four_rows() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_Q2K_R4").map_or(true, |v| v != "0"))
}

/// Whether learned routing over at most 256 experts takes `route_warp` (registers, one
/// warp a token) rather than `route` (`DS4_CUDA_ROUTE_WARP=0`); same results.
fn route_warp_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_ROUTE_WARP").map_or(true, |v| v != "0"))
}

/// The side stream of the HC Sinkhorn branch: the sublayers' own branches use 0 (query,
/// shared expert) and 1 (compressor, routed Q8_K) first; the indexer's, on 2, forks
/// after q_a, when the short hc_mix has long finished.
const HC_MIX_SIDE: usize = 2;

/// The v27 fusions of runs (prefill), each on unless its variable is `0` (for
/// comparisons); every one gives the kernels' values it replaces (gpu test
/// `run_fusions_match_the_kernels_they_replace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunFusion {
    /// `DS4_CUDA_PF_HC`: the HC pre-step's norm factors applied by the mixing product
    /// (`rms_factor`), the Sinkhorn step one warp a token (`hc_mix`) and `hc_pre_norm4`,
    /// where v26 wrote the normed copy and `hc_pre_norm` ran the Sinkhorn step.
    PfHc,
    /// `DS4_CUDA_ATT_Q8`: the run attention (`attention_mma*`) writes o's Q8_0 for out_a
    /// itself, where `quant_q8_0` read o back.
    AttQ8,
    /// `DS4_CUDA_ATT_QN`: the run attention norms and rotates the queries as it stages
    /// them, where `head_norm_rope_w` ran before it.
    AttQn,
    /// `DS4_CUDA_SWIGLU_QK`: swiglu with Q8_K outputs as `swiglu_qk` (a warp a Q8_K block,
    /// from registers; prefill +1.1% / +0.9% at 2k / a 6,144-token batch on the H200),
    /// where `swiglu` has one warp of a block quantize it from shared memory while seven
    /// wait. (The block's 256 threads quantizing it together measured 0.6% slower.)
    SwigluQk,
    /// `DS4_CUDA_HC_POST4`: `hc_post4`, four columns a thread with its loads all in flight
    /// (prefill +1.3% / +1.1%), where `hc_post` takes one.
    HcPost4,
}

const RUN_FUSION_VARS: [&str; 5] = [
    "DS4_CUDA_PF_HC",
    "DS4_CUDA_ATT_Q8",
    "DS4_CUDA_ATT_QN",
    "DS4_CUDA_SWIGLU_QK",
    "DS4_CUDA_HC_POST4",
];

/// Test overrides of the run fusions, by [`RunFusion`] index: 0 the environment's
/// choice, 1 off, 2 on.
static RUN_FUSIONS: [std::sync::atomic::AtomicU8; 5] =
    [const { std::sync::atomic::AtomicU8::new(0) }; 5];

fn fusion_on(f: RunFusion) -> bool {
    static ENV: std::sync::OnceLock<[bool; 5]> = std::sync::OnceLock::new();
    match RUN_FUSIONS[f as usize].load(std::sync::atomic::Ordering::Relaxed) {
        0 => ENV.get_or_init(|| {
            RUN_FUSION_VARS.map(|name| std::env::var(name).map_or(true, |v| v != "0"))
        })[f as usize],
        v => v == 2,
    }
}

/// Sets the run fusions for every later launch of this process, in [`RunFusion`] order,
/// overriding their variables (None: the environment's choice). For tests that compare
/// them with the kernels they replace.
pub fn set_run_fusions(f: [Option<bool>; 5]) {
    for (o, v) in RUN_FUSIONS.iter().zip(f) {
        o.store(
            v.map_or(0, |on| 1 + u8::from(on)),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Threads of an rms_factor block for rows of `n`: whole float4 chunks, at most 16 a
/// thread (all its loads in flight at once), 256 where that fits (the Flash release's HC
/// state of 16,384: 16 chunks).
fn factor_threads(n: usize) -> Option<usize> {
    [256, 512, 1024, 128, 64, 32]
        .into_iter()
        .find(|&b| n.is_multiple_of(4 * b) && n / (4 * b) <= 16)
}

/// Threads of an hc_pre_norm4 block for rows of `n` (a multiple of 32): four columns a
/// thread a chunk, whole warps, at most eight chunks (256 for the Flash release's 4,096:
/// four chunks).
fn pre4_threads(n: usize) -> Option<usize> {
    let b = (n / 4).next_multiple_of(32).clamp(32, 256);
    (n.is_multiple_of(32) && (n / 4).div_ceil(b) <= 8).then_some(b)
}

/// Whether the HC Sinkhorn step runs as a graph branch (`hc_mix`) rather than in
/// hc_pre_late's last block (`DS4_CUDA_HC_MIX_BRANCH=0`).
fn hc_mix_branch_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_HC_MIX_BRANCH").map_or(true, |v| v != "0"))
}

/// Whether the indexer's queries of 128 dimensions are prepared one warp per head
/// (`indexer_prep_w`, the same values) and the attention queries normalized and rotated
/// one warp per head (`head_norm_rope_w`) rather than one block each
/// (`DS4_CUDA_IPREP_WARP=0`, for comparisons).
fn iprep_warp_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_IPREP_WARP").map_or(true, |v| v != "0"))
}

/// hc_post4 blocks a token whose sums of squares `Scratch::ssq` holds (n_embd ≤ 16,384).
const HC_SSQ_PARTS: usize = 16;

/// Whether a run's HC norm factors come from sums of squares hc_post4 forms as it writes
/// the state (`rms_from_ssq`) instead of rms_factor's pass over it (64 KB a token;
/// v29: 4.0 ms of a chunk). The default (v31, H200 same call: prefill +2.2% at 2k, +0.7%
/// for a 6,144-token batch); `DS4_CUDA_HC_SSQ=0` keeps rms_factor.
fn hc_ssq_on() -> bool {
    HC_SSQ.on(|| env_not("DS4_CUDA_HC_SSQ", "0"))
}

static HC_SSQ: TestSwitch = TestSwitch::new();

/// Chooses [`hc_ssq_on`] for every later launch of this process (None: the
/// environment's), for tests that compare the two ways to the factors.
pub fn set_hc_ssq(on: Option<bool>) {
    HC_SSQ.set(on);
}

/// Whether decode's HC pre-step is one launch (`hc_pre_late_*`). `DS4_CUDA_HC_FUSED=0`
/// keeps hc_fn_rms then hc_pre_norm, for comparisons.
fn hc_fused_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_HC_FUSED").map_or(true, |v| v != "0"))
}

/// The most HC mixing logits `hc_pre_late_*` takes (its HC_MAX_MIX: hc = 4; it also
/// takes hc ≤ 4, n_embd ≤ 4096 and hc·n_embd ≤ HC_MAX_BLK·HC_BT: HC_MAX, HC_COLS and
/// HC_MAX_BLK).
const HC_MAX_MIX: usize = 24;

/// Threads of an `hc_pre_late_*` block (HC_BT in ds4.cu, defined from this): 512, or
/// 1,024 / 256 with `DS4_CUDA_HC_BT` (for comparisons). H200 (v21): 512 took 13–24 µs
/// off the 7.05 ms step against 1,024 (whose blocks each need a whole SM's registers),
/// in three calls.
pub(crate) fn hc_bt() -> u32 {
    static BT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *BT.get_or_init(|| match std::env::var("DS4_CUDA_HC_BT").as_deref() {
        Ok("1024") => 1024,
        Ok("256") => 256,
        _ => 512,
    })
}

/// The most blocks a token of `hc_pre_late_*` (HC_MAX_BLK in ds4.cu).
const HC_MAX_BLK: usize = 64;

/// Blocks a token and threads a block of `hc_pre_cl_f16` (HCL_CL, HCL_BT in ds4.cu, defined
/// from these); it takes hc·n_embd ≤ 4 columns a thread of the cluster.
pub(crate) const HC_CLUSTER: u32 = 8;
pub(crate) const HC_CLUSTER_BT: u32 = 512;

/// Whether decode's HC pre-step runs on a cluster of 8 blocks a token (`hc_pre_cl_f16`:
/// the blocks share their partial sums through distributed shared memory instead of a
/// last block reading them all back; the step 5.3% shorter on the H200, v22) rather than
/// `hc_pre_late_f16` (`DS4_CUDA_HC_CL=0`, for comparisons).
fn hc_cluster_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_HC_CL").map_or(true, |v| v != "0"))
}

/// Rows per warp of all of decode's Q8_0 products when `DS4_CUDA_Q8_R` is 1
/// (`mv_q8_0_1`), 2 (`mv_q8_0_r2`) or 4 (`mv_q8_0_r4`), for comparisons; unset, the
/// rule in mv_launch.
fn q8_rows_per_warp() -> Option<usize> {
    static R: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *R.get_or_init(|| match std::env::var("DS4_CUDA_Q8_R").as_deref() {
        Ok("1") => Some(1),
        Ok("2") => Some(2),
        Ok("4") => Some(4),
        _ => None,
    })
}

/// Dynamic shared memory of `mm_q8_0_big` (the layout at the top of its body in ds4.cu):
/// two stages of 128 weight rows and 128 tokens of 144 bytes, their f16 and f32 block scales.
const MMB_SHARED: usize = 2 * (128 + 128) * 144 + 2 * 128 * 4 * 2 + 2 * 4 * 128 * 4;

/// `mm_q8_0_wg`'s stages (the layout at the top of its body in ds4.cu): bytes a stage,
/// a multiple of 1,024 for the swizzle, and how many.
pub(crate) const MMW_STAGE: usize = 35840;
pub(crate) const MMW_NST: usize = 3;
/// Its dynamic shared memory: the stages and up to 1,024 bytes to align them.
const MMW_SHARED: usize = MMW_NST * MMW_STAGE + 1024;
/// `mm_q8_0_wh`'s: two of `mm_q8_0_wg`'s stages, an f16 activation tile of 128 × 128 and
/// the alignment (two blocks an SM).
const MMH_SHARED: usize = 2 * MMW_STAGE + 128 * 128 * 2 + 1024;
/// A stage of `mm_q8_0_wh2` (the layout at the top of its body in ds4.cu): 128 weight
/// rows of 128 bytes, their f16 scales [128][4] (1,024 bytes), the activations' f16 tile
/// 128 × 128; a multiple of 1,024 for the swizzle.
pub(crate) const MMH2_STAGE: usize = 128 * 128 + 1024 + 128 * 128 * 2;
/// `mm_q8_0_wh2`'s dynamic shared memory: three stages, two f16 weight tiles of 128 × 128
/// and the alignment.
const MMH2_SHARED: usize = 3 * MMH2_STAGE + 2 * 128 * 128 * 2 + 1024;
/// A stage of `mm_q8_0_wr` (the layout at the top of its body in ds4.cu): the
/// activations' f16 tile 256 × 64, 128 weight rows of 64 bytes padded to 80, their f16
/// scales [128][2]; a multiple of 1,024 for the swizzle.
pub(crate) const MMR_STAGE: usize = (256 * 128 + 128 * 80 + 128 * 4usize).div_ceil(1024) * 1024;
/// A stage of `mm_f16_ws`: the weights' 128 × 64 f16 and the activations' hi and lo
/// tiles, 128 × 64 each, all rows of 128 bytes.
pub(crate) const MFW_STAGE: usize = 3 * 128 * 128;
/// `mm_f16_ws`'s dynamic shared memory: four stages and the alignment.
const MFW_SHARED: usize = 4 * MFW_STAGE + 1024;
/// `mm_q8_0_wr`'s dynamic shared memory for `ns` stages, and the alignment.
const fn mmr_shared(ns: usize) -> usize {
    ns * MMR_STAGE + 1024
}
/// `mm_iq2_xxs_wh64`'s rows of quants in shared memory: 64 bytes padded to 80 (a lane
/// quad's words in distinct banks).
pub(crate) const IQH_LDW: usize = 80;
/// `mm_iq2_xxs_wh64`'s dynamic shared memory: two stages of the items' f16 tile (64 ×
/// 256 columns) and 128 rows of quants, and the alignment.
const IQH_SHARED: usize = 2 * (64 * 512 + 128 * IQH_LDW) + 1024;
/// A stage of `mm_iq2_xxs_wh256`: the items' tile and 256 rows of quants.
pub(crate) const IQR_STAGE: usize = (64 * 512 + 256 * IQH_LDW).div_ceil(1024) * 1024;
/// `mm_iq2_xxs_wh256`'s dynamic shared memory: three stages and the alignment.
const IQR_SHARED: usize = 3 * IQR_STAGE + 1024;

/// A stage of the f16 Q2_K kernel for `rows` rows a block (the layout at the top of
/// `mm_q2_k_wf_body` in ds4.cu): the items' f16 tile (64 × 256 in four 64-column panels),
/// each row's 64 bytes of quants, 16 of scales and 4 of d, dmin; a multiple of 1,024 for
/// the swizzle.
const fn q2f_stage(rows: usize) -> usize {
    (64 * 512 + rows * (64 + 16 + 4)).div_ceil(1024) * 1024
}
/// `mm_q2_k_wf64`'s stage (128 rows) and dynamic shared memory (two stages).
pub(crate) const Q2F_STAGE: usize = q2f_stage(128);
const Q2F_SHARED: usize = 2 * Q2F_STAGE + 1024;
/// A stage of `mm_q2_k_wf256`: 256 rows.
pub(crate) const Q2R_STAGE: usize = q2f_stage(256);
/// `mm_q2_k_wf256`'s dynamic shared memory: three stages and the alignment.
const Q2R_SHARED: usize = 3 * Q2R_STAGE + 1024;

/// Runs of at least this many tokens take the tensor-core product where there is one.
pub(crate) const MMA_MIN_TOKENS: usize = 16;

/// Whether this product goes to a tensor-core kernel (`mm_q8_0`, `mm_f16`): a Q8_0
/// (split layout) or F16 matrix, no expert ids, a run of tokens, whole 128-column
/// stages, and any column groups aligned to its 64-row tiles.
fn use_tensor_cores(m: &DevMat, c: &Mv) -> bool {
    mma_on()
        && ((m.ty == GgmlType::Q8_0 && m.split.is_some()) || m.ty == GgmlType::F16)
        && c.ids == 0
        && c.act_div == 1
        && c.nb >= MMA_MIN_TOKENS
        && m.cols.is_multiple_of(128)
        && (c.group.0 == 0 || c.group.0.is_multiple_of(64))
}

/// The activations of `n` floats at `x` quantized as a product of `kind` reads them,
/// into `act` (quants, scales, Q8_K block sums).
fn quant_launch(
    g: &Gpu,
    kind: ActKind,
    x: u64,
    n: usize,
    act: [&DevBuf; 3],
) -> Result<(), CudaError> {
    match kind {
        ActKind::F32 => Ok(()),
        ActKind::Q8_0 => {
            let nblk = n / 32;
            // Eight lanes per block of 32: 16 blocks per 128 threads.
            launch!(g, "quant_q8_0", (ceil_div(nblk, 16), 1, 1), 128, 0;
                x, act[0].ptr, act[1].ptr, nblk as i32)
        }
        ActKind::Q8K => {
            let nblk = n / 256;
            launch!(g, "quant_q8_k", (ceil_div(nblk, 4), 1, 1), 128, 0;
                x, act[0].ptr, act[1].ptr, act[2].ptr, nblk as i32)
        }
    }
}

/// `y = W·x` with the activations prepared as the CPU prepares them (Q8_0 for Q8_0
/// weights, Q8_K for the K-quants and IQ2_XXS, f32 for float weights) in `act`
/// (int8 values, block scales, Q8_K block sums).
pub fn mv_launch(gpu: &Gpu, m: &DevMat, act: [&DevBuf; 3], c: Mv) -> Result<(), CudaError> {
    let g = gpu;
    let n = c.n_act * c.x_len;
    let kind = act_kind(m.ty);
    if !c.act_ready {
        quant_launch(g, kind, c.x, n, act)?;
    }
    // Items sharing one matrix share a warp's weight loads (up to MAXNT = 8 in ds4.cu);
    // routed items each have their own expert.
    let nt = if c.ids == 0 { c.nb.clamp(1, 8) } else { 1 };
    // IQ2_XXS blocks fill shared lookup tables first: 8 warps walking 4 rows each
    // spread that over 32 rows.
    let ks = ksplit(m);
    let (threads, rows_per_block) = match m.ty {
        GgmlType::Iq2Xxs => (256u32, 32usize),
        _ => ((32 * ks).max(128) as u32, (4 / ks).max(1)),
    };
    let grid_x = ceil_div(m.rows, rows_per_block);
    let args = MvArgs {
        w: m.buf.ptr,
        mat_bytes: m.mat_bytes as i64,
        ids: c.ids,
        rows: m.rows as i32,
        cols: m.cols as i32,
        xf: if kind == ActKind::F32 { c.x } else { 0 },
        xq: act[0].ptr,
        xd: act[1].ptr,
        xs: act[2].ptr,
        act_div: c.act_div as i32,
        x_stride: c.x_len as i32,
        group_rows: c.group.0 as i32,
        group_stride: c.group.1 as i32,
        y: c.y,
        y_stride: c.y_stride as i32,
        nb: c.nb as i32,
        sc: m.scales_ptr(),
        sc_mat_bytes: m.split.map_or(0, |s| s.scale_mat_bytes as i64),
        nt: nt as i32,
        perm: c.by_expert.map_or(0, |b| b.0),
        grp: c.by_expert.map_or(0, |b| b.1),
        ngrp: c.by_expert.map_or(0, |b| b.2),
        ksplit: ks as i32,
        xsc: c.x_scale,
    };
    if c.x_scale != 0 && !(m.ty == GgmlType::F16 && use_tensor_cores(m, &c)) {
        return Err(CudaError::Driver(
            "activation factors need an F16 tensor-core product".into(),
        ));
    }
    // The tensor-core kernels read the same arguments (those about items, experts and
    // row splits do not concern them).
    if use_tensor_cores(m, &c) {
        let kernel = match (m.ty == GgmlType::F16, mm_prefetch_on()) {
            (true, false) => "mm_f16",
            (true, true) => "mm_f16_pf",
            (false, false) => "mm_q8_0",
            (false, true) => mm_q8_0_kernel(g),
        };
        let ks = mm_col_splits(g, m, c.nb, c.part.1);
        let offsets32 = m.rows * m.cols < 1 << 32 && c.nb * c.x_len < 1 << 32;
        let n = c.n_act * c.x_len;
        if kernel == "mm_f16_pf"
            // A product with a wave of wgmma tiles has four of mm_f16_pf's and no split,
            // unless a test takes wgmma for every product.
            && (ks == 1 || F16_WS.forced_on() || f16_ws_all())
            && g.arch == "sm_90a"
            && f16_ws_on()
            && m.rows >= 128
            // Three quarters of a wave at least (unless a test takes it on): fewer, longer
            // blocks than mm_f16_pf's 64 × 64 tiles leave SMs idle (the router's 256 rows,
            // which split instead), but the attention compressor's 1,024 rows over a
            // 2,048-token chunk are 128 blocks for 132 SMs (v32: 200 µs by mm_f16_pf).
            && (F16_WS.forced_on()
                || f16_ws_all()
                || 4 * m.rows.div_ceil(128) * c.nb.div_ceil(128) >= 3 * g.sms as usize)
            && m.cols.is_multiple_of(64)
            && c.n_act == c.nb
            && c.half.1 >= 4 * n
            && offsets32
            && (c.group.0 == 0 || c.group.0.is_multiple_of(128))
        {
            // The activations' f16 hi parts then lo parts in `half`, then the products.
            let (hi, lo) = (c.half.0, c.half.0 + 2 * n as u64);
            launch!(g, "f32_to_f16_hl", (ceil_div(n / 4, 256), 1, 1), 256, 0;
                c.x, c.x_scale, hi, lo, n as i32, c.x_len as i32)?;
            let args = MvArgs { xsc: 0, ..args };
            g.allow_shared("mm_f16_ws", MFW_SHARED)?;
            return launch!(g, "mm_f16_ws", (ceil_div(m.rows, 128), ceil_div(c.nb, 128), 1), 256,
                MFW_SHARED as u32; args, hi, lo);
        }
        if ks > 1 && c.group.0 == 0 {
            // Partials [split][token][row] (the kernel splits by gridDim.z) then their sum
            // in split order.
            let args = MvArgs {
                y: c.part.0,
                y_stride: m.rows as i32,
                ..args
            };
            launch!(g, kernel, (ceil_div(m.rows, 64), ceil_div(c.nb, 64), ks as u32), 128, 0;
                args)?;
            let n = c.nb * m.rows;
            return launch!(g, "sum_parts", (ceil_div(n, 256), 1, 1), 256, 0;
                c.part.0, ks as i32, n as i32, m.rows as i32, c.y, c.y_stride as i32);
        }
        // The 128-row tiles need column groups aligned to them (one group per tile), and
        // their staging takes 32-bit offsets into the weights and the activations.
        // wh2 reads the activations as f16 from `half` (a run's; else wh).
        let kernel = match kernel {
            "mm_q8_0_wh2" | "mm_q8_0_wr" | "mm_q8_0_wr4" if c.half.1 < 2 * n => "mm_q8_0_wh",
            // wr's 256-token tiles would take twice wh2's products for the same weights.
            "mm_q8_0_wr" | "mm_q8_0_wr4" if !m.cols.is_multiple_of(64) || c.nb <= 128 => {
                "mm_q8_0_wh2"
            }
            k => k,
        };
        let tiles128 =
            matches!(kernel, "mm_q8_0_big" | "mm_q8_0_wg") || Q8_0_F16_KERNELS.contains(&kernel);
        if tiles128 && offsets32 && (c.group.0 == 0 || c.group.0.is_multiple_of(128)) {
            if let Some(ns) = match kernel {
                "mm_q8_0_wr" => Some(5),
                "mm_q8_0_wr4" => Some(4),
                _ => None,
            } {
                if !c.half_ready {
                    launch!(g, "q8_0_to_f16_p", (ceil_div(n / 16, 256), 1, 1), 256, 0;
                        act[0].ptr, act[1].ptr, c.half.0, n as i32)?;
                }
                let shm = mmr_shared(ns);
                g.allow_shared(kernel, shm)?;
                return launch!(g, kernel, (ceil_div(m.rows, 128), ceil_div(c.nb, 256), 1), 256,
                    shm as u32; args, c.half.0);
            }
            if kernel == "mm_q8_0_wh2" {
                launch!(g, "q8_0_to_f16", (ceil_div(n / 16, 256), 1, 1), 256, 0;
                    act[0].ptr, act[1].ptr, c.half.0, n as i32)?;
                g.allow_shared(kernel, MMH2_SHARED)?;
                return launch!(g, kernel, (ceil_div(m.rows, 128), ceil_div(c.nb, 128), 1), 256,
                    MMH2_SHARED as u32; args, c.half.0);
            }
            let (threads, shm) = match kernel {
                "mm_q8_0_wg" => (512, MMW_SHARED),
                "mm_q8_0_wh" => (256, MMH_SHARED),
                _ => (256, MMB_SHARED),
            };
            g.allow_shared(kernel, shm)?;
            return launch!(g, kernel, (ceil_div(m.rows, 128), ceil_div(c.nb, 128), 1), threads,
                shm as u32; args);
        }
        let kernel = if tiles128 { "mm_q8_0_cp" } else { kernel };
        return launch!(g, kernel, (ceil_div(m.rows, 64), ceil_div(c.nb, 64), 1), 128, 0; args);
    }
    let grid_y = match c.by_expert {
        Some((_, _, _, max_groups)) => max_groups,
        None => c.nb.div_ceil(nt),
    };
    if c.by_expert.is_some() && mma_on() {
        // Grouped experts on the tensor cores: 64 rows × one group's items per block.
        // Operands staged in shared memory by cp.async (see ds4.cu).
        let big = f16_expert_runs(g) || expert_groups_of_64(c.nb);
        // Groups of 64 for the f16 IQ2_XXS kernel in a run too short for mm_q2_k_sm64 to
        // pay: Q2_K takes each group's halves as groups of 32 (`mm_q2_k_sm_h`).
        let q2k_halves = big && !expert_groups_of_64(c.nb);
        let kernel = match m.ty {
            GgmlType::Iq2Xxs if m.split.is_some() => Some(match (big, iq2_replicas_on()) {
                (true, false) => "mm_iq2_xxs_st64",
                (true, true) if iq2_c4_64_on() => "mm_iq2_xxs_st64_t4",
                (true, true) => "mm_iq2_xxs_st64_t8",
                (false, true) if iq2_c4_on() => "mm_iq2_xxs_st_t4",
                (false, true) => "mm_iq2_xxs_st_t8",
                (false, false) => "mm_iq2_xxs_st",
            }),
            GgmlType::Q2K => Some(match (big, q2k_halves) {
                (true, true) => "mm_q2_k_sm_h",
                (true, false) => "mm_q2_k_sm64",
                (false, _) => "mm_q2_k_sm",
            }),
            _ => None,
        };
        let n = c.n_act * c.x_len;
        if m.ty == GgmlType::Iq2Xxs && m.split.is_some() && iq2_f16_runs(g) && c.half.1 >= 2 * n {
            // The f16 kernel: the items' activations to f16 first (its permuted order).
            launch!(g, "q8_k_to_f16_iq", (ceil_div(n / 32, 256), 1, 1), 256, 0;
                act[0].ptr, act[1].ptr, c.half.0, n as i32)?;
            // Its groups are 64 (iq2_f16_runs).
            let (k, shm, rb) = if iq2_r256_on() {
                ("mm_iq2_xxs_wh256", IQR_SHARED, 256)
            } else {
                ("mm_iq2_xxs_wh64", IQH_SHARED, 128)
            };
            g.allow_shared(k, shm)?;
            return launch!(g, k, (ceil_div(m.rows, rb), grid_y as u32, 1), 2 * rb as u32,
                shm as u32; args, c.half.0);
        }
        if m.ty == GgmlType::Q2K && q2k_f16_runs(g) && c.half.1 >= 2 * n {
            // The f16 kernel: the items' activations to f16 first (its order).
            launch!(g, "q8_k_to_f16_q2", (ceil_div(n / 64, 256), 1, 1), 256, 0;
                act[0].ptr, act[1].ptr, c.half.0, n as i32)?;
            let (k, shm, rb) = if q2k_r256_on() {
                ("mm_q2_k_wf256", Q2R_SHARED, 256)
            } else {
                ("mm_q2_k_wf64", Q2F_SHARED, 128)
            };
            g.allow_shared(k, shm)?;
            return launch!(g, k, (ceil_div(m.rows, rb), grid_y as u32, 1), 2 * rb as u32,
                shm as u32; args, c.half.0);
        }
        if let Some(k) = kernel {
            // The activations' two buffers in dynamic shared memory: 272 bytes per item
            // for IQ2_XXS, 304 (quants and block sums) for Q2_K.
            let per_item = if m.ty == GgmlType::Iq2Xxs { 272 } else { 304 };
            let halves = k == "mm_q2_k_sm_h";
            let shm = 2 * (if big && !halves { 64 } else { 32 }) * per_item;
            let gy = if halves { 2 * grid_y } else { grid_y };
            g.allow_shared(k, shm)?;
            return launch!(g, k, (ceil_div(m.rows, 64), gy as u32, 1), 128, shm as u32; args);
        }
    }
    let single = nt == 1 && c.by_expert.is_none();
    // Decode's routed products (one item per warp, whole rows): grids of one wave, each
    // warp walking rounds of four rows (the IQ2_XXS blocks fill their grid replica once).
    let whole_rows = single && ks == 1 && c.group.0 == 0;
    let one_wave = |k: &str, threads: u32, rows_per_block: usize, shm: usize| {
        let wave = g.resident_blocks(k, threads, shm)? / (grid_y as u32).max(1);
        Ok::<u32, CudaError>(ceil_div(m.rows, rows_per_block).min(wave.max(1)))
    };
    if whole_rows && m.ty == GgmlType::Iq2Xxs && m.split.is_some() && iq2_replicas_on() {
        let k = match iq2_decode_kernel() {
            "mv_iq2_xxs_1ts" if iq2_xs_on() && m.cols <= IQ2_XS_COLS => "mv_iq2_xxs_1tx",
            k => k,
        };
        // mv_iq2_xxs_1tx's staged activations (IQ2_XS_SHARED in ds4.cu).
        let shm = if k == "mv_iq2_xxs_1tx" {
            IQ2_XS_SHARED
        } else {
            0
        };
        g.allow_shared(k, shm)?;
        return launch!(g, k, (one_wave(k, 256, 32, shm)?, grid_y as u32, 1), 256, shm as u32;
            args);
    }
    if whole_rows && m.ty == GgmlType::Q2K && q2k_four_rows() {
        let k = "mv_q2_k_1r";
        return launch!(g, k, (one_wave(k, 128, 16, 0)?, grid_y as u32, 1), 128, 0; args);
    }
    // Measured on the H200 (v12): q_b's 1,024-column rows 15.3 → 10.5 µs with two rows a
    // warp, the 2,048-column down_sh 5.1 → 6.0 µs, the wider ones unchanged.
    let rows_per_warp = q8_rows_per_warp().unwrap_or(if m.cols <= 1024 { 2 } else { 1 });
    if single && m.ty == GgmlType::Q8_0 && m.split.is_some() && ks == 1 && rows_per_warp > 1 {
        // R rows per warp, four warps per block.
        let (k, r) = if rows_per_warp == 4 {
            ("mv_q8_0_r4", 4)
        } else {
            ("mv_q8_0_r2", 2)
        };
        return launch!(g, k, (ceil_div(m.rows, 4 * r), grid_y as u32, 1), 128, 0; args);
    }
    launch!(g, mv_kernel(m.ty, single), (grid_x, grid_y as u32, 1), threads, 0; args)
}

/// One matrix product on the GPU for a batch of f32 vectors (tests and tools): the
/// same path the forward pass takes.
pub fn matmul_once(gpu: &Gpu, m: &DevMat, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, CudaError> {
    let t = xs.len();
    let flat: Vec<f32> = xs.iter().flatten().copied().collect();
    let x = gpu.upload(&flat)?;
    let y = gpu.alloc(t * m.rows * 4)?;
    let n = flat.len();
    let (q, d, bs) = (
        gpu.alloc(n)?,
        gpu.alloc(n / 32 * 4 + 4)?,
        gpu.alloc(n / 16 * 2 + 2)?,
    );
    let part = gpu.alloc(part_bytes(t))?;
    // f16 activations: Q8_0's one part or F16's hi and lo (mm_f16_ws).
    let half = gpu.alloc(4 * n)?;
    mv_launch(
        gpu,
        m,
        [&q, &d, &bs],
        Mv {
            part: (part.ptr, part.bytes),
            half: (half.ptr, half.bytes),
            ..Mv::plain(x.ptr, t, m.cols, y.ptr, m.rows)
        },
    )?;
    let mut out = vec![0f32; t * m.rows];
    gpu.read(y.ptr, &mut out)?;
    Ok(out.chunks_exact(m.rows).map(|c| c.to_vec()).collect())
}

/// The indexer's scores of `t` tokens (queries `qi`, head weights `wi`, rows `rows`,
/// scores out, the run's first position) for up to `max_n` rows each: runs of tokens
/// take `indexer_scores_tt` (with `tiled`), single tokens or without it
/// `indexer_scores_mma` where the shapes fit, else the one-warp-a-row kernel.
fn indexer_scores_launch(
    g: &Gpu,
    [qi, wi, rows, scores, p0]: [u64; 5],
    (nhi, di, ratio, max_rows): (usize, usize, usize, usize),
    (t, max_n): (usize, usize),
    (tiled, half): (bool, bool),
) -> Result<(), CudaError> {
    let hg = nhi.div_ceil(16);
    let kh = |f32_name, f16_name| row_kernel(half, f32_name, f16_name);
    if t >= MMA_MIN_TOKENS && tiled && hg <= 4 && indexer_mma_fits(nhi, di) {
        // IDX_TT tokens a block share each staged row; a block walks 8 ranges of 64
        // rows, so its tokens' queries (loaded once a block) stay a third of its traffic.
        let rpb = 64;
        let blocks = ceil_div(max_n.div_ceil(rpb), 8);
        let shm = 2 * rpb * (di + 8) * 2 + IDX_TT * hg * rpb * 4;
        let k = kh("indexer_scores_tt", "indexer_scores_tt_kh");
        g.allow_shared(k, shm)?;
        launch!(g, k, (blocks, ceil_div(t, IDX_TT), 1),
            (32 * hg * IDX_TT) as u32, shm as u32;
            qi, wi, rows, scores, nhi as i32, di as i32, p0, ratio as i32, max_rows as i32,
            rpb as i32, t as i32)
    } else if indexer_mma_fits(nhi, di) {
        // Short runs (decode) take 16 rows a block so that a 2k context's 512 rows still
        // spread over 32 blocks; long runs 128, which keeps the per-block reload of the
        // queries (64 heads × 128) a small share.
        let rpb = if t < MMA_MIN_TOKENS { 16 } else { 128 };
        // At most idx_blocks_per_sm() blocks an SM; they loop over the ranges beyond.
        let blocks = ceil_div(max_n, rpb).min(idx_blocks_per_sm() as u32 * g.sms);
        launch!(g, kh("indexer_scores_mma", "indexer_scores_mma_kh"), (blocks, t as u32, 1), (32 * hg) as u32, 0;
            qi, wi, rows, scores, nhi as i32, di as i32, p0, ratio as i32, max_rows as i32,
            rpb as i32, i32::from(!idx_lo_skip_on()))
    } else {
        launch!(g, kh("indexer_scores", "indexer_scores_kh"), (ceil_div(max_n, 4), t as u32, 1), 128, 0;
            qi, wi, rows, scores, nhi as i32, di as i32, p0, ratio as i32, max_rows as i32)
    }
}

/// The indexer's scores on the GPU as a run of `qi.len()` tokens at `pos0` computes them
/// (tests): token `t` (queries `qi[t]`, heads × di; head weights `wi[t]`) against the
/// first `(pos0 + t + 1) / ratio` of `rows` (di each). `tiled` picks the run kernel;
/// `half` stores the rows as f16 (the `_kh` kernels; rows f16-exact).
pub fn indexer_scores_once(
    gpu: &Gpu,
    (qi, wi, rows): (&[Vec<f32>], &[Vec<f32>], &[f32]),
    (heads, di): (usize, usize),
    pos0: usize,
    ratio: usize,
    (tiled, half): (bool, bool),
) -> Result<Vec<Vec<f32>>, CudaError> {
    let t = qi.len();
    let stride = ((pos0 + t) / ratio).max(1);
    let q = gpu.upload(&qi.concat())?;
    let w = gpu.upload(&wi.concat())?;
    let r = if half {
        let h: Vec<u16> = rows
            .iter()
            .map(|&x| ds4_quant::half::f32_to_f16(x))
            .collect();
        gpu.upload(&h)?
    } else {
        gpu.upload(rows)?
    };
    let sc = gpu.alloc(t * stride * 4)?;
    let pos = gpu.upload(&[pos0 as i32])?;
    indexer_scores_launch(
        gpu,
        [q.ptr, w.ptr, r.ptr, sc.ptr, pos.ptr],
        (heads, di, ratio, stride),
        (t, (pos0 + t) / ratio),
        (tiled, half),
    )?;
    let mut all = vec![0f32; t * stride];
    gpu.read(sc.ptr, &mut all)?;
    Ok(all
        .chunks_exact(stride)
        .enumerate()
        .map(|(i, row)| row[..(pos0 + i + 1) / ratio].to_vec())
        .collect())
}

/// Whether short runs (decode) select the indexer's rows with a cluster of blocks a
/// token (`topk_select_cl`, the same rows) rather than one (`DS4_CUDA_TOPK_CL=0`).
fn topk_cluster_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DS4_CUDA_TOPK_CL").map_or(true, |v| v != "0"))
}

/// Blocks a token of `topk_select_cl` (its compiled cluster size, TK_CL in ds4.cu,
/// defined from this).
pub(crate) const TOPK_CLUSTER: u32 = 8;

/// Rows up to which `topk_select_cl` leaves the selection to its first block (TK_CL_MIN
/// in ds4.cu, defined from this); a state that never holds more takes `topk_select` (no cluster launch).
/// H200 (v18): the cluster at every count cost 7,287 against 7,205 µs a step at 2,100
/// (525 rows), and saved 8,666 → 7,892 µs at 65,600 (16k rows).
pub(crate) const TOPK_CLUSTER_MIN: usize = 2048;

/// The indexer's top-k for `t` tokens over scores rows of `max_rows`: a cluster of
/// TOPK_CLUSTER blocks a token with `cluster`, else one block a token.
fn topk_launch(
    g: &Gpu,
    [scores, sel, nsel, p0]: [u64; 4],
    (ratio, max_rows, k, t): (usize, usize, usize, usize),
    cluster: bool,
) -> Result<(), CudaError> {
    if cluster {
        launch!(g, "topk_select_cl", (TOPK_CLUSTER, t as u32, 1), 1024, 0;
            scores, sel, nsel, p0, ratio as i32, max_rows as i32, k as i32)
    } else {
        launch!(g, "topk_select", (t as u32, 1, 1), 1024, 0;
            scores, sel, nsel, p0, ratio as i32, max_rows as i32, k as i32)
    }
}

/// The indexer's top-k selection on the GPU (`topk_select`, tests): token `t` of a run at
/// `pos0` sees the first `(pos0 + t + 1) / ratio` of `scores[t]`. Returns each token's
/// selected rows in increasing order, or nothing where it sees `k` rows or fewer (it then
/// attends to all of them).
pub fn topk_once(
    gpu: &Gpu,
    scores: &[Vec<f32>],
    pos0: usize,
    ratio: usize,
    k: usize,
    cluster: bool,
) -> Result<Vec<Vec<i32>>, CudaError> {
    let t = scores.len();
    let max_rows = scores.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut flat = vec![0f32; t * max_rows];
    for (row, sc) in flat.chunks_exact_mut(max_rows).zip(scores) {
        row[..sc.len()].copy_from_slice(sc);
    }
    let sc = gpu.upload(&flat)?;
    let pos = gpu.upload(&[pos0 as i32])?;
    let sel = gpu.alloc(t * k * 4 + 4)?;
    let nsel = gpu.alloc(t * 4)?;
    topk_launch(
        gpu,
        [sc.ptr, sel.ptr, nsel.ptr, pos.ptr],
        (ratio, max_rows, k, t),
        cluster,
    )?;
    let mut n = vec![0i32; t];
    gpu.read(nsel.ptr, &mut n)?;
    let mut all = vec![0i32; t * k];
    gpu.read(sel.ptr, &mut all)?;
    Ok(n.iter()
        .zip(all.chunks_exact(k))
        .map(|(&n, row)| row[..n as usize].to_vec())
        .collect())
}

/// Routed-expert products on the GPU as the forward pass runs them (tests): `m` holds
/// the experts' matrices back to back, item b is token b / k times expert `ids[b]`. One
/// token takes decode's one-item kernels; a run of several groups its items by expert
/// (`group_by_expert`) for the grouped (tensor-core) kernels. Returns one row of
/// `m.rows` outputs per item.
pub fn experts_once(
    gpu: &Gpu,
    m: &DevMat,
    xs: &[Vec<f32>],
    ids: &[i32],
    n_expert: usize,
) -> Result<Vec<Vec<f32>>, CudaError> {
    let t = xs.len();
    let nb = ids.len();
    let k = nb / t.max(1);
    if t == 0 || nb != t * k || ids.iter().any(|&e| e < 0 || e as usize >= n_expert) {
        return Err(CudaError::Driver("experts_once: bad item ids".into()));
    }
    let flat: Vec<f32> = xs.iter().flatten().copied().collect();
    let n = flat.len();
    let x = gpu.upload(&flat)?;
    let idb = gpu.upload(ids)?;
    let y = gpu.alloc(nb * m.rows * 4)?;
    let (q, d, bs) = (
        gpu.alloc(n)?,
        gpu.alloc(n / 32 * 4 + 4)?,
        gpu.alloc(n / 16 * 2 + 2)?,
    );
    let gsize = group_size(expert_mm(m), nb, f16_expert_runs(gpu));
    let max_groups = nb.div_ceil(gsize) + n_expert;
    let (perm, grp, ngrp) = (
        gpu.alloc(nb * 4)?,
        gpu.alloc(3 * max_groups * 4)?,
        gpu.alloc(4)?,
    );
    let by_expert = if t > 1 {
        launch!(gpu, "group_by_expert", (1, 1, 1), 1024, (2 * n_expert * 4) as u32;
            idb.ptr, nb as i32, n_expert as i32, perm.ptr, grp.ptr, ngrp.ptr, gsize as i32)?;
        Some((perm.ptr, grp.ptr, ngrp.ptr, max_groups))
    } else {
        None
    };
    let half = gpu.alloc(2 * n)?;
    let mv = Mv {
        x: x.ptr,
        n_act: t,
        x_len: m.cols,
        nb,
        act_div: k,
        ids: idb.ptr,
        group: (0, 0),
        y: y.ptr,
        y_stride: m.rows,
        by_expert,
        act_ready: false,
        part: (0, 0),
        half: (half.ptr, half.bytes),
        half_ready: false,
        x_scale: 0,
    };
    mv_launch(gpu, m, [&q, &d, &bs], mv)?;
    let mut out = vec![0f32; nb * m.rows];
    gpu.read(y.ptr, &mut out)?;
    Ok(out.chunks_exact(m.rows).map(|c| c.to_vec()).collect())
}

impl<'a> Fwd<'a> {
    fn eps(&self) -> f32 {
        self.cfg.rms_eps
    }
    fn sim(&self) -> bool {
        !self.opts.no_qat_sim
    }
    fn rope(&self, l: usize) -> u64 {
        match self.cfg.attn_kind(l) {
            AttnKind::Window => self.rope_main.ptr,
            _ => self.rope_comp.ptr,
        }
    }

    /// Side branch `i`: a forward on side stream `i` that starts after the work queued
    /// so far on this one (an event edge in the captured graph). Decode's chains of
    /// small latency-bound kernels then overlap: a short run's kernels leave most SMs
    /// idle. Only while capturing with a side stream; otherwise None (run in order).
    fn fork(&self, i: usize) -> Result<Option<Fwd<'a>>, CudaError> {
        let Some(side) = self.side.get(i).filter(|_| self.capture) else {
            return Ok(None);
        };
        let ev = self
            .gpu
            .stream
            .record_event(None)
            .map_err(|e| CudaError::Driver(format!("event: {e}")))?;
        side.stream
            .wait(&ev)
            .map_err(|e| CudaError::Driver(format!("stream wait: {e}")))?;
        Ok(Some(Fwd {
            gpu: side,
            side: &[],
            ..*self
        }))
    }

    /// Whether [`Fwd::fork`] gives side branch `i` (capturing, with that side stream).
    fn can_fork(&self, i: usize) -> bool {
        self.capture && self.side.len() > i
    }

    /// Joins a branch from [`Fwd::fork`]: what is queued next here waits for it.
    fn join(&self, branch: Option<Fwd>) -> Result<(), CudaError> {
        if let Some(b) = branch {
            self.gpu
                .stream
                .join(&b.gpu.stream)
                .map_err(|e| CudaError::Driver(format!("join: {e}")))?;
        }
        Ok(())
    }

    fn mv(&self, s: &Scratch, m: &DevMat, c: Mv) -> Result<(), CudaError> {
        let (part, half) = if self.capture {
            ((0, 0), (0, 0))
        } else {
            ((s.part.ptr, s.part.bytes), (s.act_h.ptr, s.act_h.bytes))
        };
        mv_launch(
            self.gpu,
            m,
            [&s.act_q, &s.act_d, &s.act_s],
            Mv { part, half, ..c },
        )
    }

    fn rms(
        &self,
        x: u64,
        w: Option<&DevBuf>,
        y: u64,
        n: usize,
        count: usize,
    ) -> Result<(), CudaError> {
        self.rms_q((x, n), w, y, n, count, None)
    }

    /// RMSNorm of `count` vectors of `n` at `x.0` (`x.1` apart) into `y` (packed);
    /// with `q` (int8 values, block scales) also the Q8_0 of the result.
    fn rms_q(
        &self,
        x: (u64, usize),
        w: Option<&DevBuf>,
        y: u64,
        n: usize,
        count: usize,
        q: Option<(u64, u64)>,
    ) -> Result<(), CudaError> {
        let (qp, dp) = q.unwrap_or((0, 0));
        launch!(self.gpu, "rms_norm", (count as u32, 1, 1), norm_threads(n), 0;
            x.0, w.map_or(0, |b| b.ptr), y, n as i32, x.1 as i32, n as i32, self.eps(), qp, dp)
    }

    /// Both products of `p` over one input, each item's outputs side by side (A's
    /// rows, then B's) at `c.y`, `c.y_stride` apart; the activations in `act`
    /// (already prepared for A's type when `ready`).
    fn mv_pair(
        &self,
        s: &Scratch,
        p: &DevPair,
        act: (&DevBuf, &DevBuf),
        ready: bool,
        c: Mv,
    ) -> Result<(), CudaError> {
        match p {
            DevPair::Fused(mat) => self.mv_act(s, act, ready, mat, c),
            DevPair::Separate(a, b) => {
                self.mv_act(s, act, ready, a, c)?;
                let c = Mv {
                    y: c.y + (a.rows * 4) as u64,
                    ..c
                };
                self.mv_act(s, act, same_act(a, b), b, c)
            }
        }
    }

    /// `m·x` with the activations in `act` (already prepared when `ready`).
    fn mv_act(
        &self,
        s: &Scratch,
        act: (&DevBuf, &DevBuf),
        ready: bool,
        m: &DevMat,
        c: Mv,
    ) -> Result<(), CudaError> {
        // As `mv`: the partials (the indexer compressor's 512 rows split) and the f16
        // buffer for runs, which are not captured and so have no parallel branches.
        let (part, half) = if self.capture {
            ((0, 0), (0, 0))
        } else {
            ((s.part.ptr, s.part.bytes), (s.act_h.ptr, s.act_h.bytes))
        };
        mv_launch(
            self.gpu,
            m,
            [act.0, act.1, &s.act_s],
            Mv {
                act_ready: ready,
                part,
                half,
                ..c
            },
        )
    }

    /// `hc_pre` then the sublayer's RMSNorm: `s.xn` gets the sublayer input, `s.mix`
    /// the mixing for `hc_post`; with `q`, the Q8_0 of `s.xn` too (see [`q8_target`]).
    /// Returns the graph branch that computes `s.mix` where there is one: join it
    /// before `hc_post`.
    fn hc_pre_norm(
        &self,
        s: &Scratch,
        hw: &DevHc,
        norm: &DevBuf,
        x: u64,
        t: usize,
        q: Option<(u64, u64)>,
    ) -> Result<Option<Fwd<'a>>, CudaError> {
        let cfg = self.cfg;
        let he = cfg.hc_width();
        // Short runs: the norm of the HC state folded into the mixing product.
        let fused = match hw.fn_.ty {
            GgmlType::F32 => Some("hc_fn_rms_f32"),
            GgmlType::F16 => Some("hc_fn_rms_f16"),
            _ => None,
        }
        .filter(|_| t < MMA_MIN_TOKENS && hw.fn_.cols == he);
        let (qp, dp) = q.unwrap_or((0, 0));
        let shm = cfg.n_embd * 4;
        // Decode: the whole step in one launch (see hc_pre_late_body in ds4.cu).
        let bt = hc_bt() as usize;
        let one = fused
            .filter(|_| hc_fused_on() && he.is_multiple_of(bt) && cfg.hc_mix() <= HC_MAX_MIX)
            .filter(|_| cfg.hc <= 4 && cfg.n_embd <= 4096 && cfg.n_embd.is_multiple_of(32))
            .filter(|_| he <= HC_MAX_BLK * bt);
        if let Some(kernel) = one {
            // The Sinkhorn step (only hc_post reads it) on a side branch of the graph.
            let branch = self.can_fork(HC_MIX_SIDE) && hc_mix_branch_on();
            let cl_cols = (4 * HC_CLUSTER * HC_CLUSTER_BT) as usize;
            if kernel == "hc_fn_rms_f16" && hc_cluster_on() && he <= cl_cols {
                // A token's cluster of blocks (hc_pre_cl_f16 in ds4.cu).
                launch!(self.gpu, "hc_pre_cl_f16", (HC_CLUSTER, t as u32, 1), HC_CLUSTER_BT, 0;
                    hw.fn_.buf.ptr, x, s.z.ptr, hw.scale.ptr, hw.base.ptr, norm.ptr, s.xn.ptr,
                    s.mix.ptr, cfg.hc as i32, cfg.n_embd as i32, cfg.hc_mix() as i32,
                    cfg.hc_sinkhorn_iters as i32, cfg.hc_eps, self.eps(), qp, dp,
                    i32::from(!branch))?;
            } else {
                let kernel = if kernel == "hc_fn_rms_f16" {
                    "hc_pre_late_f16"
                } else {
                    "hc_pre_late_f32"
                };
                launch!(self.gpu, kernel, ((he / bt) as u32, t as u32, 1), bt as u32, 0;
                    hw.fn_.buf.ptr, x, s.flat.ptr, s.hc_count.ptr, s.z.ptr, hw.scale.ptr,
                    hw.base.ptr, norm.ptr, s.xn.ptr, s.mix.ptr, cfg.hc as i32, cfg.n_embd as i32,
                    cfg.hc_mix() as i32, cfg.hc_sinkhorn_iters as i32, cfg.hc_eps, self.eps(), qp,
                    dp, i32::from(!branch))?;
            }
            if !branch {
                return Ok(None);
            }
            let b = self.fork(HC_MIX_SIDE)?;
            if let Some(b) = &b {
                launch!(b.gpu, "hc_mix", (t as u32, 1, 1), 32, 0;
                    s.z.ptr, hw.scale.ptr, hw.base.ptr, s.mix.ptr, cfg.hc as i32,
                    cfg.hc_mix() as i32, cfg.hc_sinkhorn_iters as i32, cfg.hc_eps)?;
            }
            return Ok(b);
        }
        // Runs: the norm's factors alone, applied by the product as it reads the HC state
        // (the same values as the normed copy it replaces, 2 × 64 KB a token less
        // traffic), the Sinkhorn step in its own launch and hc_pre_norm4.
        let plain = Mv::plain(x, t, he, s.z.ptr, cfg.hc_mix());
        let run = fused.is_none()
            && fusion_on(RunFusion::PfHc)
            && hw.fn_.ty == GgmlType::F16
            && use_tensor_cores(&hw.fn_, &plain)
            && cfg.hc <= 4;
        let threads = pre4_threads(cfg.n_embd).zip(factor_threads(he));
        if let Some((bt, ft)) = threads.filter(|_| run) {
            // The factors in s.flat, the normed copy's buffer, which this path leaves unused:
            // from hc_post4's sums of squares of this state where it left them, else by
            // reading the state (64 KB a token).
            let ssq = s.ssq_ok.swap(false, std::sync::atomic::Ordering::Relaxed);
            match self.hc_ssq_parts().filter(|_| ssq && x == s.x.ptr) {
                Some(parts) => launch!(self.gpu, "rms_from_ssq", (ceil_div(t, 128), 1, 1), 128, 0;
                    s.ssq.ptr, parts as i32, he as i32, self.eps(), s.flat.ptr, t as i32)?,
                None => launch!(self.gpu, "rms_factor", (t as u32, 1, 1), ft as u32, 0;
                    x, he as i32, he as i32, self.eps(), s.flat.ptr)?,
            }
            self.mv(
                s,
                &hw.fn_,
                Mv {
                    x_scale: s.flat.ptr,
                    ..plain
                },
            )?;
            launch!(self.gpu, "hc_mix", (t as u32, 1, 1), 32, 0;
                s.z.ptr, hw.scale.ptr, hw.base.ptr, s.mix.ptr, cfg.hc as i32,
                cfg.hc_mix() as i32, cfg.hc_sinkhorn_iters as i32, cfg.hc_eps)?;
            launch!(self.gpu, "hc_pre_norm4", (t as u32, 1, 1), bt as u32, 0;
                s.z.ptr, x, hw.scale.ptr, hw.base.ptr, norm.ptr, s.xn.ptr, cfg.hc as i32,
                cfg.n_embd as i32, cfg.hc_mix() as i32, cfg.hc_eps, self.eps(), qp, dp)?;
            return Ok(None);
        }
        if let Some(kernel) = fused {
            launch!(self.gpu, kernel, (hw.fn_.rows as u32, t as u32, 1), 1024, 0;
                hw.fn_.buf.ptr, x, s.z.ptr, he as i32, cfg.hc_mix() as i32, self.eps())?;
        } else {
            self.rms(x, None, s.flat.ptr, he, t)?;
            self.mv(
                s,
                &hw.fn_,
                Mv::plain(s.flat.ptr, t, he, s.z.ptr, cfg.hc_mix()),
            )?;
        }
        self.gpu.allow_shared("hc_pre_norm", shm)?;
        launch!(self.gpu, "hc_pre_norm", (t as u32, 1, 1), norm_threads(cfg.n_embd), shm as u32;
            s.z.ptr, x, hw.scale.ptr, hw.base.ptr, norm.ptr, s.xn.ptr, s.mix.ptr, cfg.hc as i32,
            cfg.n_embd as i32, cfg.hc_mix() as i32, cfg.hc_sinkhorn_iters as i32, cfg.hc_eps,
            self.eps(), qp, dp)?;
        Ok(None)
    }

    /// Layer `l` on the HC states in `s.x` of tokens at `pos0..pos0+t`; the result
    /// goes to `s.x` again (updated in place).
    pub fn layer(
        &self,
        s: &Scratch,
        st: &LayerState,
        l: usize,
        pos0: usize,
        t: usize,
    ) -> Result<(), CudaError> {
        let w = &self.w.layers[l];
        self.attention_sublayer(s, st, w, l, pos0, t)?;
        self.record(s, t)?;
        if let Some(tr) = self.trace {
            let hd = self.cfg.head_dim;
            let raw = st.read_rows(self.gpu, &st.ring, st.ring_rows(hd) * hd)?;
            let ratio = self.cfg.attn_kind(l).ratio();
            let mut comp = Vec::new();
            if let Some((rows, _, _)) = &st.comp {
                comp = st.read_rows(self.gpu, rows, (pos0 + t) / ratio * hd)?;
            }
            let mut tr = tr.borrow_mut();
            tr.raw.push(raw);
            tr.comp.push(comp);
        }
        self.ffn_sublayer(s, w, l, t)
    }

    // ---------------------------------------------------------------------------------
    // Attention sublayer (§3.5)

    fn attention_sublayer(
        &self,
        s: &Scratch,
        st: &LayerState,
        w: &DevLayer,
        l: usize,
        pos0: usize,
        t: usize,
    ) -> Result<(), CudaError> {
        let cfg = self.cfg;
        let g = self.gpu;
        let (hd, nh, e) = (cfg.head_dim, cfg.n_head, cfg.n_embd);
        let (n_rot, p0) = (cfg.n_rot as i32, s.pos.ptr);
        let sim = self.sim() as i32;
        let rope = self.rope(l);
        let x = s.x.ptr;
        // The norm writes xn's Q8_0 where q_a takes it (no quant_q8_0 launch).
        let xq = q8_target(w.q_a_kv.a_type(), e, (&s.act_q, &s.act_d));
        let mix_branch = self.hc_pre_norm(s, &w.hc_attn, &w.attn_norm, x, t, xq)?;
        let early = self.early_compressors(s, st, w, l, pos0, t)?;

        // Low-rank Q and the shared K=V row, one product [q_a; kv] of xn, then their
        // norms. qa's Q8_0 goes to the second activation buffer: the indexer's q_b
        // reads it too, after the compressors' products.
        let qkv = cfg.q_lora + hd;
        self.mv_pair(
            s,
            &w.q_a_kv,
            (&s.act_q, &s.act_d),
            xq.is_some(),
            Mv::plain(s.xn.ptr, t, e, s.qkv_raw.ptr, qkv),
        )?;
        let qaq = q8_target(w.q_b.ty, cfg.q_lora, (&s.act2_q, &s.act2_d));
        let qa_in = (s.qkv_raw.ptr, qkv);
        let ring_rows = st.ring_rows(hd) as i32;
        let kh = |f32_name, f16_name| row_kernel(st.half, f32_name, f16_name);
        // The q_a norm and the K=V row's store (kv_store normalizes the row itself,
        // kv_norm) in one launch where they take the same block size (their sums' order).
        let fused_kv = qkv_fuse_on() && norm_threads(cfg.q_lora) == norm_threads(hd);
        if fused_kv {
            let (qp, dp) = qaq.unwrap_or((0, 0));
            launch!(g, kh("qa_norm_kv_store", "qa_norm_kv_store_kh"), (t as u32, 2, 1), norm_threads(hd), (hd * 4) as u32;
                s.qkv_raw.ptr, w.q_a_norm.ptr, s.qa.ptr, cfg.q_lora as i32, qkv as i32,
                self.eps(), qp, dp, s.qkv_raw.at::<f32>(cfg.q_lora), w.kv_norm.ptr,
                st.ring.ptr, ring_rows, hd as i32, rope, n_rot, p0, sim)?;
        } else {
            self.rms_q(qa_in, Some(&w.q_a_norm), s.qa.ptr, cfg.q_lora, t, qaq)?;
        }
        // The queries (q_b, their norm and RoPE) beside the K=V row, compressors and
        // indexer, which do not read them, when nothing writes qa's Q8_0 meanwhile: q_b
        // reads it as it is, and the indexer's q_b reads it too or takes floats (a Q8_K
        // one would quantize qa into the same buffer).
        let idx_qb_reads = w
            .indexer
            .as_ref()
            .is_none_or(|iw| matches!(act_kind(iw.q_b.ty), ActKind::F32 | ActKind::Q8_0));
        let qbranch = if qaq.is_some() && idx_qb_reads {
            self.fork(0)?
        } else {
            None
        };
        let fq = qbranch.as_ref().unwrap_or(self);
        fq.mv_act(
            s,
            (&s.act2_q, &s.act2_d),
            qaq.is_some(),
            &w.q_b,
            Mv::plain(s.qa.ptr, t, cfg.q_lora, s.q.ptr, nh * hd),
        )?;

        // Per-head weightless norm and RoPE of the queries; the K=V rows rotated,
        // simulated and stored before attention (a token attends to itself). Runs that
        // take the tensor-core attention leave the queries' norm and RoPE to it, where
        // head_norm_rope_w's warps would do them (the same values: head_norm_rope_lane).
        let rows_max = layer_attn_rows(cfg, l, self.ctx);
        let att_mma = t >= MMA_MIN_TOKENS && attention_mma_fits(cfg, self.sim(), rows_max, st.half);
        let warp_qn = hd.is_multiple_of(128)
            && hd <= 512
            && (hd - cfg.n_rot).is_multiple_of(4)
            && iprep_warp_on();
        let qn_in_att = att_mma && warp_qn && fusion_on(RunFusion::AttQn);
        if warp_qn && !qn_in_att {
            launch!(fq.gpu, "head_norm_rope_w", (ceil_div(t * nh, 8), 1, 1), 256, 0;
                s.q.ptr, nh as i32, hd as i32, self.eps(), rope, n_rot, p0, (t * nh) as i32)?;
        } else if !qn_in_att {
            launch!(fq.gpu, "head_norm_rope", ((t * nh) as u32, 1, 1), 128, 0;
                s.q.ptr, nh as i32, hd as i32, self.eps(), rope, n_rot, p0)?;
        }
        if !fused_kv {
            launch!(g, kh("kv_store", "kv_store_kh"), (t as u32, 1, 1), norm_threads(hd), (hd * 4) as u32;
                s.qkv_raw.at::<f32>(cfg.q_lora), qkv as i32, w.kv_norm.ptr, self.eps(),
                st.ring.ptr, ring_rows, hd as i32, rope, n_rot, p0, sim)?;
        }

        // Compressors, then the indexer's selection (§3.6, §3.7).
        let kind = cfg.attn_kind(l);
        let ratio = kind.ratio();
        let attn_early = early.attn.is_some();
        let mut cbranch = early.attn;
        if let (Some(cw), Some(comp), false) = (&w.compressor, &st.comp, attn_early) {
            // The attention compressor beside the indexer when its product reads xn as
            // floats (else it would quantize xn into the buffer the indexer's product
            // also fills).
            if act_kind(cw.kv_gate.a_type()) == ActKind::F32 {
                cbranch = self.fork(1)?;
            }
            let fc = cbranch.as_ref().unwrap_or(self);
            fc.compressor(
                s,
                &s.ckv,
                cw,
                comp,
                (kind.coff(), hd, sim),
                st.half,
                (l, pos0, t),
            )?;
        }
        let mut sel = (0u64, 0u64);
        if let (Some(iw), Some(icomp)) = (&w.indexer, &st.icomp) {
            let (nhi, di) = (cfg.indexer_heads, cfg.indexer_head_dim);
            let ic = &iw.compressor;
            // The indexer's queries and weights (q_b, proj, prep) beside its compressor,
            // when its three products read their inputs as floats (no act_* writes).
            let ibranch = if indexer_reads_floats(iw) {
                self.fork(2)?
            } else {
                None
            };
            let fi = ibranch.as_ref().unwrap_or(self);
            fi.mv_act(
                s,
                (&s.act2_q, &s.act2_d),
                qaq.is_some() && act_kind(iw.q_b.ty) == ActKind::Q8_0,
                &iw.q_b,
                Mv::plain(s.qa.ptr, t, cfg.q_lora, s.qi.ptr, nhi * di),
            )?;
            let idx_early = early.idx.is_some();
            if idx_early {
                // proj and the indexer's compressor ran on their early branch.
                fi.join(early.idx)?;
            } else {
                fi.mv(s, &iw.proj, Mv::plain(s.xn.ptr, t, e, s.wi.ptr, nhi))?;
            }
            if di == 128 && (di - cfg.n_rot).is_multiple_of(4) && iprep_warp_on() {
                launch!(fi.gpu, "indexer_prep_w", (ceil_div(t * nhi, 8), 1, 1), 256, 0;
                    s.qi.ptr, s.wi.ptr, nhi as i32, di as i32, rope, n_rot, p0, sim,
                    (t * nhi) as i32)?;
            } else {
                launch!(fi.gpu, "indexer_prep", ((t * nhi) as u32, 1, 1), 128, (di * 4) as u32;
                    s.qi.ptr, s.wi.ptr, nhi as i32, di as i32, rope, n_rot, p0, sim)?;
            }
            if !idx_early {
                self.compressor(
                    s,
                    &s.ikv,
                    ic,
                    icomp,
                    (2, di, 2 * sim),
                    st.half,
                    (l, pos0, t),
                )?;
            }
            self.join(ibranch)?;
            let irows = &icomp.0;
            let max_n = if self.capture {
                s.max_irows
            } else {
                (pos0 + t) / ratio
            };
            if max_n > 0 {
                indexer_scores_launch(
                    g,
                    [s.qi.ptr, s.wi.ptr, irows.ptr, s.scores.ptr, p0],
                    (nhi, di, ratio, s.max_irows),
                    (t, max_n),
                    (idx_tt_on(), st.half),
                )?;
            }
            // Decode: one token's selection spread over a cluster (a run's tokens
            // already fill the GPU one block each).
            topk_launch(
                g,
                [s.scores.ptr, s.sel.ptr, s.nsel.ptr, p0],
                (ratio, s.max_irows, cfg.indexer_top_k, t),
                t < MMA_MIN_TOKENS && topk_cluster_on() && s.max_irows > TOPK_CLUSTER_MIN,
            )?;
            sel = (s.sel.ptr, s.nsel.ptr);
        }
        self.record_selection(s, t, sel.0 != 0)?;
        self.join(qbranch)?;
        self.join(cbranch)?;

        // Attention over the raw window and the compressed rows, with sinks, then the
        // inverse rotation (V = K carries each key's rotation).
        // Query row, one weight per row (padded to 8-byte alignment), one address per row.
        let shm = (hd + rows_max + (rows_max & 1)) * 4 + rows_max * 8;
        g.allow_shared(kh("attention", "attention_kh"), shm)?;
        let comp_ptr = st.comp.as_ref().map_or(0, |c| c.0.ptr);
        let scale = 1.0f32 / (hd as f32).sqrt();
        // Runs of tokens take the multi-head kernel (each K=V row read once for `hb`
        // heads); decode keeps one block per head for parallelism.
        let hb = attention_heads_per_block(cfg, rows_max, t);
        let mut oq = None;
        let mut oh = 0u64;
        if att_mma && attention_wg_takes(g, cfg, st.half) {
            let (k, hpb, shm) = ("attention_wg_kh", 32, ATW_SHARED);
            g.allow_shared(k, shm)?;
            oq = q8_target(w.out_a.ty, hd, (&s.act_q, &s.act_d))
                .filter(|_| fusion_on(RunFusion::AttQ8));
            let (qp, dp) = oq.unwrap_or((0, 0));
            // With o's Q8_0, its f16 for out_a's wgmma too, into the buffer out_a's
            // product would convert it into (runs are not captured: `mv` passes it).
            oh = if oq.is_some()
                && !self.capture
                && s.act_h.bytes >= 2 * t * nh * hd
                && attention_f16_o_on()
            {
                s.act_h.ptr
            } else {
                0
            };
            launch!(g, k, ((nh / hpb) as u32, t as u32, 1), 256, shm as u32;
                s.q.ptr, st.ring.ptr, ring_rows, comp_ptr, sel.0, sel.1, cfg.indexer_top_k as i32,
                w.sinks.ptr, s.o.ptr, nh as i32, hd as i32, cfg.sliding_window as i32, p0,
                ratio as i32, rope, n_rot, scale, rows_max as i32, qp, dp,
                if qn_in_att { self.eps() } else { -1.0f32 }, oh)?;
        } else if att_mma {
            let hpb = attention_mma_heads(cfg, rows_max, st.half);
            let shm = attention_mma_shared(hd, hpb, rows_max, att_mma_buffers(hpb, st.half));
            let k = match (hpb == 64, st.half) {
                (true, false) => "attention_mma_h64",
                (true, true) => "attention_mma_h64_kh",
                (false, false) => "attention_mma",
                (false, true) => "attention_mma_kh",
            };
            g.allow_shared(k, shm)?;
            // o's Q8_0 for out_a from the kernel's epilogue (no quant_q8_0 pass over the
            // 128 KB a token of o) where a warp's dimensions are whole blocks.
            oq = q8_target(w.out_a.ty, hd, (&s.act_q, &s.act_d))
                .filter(|_| hd.is_multiple_of(128) && fusion_on(RunFusion::AttQ8));
            let (qp, dp) = oq.unwrap_or((0, 0));
            launch!(g, k, ((nh / hpb) as u32, t as u32, 1), (8 * hpb) as u32,
                shm as u32;
                s.q.ptr, st.ring.ptr, ring_rows, comp_ptr, sel.0, sel.1, cfg.indexer_top_k as i32,
                w.sinks.ptr, s.o.ptr, nh as i32, hd as i32, cfg.sliding_window as i32, p0,
                ratio as i32, rope, n_rot, scale, rows_max as i32, qp, dp,
                if qn_in_att { self.eps() } else { -1.0f32 })?;
        } else if hb > 1 {
            let shm = (hb * hd + hb * rows_max + 1) * 4 + rows_max * 8;
            let k = kh("attention_mh", "attention_mh_kh");
            g.allow_shared(k, shm)?;
            launch!(g, k, ((nh / hb) as u32, t as u32, 1), 512, shm as u32;
                s.q.ptr, st.ring.ptr, ring_rows, comp_ptr, sel.0, sel.1, cfg.indexer_top_k as i32,
                w.sinks.ptr, s.o.ptr, nh as i32, hd as i32, cfg.sliding_window as i32, p0,
                ratio as i32, rope, n_rot, scale, rows_max as i32, hb as i32)?;
        } else if let Some(span) = attention_cluster_span(cfg, rows_max, t, st.half) {
            // Decode's ranges on a cluster that merges them itself (attention_split_cl in
            // ds4.cu): no partials, no attention_combine.
            let cl = attention_cluster();
            let wend = 4 * hd + 4 * span;
            let shm = (wend + (wend & 1)) * 4 + span * 8;
            let k = kh("attention_split_cl", "attention_split_cl_kh");
            if cl > 8 {
                g.allow_large_clusters(k)?;
            }
            g.allow_shared(k, shm)?;
            oq = q8_target(w.out_a.ty, hd, (&s.act_q, &s.act_d));
            let (qp, dp) = oq.unwrap_or((0, 0));
            launch!(g, k, ((nh / 4) as u32, t as u32, cl), 512, shm as u32;
                s.q.ptr, st.ring.ptr, ring_rows, comp_ptr, sel.0, sel.1, cfg.indexer_top_k as i32,
                w.sinks.ptr, s.o.ptr, nh as i32, hd as i32, cfg.sliding_window as i32, p0,
                ratio as i32, rope, n_rot, scale, span as i32, qp, dp)?;
        } else if let Some((span, nsplit)) = attention_split(cfg, rows_max, t) {
            let hbs = split_heads_per_block(cfg, st.half);
            let wend = hbs * hd + hbs * span;
            let shm = (wend + (wend & 1)) * 4 + span * 8;
            let k = kh("attention_split", "attention_split_kh");
            g.allow_shared(k, shm)?;
            launch!(g, k, ((nh / hbs) as u32, t as u32, nsplit as u32), 512, shm as u32;
                s.q.ptr, st.ring.ptr, ring_rows, comp_ptr, sel.0, sel.1, cfg.indexer_top_k as i32,
                s.apart.ptr, nh as i32, hd as i32, cfg.sliding_window as i32, p0, ratio as i32,
                scale, span as i32, nsplit as i32, hbs as i32)?;
            // The combine writes o's Q8_0 for out_a where out_a takes it.
            oq = q8_target(w.out_a.ty, hd, (&s.act_q, &s.act_d));
            let (qp, dp) = oq.unwrap_or((0, 0));
            // 128 threads: a thread's COMB_DIMS (4) dimensions cover head_dim ≤ 512, the
            // bound attention_split takes; shared: the row, then 3 floats a range.
            let shm = (hd + 3 * nsplit) * 4;
            launch!(g, "attention_combine", (nh as u32, t as u32, 1), 128, shm as u32;
                s.apart.ptr, sel.0, sel.1, w.sinks.ptr, s.o.ptr, nh as i32, hd as i32,
                cfg.sliding_window as i32, p0, ratio as i32, rope, n_rot, span as i32,
                nsplit as i32, qp, dp)?;
        } else {
            launch!(g, kh("attention", "attention_kh"), (nh as u32, t as u32, 1), 512, shm as u32;
                s.q.ptr, st.ring.ptr, ring_rows, comp_ptr, sel.0, sel.1, cfg.indexer_top_k as i32,
                w.sinks.ptr, s.o.ptr, nh as i32, hd as i32, cfg.sliding_window as i32, p0,
                ratio as i32, rope, n_rot, scale, rows_max as i32)?;
        }

        // Grouped output: group g multiplies its heads by rows g·o_lora.. of out_a.
        let (r, gin) = (cfg.o_lora, cfg.o_group_in());
        self.mv(
            s,
            &w.out_a,
            Mv {
                group: (r, gin),
                act_ready: oq.is_some(),
                half_ready: oh != 0,
                ..Mv::plain(s.o.ptr, t, nh * hd, s.low.ptr, cfg.o_groups * r)
            },
        )?;
        self.mv(
            s,
            &w.out_b,
            Mv::plain(s.low.ptr, t, cfg.o_groups * r, s.f.ptr, e),
        )?;
        self.join(mix_branch)?;
        self.hc_post_swap(s, t, s.f.ptr, None)
    }

    /// A compressor of layer `l` (the attention's or the indexer's): one product
    /// [kv; gate] of xn into `out` (a token's values, then its scores, coff·d each), then
    /// the compression into the state's rows (`coff` rows of `d` a compressed row).
    #[allow(clippy::too_many_arguments)]
    fn compressor(
        &self,
        s: &Scratch,
        out: &DevBuf,
        cw: &DevCompressor,
        (rows, fkv, fsc): &(DevBuf, DevBuf, DevBuf),
        (coff, d, sim): (usize, usize, i32),
        half: bool,
        (l, pos0, t): (usize, usize, usize),
    ) -> Result<(), CudaError> {
        let width = coff * d;
        let c = Mv::plain(s.xn.ptr, t, self.cfg.n_embd, out.ptr, 2 * width);
        self.mv_pair(s, &cw.kv_gate, (&s.act_q, &s.act_d), false, c)?;
        let c = Compress {
            input: (out.ptr, out.at::<f32>(width), 2 * width),
            ape: cw.ape.ptr,
            norm: cw.norm.ptr,
            front: (fkv.ptr, fsc.ptr),
            rows: rows.ptr,
            half,
            coff,
            d,
            sim,
        };
        self.compress(s, &c, l, pos0, t)
    }

    /// With [`early_compressors_on`] in a captured step: the attention compressor on side
    /// branch 3 and the indexer's head weights and compressor on 4, started right after
    /// the HC pre-step (they read xn alone, as floats) instead of after the q_a norm.
    fn early_compressors(
        &self,
        s: &Scratch,
        st: &LayerState,
        w: &DevLayer,
        l: usize,
        pos0: usize,
        t: usize,
    ) -> Result<Early<'a>, CudaError> {
        let mut early = Early::default();
        if !early_compressors_on() || !self.can_fork(4) {
            return Ok(early);
        }
        let (kind, sim) = (self.cfg.attn_kind(l), self.sim() as i32);
        if let (Some(cw), Some(comp)) = (&w.compressor, &st.comp)
            && act_kind(cw.kv_gate.a_type()) == ActKind::F32
        {
            early.attn = self.fork(3)?;
            if let Some(b) = &early.attn {
                let shape = (kind.coff(), self.cfg.head_dim, sim);
                b.compressor(s, &s.ckv, cw, comp, shape, st.half, (l, pos0, t))?;
            }
        }
        if let (Some(iw), Some(icomp)) = (&w.indexer, &st.icomp)
            && indexer_reads_floats(iw)
        {
            early.idx = self.fork(4)?;
            if let Some(b) = &early.idx {
                let (nhi, e) = (self.cfg.indexer_heads, self.cfg.n_embd);
                b.mv(s, &iw.proj, Mv::plain(s.xn.ptr, t, e, s.wi.ptr, nhi))?;
                let shape = (2, self.cfg.indexer_head_dim, 2 * sim);
                b.compressor(
                    s,
                    &s.ikv,
                    &iw.compressor,
                    icomp,
                    shape,
                    st.half,
                    (l, pos0, t),
                )?;
            }
        }
        Ok(early)
    }

    /// A compressor over the run's tokens at `pos0..pos0+t` (§3.6): closed rows to
    /// `c.rows`, the frontier carried in `c.front`. Decode steps (and short runs) walk
    /// the tokens in order in one block (`compress_run`); a run of at least
    /// MMA_MIN_TOKENS computes its closed rows in parallel (`compress_rows`, one block
    /// each) and then the frontier (`compress_state`), with the same values.
    fn compress(
        &self,
        s: &Scratch,
        c: &Compress,
        l: usize,
        pos0: usize,
        t: usize,
    ) -> Result<(), CudaError> {
        let g = self.gpu;
        let s_pos = s.pos.ptr;
        let ratio = self.cfg.attn_kind(l).ratio();
        let (rope, n_rot) = (self.rope(l), self.cfg.n_rot as i32);
        let threads = c.d.next_multiple_of(32) as u32;
        let (kv, gate, stride) = c.input;
        if t < MMA_MIN_TOKENS || self.capture || !compress_rows_on() {
            let k = row_kernel(c.half, "compress_run", "compress_run_kh");
            return launch!(g, k, (1, 1, 1), threads, (c.d * 4) as u32;
                kv, gate, stride as i32, c.ape, c.norm, c.front.0, c.front.1, c.rows, t as i32,
                s_pos, ratio as i32, c.coff as i32, c.d as i32, self.eps(), rope, n_rot, c.sim);
        }
        let n_rows = (pos0 + t) / ratio - pos0 / ratio;
        if n_rows > 0 {
            let k = row_kernel(c.half, "compress_rows", "compress_rows_kh");
            launch!(g, k, (n_rows as u32, 1, 1), threads, (c.d * 4) as u32;
                kv, gate, stride as i32, c.ape, c.norm, c.front.0, c.front.1, c.rows, s_pos,
                ratio as i32, c.coff as i32, c.d as i32, self.eps(), rope, n_rot, c.sim)?;
        }
        launch!(g, "compress_state", (ratio as u32, 1, 1), threads, 0;
            kv, gate, stride as i32, c.ape, c.front.0, c.front.1, t as i32, s_pos, ratio as i32,
            c.coff as i32, c.d as i32)
    }

    /// hc_post4's blocks a token (a thread four columns of every HC row), or None where
    /// its sums of squares cannot stand in for rms_factor's pass (off, or more blocks than
    /// `Scratch::ssq` holds).
    fn hc_ssq_parts(&self) -> Option<usize> {
        let parts = ceil_div(self.cfg.n_embd / 4, 256) as usize;
        (hc_ssq_on() && parts <= HC_SSQ_PARTS).then_some(parts)
    }

    /// `X' = hc_post(F, X)`, in place in `x[0]` (each thread reads its column's hc
    /// inputs before writing).
    /// F is `f`, plus (the MoE sublayer) the `k` routed outputs of each token at `routed`.
    fn hc_post_swap(
        &self,
        s: &Scratch,
        t: usize,
        f: u64,
        routed: Option<(u64, usize)>,
    ) -> Result<(), CudaError> {
        let cfg = self.cfg;
        let (rp, k) = routed.unwrap_or((0, 0));
        if t >= MMA_MIN_TOKENS
            && fusion_on(RunFusion::HcPost4)
            && cfg.hc <= 4
            && k <= 8
            && cfg.n_embd.is_multiple_of(4)
        {
            // With the new state's sums of squares for the next HC pre-step's norm.
            let parts = self.hc_ssq_parts();
            let ssq = if parts.is_some() { s.ssq.ptr } else { 0 };
            launch!(self.gpu, "hc_post4", (ceil_div(cfg.n_embd / 4, 256), t as u32, 1), 256, 0;
                f, rp, k as i32, s.x.ptr, s.mix.ptr, s.x.ptr, cfg.hc as i32, cfg.n_embd as i32,
                ssq)?;
            s.ssq_ok
                .store(parts.is_some(), std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        s.ssq_ok.store(false, std::sync::atomic::Ordering::Relaxed);
        launch!(self.gpu, "hc_post", (ceil_div(cfg.n_embd, 256), t as u32, 1), 256, 0;
            f, rp, k as i32, s.x.ptr, s.mix.ptr, s.x.ptr, cfg.hc as i32, cfg.n_embd as i32)
    }

    // ---------------------------------------------------------------------------------
    // MoE sublayer (§3.10)

    fn ffn_sublayer(&self, s: &Scratch, w: &DevLayer, l: usize, t: usize) -> Result<(), CudaError> {
        let cfg = self.cfg;
        let g = self.gpu;
        let (e, ff, k, ne) = (cfg.n_embd, cfg.expert_ff, cfg.n_expert_used, cfg.n_expert);
        let clamp = cfg.swiglu_clamp[l];
        // xn's Q8_0 for the shared expert goes to the second buffer (the routed experts
        // quantize xn to Q8_K in the first one before it).
        let xq = q8_target(w.gate_up_sh.a_type(), e, (&s.act2_q, &s.act2_d));
        let mix_branch = self.hc_pre_norm(s, &w.hc_ffn, &w.ffn_norm, s.x.ptr, t, xq)?;

        // The shared expert, weight 1, entirely in the second activation buffers (its
        // input's Q8_0, then its hidden values' quantization), so that it may run as a
        // branch beside the routed experts, which use the first ones. A Q8_K product
        // would also write the shared block sums: then it stays in line.
        let own_acts = [w.gate_up_sh.a_type(), w.down_sh.ty]
            .into_iter()
            .all(|ty| act_kind(ty) != ActKind::Q8K);
        let shared = if own_acts { self.fork(0)? } else { None };
        let fs = shared.as_ref().unwrap_or(self);
        fs.mv_pair(
            s,
            &w.gate_up_sh,
            (&s.act2_q, &s.act2_d),
            xq.is_some(),
            Mv::plain(s.xn.ptr, t, e, s.sgu.ptr, 2 * ff),
        )?;
        let sgu = (s.sgu.ptr, s.sgu.at::<f32>(ff), 2 * ff);
        let qk = fs.swiglu(
            s,
            sgu,
            (0, s.smid.ptr),
            t,
            clamp,
            (&w.down_sh, (&s.act2_q, &s.act2_d)),
        )?;
        fs.mv_act(
            s,
            (&s.act2_q, &s.act2_d),
            qk,
            &w.down_sh,
            Mv::plain(s.smid.ptr, t, ff, s.sout.ptr, e),
        )?;

        // The routed experts' quantization of xn does not wait for the routing: a branch
        // beside it (the router reads xn as floats, so nothing else touches act_*).
        let gkind = act_kind(w.gate_up_exps.a_type());
        let xquant = match (gkind, act_kind(w.router.ty)) {
            (ActKind::F32, _) | (_, ActKind::Q8_0 | ActKind::Q8K) => None,
            _ => self.fork(1)?,
        };
        if let Some(b) = &xquant {
            quant_launch(
                b.gpu,
                gkind,
                s.xn.ptr,
                t * e,
                [&s.act_q, &s.act_d, &s.act_s],
            )?;
        }

        // Routing: sqrt(softplus) scores; hash layers take the experts from the table.
        self.mv(s, &w.router, Mv::plain(s.xn.ptr, t, e, s.rlog.ptr, ne))?;
        if w.tid2eid.is_none() && ne <= 256 && k <= 64 && route_warp_on() {
            launch!(g, "route_warp", (t as u32, 1, 1), 32, 0;
                s.rlog.ptr, w.router_bias.as_ref().map_or(0, |b| b.ptr), s.ids.ptr, s.wts.ptr,
                ne as i32, k as i32, cfg.expert_weight_scale, ROUTER_WEIGHT_FLOOR)?;
        } else {
            launch!(g, "route", (t as u32, 1, 1), 256, (2 * ne * 4) as u32;
                s.rlog.ptr, w.router_bias.as_ref().map_or(0, |b| b.ptr),
                w.tid2eid.as_ref().map_or(0, |b| b.ptr), s.toks.ptr, s.ids.ptr, s.wts.ptr,
                ne as i32, k as i32, cfg.expert_weight_scale, ROUTER_WEIGHT_FLOOR)?;
        }
        self.record_experts(s, t)?;

        // Routed experts: item b = token b/k, slot b%k, weights chosen by ids[b]. A run
        // of several tokens groups its items by expert, so each expert's weights are
        // read once per group (8 items for the matrix-vector kernels, 32 when all three
        // products have tensor-core kernels) instead of once per item.
        let nb = t * k;
        let groups = if t > 1 {
            let gsize = expert_group_size(g, w, nb);
            launch!(g, "group_by_expert", (1, 1, 1), 1024, (2 * ne * 4) as u32;
                s.ids.ptr, nb as i32, ne as i32, s.perm.ptr, s.grp.ptr, s.ngrp.ptr,
                gsize as i32)?;
            Some((
                s.perm.ptr,
                s.grp.ptr,
                s.ngrp.ptr,
                max_expert_groups(cfg, t, gsize),
            ))
        } else {
            None
        };
        let by_expert =
            |x: u64, n_act: usize, x_len: usize, act_div: usize, y: u64, y_stride: usize| Mv {
                x,
                n_act,
                x_len,
                nb,
                act_div,
                ids: s.ids.ptr,
                group: (0, 0),
                y,
                y_stride,
                by_expert: groups,
                act_ready: false,
                part: (0, 0),
                half: (0, 0),
                half_ready: false,
                x_scale: 0,
            };
        // Gate and up of each item in one product ([gate; up] per expert).
        let ready = xquant.is_some();
        self.join(xquant)?;
        self.mv_pair(
            s,
            &w.gate_up_exps,
            (&s.act_q, &s.act_d),
            ready,
            by_expert(s.xn.ptr, t, e, k, s.gu.ptr, 2 * ff),
        )?;
        let gu = (s.gu.ptr, s.gu.at::<f32>(ff), 2 * ff);
        let qk = self.swiglu(
            s,
            gu,
            (s.wts.ptr, s.mid.ptr),
            nb,
            clamp,
            (&w.down_exps, (&s.act_q, &s.act_d)),
        )?;
        self.mv(
            s,
            &w.down_exps,
            Mv {
                act_ready: qk,
                ..by_expert(s.mid.ptr, nb, ff, 1, s.routed.ptr, e)
            },
        )?;

        // hc_post adds shared + routed in routing order, as the CPU does.
        self.join(shared)?;
        self.join(mix_branch)?;
        self.hc_post_swap(s, t, s.sout.ptr, Some((s.routed.ptr, k)))
    }

    /// `mid = silu(g)·u·wt` (clamped) for `nb` items of `expert_ff` (item b's gate
    /// and up at `g`, `u` + b·stride), quantized on the way for `down` into the
    /// activation buffers `act` (and `act_s`) where whole blocks allow; returns whether
    /// it did (then `down` reads them as they are).
    fn swiglu(
        &self,
        s: &Scratch,
        (g, u, stride): (u64, u64, usize),
        (wts, mid): (u64, u64),
        nb: usize,
        clamp: f32,
        (down, act): (&DevMat, (&DevBuf, &DevBuf)),
    ) -> Result<bool, CudaError> {
        let ff = self.cfg.expert_ff;
        let qkind = match act_kind(down.ty) {
            _ if !ff.is_multiple_of(256) => 0,
            ActKind::F32 => 0,
            ActKind::Q8_0 => 1,
            ActKind::Q8K => 2,
        };
        if qkind == 2 && fusion_on(RunFusion::SwigluQk) {
            let nblk = nb * ff / 256;
            launch!(self.gpu, "swiglu_qk", (ceil_div(nblk, 8), 1, 1), 256, 0;
                g, u, stride as i32, wts, mid, ff as i32, nblk as i32, clamp, act.0.ptr,
                act.1.ptr, s.act_s.ptr)?;
            return Ok(true);
        }
        launch!(self.gpu, "swiglu", (ceil_div(nb * ff, 256), 1, 1), 256, 0;
            g, u, stride as i32, wts, mid, ff as i32, nb as i32, clamp, act.0.ptr, act.1.ptr,
            s.act_s.ptr, qkind)?;
        Ok(qkind != 0)
    }

    fn record(&self, s: &Scratch, t: usize) -> Result<(), CudaError> {
        if let Some(tr) = self.trace {
            let mut h = vec![0f32; t * self.cfg.hc_width()];
            self.gpu.read(s.x.ptr, &mut h)?;
            tr.borrow_mut().hidden.push(h);
        }
        Ok(())
    }

    fn record_experts(&self, s: &Scratch, t: usize) -> Result<(), CudaError> {
        if let Some(tr) = self.trace {
            let mut ids = vec![0i32; t * self.cfg.n_expert_used];
            self.gpu.read(s.ids.ptr, &mut ids)?;
            tr.borrow_mut().experts.push(ids);
        }
        Ok(())
    }

    fn record_selection(&self, s: &Scratch, t: usize, active: bool) -> Result<(), CudaError> {
        if let Some(tr) = self.trace {
            let k = self.cfg.indexer_top_k;
            let mut per_tok = vec![Vec::new(); t];
            if active {
                let mut n = vec![0i32; t];
                self.gpu.read(s.nsel.ptr, &mut n)?;
                let mut sel = vec![0i32; t * k];
                self.gpu.read(s.sel.ptr, &mut sel)?;
                for (i, p) in per_tok.iter_mut().enumerate() {
                    *p = sel[i * k..i * k + n[i] as usize].to_vec();
                }
            }
            tr.borrow_mut().selected.push(per_tok);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Whole model (§3.12)

    /// Copies the run's tokens and first position to the device.
    pub fn upload_inputs(&self, s: &Scratch, toks: &[u32], pos0: usize) -> Result<(), CudaError> {
        let ids: Vec<i32> = toks.iter().map(|&x| x as i32).collect();
        self.gpu.write(s.toks.ptr, &ids)?;
        self.gpu.write(s.pos.ptr, &[pos0 as i32])
    }

    /// Embedding and every layer for `t` tokens at `pos0..` (inputs already uploaded):
    /// launches only, unless tracing.
    pub fn layers_pass(
        &self,
        s: &Scratch,
        layers: &[LayerState],
        t: usize,
        pos0: usize,
    ) -> Result<(), CudaError> {
        let cfg = self.cfg;
        let te = &self.w.token_embd;
        let ty_code: i32 = match te.ty {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Bf16 => 30,
            _ => 8,
        };
        launch!(self.gpu, "embed_rows", (t as u32, 1, 1), 256, 0;
            te.buf.ptr, ty_code, cfg.n_embd as i32, te.row_bytes() as i64, s.toks.ptr,
            s.x.ptr, cfg.hc as i32)?;
        s.ssq_ok.store(false, std::sync::atomic::Ordering::Relaxed);
        for (l, st) in layers.iter().enumerate() {
            self.record(s, t)?;
            self.layer(s, st, l, pos0, t)?;
        }
        self.record(s, t)
    }

    /// The output head (HC collapse, norm, vocabulary product) for tokens `a..a+n` of
    /// the run into `s.logits` (`n` ≤ HEAD_CHUNK).
    pub fn head(&self, s: &Scratch, a: usize, n: usize) -> Result<(), CudaError> {
        let cfg = self.cfg;
        let (he, e, v) = (cfg.hc_width(), cfg.n_embd, cfg.n_vocab);
        let x = s.x.at::<f32>(a * he);
        let oh = &self.w.output_hc;
        self.rms(x, None, s.flat.ptr, he, n)?;
        self.mv(s, &oh.fn_, Mv::plain(s.flat.ptr, n, he, s.z.ptr, cfg.hc))?;
        launch!(self.gpu, "hc_head", (n as u32, 1, 1), 256, 0;
            s.z.ptr, x, oh.scale.ptr, oh.base.ptr, s.y.ptr, cfg.hc as i32, e as i32,
            cfg.hc as i32, cfg.hc_eps)?;
        self.rms(s.y.ptr, Some(&self.w.output_norm), s.xn.ptr, e, n)?;
        self.mv(
            s,
            &self.w.output,
            Mv::plain(s.xn.ptr, n, e, s.logits.ptr, v),
        )
    }

    /// Reads `n` rows of logits back.
    pub fn read_logits(&self, s: &Scratch, n: usize) -> Result<Vec<Vec<f32>>, CudaError> {
        let v = self.cfg.n_vocab;
        let mut host = vec![0f32; n * v];
        self.gpu.read(s.logits.ptr, &mut host)?;
        Ok(host.chunks_exact(v).map(|c| c.to_vec()).collect())
    }

    /// Runs `toks` at `pos0..`, returns the logits `which` asks for. `ahead` runs on the
    /// host once every launch before the first logits read is queued: host work that
    /// needs no GPU result hides behind the run.
    pub fn run(
        &self,
        s: &Scratch,
        layers: &[LayerState],
        toks: &[u32],
        pos0: usize,
        which: LogitsFor,
        ahead: &mut dyn FnMut() -> Result<(), CudaError>,
    ) -> Result<Vec<Vec<f32>>, CudaError> {
        let t = toks.len();
        self.upload_inputs(s, toks, pos0)?;
        self.layers_pass(s, layers, t, pos0)?;
        let mut ahead = Some(ahead);
        let first = match which {
            LogitsFor::All => 0,
            LogitsFor::Last => t.saturating_sub(1),
        };
        let mut out = Vec::with_capacity(t - first);
        let mut a = first;
        while a < t {
            let n = (t - a).min(HEAD_CHUNK);
            self.head(s, a, n)?;
            if let Some(f) = ahead.take() {
                f()?;
            }
            out.extend(self.read_logits(s, n)?);
            a += n;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Flash shapes take the tensor-core attention (64 heads a block, 32 at long
    /// contexts) at every context up to 1M tokens (its row table grows with the
    /// compressed rows), in the shared memory a Hopper SM has, with f32 or f16 rows
    /// (f16: two tile buffers for 64 heads); without the QAT simulation (rows not f16)
    /// they don't. On Hopper with f16 rows that attention is `attention_wg_kh`.
    #[test]
    fn flash_attention_takes_the_tensor_core_kernel_up_to_1m() {
        let cfg = ModelConfig::flash();
        for half in [false, true] {
            for ctx in [2048, 65_536, 1 << 20] {
                let rows = sizes(&cfg, ctx, 2048).max_attn_rows;
                // 64 heads a block while their staging fits beside the row table, else 32.
                let hpb = attention_mma_heads(&cfg, rows, half);
                assert_eq!(hpb, if ctx <= 65_536 { 64 } else { 32 }, "ctx {ctx}");
                assert!(
                    attention_mma_fits(&cfg, true, rows, half),
                    "ctx {ctx}: {rows} rows"
                );
                let nb = att_mma_buffers(hpb, half);
                assert!(attention_mma_shared(cfg.head_dim, hpb, rows, nb) <= 227 * 1024);
            }
            assert!(!attention_mma_fits(&cfg, false, 640, half));
            // A table of rows past the budget falls back to attention_mh.
            assert!(!attention_mma_fits(&cfg, true, 1 << 20, half));
        }
        // The 64-head kernel's two f16 tiles at a 2k context: within the 227 KB.
        let rows = sizes(&cfg, 2048, 2048).max_attn_rows;
        assert!(attention_mma_shared(cfg.head_dim, 64, rows, 2) <= ATT_MMA_SHARED_MAX);
        // On Hopper the wgmma kernel takes them over f16 rows (only; its shared memory
        // does not grow with the context and is held to a block's at compile time).
        assert!(attention_wg_shapes(&cfg, true));
        assert!(!attention_wg_shapes(&cfg, false));
    }

    /// hc_pre_norm4's blocks: whole warps, every column in at most eight float4 chunks a
    /// thread (the kernel's register array), rows of whole Q8_0 blocks only; rms_factor's
    /// whole chunks, at most 16 a thread.
    #[test]
    fn run_hc_blocks_cover_the_row() {
        for (n, b) in [
            (4096, 256),
            (8192, 256),
            (256, 64),
            (64, 32),
            (32, 32),
            (1000, 256),
        ] {
            let got = pre4_threads(n);
            if n % 32 != 0 {
                assert_eq!(got, None, "n {n}");
                continue;
            }
            assert_eq!(got, Some(b), "n {n}");
            assert!(b % 32 == 0 && (n / 4).div_ceil(b) <= 8 && (n / 4).div_ceil(b) * b >= n / 4);
        }
        assert_eq!(pre4_threads(16384), None);
        for (n, b) in [
            (16384, Some(256)),
            (32768, Some(512)),
            (256, Some(64)),
            (100, None),
        ] {
            assert_eq!(factor_threads(n), b, "n {n}");
        }
    }

    /// Runs of at least NG64_MIN_ITEMS routed items group them by 64 for the tensor-core
    /// expert kernels, shorter ones by 32, the matrix-vector kernels by 8; the state's group
    /// table (sized for groups of 8) holds either.
    #[test]
    fn long_runs_take_expert_groups_of_64() {
        if std::env::var_os("DS4_CUDA_EXP_NG64").is_some() {
            println!(
                "SKIPPED long_runs_take_expert_groups_of_64: DS4_CUDA_EXP_NG64 forces the size"
            );
            return;
        }
        let cfg = ModelConfig::flash();
        let k = cfg.n_expert_used;
        assert_eq!(group_size(true, 2048 * k, false), 32);
        assert_eq!(group_size(true, NG64_MIN_ITEMS - 1, false), 32);
        assert_eq!(group_size(true, NG64_MIN_ITEMS, false), 64);
        assert_eq!(group_size(true, 8192 * k, false), 64);
        assert_eq!(group_size(false, 8192 * k, false), 8);
        // The f16 IQ2_XXS kernel's groups of 64 at every run size.
        assert_eq!(group_size(true, 2048 * k, true), 64);
        assert_eq!(group_size(true, 17 * k, true), 64);
        assert_eq!(group_size(false, 2048 * k, true), 8);
        for t in [2048, 4096, 8192] {
            for f16 in [false, true] {
                let g = group_size(true, t * k, f16);
                assert!(max_expert_groups(&cfg, t, g) <= max_expert_groups(&cfg, t, 8));
            }
        }
    }

    /// f16 rows halve the rows' bytes; the compressors' frontiers stay f32.
    #[test]
    fn f16_rows_halve_the_row_bytes() {
        let cfg = ModelConfig::flash();
        for ctx in [4096, 1 << 20] {
            let (f32b, f16b) = (
                state_bytes(&cfg, ctx, 2048, false),
                state_bytes(&cfg, ctx, 2048, true),
            );
            assert!(
                f16b < f32b && f16b > f32b / 2,
                "ctx {ctx}: {f16b} of {f32b}"
            );
        }
        let big = (
            state_bytes(&cfg, 1 << 20, 2048, false),
            state_bytes(&cfg, 1 << 20, 2048, true),
        );
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        for ctx in [65_536, 1 << 20] {
            println!(
                "Flash KV state at {ctx}: f32 rows {:.2} GiB, f16 rows {:.2} GiB",
                gib(state_bytes(&cfg, ctx, 8192, false)),
                gib(state_bytes(&cfg, ctx, 8192, true))
            );
        }
        assert!((big.1 as f64) < 0.51 * big.0 as f64, "{big:?}");
    }

    /// A decode graph's launches are fixed at capture for the context allocated: a
    /// long context's heavy layers must not size the other layers' attention (the split
    /// of a sparse layer stays at its window + top-k rows at 1M), and the partials'
    /// scratch holds every layer's split.
    #[test]
    fn attention_rows_are_sized_per_layer() {
        let cfg = ModelConfig::flash();
        let (w, k) = (cfg.sliding_window, cfg.indexer_top_k);
        for ctx in [4096, 65_536, 1 << 20] {
            let plan = scratch_plan(&cfg, ctx, 1);
            let apart = split_scratch_bytes(&cfg, ctx, 1);
            assert!(
                plan.contains(&apart),
                "ctx {ctx}: the scratch holds the largest split"
            );
            for l in 0..cfg.n_layer {
                let rows = layer_attn_rows(&cfg, l, ctx);
                let (span, nsplit) = attention_split(&cfg, rows, 1).unwrap();
                assert!(span * nsplit >= rows && nsplit <= 64, "layer {l} at {ctx}");
                match cfg.attn_kind(l) {
                    AttnKind::Window => assert_eq!(rows, w),
                    AttnKind::Sparse { .. } => {
                        assert_eq!(rows, w + k);
                        // 640 rows in ranges of 32 at every context.
                        assert_eq!((span, nsplit), (32, (w + k).div_ceil(32)), "ctx {ctx}");
                    }
                    AttnKind::Heavy { ratio } => assert_eq!(rows, w + ctx / ratio + 2),
                }
            }
        }
    }
}

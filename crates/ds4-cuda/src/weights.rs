//! The model's weights resident in GPU memory, in their stored formats.

use ds4_engine::weights::{CompressorWeights, HcWeights};
use ds4_engine::{MatRaw, ModelConfig, Weights};
use ds4_gguf::GgmlType;

use crate::CudaError;
use crate::device::{DevBuf, Gpu};

/// One matrix, or `n` matrices of one shape back to back (routed experts).
pub struct DevMat {
    pub buf: DevBuf,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of one matrix (the stride between experts); for a split matrix, of its
    /// quant values alone.
    pub mat_bytes: usize,
    /// Split layout (Q8_0, IQ2_XXS): the f16 block scales of all matrices live after
    /// their quant values, at `buf.ptr + scales`, `scale_mat_bytes` per matrix.
    pub split: Option<Split>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub scales: usize,
    pub scale_mat_bytes: usize,
}

impl DevMat {
    pub fn row_bytes(&self) -> usize {
        self.mat_bytes / self.rows
    }
    /// Device address of matrix 0's block scales (0 when not split).
    pub fn scales_ptr(&self) -> u64 {
        self.split.map_or(0, |s| self.buf.ptr + s.scales as u64)
    }
}

/// Block size and the quant bytes of one block, for the types stored split on the GPU.
/// Their ggml blocks (an f16 scale, then 32 or 64 bytes of quants) are 34 and 66 bytes,
/// which leaves the quants only 2-byte aligned; split, a warp reads each row's quants
/// with 16-byte loads and the scales with one 2-byte load per block. Values unchanged.
pub fn split_geometry(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q8_0 => Some((34, 32)),
        GgmlType::Iq2Xxs => Some((66, 64)),
        _ => None,
    }
}

/// Splits ggml blocks of `block` bytes (2-byte scale first) into (quants, scales).
pub fn split_blocks(bytes: &[u8], block: usize) -> (Vec<u8>, Vec<u8>) {
    let n = bytes.len() / block;
    let mut q = Vec::with_capacity(n * (block - 2));
    let mut d = Vec::with_capacity(n * 2);
    for b in bytes.chunks_exact(block) {
        d.extend_from_slice(&b[..2]);
        q.extend_from_slice(&b[2..]);
    }
    (q, d)
}

fn raw_bytes(m: &ds4_engine::Mat) -> (GgmlType, &[u8]) {
    match m.raw() {
        MatRaw::F32(v) => (GgmlType::F32, bytemuck_f32(v)),
        MatRaw::Blocks { ty, bytes } => (ty, bytes),
    }
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // f32 has no padding and any byte pattern read back is the same value.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Weight types the GPU kernels multiply directly.
pub fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::Bf16
            | GgmlType::Q8_0
            | GgmlType::Q2K
            | GgmlType::Q4K
            | GgmlType::Iq2Xxs
    )
}

/// Matrices of one shape back to back (routed experts), split where the type has a layout.
pub fn upload_mats(gpu: &Gpu, mats: &[ds4_engine::Mat], name: &str) -> Result<DevMat, CudaError> {
    upload_mats_as(gpu, mats, name, true)
}

fn upload_mats_as(
    gpu: &Gpu,
    mats: &[ds4_engine::Mat],
    name: &str,
    allow_split: bool,
) -> Result<DevMat, CudaError> {
    let first = mats
        .first()
        .ok_or_else(|| CudaError::Model(format!("{name}: no matrices")))?;
    let (ty, b0) = raw_bytes(first);
    if !supported(ty) {
        return Err(CudaError::Model(format!(
            "{name}: weight type {ty} has no GPU kernel"
        )));
    }
    let raw_mat = b0.len();
    let geometry = split_geometry(ty).filter(|_| allow_split);
    let (mat_bytes, split) = match geometry {
        Some((block, qb)) => {
            let nblk = raw_mat / block;
            let q = nblk * qb;
            let split = Split {
                scales: q * mats.len(),
                scale_mat_bytes: nblk * 2,
            };
            (q, Some(split))
        }
        None => (raw_mat, None),
    };
    let buf = gpu.alloc(raw_mat * mats.len())?;
    for (i, m) in mats.iter().enumerate() {
        let (t, b) = raw_bytes(m);
        if t != ty || b.len() != raw_mat {
            return Err(CudaError::Model(format!(
                "{name}: experts differ in type or size"
            )));
        }
        match (geometry, split) {
            (Some((block, _)), Some(sp)) => {
                let (q, d) = split_blocks(b, block);
                gpu.write(buf.ptr + (i * mat_bytes) as u64, &q)?;
                gpu.write(buf.ptr + (sp.scales + i * sp.scale_mat_bytes) as u64, &d)?;
            }
            _ => gpu.write(buf.ptr + (i * mat_bytes) as u64, b)?,
        }
    }
    Ok(DevMat {
        buf,
        ty,
        rows: first.rows,
        cols: first.cols,
        mat_bytes,
        split,
    })
}

/// Two products over the same input, `[A; B]`: their outputs land side by side, A's
/// values then B's, in one row per item. Fused, one launch computes both (matrix i of
/// the stack is A_i's rows followed by B_i's); where the two differ in type or width
/// they stay two launches writing the same layout, so the consumers never know which.
pub enum DevPair {
    Fused(DevMat),
    Separate(DevMat, DevMat),
}

impl DevPair {
    /// The matrices the launches read (one when fused).
    pub fn mats(&self) -> Vec<&DevMat> {
        match self {
            DevPair::Fused(mat) => vec![mat],
            DevPair::Separate(a, b) => vec![a, b],
        }
    }
    /// The weight type of the A part (B's is the same when fused).
    pub fn a_type(&self) -> GgmlType {
        match self {
            DevPair::Fused(mat) => mat.ty,
            DevPair::Separate(a, _) => a.ty,
        }
    }
}

/// `[A_i; B_i]` for each matrix i of two stacks (experts) or two single matrices.
fn upload_pair(
    gpu: &Gpu,
    a: &[ds4_engine::Mat],
    b: &[ds4_engine::Mat],
    name: &str,
    fuse: bool,
) -> Result<DevPair, CudaError> {
    let (Some(a0), Some(b0)) = (a.first(), b.first()) else {
        return Err(CudaError::Model(format!("{name}: no matrices")));
    };
    let (ta, ra) = raw_bytes(a0);
    let (tb, rb) = raw_bytes(b0);
    let alike = ta == tb && a0.cols == b0.cols && a.len() == b.len();
    if !fuse || !alike || !supported(ta) {
        return Ok(DevPair::Separate(
            upload_mats(gpu, a, name)?,
            upload_mats(gpu, b, name)?,
        ));
    }
    let (ra, rb) = (ra.len(), rb.len());
    let n = a.len();
    // Per matrix of the stack: quant bytes (all bytes when not split) and scale bytes
    // of A and of B.
    let geometry = split_geometry(ta);
    let parts = |raw: usize| match geometry {
        Some((block, qb)) => (raw / block * qb, raw / block * 2),
        None => (raw, 0),
    };
    let ((qa, sa), (qb, sb)) = (parts(ra), parts(rb));
    let mat_bytes = qa + qb;
    let split = geometry.map(|_| Split {
        scales: mat_bytes * n,
        scale_mat_bytes: sa + sb,
    });
    let buf = gpu.alloc((ra + rb) * n)?;
    for (i, (ma, mb)) in a.iter().zip(b).enumerate() {
        for (m, want, q_off, s_off) in [(ma, ra, 0, 0), (mb, rb, qa, sa)] {
            let (t, bytes) = raw_bytes(m);
            if t != ta || bytes.len() != want {
                return Err(CudaError::Model(format!(
                    "{name}: experts differ in type or size"
                )));
            }
            let at = buf.ptr + (i * mat_bytes + q_off) as u64;
            match (geometry, split) {
                (Some((block, _)), Some(sp)) => {
                    let (q, d) = split_blocks(bytes, block);
                    gpu.write(at, &q)?;
                    gpu.write(
                        buf.ptr + (sp.scales + i * sp.scale_mat_bytes + s_off) as u64,
                        &d,
                    )?;
                }
                _ => gpu.write(at, bytes)?,
            }
        }
    }
    Ok(DevPair::Fused(DevMat {
        buf,
        ty: ta,
        rows: a0.rows + b0.rows,
        cols: a0.cols,
        mat_bytes,
        split,
    }))
}

/// [`upload_pair`] of two single matrices.
fn upload_pair1(
    gpu: &Gpu,
    a: &ds4_engine::Mat,
    b: &ds4_engine::Mat,
    name: &str,
    fuse: bool,
) -> Result<DevPair, CudaError> {
    upload_pair(
        gpu,
        std::slice::from_ref(a),
        std::slice::from_ref(b),
        name,
        fuse,
    )
}

/// One matrix for the matrix-vector kernels (split layout where the type has one).
pub fn upload_mat(gpu: &Gpu, m: &ds4_engine::Mat, name: &str) -> Result<DevMat, CudaError> {
    upload_mats(gpu, std::slice::from_ref(m), name)
}

pub struct DevHc {
    pub fn_: DevMat,
    pub scale: DevBuf,
    pub base: DevBuf,
}

fn upload_hc(gpu: &Gpu, h: &HcWeights, name: &str) -> Result<DevHc, CudaError> {
    Ok(DevHc {
        fn_: upload_mat(gpu, &h.fn_, name)?,
        scale: gpu.upload(&h.scale)?,
        base: gpu.upload(&h.base)?,
    })
}

pub struct DevCompressor {
    pub ape: DevBuf,
    /// The pooled values and their scores, `[kv; gate]`.
    pub kv_gate: DevPair,
    pub norm: DevBuf,
}

fn upload_comp(
    gpu: &Gpu,
    c: &CompressorWeights,
    name: &str,
    fuse: bool,
) -> Result<DevCompressor, CudaError> {
    Ok(DevCompressor {
        ape: gpu.upload(&c.ape)?,
        kv_gate: upload_pair1(gpu, &c.kv, &c.gate, name, fuse)?,
        norm: gpu.upload(&c.norm)?,
    })
}

pub struct DevIndexer {
    pub q_b: DevMat,
    pub proj: DevMat,
    pub compressor: DevCompressor,
}

pub struct DevLayer {
    pub hc_attn: DevHc,
    pub attn_norm: DevBuf,
    /// The low-rank query and the shared K=V row, `[q_a; kv]` (both read the
    /// sublayer input).
    pub q_a_kv: DevPair,
    pub q_a_norm: DevBuf,
    pub q_b: DevMat,
    pub kv_norm: DevBuf,
    pub sinks: DevBuf,
    pub out_a: DevMat,
    pub out_b: DevMat,
    pub compressor: Option<DevCompressor>,
    pub indexer: Option<DevIndexer>,
    pub hc_ffn: DevHc,
    pub ffn_norm: DevBuf,
    pub router: DevMat,
    pub router_bias: Option<DevBuf>,
    pub tid2eid: Option<DevBuf>,
    /// Per expert `[gate; up]`.
    pub gate_up_exps: DevPair,
    pub down_exps: DevMat,
    pub gate_up_sh: DevPair,
    pub down_sh: DevMat,
}

pub struct DevWeights {
    /// Token embedding; types other than F32/F16/BF16/Q8_0 are dequantized to F32 on
    /// upload (the row lookup kernel reads those four).
    pub token_embd: DevMat,
    pub output: DevMat,
    pub output_norm: DevBuf,
    pub output_hc: DevHc,
    pub layers: Vec<DevLayer>,
}

/// Bytes the weights take on the GPU (what [`DevWeights::upload`] allocates).
pub fn weight_bytes(w: &Weights) -> usize {
    let m = |m: &ds4_engine::Mat| raw_bytes(m).1.len();
    let v = |v: &[f32]| v.len() * 4;
    let hc = |h: &HcWeights| m(&h.fn_) + v(&h.scale) + v(&h.base);
    let comp = |c: &CompressorWeights| v(&c.ape) + m(&c.kv) + m(&c.gate) + v(&c.norm);
    let mut total = m(&w.token_embd) + m(&w.output) + v(&w.output_norm) + hc(&w.output_hc);
    for l in &w.layers {
        total += hc(&l.hc_attn) + hc(&l.hc_ffn);
        total += v(&l.attn_norm) + v(&l.q_a_norm) + v(&l.kv_norm) + v(&l.sinks) + v(&l.ffn_norm);
        total += m(&l.q_a) + m(&l.q_b) + m(&l.kv) + m(&l.out_a) + m(&l.out_b) + m(&l.router);
        total += l.compressor.as_ref().map_or(0, comp);
        total += l
            .indexer
            .as_ref()
            .map_or(0, |i| m(&i.q_b) + m(&i.proj) + comp(&i.compressor));
        total += l.router_bias.as_ref().map_or(0, |b| v(b));
        total += l.tid2eid.as_ref().map_or(0, |t| t.len() * 4);
        for e in l.gate_exps.iter().chain(&l.up_exps).chain(&l.down_exps) {
            total += m(e);
        }
        total += m(&l.gate_sh) + m(&l.up_sh) + m(&l.down_sh);
    }
    total
}

/// Weight bytes one decode step reads: everything but the embedding table (one row of
/// it) and, per layer, only `k` of the routed experts.
pub fn decode_weight_bytes(w: &Weights, k: usize) -> usize {
    let m = |m: &ds4_engine::Mat| raw_bytes(m).1.len();
    let mut total = weight_bytes(w) - m(&w.token_embd) + m(&w.token_embd) / w.token_embd.rows;
    for l in &w.layers {
        for e in l.gate_exps.iter().chain(&l.up_exps).chain(&l.down_exps) {
            total -= m(e);
        }
        if let (Some(g), Some(u), Some(d)) =
            (l.gate_exps.first(), l.up_exps.first(), l.down_exps.first())
        {
            total += k * (m(g) + m(u) + m(d));
        }
    }
    total
}

impl DevWeights {
    /// With `fuse`, products over the same input share one matrix ([`DevPair`]).
    pub fn upload(
        gpu: &Gpu,
        cfg: &ModelConfig,
        w: &Weights,
        fuse: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, CudaError> {
        let (ety, _) = raw_bytes(&w.token_embd);
        let token_embd = if matches!(
            ety,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 | GgmlType::Q8_0
        ) {
            // Row lookups read whole ggml rows: kept in the stored layout.
            upload_mats_as(
                gpu,
                std::slice::from_ref(&w.token_embd),
                "token_embd",
                false,
            )?
        } else {
            let mut all = Vec::with_capacity(cfg.n_vocab * cfg.n_embd);
            for r in 0..cfg.n_vocab {
                all.extend(
                    w.token_embd
                        .row_f32(r)
                        .map_err(|e| CudaError::Model(e.to_string()))?,
                );
            }
            let buf = gpu.upload(&all)?;
            DevMat {
                buf,
                ty: GgmlType::F32,
                rows: cfg.n_vocab,
                cols: cfg.n_embd,
                mat_bytes: cfg.n_vocab * cfg.n_embd * 4,
                split: None,
            }
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            progress(i, w.layers.len());
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(DevLayer {
                hc_attn: upload_hc(gpu, &l.hc_attn, &n("hc_attn"))?,
                attn_norm: gpu.upload(&l.attn_norm)?,
                q_a_kv: upload_pair1(gpu, &l.q_a, &l.kv, &n("attn_q_a+attn_kv"), fuse)?,
                q_a_norm: gpu.upload(&l.q_a_norm)?,
                q_b: upload_mat(gpu, &l.q_b, &n("attn_q_b"))?,
                kv_norm: gpu.upload(&l.kv_norm)?,
                sinks: gpu.upload(&l.sinks)?,
                out_a: upload_mat(gpu, &l.out_a, &n("attn_output_a"))?,
                out_b: upload_mat(gpu, &l.out_b, &n("attn_output_b"))?,
                compressor: l
                    .compressor
                    .as_ref()
                    .map(|c| upload_comp(gpu, c, &n("attn_compressor"), fuse))
                    .transpose()?,
                indexer: l
                    .indexer
                    .as_ref()
                    .map(|x| -> Result<DevIndexer, CudaError> {
                        Ok(DevIndexer {
                            q_b: upload_mat(gpu, &x.q_b, &n("indexer.attn_q_b"))?,
                            proj: upload_mat(gpu, &x.proj, &n("indexer.proj"))?,
                            compressor: upload_comp(
                                gpu,
                                &x.compressor,
                                &n("indexer_compressor"),
                                fuse,
                            )?,
                        })
                    })
                    .transpose()?,
                hc_ffn: upload_hc(gpu, &l.hc_ffn, &n("hc_ffn"))?,
                ffn_norm: gpu.upload(&l.ffn_norm)?,
                router: upload_mat(gpu, &l.router, &n("ffn_gate_inp"))?,
                router_bias: l.router_bias.as_ref().map(|b| gpu.upload(b)).transpose()?,
                tid2eid: l.tid2eid.as_ref().map(|t| gpu.upload(t)).transpose()?,
                gate_up_exps: upload_pair(
                    gpu,
                    &l.gate_exps,
                    &l.up_exps,
                    &n("ffn_gate_exps+ffn_up_exps"),
                    fuse,
                )?,
                down_exps: upload_mats(gpu, &l.down_exps, &n("ffn_down_exps"))?,
                gate_up_sh: upload_pair1(
                    gpu,
                    &l.gate_sh,
                    &l.up_sh,
                    &n("ffn_gate_shexp+ffn_up_shexp"),
                    fuse,
                )?,
                down_sh: upload_mat(gpu, &l.down_sh, &n("ffn_down_shexp"))?,
            });
        }
        progress(w.layers.len(), w.layers.len());
        Ok(DevWeights {
            token_embd,
            output: upload_mat(gpu, &w.output, "output")?,
            output_norm: gpu.upload(&w.output_norm)?,
            output_hc: upload_hc(gpu, &w.output_hc, "output_hc")?,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_byte_in_block_order() {
        let block = 34;
        let bytes: Vec<u8> = (0..block * 5).map(|i| (i * 7 % 251) as u8).collect();
        let (q, d) = split_blocks(&bytes, block);
        assert_eq!(q.len(), 5 * 32);
        assert_eq!(d.len(), 5 * 2);
        for (b, raw) in bytes.chunks_exact(block).enumerate() {
            assert_eq!(&d[2 * b..2 * b + 2], &raw[..2]);
            assert_eq!(&q[32 * b..32 * b + 32], &raw[2..]);
        }
    }
}

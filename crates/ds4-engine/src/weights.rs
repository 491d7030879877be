//! Weight binding: a [`WeightSource`] hands out tensors by ds4 GGUF name; [`Weights`]
//! binds every tensor the config calls for and checks its shape.
//!
//! A [`Mat`] is either f32 (the reference path, used against transformers) or rows of
//! ggml blocks left in place (the GGUF mmap) and multiplied by ds4-quant's kernels.
//! `Mat` is the one place a matrix-vector product happens.

use std::sync::Arc;

use ds4_gguf::GgmlType;
use ds4_quant::{DotKernel, dequantize};
use rayon::prelude::*;

use crate::config::{AttnKind, ModelConfig};
use crate::error::{EngineError, Result};

/// Shared, immutable bytes: a memory-mapped GGUF or an owned buffer.
pub trait ByteOwner: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl ByteOwner for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl ByteOwner for ds4_gguf::GgufFile {
    fn bytes(&self) -> &[u8] {
        ds4_gguf::GgufFile::bytes(self)
    }
}

/// A byte range of a [`ByteOwner`]: tensor data stays where it was loaded (the
/// mmap for GGUF files) and is never copied.
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn ByteOwner>,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({}..{})", self.start, self.start + self.len)
    }
}

impl Bytes {
    /// `None` when the range is outside the owner's bytes.
    pub fn new(owner: Arc<dyn ByteOwner>, start: usize, len: usize) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= owner.bytes().len()).then_some(Bytes { owner, start, len })
    }
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Bytes {
            owner: Arc::new(v),
            start: 0,
            len,
        }
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.owner.bytes()[self.start..self.start + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn sub(&self, start: usize, len: usize) -> Self {
        Bytes {
            owner: self.owner.clone(),
            start: self.start + start,
            len,
        }
    }
}

/// Tensor payload: f32 values (converted on load) or blocks in a ggml format.
#[derive(Debug, Clone)]
pub enum TensorData {
    F32(Vec<f32>),
    I32(Vec<i32>),
    /// Raw rows of `ty` blocks along the innermost axis.
    Blocks {
        ty: GgmlType,
        bytes: Bytes,
    },
}

/// A tensor with its shape in row-major order, outermost first (the HF / safetensors
/// order, i.e. GGUF `ne` reversed).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Anything that can produce tensors under ds4 GGUF names (`blk.3.attn_q_a.weight`).
/// 3-D expert tensors (`blk.N.ffn_gate_exps.weight`) come as `[experts, out, in]`.
pub trait WeightSource {
    /// `Ok(None)` when the tensor is absent; errors for unreadable data.
    fn tensor(&self, name: &str) -> Result<Option<Tensor>>;
}

#[derive(Debug, Clone)]
enum MatData {
    F32(Vec<f32>),
    /// Quantized (or f16) rows multiplied by ds4-quant's kernels, which quantize
    /// the activation the way ds4's CPU decode does (Q8_0 / Q8_K).
    Blocks {
        kernel: DotKernel,
        bytes: Bytes,
    },
}

/// A borrowed view of a [`Mat`]'s storage (see [`Mat::raw`]).
#[derive(Debug, Clone, Copy)]
pub enum MatRaw<'a> {
    F32(&'a [f32]),
    /// `rows` rows of `ty` blocks, row-major.
    Blocks {
        ty: GgmlType,
        bytes: &'a [u8],
    },
}

/// A weight matrix, `rows` outputs of `cols` inputs: `y[o] = Σ_i W[o][i]·x[i]`.
#[derive(Debug, Clone)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    data: MatData,
}

/// Below this many multiply-adds a matvec stays on the calling thread: rayon's
/// fork/join costs more than it saves on the tiny per-token products.
const PAR_MIN_WORK: usize = 1 << 16;

impl Mat {
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Option<Self> {
        (data.len() == rows * cols).then_some(Mat {
            rows,
            cols,
            data: MatData::F32(data),
        })
    }

    /// `bytes` must hold exactly `rows` rows of `cols` elements of `ty`.
    pub fn from_blocks(rows: usize, cols: usize, ty: GgmlType, bytes: Bytes) -> Result<Self> {
        let kernel = DotKernel::new(ty)?;
        let rb = kernel.row_bytes(cols)?;
        if bytes.len() != rows * rb {
            return Err(EngineError::Config(format!(
                "{ty} matrix {rows}x{cols} needs {} bytes, found {}",
                rows * rb,
                bytes.len()
            )));
        }
        Ok(Mat {
            rows,
            cols,
            data: MatData::Blocks { kernel, bytes },
        })
    }

    /// The storage type of the weights.
    pub fn ty(&self) -> GgmlType {
        match &self.data {
            MatData::F32(_) => GgmlType::F32,
            MatData::Blocks { kernel, .. } => kernel.weight_type(),
        }
    }

    /// The stored data, for backends that upload weights elsewhere (the GPU).
    pub fn raw(&self) -> MatRaw<'_> {
        match &self.data {
            MatData::F32(d) => MatRaw::F32(d),
            MatData::Blocks { kernel, bytes } => MatRaw::Blocks {
                ty: kernel.weight_type(),
                bytes: bytes.as_slice(),
            },
        }
    }

    /// Row `r` as f32 (dequantized if needed): embedding lookups.
    pub fn row_f32(&self, r: usize) -> Result<Vec<f32>> {
        match &self.data {
            MatData::F32(d) => Ok(d[r * self.cols..(r + 1) * self.cols].to_vec()),
            MatData::Blocks { kernel, bytes } => {
                let rb = kernel.row_bytes(self.cols)?;
                let mut out = vec![0.0; self.cols];
                dequantize(
                    kernel.weight_type(),
                    &bytes.as_slice()[r * rb..(r + 1) * rb],
                    &mut out,
                )?;
                Ok(out)
            }
        }
    }

    /// `y = W·x`; `x.len() == cols`, `y.len() == rows`.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        match &self.data {
            MatData::F32(d) => {
                let row = |r: usize| &d[r * self.cols..(r + 1) * self.cols];
                if self.rows * self.cols >= PAR_MIN_WORK {
                    y.par_iter_mut()
                        .enumerate()
                        .with_min_len(16)
                        .for_each(|(r, out)| *out = dot(row(r), x));
                } else {
                    for (r, out) in y.iter_mut().enumerate() {
                        *out = dot(row(r), x);
                    }
                }
            }
            MatData::Blocks { kernel, bytes } => {
                let act = kernel.quantize_activations(x)?;
                if self.rows * self.cols >= PAR_MIN_WORK {
                    kernel.matvec(bytes.as_slice(), self.rows, self.cols, &act, y)?;
                } else {
                    kernel.matvec_rows(bytes.as_slice(), self.cols, &act, 0..self.rows, y)?;
                }
            }
        }
        Ok(())
    }

    /// `y = W[rows r0..r0+y.len()]·x`: a row block, for the grouped output projection.
    pub fn matvec_rows(&self, r0: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
        match &self.data {
            MatData::F32(d) => {
                for (i, out) in y.iter_mut().enumerate() {
                    let r = r0 + i;
                    *out = dot(&d[r * self.cols..(r + 1) * self.cols], x);
                }
            }
            MatData::Blocks { kernel, bytes } => {
                let act = kernel.quantize_activations(x)?;
                kernel.matvec_rows(bytes.as_slice(), self.cols, &act, r0..r0 + y.len(), y)?;
            }
        }
        Ok(())
    }

    pub fn matvec_alloc(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = vec![0.0; self.rows];
        self.matvec(x, &mut y)?;
        Ok(y)
    }

    /// `W·x` for each `x` of a batch. Each weight row is read once for the whole
    /// batch (prefill is bound by weight traffic otherwise), and every output is
    /// computed by the same row kernel as [`Mat::matvec`], so a batch gives exactly
    /// the results of one-by-one products.
    pub fn matmul<X: AsRef<[f32]> + Sync>(&self, xs: &[X]) -> Result<Vec<Vec<f32>>> {
        self.matmul_rows(0, self.rows, xs)
    }

    /// Rows `r0..r0+n` of `W` times each `x`.
    pub fn matmul_rows<X: AsRef<[f32]> + Sync>(
        &self,
        r0: usize,
        n: usize,
        xs: &[X],
    ) -> Result<Vec<Vec<f32>>> {
        if let [x] = xs {
            let mut y = vec![0.0; n];
            if r0 == 0 && n == self.rows {
                self.matvec(x.as_ref(), &mut y)?;
            } else {
                self.matvec_rows(r0, x.as_ref(), &mut y)?;
            }
            return Ok(vec![y]);
        }
        // by_row[r][t] = W[r0 + r] · xs[t]
        let by_row: Vec<Vec<f32>> = match &self.data {
            MatData::F32(d) => {
                let row_out = |r: usize| {
                    let row = &d[(r0 + r) * self.cols..(r0 + r + 1) * self.cols];
                    xs.iter().map(|x| dot(row, x.as_ref())).collect()
                };
                if n * self.cols * xs.len() >= PAR_MIN_WORK {
                    (0..n)
                        .into_par_iter()
                        .with_min_len(4)
                        .map(row_out)
                        .collect()
                } else {
                    (0..n).map(row_out).collect()
                }
            }
            MatData::Blocks { kernel, bytes } => {
                let acts = xs
                    .iter()
                    .map(|x| kernel.quantize_activations(x.as_ref()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let rb = kernel.row_bytes(self.cols)?;
                let w = bytes.as_slice();
                let row_out = |r: usize| -> Result<Vec<f32>> {
                    let row = &w[(r0 + r) * rb..(r0 + r + 1) * rb];
                    acts.iter().map(|a| Ok(kernel.dot(row, a)?)).collect()
                };
                if n * self.cols * xs.len() >= PAR_MIN_WORK {
                    (0..n)
                        .into_par_iter()
                        .with_min_len(4)
                        .map(row_out)
                        .collect::<Result<_>>()?
                } else {
                    (0..n).map(row_out).collect::<Result<_>>()?
                }
            }
        };
        Ok((0..xs.len())
            .map(|t| by_row.iter().map(|r| r[t]).collect())
            .collect())
    }
}

/// f32 dot product in 8 independent lanes: the compiler vectorizes it, and the
/// pairwise-ish summation keeps rounding close to a BLAS GEMM's.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// mHC control weights of one sublayer (or of the output head).
#[derive(Debug, Clone)]
pub struct HcWeights {
    /// `[mix, hc·n_embd]`.
    pub fn_: Mat,
    pub scale: Vec<f32>,
    pub base: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct CompressorWeights {
    /// `[ratio, coff·d]` row-major: the position bias added to the gate (`ape`).
    pub ape: Vec<f32>,
    pub kv: Mat,
    pub gate: Mat,
    pub norm: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct IndexerWeights {
    /// `[heads·head_dim, q_lora]`.
    pub q_b: Mat,
    /// `[heads, n_embd]`.
    pub proj: Mat,
    pub compressor: CompressorWeights,
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub hc_attn: HcWeights,
    pub attn_norm: Vec<f32>,
    pub q_a: Mat,
    pub q_a_norm: Vec<f32>,
    pub q_b: Mat,
    pub kv: Mat,
    pub kv_norm: Vec<f32>,
    pub sinks: Vec<f32>,
    pub out_a: Mat,
    pub out_b: Mat,
    pub compressor: Option<CompressorWeights>,
    pub indexer: Option<IndexerWeights>,
    pub hc_ffn: HcWeights,
    pub ffn_norm: Vec<f32>,
    pub router: Mat,
    pub router_bias: Option<Vec<f32>>,
    /// Hash routing table, `n_vocab × n_expert_used`, hash layers only.
    pub tid2eid: Option<Vec<i32>>,
    pub gate_exps: Vec<Mat>,
    pub up_exps: Vec<Mat>,
    pub down_exps: Vec<Mat>,
    pub gate_sh: Mat,
    pub up_sh: Mat,
    pub down_sh: Mat,
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: Mat,
    pub output: Mat,
    pub output_norm: Vec<f32>,
    pub output_hc: HcWeights,
    pub layers: Vec<LayerWeights>,
}

struct Binder<'a> {
    src: &'a dyn WeightSource,
}

impl Binder<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .src
            .tensor(name)?
            .ok_or_else(|| EngineError::MissingTensor { name: name.into() })?;
        if t.shape != shape {
            return Err(EngineError::TensorShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        Ok(t)
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.get(name, shape)?.data {
            TensorData::F32(v) => Ok(v),
            TensorData::Blocks { ty, bytes } => {
                let mut out = vec![0.0; shape.iter().product()];
                dequantize(ty, bytes.as_slice(), &mut out)?;
                Ok(out)
            }
            TensorData::I32(_) => Err(EngineError::TensorData {
                name: name.into(),
                msg: "expected floating-point data, found integers".into(),
            }),
        }
    }

    fn vec(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.f32(name, &[n])
    }

    fn mats(&self, name: &str, n: usize, rows: usize, cols: usize) -> Result<Vec<Mat>> {
        let shape: Vec<usize> = if n == 0 {
            vec![rows, cols]
        } else {
            vec![n, rows, cols]
        };
        let per = rows * cols;
        let ctx = |e: EngineError| EngineError::TensorData {
            name: name.into(),
            msg: e.to_string(),
        };
        match self.get(name, &shape)?.data {
            TensorData::F32(v) => Ok(v
                .chunks_exact(per)
                .filter_map(|c| Mat::from_f32(rows, cols, c.to_vec()))
                .collect()),
            TensorData::Blocks { ty, bytes } => {
                let each = bytes.len() / n.max(1);
                (0..n.max(1))
                    .map(|e| {
                        Mat::from_blocks(rows, cols, ty, bytes.sub(e * each, each)).map_err(ctx)
                    })
                    .collect()
            }
            TensorData::I32(_) => Err(EngineError::TensorData {
                name: name.into(),
                msg: "expected weights, found integers".into(),
            }),
        }
    }

    fn mat(&self, name: &str, rows: usize, cols: usize) -> Result<Mat> {
        self.mats(name, 0, rows, cols)?
            .pop()
            .ok_or_else(|| EngineError::MissingTensor { name: name.into() })
    }

    fn experts(&self, name: &str, n: usize, rows: usize, cols: usize) -> Result<Vec<Mat>> {
        self.mats(name, n, rows, cols)
    }

    fn hc(&self, prefix: &str, mix: usize, width: usize, n_scale: usize) -> Result<HcWeights> {
        Ok(HcWeights {
            fn_: self.mat(&format!("{prefix}_fn.weight"), mix, width)?,
            scale: self.vec(&format!("{prefix}_scale.weight"), n_scale)?,
            base: self.vec(&format!("{prefix}_base.weight"), mix)?,
        })
    }

    fn compressor(
        &self,
        p: &str,
        ratio: usize,
        width: usize,
        d: usize,
        e: usize,
    ) -> Result<CompressorWeights> {
        Ok(CompressorWeights {
            ape: self.f32(&format!("{p}_ape.weight"), &[ratio, width])?,
            kv: self.mat(&format!("{p}_kv.weight"), width, e)?,
            gate: self.mat(&format!("{p}_gate.weight"), width, e)?,
            norm: self.vec(&format!("{p}_norm.weight"), d)?,
        })
    }
}

impl Weights {
    /// Binds and shape-checks every tensor `cfg` requires. Tensors the config does not
    /// call for are ignored (as ds4 does).
    pub fn bind(cfg: &ModelConfig, src: &dyn WeightSource) -> Result<Self> {
        let b = Binder { src };
        let e = cfg.n_embd;
        let hw = cfg.hc_width();
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = format!("blk.{l}");
            let kind = cfg.attn_kind(l);
            let (compressor, indexer) = match kind {
                AttnKind::Window => (None, None),
                AttnKind::Heavy { ratio } | AttnKind::Sparse { ratio } => {
                    let w = kind.coff() * cfg.head_dim;
                    let comp =
                        b.compressor(&format!("{p}.attn_compressor"), ratio, w, cfg.head_dim, e)?;
                    let idx = if let AttnKind::Sparse { .. } = kind {
                        let di = cfg.indexer_head_dim;
                        Some(IndexerWeights {
                            q_b: b.mat(
                                &format!("{p}.indexer.attn_q_b.weight"),
                                cfg.indexer_heads * di,
                                cfg.q_lora,
                            )?,
                            proj: b.mat(
                                &format!("{p}.indexer.proj.weight"),
                                cfg.indexer_heads,
                                e,
                            )?,
                            compressor: b.compressor(
                                &format!("{p}.indexer_compressor"),
                                ratio,
                                2 * di,
                                di,
                                e,
                            )?,
                        })
                    } else {
                        None
                    };
                    (Some(comp), idx)
                }
            };
            let router_bias = if src.tensor(&format!("{p}.exp_probs_b.bias"))?.is_some() {
                Some(b.vec(&format!("{p}.exp_probs_b.bias"), cfg.n_expert)?)
            } else {
                None
            };
            let tid2eid = if cfg.is_hash_layer(l) {
                let name = format!("{p}.ffn_gate_tid2eid.weight");
                let t = b.get(&name, &[cfg.n_vocab, cfg.n_expert_used])?;
                let ids = match t.data {
                    TensorData::I32(v) => v,
                    _ => {
                        return Err(EngineError::TensorData {
                            name,
                            msg: "expected integer expert ids".into(),
                        });
                    }
                };
                if let Some(bad) = ids.iter().find(|&&x| x < 0 || x as usize >= cfg.n_expert) {
                    return Err(EngineError::TensorData {
                        name,
                        msg: format!("expert id {bad} outside 0..{}", cfg.n_expert),
                    });
                }
                Some(ids)
            } else {
                None
            };
            let (ff, ne) = (cfg.expert_ff, cfg.n_expert);
            layers.push(LayerWeights {
                hc_attn: b.hc(&format!("{p}.hc_attn"), cfg.hc_mix(), hw, 3)?,
                attn_norm: b.vec(&format!("{p}.attn_norm.weight"), e)?,
                q_a: b.mat(&format!("{p}.attn_q_a.weight"), cfg.q_lora, e)?,
                q_a_norm: b.vec(&format!("{p}.attn_q_a_norm.weight"), cfg.q_lora)?,
                q_b: b.mat(
                    &format!("{p}.attn_q_b.weight"),
                    cfg.n_head * cfg.head_dim,
                    cfg.q_lora,
                )?,
                kv: b.mat(&format!("{p}.attn_kv.weight"), cfg.head_dim, e)?,
                kv_norm: b.vec(&format!("{p}.attn_kv_a_norm.weight"), cfg.head_dim)?,
                sinks: b.vec(&format!("{p}.attn_sinks.weight"), cfg.n_head)?,
                out_a: b.mat(
                    &format!("{p}.attn_output_a.weight"),
                    cfg.o_groups * cfg.o_lora,
                    cfg.o_group_in(),
                )?,
                out_b: b.mat(
                    &format!("{p}.attn_output_b.weight"),
                    e,
                    cfg.o_groups * cfg.o_lora,
                )?,
                compressor,
                indexer,
                hc_ffn: b.hc(&format!("{p}.hc_ffn"), cfg.hc_mix(), hw, 3)?,
                ffn_norm: b.vec(&format!("{p}.ffn_norm.weight"), e)?,
                router: b.mat(&format!("{p}.ffn_gate_inp.weight"), ne, e)?,
                router_bias,
                tid2eid,
                gate_exps: b.experts(&format!("{p}.ffn_gate_exps.weight"), ne, ff, e)?,
                up_exps: b.experts(&format!("{p}.ffn_up_exps.weight"), ne, ff, e)?,
                down_exps: b.experts(&format!("{p}.ffn_down_exps.weight"), ne, e, ff)?,
                gate_sh: b.mat(&format!("{p}.ffn_gate_shexp.weight"), ff, e)?,
                up_sh: b.mat(&format!("{p}.ffn_up_shexp.weight"), ff, e)?,
                down_sh: b.mat(&format!("{p}.ffn_down_shexp.weight"), e, ff)?,
            });
        }
        Ok(Weights {
            token_embd: b.mat("token_embd.weight", cfg.n_vocab, e)?,
            output: b.mat("output.weight", cfg.n_vocab, e)?,
            output_norm: b.vec("output_norm.weight", e)?,
            output_hc: b.hc("output_hc", cfg.hc, hw, 1)?,
            layers,
        })
    }
}

//! `ds4-quantize --from-official DIR`: an official-format DeepSeek V4 checkpoint
//! (config.json + safetensors shards under DeepSeek's tensor names; FP8 E4M3 dense
//! weights with 128×128 E8M0 block scales, FP4 E2M1 routed experts with one E8M0
//! scale per 32 inputs, I64 `tid2eid`) → a GGUF in the published ds4 layout.
//!
//! Everything is checked before a byte is written ([`Converter::open`]): every
//! tensor the layout needs is present with the shape the config implies, every
//! quantized weight has a scale of the right shape, and tensors the layout has no
//! place for (MTP, ...) are listed and skipped. Then [`Converter::write`] streams
//! tensor by tensor (a bounded number of rows at a time, each expert on its own),
//! so memory stays at a few tens of MB whatever the model size.
//!
//! HF rows map 1:1 to GGUF rows (spec §2.5): an official `[out, in]` matrix is
//! GGUF `ne = [in, out]` with the same bytes order, and the per-expert `[out, in]`
//! matrices stack along the outermost GGUF axis of `[in, out, n_expert]`.

pub mod checkpoint;
pub mod imatrix;

use std::path::Path;
use std::time::Instant;

use ds4_gguf::{GgmlType, GgufStreamWriter, HeaderBuilder, MetaValue};
use ds4_quant::microfloat as fp;
use ds4_quant::quantize_row;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use safetensors::Dtype;

use crate::layout::{Recipe, Role, Shape, TensorSpec, tensors};
use crate::tokenizer_meta::TokenizerMeta;
use checkpoint::{Checkpoint, Entry};
use imatrix::Imatrix;

/// The Flash vocabulary, the only one the bundled tokenizer fits.
const FLASH_VOCAB: u32 = 129_280;
/// FP8 scales cover 128×128 blocks; FP4 scales 32 consecutive inputs.
const FP8_BLOCK: usize = 128;
const FP4_BLOCK: usize = 32;
/// Elements decoded per step of a dense tensor (32 MB of f32).
const CHUNK_ELEMS: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadFile { path: String, msg: String },
    #[error("missing official tensor {official} (needed for {gguf})")]
    Missing { official: String, gguf: String },
    #[error("{official}: expected shape {expected:?} (for {gguf}), found {found:?}")]
    Shape {
        official: String,
        gguf: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{official}: {msg}")]
    Tensor { official: String, msg: String },
    #[error("{0}")]
    Layout(String),
    #[error("{0}")]
    Imatrix(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("quantizing {gguf}: {source}")]
    Quant {
        gguf: String,
        source: ds4_quant::QuantError,
    },
    #[error("writing {path}: {source}")]
    Gguf {
        path: String,
        source: ds4_gguf::GgufError,
    },
}

type Result<T> = std::result::Result<T, ConvertError>;

/// The layout's shape from an official `config.json` (read by the engine's
/// reader, which knows the official key names and checks consistency).
pub fn shape_from_config(text: &str) -> std::result::Result<Shape, String> {
    let c = ds4_engine::ModelConfig::from_official_json(text).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let u = |v: usize, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} is too large"));
    let clamp = c.swiglu_clamp.first().copied().unwrap_or(0.0);
    if c.swiglu_clamp.iter().any(|&x| x != clamp) {
        return Err("per-layer swiglu limits that differ are not supported".into());
    }
    let shape = Shape {
        n_layer: u(c.n_layer, "num_hidden_layers")?,
        n_embd: u(c.n_embd, "hidden_size")?,
        n_vocab: u(c.n_vocab, "vocab_size")?,
        n_head: u(c.n_head, "num_attention_heads")?,
        head_dim: u(c.head_dim, "head_dim")?,
        n_rot: u(c.n_rot, "qk_rope_head_dim")?,
        q_lora_rank: u(c.q_lora, "q_lora_rank")?,
        o_lora_rank: u(c.o_lora, "o_lora_rank")?,
        o_groups: u(c.o_groups, "o_groups")?,
        n_expert: u(c.n_expert, "n_routed_experts")?,
        n_expert_used: u(c.n_expert_used, "num_experts_per_tok")?,
        n_expert_shared: u(c.n_expert_shared, "n_shared_experts")?,
        ff_exp: u(c.expert_ff, "moe_intermediate_size")?,
        n_hash_layer: u(c.n_hash_layer, "num_hash_layers")?,
        sliding_window: u(c.sliding_window, "sliding_window")?,
        compress_ratios: Some(
            c.compress_ratios
                .iter()
                .map(|&r| u(r, "compress ratio"))
                .collect::<std::result::Result<_, _>>()?,
        ),
        indexer_heads: u(c.indexer_heads, "index_n_heads")?,
        indexer_dim: u(c.indexer_head_dim, "index_head_dim")?,
        indexer_top_k: u(c.indexer_top_k, "index_topk")?,
        hc: u(c.hc, "hc_mult")?,
        hc_sinkhorn_iter: u(c.hc_sinkhorn_iters, "hc_sinkhorn_iters")?,
        hc_eps: c.hc_eps,
        rms_eps: c.rms_eps,
        rope_base: c.rope_base as f32,
        compress_rope_base: c.compress_rope_base as f32,
        rope_scaling_factor: c.yarn_factor as f32,
        rope_orig_ctx: c.yarn_orig_ctx as u32,
        yarn_beta_fast: c.yarn_beta_fast as f32,
        yarn_beta_slow: c.yarn_beta_slow as f32,
        expert_weights_scale: c.expert_weight_scale,
        swiglu_clamp: clamp,
        context_length: json
            .get("max_position_embeddings")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(Shape::default().context_length),
    };
    Ok(shape)
}

/// How an official tensor's bytes become f32 (or i32) values.
#[derive(Clone, Debug)]
enum Enc {
    /// F32, F16 or BF16 as stored.
    Float(Dtype),
    /// FP8 E4M3 `[out, in]` with a `[⌈out/128⌉, ⌈in/128⌉]` block-scale tensor.
    Fp8 { scale: Entry },
    /// FP4 E2M1, two per byte (I8/U8 `[out, in/2]`, or F4 `[out, in]`), with a
    /// `[out, in/32]` scale tensor.
    Fp4 { scale: Entry },
    /// I32 or I64 integers (`tid2eid`), written as I32.
    Int(Dtype),
}

#[derive(Clone, Debug)]
struct Part {
    official: String,
    entry: Entry,
    enc: Enc,
    rows: usize,
    cols: usize,
    /// `(e, n_expert)` for one expert's slice of a routed-expert tensor.
    expert: Option<(usize, usize)>,
}

struct Planned {
    spec: TensorSpec,
    /// One part per official tensor; experts stack in order.
    parts: Vec<Part>,
}

pub struct Converter {
    dir: String,
    ck: Checkpoint,
    shape: Shape,
    recipe: Recipe,
    plan: Vec<Planned>,
    tokenizer: Option<TokenizerMeta>,
    imatrix: Option<Imatrix>,
    /// Things the user should know (no tokenizer, optional tensors absent).
    pub warnings: Vec<String>,
    /// Official tensors with no place in the layout (MTP, ...), sorted.
    pub skipped: Vec<String>,
}

pub struct ConvertReport {
    pub n_tensors: usize,
    pub bytes: u64,
    pub seconds: f64,
}

fn dtype_size(d: Dtype) -> Option<usize> {
    Some(match d {
        Dtype::F32 | Dtype::I32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        Dtype::I64 => 8,
        Dtype::F8_E4M3 | Dtype::F8_E8M0 | Dtype::I8 | Dtype::U8 => 1,
        _ => return None,
    })
}

fn scale_at(bytes: &[u8], dtype: Dtype, i: usize) -> f32 {
    match dtype {
        Dtype::F8_E8M0 => fp::e8m0_to_f32(bytes[i]),
        Dtype::F32 => f32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]),
        // BF16 (validated when the plan was made).
        _ => half::bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
    }
}

/// The companion scale tensor of a quantized weight: `X.scale` for `X.weight`
/// (DeepSeek V4), or `X.weight_scale_inv` (the V3 naming, same meaning).
fn scale_name_candidates(weight: &str) -> Vec<String> {
    let stem = weight.strip_suffix(".weight").unwrap_or(weight);
    vec![format!("{stem}.scale"), format!("{weight}_scale_inv")]
}

impl Converter {
    /// Reads `dir/config.json`, indexes the shards, picks the tokenizer and checks
    /// every tensor the layout needs. Nothing is converted yet.
    pub fn open(dir: &Path, recipe: Recipe) -> Result<Converter> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ConvertError::Io {
            path: cfg_path.display().to_string(),
            source: e,
        })?;
        let shape = shape_from_config(&text).map_err(|msg| ConvertError::BadFile {
            path: cfg_path.display().to_string(),
            msg,
        })?;
        let specs = tensors(&shape, recipe).map_err(|e| ConvertError::Layout(format!("{e:#}")))?;
        let ck = Checkpoint::open(dir)?;
        let mut warnings = Vec::new();
        let tokenizer = pick_tokenizer(dir, shape.n_vocab, &mut warnings)?;
        let mut used = std::collections::HashSet::new();
        let mut plan = Vec::with_capacity(specs.len());
        for spec in specs {
            let parts = if spec.dims.len() == 3 {
                let n_expert = spec.dims[2] as usize;
                let mut parts = Vec::with_capacity(n_expert);
                for e in 0..n_expert {
                    let official = ds4_engine::names::gguf_expert_to_official(&spec.name, e)
                        .ok_or_else(|| {
                            ConvertError::Layout(format!("no official name for {}", spec.name))
                        })?;
                    let expected = vec![spec.dims[1] as usize, spec.dims[0] as usize];
                    let mut part = plan_part(&ck, &spec, official, expected, &mut used)?;
                    part.expert = Some((e, n_expert));
                    parts.push(part);
                }
                parts
            } else {
                let official =
                    ds4_engine::names::gguf_to_official(&spec.name).ok_or_else(|| {
                        ConvertError::Layout(format!("no official name for {}", spec.name))
                    })?;
                if spec.name.ends_with("exp_probs_b.bias") && ck.get(&official).is_none() {
                    // The only optional tensor (spec §2.2): no selection bias.
                    warnings.push(format!(
                        "{official} is absent: {} is left out (routing without a selection bias)",
                        spec.name
                    ));
                    continue;
                }
                let expected: Vec<usize> = spec.dims.iter().rev().map(|&d| d as usize).collect();
                vec![plan_part(&ck, &spec, official, expected, &mut used)?]
            };
            plan.push(Planned { spec, parts });
        }
        let skipped: Vec<String> = ck
            .tensors
            .keys()
            .filter(|n| !used.contains(n.as_str()))
            .cloned()
            .collect();
        Ok(Converter {
            dir: dir.display().to_string(),
            ck,
            shape,
            recipe,
            plan,
            tokenizer,
            imatrix: None,
            warnings,
            skipped,
        })
    }

    /// Uses `im` for the column importances of quantized tensors (looked up by
    /// GGUF name, then official name). Every entry's size is checked against its
    /// tensor now, not halfway through the conversion. Returns how many GGUF
    /// tensors found an entry.
    pub fn set_imatrix(&mut self, im: Imatrix) -> Result<usize> {
        let mut matched = 0;
        for p in &self.plan {
            if !p.spec.ty.is_quantized() {
                continue;
            }
            let mut any = false;
            for part in &p.parts {
                let found = im
                    .lookup(&[&p.spec.name, &part.official], part.cols, part.expert)
                    .map_err(ConvertError::Imatrix)?;
                any |= found.is_some();
            }
            matched += usize::from(any);
        }
        self.imatrix = Some(im);
        Ok(matched)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn n_tensors(&self) -> usize {
        self.plan.len()
    }

    /// Size of the tensor data the GGUF will hold.
    pub fn out_bytes(&self) -> u64 {
        self.plan
            .iter()
            .map(|p| p.spec.ty.bytes_for(p.spec.n_elements()).unwrap_or_default())
            .sum()
    }

    fn header(&self) -> anyhow::Result<HeaderBuilder> {
        let mut h = HeaderBuilder::new();
        h.add_meta("general.architecture", "deepseek4")?;
        let base = Path::new(&self.dir)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "DeepSeek V4".into());
        h.add_meta(
            "general.name",
            MetaValue::from(format!("{base} ({})", self.recipe.name())),
        )?;
        h.add_meta("general.alignment", MetaValue::U32(32))?;
        h.add_meta("ds4.convert.recipe", self.recipe.name())?;
        crate::synthetic::model_metadata(&mut h, &self.shape)?;
        if let Some(t) = &self.tokenizer {
            t.add_to(&mut h, self.shape.n_vocab)?;
        }
        for p in &self.plan {
            h.add_tensor(p.spec.name.clone(), &p.spec.dims, p.spec.ty)?;
        }
        Ok(h)
    }

    /// Converts every tensor into `out`, streaming.
    pub fn write(&self, out: &Path, progress: bool) -> Result<ConvertReport> {
        let gguf_err = |source| ConvertError::Gguf {
            path: out.display().to_string(),
            source,
        };
        let h = self
            .header()
            .map_err(|e| ConvertError::Layout(format!("building the GGUF header: {e:#}")))?;
        let mut w = GgufStreamWriter::create(out, &h).map_err(gguf_err)?;
        let total = self.out_bytes();
        let bar = if progress {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let start = Instant::now();
        // Conversion (rayon, all cores) runs on this thread while a writer thread
        // owns the file, so the disk and the CPUs overlap; two chunks in flight
        // bound the memory.
        enum Msg {
            Begin(usize),
            Data(Vec<u8>),
            End,
        }
        let w = std::thread::scope(|scope| -> Result<_> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(2);
            let bar = &bar;
            let writer = scope.spawn(move || -> Result<_> {
                for m in rx {
                    match m {
                        Msg::Begin(i) => {
                            let name = &self.plan[i].spec.name;
                            bar.set_message(name.clone());
                            w.begin_tensor(name).map_err(gguf_err)?;
                        }
                        Msg::Data(b) => {
                            w.write_chunk(&b).map_err(gguf_err)?;
                            bar.inc(b.len() as u64);
                        }
                        Msg::End => w.end_tensor().map_err(gguf_err)?,
                    }
                }
                Ok(w)
            });
            // A failed send means the writer stopped on an error, which wins.
            let produced = (|| -> Result<()> {
                for (i, p) in self.plan.iter().enumerate() {
                    if tx.send(Msg::Begin(i)).is_err() {
                        return Ok(());
                    }
                    for part in &p.parts {
                        self.convert_part(&p.spec, part, &mut |b| {
                            let _ = tx.send(Msg::Data(b));
                            Ok(())
                        })?;
                    }
                    if tx.send(Msg::End).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })();
            drop(tx);
            let written = writer
                .join()
                .map_err(|_| ConvertError::Layout("the GGUF writer thread panicked".into()))?;
            produced?;
            written
        })?;
        let file = w.finish().map_err(gguf_err)?;
        let file = file.into_inner().map_err(|e| ConvertError::Io {
            path: out.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|e| ConvertError::Io {
            path: out.display().to_string(),
            source: e,
        })?;
        bar.finish_and_clear();
        Ok(ConvertReport {
            n_tensors: self.plan.len(),
            bytes: total,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    fn convert_part(
        &self,
        spec: &TensorSpec,
        part: &Part,
        sink: &mut dyn FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let raw = self.ck.bytes(&part.entry);
        let sraw: &[u8] = match &part.enc {
            Enc::Fp8 { scale } | Enc::Fp4 { scale } => self.ck.bytes(scale),
            _ => &[],
        };
        if let Enc::Int(dtype) = part.enc {
            let n_expert = i64::from(self.shape.n_expert);
            let width = if dtype == Dtype::I64 { 8 } else { 4 };
            let mut out = Vec::with_capacity(raw.len() / width * 4);
            for (i, c) in raw.chunks_exact(width).enumerate() {
                let v = if width == 8 {
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                } else {
                    i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                };
                if !(0..n_expert).contains(&v) {
                    return Err(ConvertError::Tensor {
                        official: part.official.clone(),
                        msg: format!(
                            "expert id {v} at row {}, column {} is outside 0..{n_expert}",
                            i / part.cols,
                            i % part.cols
                        ),
                    });
                }
                out.extend_from_slice(&(v as i32).to_le_bytes());
            }
            return sink(out);
        }
        let ty = spec.ty;
        let cols = part.cols;
        let row_bytes = ty.bytes_for(cols as u64).unwrap_or_default() as usize;
        let given = match &self.imatrix {
            Some(im) if ty.is_quantized() => im
                .lookup(&[&spec.name, &part.official], cols, part.expert)
                .map_err(ConvertError::Imatrix)?,
            _ => None,
        };
        // IQ2_XXS needs column importances; without an imatrix ds4 uses the
        // column energy Σ_rows w² of the whole matrix, so take it whole (an
        // expert is at most a few tens of MB).
        let energy = given.is_none() && ty == GgmlType::Iq2Xxs;
        let rows_per_chunk = if energy {
            part.rows
        } else {
            (CHUNK_ELEMS / cols).clamp(1, part.rows)
        };
        let mut f = Vec::new();
        let mut q: Vec<u8> = Vec::new();
        let mut r0 = 0;
        while r0 < part.rows {
            let n = rows_per_chunk.min(part.rows - r0);
            f.resize(n * cols, 0f32);
            f.par_chunks_mut(cols)
                .enumerate()
                .for_each(|(i, row)| decode_row(part, raw, sraw, r0 + i, row));
            if let Some(i) = f.iter().position(|v| !v.is_finite()) {
                return Err(ConvertError::Tensor {
                    official: part.official.clone(),
                    msg: format!(
                        "non-finite value at row {}, column {} (a NaN code or scale?)",
                        r0 + i / cols,
                        i % cols
                    ),
                });
            }
            let owned = energy.then(|| column_energy(&f, cols));
            let importance = given.or(owned.as_deref());
            q.resize(n * row_bytes, 0u8);
            q.par_chunks_mut(row_bytes)
                .zip(f.par_chunks(cols))
                .try_for_each(|(dst, src)| quantize_row(ty, src, importance, dst))
                .map_err(|source| ConvertError::Quant {
                    gguf: spec.name.clone(),
                    source,
                })?;
            sink(std::mem::take(&mut q))?;
            r0 += n;
        }
        Ok(())
    }
}

/// Σ over rows of w², per column: ds4's stand-in importance when no imatrix is
/// given. A tiny floor keeps all-zero columns from having zero weight.
fn column_energy(f: &[f32], cols: usize) -> Vec<f32> {
    let mut e = vec![0f32; cols];
    for row in f.chunks_exact(cols) {
        for (a, &x) in e.iter_mut().zip(row) {
            *a += x * x;
        }
    }
    for a in &mut e {
        *a = a.max(1e-30);
    }
    e
}

/// Decodes row `r` of a part: `raw` is the weight's bytes, `sraw` its scale's.
fn decode_row(part: &Part, raw: &[u8], sraw: &[u8], r: usize, out: &mut [f32]) {
    let cols = part.cols;
    match &part.enc {
        Enc::Float(Dtype::F32) => {
            for (o, c) in out.iter_mut().zip(raw[r * cols * 4..].chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Enc::Float(Dtype::F16) => {
            for (o, c) in out.iter_mut().zip(raw[r * cols * 2..].chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Enc::Float(_) => {
            for (o, c) in out.iter_mut().zip(raw[r * cols * 2..].chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Enc::Fp8 { scale } => {
            let w = &raw[r * cols..(r + 1) * cols];
            let scale_cols = cols.div_ceil(FP8_BLOCK);
            let srow = r / FP8_BLOCK * scale_cols;
            for (b, (o, q)) in out
                .chunks_mut(FP8_BLOCK)
                .zip(w.chunks(FP8_BLOCK))
                .enumerate()
            {
                let s = scale_at(sraw, scale.dtype, srow + b);
                for (o, &q) in o.iter_mut().zip(q) {
                    // A power of two times an E4M3 value: exact in f32, the same
                    // product PyTorch's `w.float() * scale` forms.
                    *o = fp::e4m3fn_to_f32(q) * s;
                }
            }
        }
        Enc::Fp4 { scale } => {
            let half_cols = cols / 2;
            let w = &raw[r * half_cols..(r + 1) * half_cols];
            let n_blocks = cols / FP4_BLOCK;
            for (b, (o, q)) in out
                .chunks_exact_mut(FP4_BLOCK)
                .zip(w.chunks_exact(FP4_BLOCK / 2))
                .enumerate()
            {
                let s = scale_at(sraw, scale.dtype, r * n_blocks + b);
                for (pair, &byte) in o.chunks_exact_mut(2).zip(q) {
                    // Low nibble first: it is the even column.
                    pair[0] = fp::e2m1_to_f32(byte) * s;
                    pair[1] = fp::e2m1_to_f32(byte >> 4) * s;
                }
            }
        }
        // Integer tensors never reach the float path (convert_part returns early).
        Enc::Int(_) => out.fill(f32::NAN),
    }
}

fn pick_tokenizer(
    dir: &Path,
    n_vocab: u32,
    warnings: &mut Vec<String>,
) -> Result<Option<TokenizerMeta>> {
    let path = dir.join("tokenizer.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| ConvertError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let t = TokenizerMeta::from_json(&text)
            .map_err(|e| ConvertError::Tokenizer(format!("{}: {e:#}", path.display())))?;
        if t.tokens.len() != n_vocab as usize {
            return Err(ConvertError::Tokenizer(format!(
                "{} has {} tokens but config.json says vocab_size {n_vocab}",
                path.display(),
                t.tokens.len()
            )));
        }
        return Ok(Some(t));
    }
    if n_vocab == FLASH_VOCAB {
        warnings.push(
            "no tokenizer.json in the checkpoint: using the bundled DeepSeek V4 tokenizer".into(),
        );
        let t = TokenizerMeta::bundled().map_err(|e| ConvertError::Tokenizer(format!("{e:#}")))?;
        return Ok(Some(t));
    }
    warnings.push(format!(
        "no tokenizer.json and vocab_size {n_vocab} is not DeepSeek V4's {FLASH_VOCAB}: the GGUF carries no tokenizer"
    ));
    Ok(None)
}

/// Checks one official tensor against the shape the layout expects and works out
/// how to decode it.
fn plan_part(
    ck: &Checkpoint,
    spec: &TensorSpec,
    official: String,
    expected: Vec<usize>,
    used: &mut std::collections::HashSet<String>,
) -> Result<Part> {
    let entry = ck.get(&official).ok_or_else(|| ConvertError::Missing {
        official: official.clone(),
        gguf: spec.name.clone(),
    })?;
    let shape_err = |found: Vec<usize>| ConvertError::Shape {
        official: official.clone(),
        gguf: spec.name.clone(),
        expected: expected.clone(),
        found,
    };
    let bad = |msg: String| ConvertError::Tensor {
        official: official.clone(),
        msg,
    };
    let (rows, cols) = match expected.as_slice() {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        _ => {
            return Err(ConvertError::Layout(format!(
                "unexpected rank of {}",
                spec.name
            )));
        }
    };
    let find_scale = || -> Result<(String, Entry)> {
        for n in scale_name_candidates(&official) {
            if let Some(e) = ck.get(&n) {
                match e.dtype {
                    Dtype::F8_E8M0 | Dtype::F32 | Dtype::BF16 => return Ok((n, e.clone())),
                    d => {
                        return Err(bad(format!(
                            "scale tensor {n} has dtype {d}, expected F8_E8M0, F32 or BF16"
                        )));
                    }
                }
            }
        }
        Err(bad(format!(
            "is {} but its scale tensor {} is missing",
            entry.dtype,
            scale_name_candidates(&official)[0]
        )))
    };
    let check_scale_shape = |n: &str, e: &Entry, want: Vec<usize>| -> Result<()> {
        if e.shape != want {
            return Err(ConvertError::Tensor {
                official: n.to_string(),
                msg: format!(
                    "expected scale shape {want:?} for {official} {:?}, found {:?}",
                    entry.shape, e.shape
                ),
            });
        }
        Ok(())
    };
    let enc = match entry.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 if spec.role != Role::Index => {
            if entry.shape != expected {
                return Err(shape_err(entry.shape.clone()));
            }
            Enc::Float(entry.dtype)
        }
        Dtype::I32 | Dtype::I64 if spec.role == Role::Index => {
            if entry.shape != expected {
                return Err(shape_err(entry.shape.clone()));
            }
            Enc::Int(entry.dtype)
        }
        Dtype::F8_E4M3 if spec.role != Role::Index => {
            if entry.shape != expected || expected.len() != 2 {
                return Err(shape_err(entry.shape.clone()));
            }
            let (sn, se) = find_scale()?;
            check_scale_shape(
                &sn,
                &se,
                vec![rows.div_ceil(FP8_BLOCK), cols.div_ceil(FP8_BLOCK)],
            )?;
            used.insert(sn);
            Enc::Fp8 { scale: se }
        }
        Dtype::I8 | Dtype::U8 | Dtype::F4 if spec.role != Role::Index => {
            // Packed FP4: two codes per byte, so I8/U8 carry half the columns.
            let logical = match (entry.dtype, entry.shape.as_slice()) {
                (Dtype::F4, s) => s.to_vec(),
                (_, [r, c]) => vec![*r, c * 2],
                (_, s) => s.to_vec(),
            };
            if logical != expected || expected.len() != 2 {
                return Err(shape_err(logical));
            }
            if cols % FP4_BLOCK != 0 {
                return Err(bad(format!(
                    "FP4 rows of {cols} inputs are not whole {FP4_BLOCK}-input scale blocks"
                )));
            }
            let (sn, se) = find_scale()?;
            check_scale_shape(&sn, &se, vec![rows, cols / FP4_BLOCK])?;
            used.insert(sn);
            Enc::Fp4 { scale: se }
        }
        d => {
            return Err(bad(format!(
                "dtype {d} is not supported for {} ({})",
                spec.name,
                if spec.role == Role::Index {
                    "expected I32 or I64"
                } else {
                    "expected F32, F16, BF16, F8_E4M3 + scale, or packed FP4 + scale"
                }
            )));
        }
    };
    if let Enc::Fp8 { scale } | Enc::Fp4 { scale } = &enc
        && dtype_size(scale.dtype).is_none()
    {
        return Err(bad("scale dtype not supported".into()));
    }
    used.insert(official.clone());
    Ok(Part {
        official,
        entry: entry.clone(),
        enc,
        rows,
        cols,
        expert: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The release config.json (official key style, spec §1.1 values, 43 layer
    /// ratios plus the MTP one) maps onto exactly the published Flash layout.
    #[test]
    fn flash_config_maps_to_the_published_layout() {
        let mut ratios = vec![0u32, 0];
        ratios.extend((2..43).map(|l| if l % 2 == 0 { 4 } else { 128 }));
        ratios.push(0);
        let cfg = serde_json::json!({
            "vocab_size": 129280, "hidden_size": 4096, "moe_intermediate_size": 2048,
            "num_hidden_layers": 43, "num_hash_layers": 3, "num_attention_heads": 64,
            "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64,
            "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
            "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 6,
            "scoring_func": "sqrtsoftplus", "routed_scaling_factor": 1.5,
            "swiglu_limit": 10.0, "sliding_window": 128, "compress_ratios": ratios,
            "compress_rope_theta": 160000.0, "rope_theta": 10000.0,
            "rope_scaling": {"type": "yarn", "factor": 16.0,
                "original_max_position_embeddings": 65536, "beta_fast": 32, "beta_slow": 1},
            "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512, "hc_mult": 4,
            "hc_sinkhorn_iters": 20, "hc_eps": 1e-6, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 1048576
        });
        let s = shape_from_config(&cfg.to_string()).unwrap();
        let flash = Shape::default();
        assert_eq!(s.ratios(), flash.ratios());
        let ours = Shape {
            compress_ratios: None,
            ..s.clone()
        };
        // Shape has no PartialEq; its Debug form lists every field.
        assert_eq!(format!("{ours:?}"), format!("{flash:?}"));
        for recipe in [Recipe::Q2, Recipe::Q4] {
            let a = tensors(&s, recipe).unwrap();
            let b = tensors(&flash, recipe).unwrap();
            assert_eq!(a.len(), 1328);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!((&x.name, &x.dims, x.ty), (&y.name, &y.dims, y.ty));
            }
        }
    }

    #[test]
    fn scale_names() {
        assert_eq!(
            scale_name_candidates("layers.3.attn.wq_a.weight"),
            [
                "layers.3.attn.wq_a.scale",
                "layers.3.attn.wq_a.weight_scale_inv"
            ]
        );
    }
}

//! `ds4-quantize --synthetic`: a random-weight model in the exact published
//! layout, streamed to disk (never the whole file in memory), for benchmarks and
//! tests when the real 87–165 GB weights are not at hand.

use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{Context, Result};
use ds4_gguf::{GgmlType, GgufStreamWriter, HeaderBuilder, MetaValue};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::layout::{Recipe, Role, Shape, TensorSpec, tensors};
use crate::synth_values::{Rng, chunk_seed, fill};
use crate::tokenizer_meta::TokenizerMeta;

/// Bytes generated per write; two are in flight (one being filled while the
/// other is written) so generation overlaps the disk.
const CHUNK: usize = 64 << 20;
/// Bytes per independently seeded piece, so output is identical whatever the
/// thread count.
const PIECE: usize = 1 << 20;

pub struct SyntheticOptions<'a> {
    pub shape: Shape,
    pub recipe: Recipe,
    pub seed: u64,
    pub out: &'a Path,
    pub tokenizer: &'a TokenizerMeta,
    pub progress: bool,
}

pub struct SyntheticReport {
    pub n_tensors: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// The metadata a ds4 Flash file carries (spec/architecture.md §1.1), with the
/// GGUF value types ds4 checks (integer counts are u32 exactly).
pub fn header(
    shape: &Shape,
    recipe: Recipe,
    seed: u64,
    tok: &TokenizerMeta,
) -> Result<HeaderBuilder> {
    let s = shape;
    let mut h = HeaderBuilder::new();
    let mut m = |k: &str, v: MetaValue| h.add_meta(k, v);
    let a = "deepseek4";
    m("general.architecture", a.into())?;
    m(
        "general.name",
        format!(
            "DeepSeek V4 Flash (synthetic {} seed {seed})",
            recipe.name()
        )
        .into(),
    )?;
    m("general.alignment", MetaValue::U32(32))?;
    m("ds4.synthetic.seed", MetaValue::U64(seed))?;
    m("ds4.synthetic.recipe", recipe.name().into())?;
    model_metadata(&mut h, s)?;
    tok.add_to(&mut h, s.n_vocab)?;
    Ok(h)
}

/// The `deepseek4.*` keys of a model of this shape (spec/architecture.md §1.1),
/// with the GGUF value types ds4 checks (integer counts are u32 exactly). Shared
/// by the synthetic writer and the official-checkpoint converter.
pub fn model_metadata(h: &mut HeaderBuilder, shape: &Shape) -> Result<()> {
    let s = shape;
    let mut m = |k: &str, v: MetaValue| h.add_meta(k, v);
    let a = "deepseek4";
    let u = |v: u32| MetaValue::U32(v);
    let f = |v: f32| MetaValue::F32(v);
    m(&format!("{a}.context_length"), u(s.context_length))?;
    m(&format!("{a}.block_count"), u(s.n_layer))?;
    m(&format!("{a}.embedding_length"), u(s.n_embd))?;
    m(&format!("{a}.vocab_size"), u(s.n_vocab))?;
    m(&format!("{a}.attention.head_count"), u(s.n_head))?;
    m(&format!("{a}.attention.head_count_kv"), u(1))?;
    m(&format!("{a}.attention.key_length"), u(s.head_dim))?;
    m(&format!("{a}.attention.value_length"), u(s.head_dim))?;
    m(&format!("{a}.rope.dimension_count"), u(s.n_rot))?;
    m(&format!("{a}.attention.q_lora_rank"), u(s.q_lora_rank))?;
    m(&format!("{a}.attention.output_lora_rank"), u(s.o_lora_rank))?;
    m(&format!("{a}.attention.output_group_count"), u(s.o_groups))?;
    m(&format!("{a}.expert_count"), u(s.n_expert))?;
    m(&format!("{a}.expert_used_count"), u(s.n_expert_used))?;
    m(&format!("{a}.expert_shared_count"), u(s.n_expert_shared))?;
    m(&format!("{a}.expert_feed_forward_length"), u(s.ff_exp))?;
    m(&format!("{a}.expert_group_count"), u(0))?;
    m(&format!("{a}.expert_group_used_count"), u(0))?;
    m(&format!("{a}.hash_layer_count"), u(s.n_hash_layer))?;
    m(
        &format!("{a}.expert_weights_scale"),
        f(s.expert_weights_scale),
    )?;
    m(&format!("{a}.expert_weights_norm"), MetaValue::Bool(true))?;
    m(
        &format!("{a}.swiglu_clamp_exp"),
        vec![s.swiglu_clamp; s.n_layer as usize].into(),
    )?;
    m(
        &format!("{a}.attention.sliding_window"),
        u(s.sliding_window),
    )?;
    m(&format!("{a}.attention.compress_ratios"), s.ratios().into())?;
    m(
        &format!("{a}.attention.indexer.head_count"),
        u(s.indexer_heads),
    )?;
    m(
        &format!("{a}.attention.indexer.key_length"),
        u(s.indexer_dim),
    )?;
    m(&format!("{a}.attention.indexer.top_k"), u(s.indexer_top_k))?;
    m(&format!("{a}.hyper_connection.count"), u(s.hc))?;
    m(
        &format!("{a}.hyper_connection.sinkhorn_iterations"),
        u(s.hc_sinkhorn_iter),
    )?;
    m(&format!("{a}.hyper_connection.epsilon"), f(s.hc_eps))?;
    m(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        f(s.rms_eps),
    )?;
    m(&format!("{a}.rope.freq_base"), f(s.rope_base))?;
    m(
        &format!("{a}.attention.compress_rope_freq_base"),
        f(s.compress_rope_base),
    )?;
    m(
        &format!("{a}.rope.scaling.factor"),
        f(s.rope_scaling_factor),
    )?;
    m(
        &format!("{a}.rope.scaling.original_context_length"),
        u(s.rope_orig_ctx),
    )?;
    m(
        &format!("{a}.rope.scaling.yarn_beta_fast"),
        f(s.yarn_beta_fast),
    )?;
    m(
        &format!("{a}.rope.scaling.yarn_beta_slow"),
        f(s.yarn_beta_slow),
    )?;
    Ok(())
}

pub fn write(opts: &SyntheticOptions<'_>) -> Result<SyntheticReport> {
    let specs = tensors(&opts.shape, opts.recipe)?;
    let mut h = header(&opts.shape, opts.recipe, opts.seed, opts.tokenizer)?;
    for t in &specs {
        h.add_tensor(t.name.clone(), &t.dims, t.ty)?;
    }
    let total: u64 = specs
        .iter()
        .map(|t| t.ty.bytes_for(t.n_elements()).unwrap_or(0))
        .sum();
    let mut w = GgufStreamWriter::create(opts.out, &h)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let bar = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let seed = opts.seed;
    let n_expert = opts.shape.n_expert;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel::<(usize, Vec<u8>, bool)>(1);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(2);
        let specs_ref = &specs;
        let producer = scope.spawn(move || {
            for (ti, t) in specs_ref.iter().enumerate() {
                let n_bytes = t.ty.bytes_for(t.n_elements()).unwrap_or(0) as usize;
                let mut done = 0usize;
                let mut piece_index = 0u64;
                let piece = piece_bytes(t);
                // Whole pieces per chunk, so no block straddles two chunks.
                let chunk = (CHUNK / piece).max(1) * piece;
                while done < n_bytes {
                    let len = chunk.min(n_bytes - done);
                    let mut buf = recycle_rx.try_recv().unwrap_or_default();
                    buf.resize(len, 0);
                    buf.par_chunks_mut(piece).enumerate().for_each(|(i, p)| {
                        let mut rng = Rng::new(chunk_seed(seed, ti as u64, piece_index + i as u64));
                        fill_tensor_piece(t, n_expert, &mut rng, p);
                    });
                    piece_index += len.div_ceil(piece) as u64;
                    done += len;
                    if tx.send((ti, buf, done >= n_bytes)).is_err() {
                        return;
                    }
                }
            }
        });
        let mut current: Option<usize> = None;
        for (ti, buf, last) in rx {
            if current != Some(ti) {
                w.begin_tensor(&specs[ti].name)?;
                current = Some(ti);
                bar.set_message(specs[ti].name.clone());
            }
            w.write_chunk(&buf)?;
            bar.inc(buf.len() as u64);
            if last {
                w.end_tensor()?;
            }
            let _ = recycle_tx.try_send(buf);
        }
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("synthetic generator thread panicked"))?;
        Ok(())
    })?;
    // Tensors with zero bytes never reach the loop above.
    while let Some(t) = w.next_tensor().map(|t| t.name.clone()) {
        w.begin_tensor(&t)?;
        w.end_tensor()?;
    }
    let file = w.finish()?;
    file.into_inner()
        .map_err(|e| anyhow::anyhow!("flushing {}: {}", opts.out.display(), e.error()))?
        .sync_all()
        .with_context(|| format!("syncing {}", opts.out.display()))?;
    bar.finish_and_clear();
    Ok(SyntheticReport {
        n_tensors: specs.len(),
        bytes: total,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Piece size rounded to whole blocks (and whole tid2eid rows), so every piece
/// can be filled on its own.
fn piece_bytes(t: &TensorSpec) -> usize {
    let unit = match t.role {
        Role::Index => t.dims[0] as usize * 4,
        _ => t.ty.type_size(),
    };
    (PIECE / unit).max(1) * unit
}

fn fill_tensor_piece(t: &TensorSpec, n_expert: u32, rng: &mut Rng, out: &mut [u8]) {
    match t.role {
        Role::Index => {
            // Each token's row names n_used distinct experts.
            let n_used = t.dims[0] as usize;
            let mut row = vec![0u32; n_used];
            for r in out.chunks_exact_mut(n_used * 4) {
                for i in 0..n_used {
                    row[i] = loop {
                        let e = (rng.next_u64() % u64::from(n_expert)) as u32;
                        if !row[..i].contains(&e) {
                            break e;
                        }
                    };
                }
                for (c, e) in r.chunks_exact_mut(4).zip(&row) {
                    c.copy_from_slice(&(*e as i32).to_le_bytes());
                }
            }
        }
        Role::Norm if t.name.ends_with("norm.weight") => {
            // Norm gains near 1 keep the normalised activations O(1).
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(1.0 + 0.1 * rng.unit()).to_le_bytes());
            }
        }
        Role::Norm => fill(GgmlType::F32, 0.05, rng, out),
        _ => fill(t.ty, 1.0 / (t.fan_in() as f32).sqrt(), rng, out),
    }
}

/// [`write`] to `OUT.partial`, then rename: an interrupted run never leaves a
/// file that looks complete.
pub fn write_atomic(opts: &SyntheticOptions<'_>) -> Result<SyntheticReport> {
    // The pid keeps two processes that race to create the same file apart.
    let tmp = opts
        .out
        .with_extension(format!("gguf.partial.{}", std::process::id()));
    let tmp_opts = SyntheticOptions {
        out: &tmp,
        shape: opts.shape.clone(),
        tokenizer: opts.tokenizer,
        ..*opts
    };
    match write(&tmp_opts) {
        Ok(r) => {
            std::fs::rename(&tmp, opts.out)
                .with_context(|| format!("renaming to {}", opts.out.display()))?;
            Ok(r)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

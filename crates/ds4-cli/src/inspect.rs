//! `ds4 --inspect` and `ds4 --dump-tensor`: look inside any GGUF v3 file, the
//! way `gguf-dump` serves llama.cpp users.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use ds4_engine::GgufSource;
use ds4_gguf::{GgmlType, GgufFile, MetaValue};

use crate::memory;

pub fn run(path: &Path, ctx: usize) -> Result<()> {
    let f = GgufFile::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: GGUF v{}, {} bytes, {} metadata keys, {} tensors, alignment {}, tensor data at offset {}",
        path.display(),
        f.version(),
        f.file_len(),
        f.metadata().len(),
        f.tensors().len(),
        f.alignment(),
        f.data_offset()
    )?;
    writeln!(out, "\nmetadata:")?;
    let width = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f.metadata().iter() {
        let ty = match v {
            MetaValue::Array(a) => format!("[{}; {}]", a.elem_type(), a.len()),
            _ => v.value_type().to_string(),
        };
        writeln!(out, "  {k:<width$}  {ty:<16} {v}")?;
    }
    writeln!(out, "\ntensors:")?;
    let nw = f.tensors().iter().map(|t| t.name.len()).max().unwrap_or(0);
    writeln!(
        out,
        "  {:>5}  {:<nw$}  {:<8} {:<24} {:>14}  offset",
        "#", "name", "type", "shape", "bytes"
    )?;
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for (i, t) in f.tensors().iter().enumerate() {
        let shape = format!("{:?}", t.dims);
        writeln!(
            out,
            "  {i:>5}  {:<nw$}  {:<8} {shape:<24} {:>14}  {}",
            t.name,
            t.ty.name(),
            t.n_bytes,
            f.tensor_file_offset(t)
        )?;
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        e.2 += t.n_elements;
    }
    writeln!(out, "\nby type:")?;
    let (mut n, mut bytes, mut params) = (0, 0, 0);
    for (ty, (c, b, p)) in &by_type {
        writeln!(
            out,
            "  {ty:<8} {c:>6} tensors {:>12.3} GB {:>16} params",
            *b as f64 / 1e9,
            p
        )?;
        n += c;
        bytes += b;
        params += p;
    }
    writeln!(
        out,
        "  {:<8} {n:>6} tensors {:>12.3} GB {:>16} params",
        "total",
        bytes as f64 / 1e9,
        params
    )?;
    if f.get_str_opt("general.architecture").ok().flatten() == Some("deepseek4") {
        model_summary(&mut out, path, bytes, ctx)?;
    }
    Ok(())
}

/// Architecture, layer schedule and the memory estimate for a DeepSeek V4 file.
fn model_summary(out: &mut impl Write, path: &Path, weight_bytes: u64, ctx: usize) -> Result<()> {
    let cfg = match GgufSource::open(path) {
        Ok((c, _)) => c,
        Err(e) => {
            writeln!(out, "\nDeepSeek V4 metadata is not usable: {e}")?;
            return Ok(());
        }
    };
    let layout = if cfg.is_flash() {
        "Flash release layout"
    } else {
        "custom sizes"
    };
    writeln!(out, "\nmodel: DeepSeek V4 ({layout})")?;
    writeln!(
        out,
        "  {} layers, hidden {}, vocab {}, {} heads x {}, {} routed experts (top {}), {} hash-routed layers, window {}",
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_vocab,
        cfg.n_head,
        cfg.head_dim,
        cfg.n_expert,
        cfg.n_expert_used,
        cfg.n_hash_layer,
        cfg.sliding_window
    )?;
    let ratios: Vec<String> = cfg.compress_ratios.iter().map(|r| r.to_string()).collect();
    writeln!(out, "  compress ratios per layer: {}", ratios.join(","))?;
    let kv = memory::kv_bytes(&cfg, ctx);
    writeln!(
        out,
        "memory: weights {:.2} GB (mapped from the file) + session state {:.3} GB for --ctx {ctx} = {:.2} GB",
        weight_bytes as f64 / 1e9,
        kv as f64 / 1e9,
        (weight_bytes + kv) as f64 / 1e9
    )?;
    Ok(())
}

/// Rows dequantized per write, to bound memory on multi-GB tensors.
const ROWS_PER_STEP: u64 = 1024;

pub fn dump_tensor(path: &Path, name: &str, out_path: &Path) -> Result<()> {
    let f = GgufFile::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let t = f
        .tensor(name)
        .with_context(|| format!("{} has no tensor named `{name}`", path.display()))?;
    if matches!(
        t.ty,
        GgmlType::I8 | GgmlType::I16 | GgmlType::I64 | GgmlType::F64 | GgmlType::Q8K
    ) {
        anyhow::bail!(
            "tensor `{name}` has type {} which --dump-tensor does not convert",
            t.ty
        );
    }
    let data = f.tensor_data(t);
    let row_elems = t.dims[0] as usize;
    let row_bytes = t.row_bytes() as usize;
    let mut w = BufWriter::new(
        File::create(out_path).with_context(|| format!("cannot create {}", out_path.display()))?,
    );
    let mut buf = Vec::new();
    for rows in data.chunks(row_bytes * ROWS_PER_STEP as usize) {
        buf.resize(rows.len() / row_bytes * row_elems, 0f32);
        ds4_quant::dequantize(t.ty, rows, &mut buf)
            .with_context(|| format!("dequantizing `{name}`"))?;
        for x in &buf {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", out_path.display()))?;
    eprintln!(
        "ds4: wrote {} f32 values of `{name}` ({} {:?}) to {}",
        t.n_elements,
        t.ty,
        t.dims,
        out_path.display()
    );
    Ok(())
}

//! A GGUF covering every metadata value type (nested and empty arrays
//! included) and every ggml tensor type, written with the streaming writer,
//! plus a JSON manifest of its contents for tools/check_gguf_interop.py.
//! Shared by examples/write_interop.rs and tests/python_interop.rs.
#![allow(dead_code)]

use ds4_gguf::{GgmlType, GgufFile, GgufStreamWriter, HeaderBuilder, MetaArray, StringArray};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Deterministic bytes (xorshift) so reruns give the same file.
fn pseudo_random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Writes the interop file and its manifest; returns a one-line summary.
pub fn write_interop(gguf_path: &str, json_path: &str) -> anyhow::Result<String> {
    let mut h = HeaderBuilder::new();
    h.add_meta("general.architecture", "deepseek4")?;
    h.set_alignment(32)?;
    h.add_meta("ds4.u8", 255u8)?;
    h.add_meta("ds4.i8", -128i8)?;
    h.add_meta("ds4.u16", 65535u16)?;
    h.add_meta("ds4.i16", -32768i16)?;
    h.add_meta("ds4.u32", u32::MAX)?;
    h.add_meta("ds4.i32", i32::MIN)?;
    h.add_meta("ds4.f32", 1.0e-6f32)?;
    h.add_meta("ds4.bool", false)?;
    h.add_meta("ds4.string", "tab\there, ｜DSML｜, 🙂, empty next")?;
    h.add_meta("ds4.empty_string", "")?;
    h.add_meta("ds4.u64", u64::MAX - 1)?;
    h.add_meta("ds4.i64", i64::MIN + 1)?;
    h.add_meta("ds4.f64", std::f64::consts::PI)?;
    h.add_meta(
        "tokenizer.ggml.tokens",
        ["<｜begin▁of▁sentence｜>", "Ġhello", "", "ĊĊ", "<think>"]
            .into_iter()
            .collect::<StringArray>(),
    )?;
    h.add_meta("ds4.arr_u8", vec![0u8, 1, 255])?;
    h.add_meta("ds4.arr_i8", vec![-1i8, 0, 1])?;
    h.add_meta("ds4.arr_u16", vec![7u16, 65535])?;
    h.add_meta("ds4.arr_i16", vec![-7i16, 32767])?;
    h.add_meta("ds4.arr_u32", vec![1u32, 2, 3, u32::MAX])?;
    h.add_meta("ds4.arr_i32", vec![-1i32, i32::MAX])?;
    h.add_meta("ds4.arr_f32", vec![0.1f32, -2.5, f32::MAX])?;
    h.add_meta("ds4.arr_bool", vec![true, false, false])?;
    h.add_meta("ds4.arr_u64", vec![u64::MAX, 0])?;
    h.add_meta("ds4.arr_i64", vec![i64::MIN, i64::MAX])?;
    h.add_meta("ds4.arr_f64", vec![1e-300f64, 0.1])?;
    h.add_meta("ds4.arr_empty_u32", Vec::<u32>::new())?;
    h.add_meta(
        "ds4.nested",
        MetaArray::Array(vec![
            MetaArray::U32(vec![1, 2]),
            MetaArray::String(["x", "yz"].into_iter().collect()),
            MetaArray::Array(vec![MetaArray::F64(vec![0.5])]),
            MetaArray::I8(vec![]),
        ]),
    )?;

    let tensors: Vec<(String, Vec<u64>, GgmlType)> = GgmlType::ALL
        .iter()
        .enumerate()
        .map(|(i, &ty)| {
            let row = ty.block_size() as u64 * (1 + i as u64 % 2);
            let dims = match i % 3 {
                0 => vec![row],
                1 => vec![row, 3],
                _ => vec![row, 2, 2],
            };
            (format!("t.{}", ty.name().to_lowercase()), dims, ty)
        })
        .collect();
    for (name, dims, ty) in &tensors {
        h.add_tensor(name.clone(), dims, *ty)?;
    }

    let mut w = GgufStreamWriter::create(gguf_path, &h)?;
    let infos = w.tensors().to_vec();
    for (i, t) in infos.iter().enumerate() {
        let bytes = pseudo_random_bytes(i as u64, t.n_bytes as usize);
        w.begin_tensor(&t.name)?;
        for chunk in bytes.chunks(100) {
            w.write_chunk(chunk)?;
        }
        w.end_tensor()?;
    }
    w.finish()?;

    // The manifest is built from what we meant to write, then the file is
    // re-read with our reader as a first check.
    let f = GgufFile::open(gguf_path)?;
    anyhow::ensure!(
        f.metadata() == h.metadata(),
        "our reader disagrees with the header"
    );
    let metadata: Vec<_> = h
        .metadata()
        .iter()
        .map(|(k, v)| {
            let mut j = super::manifest::value_to_json(v);
            j["key"] = json!(k);
            j
        })
        .collect();
    let tensors: Vec<_> = infos
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let bytes = pseudo_random_bytes(i as u64, t.n_bytes as usize);
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            json!({
                "name": t.name,
                "dims": t.dims,
                "type": t.ty.name(),
                "n_bytes": t.n_bytes,
                "offset": t.offset,
                "sha256": digest,
            })
        })
        .collect();
    let manifest = json!({
        "generator": "ds4-gguf example write_interop",
        "file": std::path::Path::new(gguf_path).file_name().and_then(|s| s.to_str()),
        "version": 3,
        "alignment": f.alignment(),
        "data_offset": f.data_offset(),
        "file_len": f.file_len(),
        "metadata": metadata,
        "tensors": tensors,
    });
    std::fs::write(json_path, serde_json::to_string_pretty(&manifest)? + "\n")?;
    Ok(format!(
        "wrote {gguf_path} ({} bytes, {} keys, {} tensors) and {json_path}",
        f.file_len(),
        f.metadata().len(),
        f.tensors().len()
    ))
}

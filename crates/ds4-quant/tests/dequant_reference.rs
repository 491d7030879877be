//! Dequantization must equal the `gguf` package bit for bit (see
//! tools/gen_quant_fixtures.py): 10,000 random blocks per type (hashes of the
//! expected f32 output per 100 blocks), hand-made edge blocks, and every one of
//! the 65,536 F16 and BF16 bit patterns.

mod common;

use common::*;
use ds4_quant::{GgmlType, dequantize};

fn ty_of(name: &str) -> GgmlType {
    GgmlType::from_name(name).expect("known type")
}

fn check_type(name: &str) {
    let fx = fixtures();
    let f = &fx["dequant"][name];
    let ty = ty_of(name);
    let bb = f["block_bytes"].as_u64().unwrap() as usize;
    let n = f["n_random_blocks"].as_u64().unwrap() as usize;
    let chunk = f["chunk_blocks"].as_u64().unwrap() as usize;
    let seed = f["seed"].as_u64().unwrap();
    let data = random_blocks(name, seed, bb, n);
    let per = ty.block_size();
    let mut out = vec![0.0f32; n * per];
    dequantize(ty, &data, &mut out).unwrap();

    // Readable diff for the first blocks before the hash comparison.
    for (i, expect) in f["first_blocks_f32_bits"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let got: Vec<u32> = out[i * per..(i + 1) * per]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want: Vec<u32> = expect
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "{name} random block {i}");
    }
    let hashes = f["chunk_sha256"].as_array().unwrap();
    assert_eq!(hashes.len(), n / chunk);
    let mut mismatched = Vec::new();
    for (c, h) in hashes.iter().enumerate() {
        if sha_f32(&out[c * chunk * per..(c + 1) * chunk * per]) != h.as_str().unwrap() {
            mismatched.push(c);
        }
    }
    assert!(
        mismatched.is_empty(),
        "{name}: chunks {mismatched:?} differ from gguf"
    );

    let edges = f["edge_blocks_hex"].as_array().unwrap();
    let edge_hashes = f["edge_sha256"].as_array().unwrap();
    for (i, (e, h)) in edges.iter().zip(edge_hashes).enumerate() {
        let bytes = unhex(e.as_str().unwrap());
        let mut o = vec![0.0f32; bytes.len() / ty.type_size() * per];
        dequantize(ty, &bytes, &mut o).unwrap();
        assert_eq!(
            sha_f32(&o),
            h.as_str().unwrap(),
            "{name} edge block {i}: {o:?}"
        );
    }
    println!(
        "{name}: {n} random + {} edge blocks identical to the reference",
        edges.len()
    );
}

#[test]
fn q8_0_matches_gguf() {
    check_type("Q8_0");
}

#[test]
fn q2_k_matches_gguf() {
    check_type("Q2_K");
}

#[test]
fn q4_k_matches_gguf() {
    check_type("Q4_K");
}

#[test]
fn iq2_xxs_matches_gguf() {
    check_type("IQ2_XXS");
}

#[test]
fn q8_k_matches_its_definition() {
    check_type("Q8_K");
}

#[test]
fn f32_and_i32_pass_through() {
    check_type("F32");
    check_type("I32");
}

fn check_exhaustive16(name: &str) {
    let fx = fixtures();
    let f = &fx["dequant"][name];
    let ty = ty_of(name);
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let mut out = vec![0.0f32; 65536];
    dequantize(ty, &bytes, &mut out).unwrap();
    for (k, v) in f["spot_bits"].as_object().unwrap() {
        let h: usize = k.parse().unwrap();
        assert_eq!(
            out[h].to_bits() as u64,
            v.as_u64().unwrap(),
            "{name} {h:#06x}"
        );
    }
    for (c, h) in f["chunk_sha256"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            sha_f32(&out[c * 4096..(c + 1) * 4096]),
            h.as_str().unwrap(),
            "{name} values {}..",
            c * 4096
        );
    }
}

#[test]
fn f16_exhaustive_including_nan_payloads() {
    check_exhaustive16("F16");
}

#[test]
fn bf16_exhaustive_including_nan_payloads() {
    check_exhaustive16("BF16");
}

#[test]
fn rejects_wrong_lengths() {
    let mut out = vec![0.0f32; 256];
    assert!(dequantize(GgmlType::Q2K, &[0u8; 83], &mut out).is_err());
    assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], &mut out[..33]).is_err());
    assert!(dequantize(GgmlType::I8, &[0u8; 256], &mut out).is_err());
}

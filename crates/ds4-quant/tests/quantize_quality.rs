//! Quantize → dequantize error, against the reference figures:
//! * Q8_0 and BF16: the `gguf` package quantizes these; our bytes must be
//!   identical to its bytes, so the error is identical too.
//! * Q2_K, Q4_K, IQ2_XXS: gguf cannot quantize them; we use llama.cpp's
//!   tests/test-quantize-fns.cpp metric and thresholds: data
//!   `0.1 + 2·cos(i + offset)`, 4096 values, error `sqrt(Σ(x−x̂)²)/n`, which must
//!   be below MAX_QUANTIZATION_TOTAL_ERROR (0.002; Q4_K, Q8_0) or
//!   MAX_QUANTIZATION_TOTAL_ERROR_2BITS (0.0075; Q2_K). llama.cpp skips
//!   IQ2_XXS there (no quantizer without an imatrix); we hold it to the 2-bit
//!   figure that test applies to IQ2_S.
//! * Importance weights must lower the weighted error.

mod common;

use common::*;
use ds4_quant::{GgmlType, dequantize, quantize};

fn roundtrip(ty: GgmlType, x: &[f32], cols: usize, imp: Option<&[f32]>) -> Vec<f32> {
    let q = quantize(ty, x, cols, imp).unwrap();
    let mut y = vec![0.0f32; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    y
}

fn gaussian_input() -> (Vec<f32>, usize, serde_json::Value) {
    let fx = fixtures();
    let q = fx["quantize"].clone();
    let rows = q["rows"].as_u64().unwrap() as usize;
    let cols = q["cols"].as_u64().unwrap() as usize;
    let x = gaussian(q["gaussian_seed"].as_u64().unwrap(), rows * cols);
    // The same Gaussian numbers as the generator (f64 libm log/cos, then f32).
    assert_eq!(
        sha_f32(&x),
        q["input_sha256"].as_str().unwrap(),
        "gaussian input differs from the generator's"
    );
    (x, cols, q)
}

#[test]
fn q8_0_and_bf16_bytes_identical_to_gguf() {
    let (x, cols, q) = gaussian_input();
    for (ty, name) in [(GgmlType::Q8_0, "Q8_0"), (GgmlType::Bf16, "BF16")] {
        let bytes = quantize(ty, &x, cols, None).unwrap();
        assert_eq!(
            sha_bytes(&bytes),
            q[name]["bytes_sha256"].as_str().unwrap(),
            "{name} bytes"
        );
        let y = roundtrip(ty, &x, cols, None);
        let ours = rel_rmse(&x, &y);
        let theirs = q[name]["gguf_rel_rmse"].as_f64().unwrap();
        println!("{name:8} gaussian rel-RMSE ours {ours:.6}  gguf {theirs:.6}");
        assert!(ours <= theirs * (1.0 + 1e-9), "{name}: {ours} > {theirs}");
    }
}

#[test]
fn gaussian_rel_rmse_table() {
    let (x, cols, _) = gaussian_input();
    // Use 16 rows (64k values) to keep the dev-profile run short.
    let x = &x[..16 * cols];
    // Expected ranges for Gaussian data (bits/weight → error), loose enough for
    // any correct quantizer and tight enough to catch a broken one.
    for (ty, max) in [
        (GgmlType::Q8_0, 0.006),
        (GgmlType::Q4K, 0.12),
        (GgmlType::Q2K, 0.40),
        (GgmlType::Iq2Xxs, 0.45),
    ] {
        let e = rel_rmse(x, &roundtrip(ty, x, cols, None));
        println!("{:8} gaussian rel-RMSE {e:.5} (bound {max})", ty.name());
        assert!(e < max, "{ty}: {e}");
    }
}

fn llama_test_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1f64 + 2.0 * ((i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

fn llama_rmse(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    (s.sqrt() / a.len() as f64) as f32
}

#[test]
fn llama_cpp_total_quantization_error_thresholds() {
    let x = llama_test_data(0.0, 32 * 128);
    for (ty, threshold, label) in [
        (GgmlType::Q8_0, 0.002f32, "MAX_QUANTIZATION_TOTAL_ERROR"),
        (GgmlType::Q4K, 0.002, "MAX_QUANTIZATION_TOTAL_ERROR"),
        (GgmlType::Q2K, 0.0075, "MAX_QUANTIZATION_TOTAL_ERROR_2BITS"),
        (
            GgmlType::Iq2Xxs,
            0.0075,
            "MAX_QUANTIZATION_TOTAL_ERROR_2BITS (IQ2_S's)",
        ),
    ] {
        let e = llama_rmse(&x, &roundtrip(ty, &x, x.len(), None));
        println!(
            "{:8} llama.cpp total error {e:.6} < {threshold} ({label})",
            ty.name()
        );
        assert!(e < threshold, "{ty}: {e} ≥ {threshold}");
    }
}

#[test]
fn importance_weights_reduce_weighted_error() {
    let cols = 1024;
    let rows = 8;
    let x = gaussian(0x1_4A7, rows * cols);
    // An imatrix-like profile: a few columns matter a lot more than the rest.
    let mut r = SplitMix64::new(0x1_4A8);
    let imp: Vec<f32> = (0..cols)
        .map(|_| {
            let u = r.uniform();
            if u < 0.1 {
                50.0 + 50.0 * r.uniform() as f32
            } else {
                0.1 + r.uniform() as f32
            }
        })
        .collect();
    let werr = |y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .enumerate()
            .map(|(i, (&a, &b))| imp[i % cols] as f64 * (a as f64 - b as f64).powi(2))
            .sum()
    };
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q2K,
        GgmlType::Iq2Xxs,
    ] {
        let plain = werr(&roundtrip(ty, &x, cols, None));
        let weighted = werr(&roundtrip(ty, &x, cols, Some(&imp)));
        println!(
            "{:8} weighted error without imatrix {plain:.4}, with {weighted:.4} ({:.1}%)",
            ty.name(),
            100.0 * (weighted / plain - 1.0)
        );
        assert!(weighted < plain, "{ty}: {weighted} ≥ {plain}");
    }
}

#[test]
fn zero_and_constant_rows_round_trip() {
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q2K,
        GgmlType::Iq2Xxs,
    ] {
        let z = vec![0.0f32; 512];
        assert!(
            roundtrip(ty, &z, 512, None).iter().all(|&v| v == 0.0),
            "{ty} zeros"
        );
        let c = vec![0.75f32; 512];
        let y = roundtrip(ty, &c, 512, Some(&[1.0; 512]));
        let e = rel_rmse(&c, &y);
        assert!(e < 0.35, "{ty} constant row error {e}");
    }
}

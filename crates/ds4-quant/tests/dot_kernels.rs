//! Dot products: every SIMD kernel equals the scalar kernel (bit for bit for
//! the quantized formats; within float rounding for F16/BF16/F32), the scalar
//! kernel equals "dequantize the weights and activations, then an f64 dot"
//! within a stated tolerance, and the matrix×vector entry points agree.

mod common;

use common::*;
use ds4_quant::{
    Activations, DotKernel, GgmlType, KernelPath, available_paths, dequantize, matvec,
    matvec_serial, quantize,
};

const QUANT_TYPES: [GgmlType; 4] = [
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q4K,
    GgmlType::Iq2Xxs,
];
const FLOAT_TYPES: [GgmlType; 3] = [GgmlType::F32, GgmlType::F16, GgmlType::Bf16];

/// Random raw blocks (every code pattern) with finite scales, plus rows from
/// the quantizer, for `rows` rows of `cols`.
fn weight_rows(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let rb = cols / ty.block_size() * ty.type_size();
    let half = rows / 2;
    let mut w = match ty {
        GgmlType::Q8_0 | GgmlType::Q2K | GgmlType::Q4K | GgmlType::Iq2Xxs => {
            let mut b = random_blocks(
                ty.name(),
                seed,
                ty.type_size(),
                half * cols / ty.block_size(),
            );
            // Keep scales moderate so sums stay far from overflow and the
            // comparison with the f64 reference is meaningful.
            let (f16o, _) = scale_offsets(ty.name());
            for blk in b.chunks_exact_mut(ty.type_size()) {
                for &o in f16o {
                    let h = u16::from_le_bytes([blk[o], blk[o + 1]]);
                    let h = (h & 0x83ff) | 0x2c00; // |scale| in [2^-4, 2^-3)
                    blk[o..o + 2].copy_from_slice(&h.to_le_bytes());
                }
            }
            b
        }
        _ => {
            let x = gaussian(seed, half * cols);
            quantize(ty, &x, cols, None).unwrap()
        }
    };
    let x = gaussian(seed ^ 0x55, (rows - half) * cols);
    w.extend(quantize(ty, &x, cols, None).unwrap());
    assert_eq!(w.len(), rows * rb);
    w
}

fn simd_paths() -> Vec<KernelPath> {
    available_paths()
        .into_iter()
        .filter(|p| *p != KernelPath::Scalar)
        .collect()
}

#[test]
fn simd_equals_scalar_exactly_for_quantized_formats() {
    let rows = 64;
    let paths = simd_paths();
    println!("SIMD paths on this machine: {paths:?}");
    // 2048 + 96 columns is 67 Q8_0 blocks and 2816 is 11 super-blocks: both
    // exercise the kernel tails after their 4-block groups.
    for (ty, cols) in QUANT_TYPES
        .into_iter()
        .flat_map(|t| [(t, 2048), (t, 2048 + 96), (t, 2816)])
    {
        if cols % ty.block_size() != 0 {
            continue;
        }
        let w = weight_rows(ty, rows, cols, 0xD07 + ty.id() as u64);
        let scalar = DotKernel::with_path(ty, KernelPath::Scalar).unwrap();
        for (xi, x) in [
            gaussian(0xA1, cols),
            gaussian(0xA2, cols).iter().map(|v| v * 1e-3).collect(),
        ]
        .iter()
        .enumerate()
        {
            let act = scalar.quantize_activations(x).unwrap();
            let mut want = vec![0.0f32; rows];
            scalar
                .matvec_rows(&w, cols, &act, 0..rows, &mut want)
                .unwrap();
            for &p in &paths {
                let k = DotKernel::with_path(ty, p).unwrap();
                let mut got = vec![0.0f32; rows];
                k.matvec_rows(&w, cols, &act, 0..rows, &mut got).unwrap();
                let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                let wb: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(gb, wb, "{ty} {p} vector {xi}");
            }
        }
    }
}

#[test]
fn simd_float_rows_match_scalar_within_rounding() {
    // Different summation order (8-wide FMA lanes vs sequential): allow
    // 1e-5 of Σ|w·x| (f32 epsilon · √n-ish growth for n = 2048, with margin).
    let (rows, cols) = (16, 2048 + 24);
    for ty in FLOAT_TYPES {
        let w = weight_rows(ty, rows, cols, 0xF1);
        let x = gaussian(0xF2, cols);
        let mut wf = vec![0.0f32; rows * cols];
        dequantize(ty, &w, &mut wf).unwrap();
        let scalar = DotKernel::with_path(ty, KernelPath::Scalar).unwrap();
        let act = scalar.quantize_activations(&x).unwrap();
        for &p in &simd_paths() {
            let k = DotKernel::with_path(ty, p).unwrap();
            for r in 0..rows {
                let row = &w[r * w.len() / rows..(r + 1) * w.len() / rows];
                let a = scalar.dot(row, &act).unwrap();
                let b = k.dot(row, &act).unwrap();
                let mag: f32 = wf[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(&x)
                    .map(|(u, v)| (u * v).abs())
                    .sum();
                assert!((a - b).abs() <= 1e-5 * mag, "{ty} {p} row {r}: {a} vs {b}");
            }
        }
    }
}

/// Scalar dot vs f64 dot of the dequantized weights and the dequantized
/// activations: the kernel's integer sums are exact, so the only differences
/// are f32 rounding of per-block products and of the running sum. Tolerance:
/// 1e-5 · Σ|w·x| (f32 epsilon 1.2e-7 times a few ops per block times up to
/// 64 blocks, with margin).
#[test]
fn scalar_dot_equals_dequantized_dot() {
    let (rows, cols) = (32, 4096);
    for ty in QUANT_TYPES.into_iter().chain(FLOAT_TYPES) {
        let w = weight_rows(ty, rows, cols, 0x5CA1 + ty.id() as u64);
        let mut wf = vec![0.0f32; rows * cols];
        dequantize(ty, &w, &mut wf).unwrap();
        let x = gaussian(0xB0, cols);
        let k = DotKernel::with_path(ty, KernelPath::Scalar).unwrap();
        let act = k.quantize_activations(&x).unwrap();
        let xq = act.dequantize();
        let mut y = vec![0.0f32; rows];
        k.matvec_rows(&w, cols, &act, 0..rows, &mut y).unwrap();
        let mut worst = 0.0f64;
        for r in 0..rows {
            let wr = &wf[r * cols..(r + 1) * cols];
            let exact: f64 = wr.iter().zip(&xq).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mag: f64 = wr
                .iter()
                .zip(&xq)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let rel = (y[r] as f64 - exact).abs() / mag.max(f64::MIN_POSITIVE);
            worst = worst.max(rel);
            assert!(
                rel <= 1e-5,
                "{ty} row {r}: {} vs {exact} (rel {rel:e})",
                y[r]
            );
        }
        println!(
            "{:8} scalar vs dequantized f64 dot: worst |Δ|/Σ|w·x| = {worst:.2e}",
            ty.name()
        );
    }
}

/// llama.cpp's dot-product test (test-quantize-fns.cpp): quantize
/// `0.1 + 2cos(i)` as weights and `0.1 + 2cos(i + 1)` as activations, compare
/// with the exact f32 dot, error |Δ|/n below MAX_DOT_PRODUCT_ERROR (0.02) or
/// MAX_DOT_PRODUCT_ERROR_LOWBIT (0.04; Q2_K). llama.cpp skips IQ2_XXS there
/// (it cannot quantize it without an imatrix); with our flat-importance
/// default it measures 0.047, so it is held to 0.06 (the bound that file
/// gives its other 2-bit type without an imatrix, MAX_DOT_PRODUCT_ERROR_ZNQ2).
#[test]
fn llama_cpp_dot_product_error_thresholds() {
    let n = 32 * 128;
    let a: Vec<f32> = (0..n)
        .map(|i| (0.1f64 + 2.0 * ((i as f32).cos()) as f64) as f32)
        .collect();
    let b: Vec<f32> = (0..n)
        .map(|i| (0.1f64 + 2.0 * ((i as f32 + 1.0).cos()) as f64) as f32)
        .collect();
    let exact: f64 = a.iter().zip(&b).map(|(&u, &v)| u as f64 * v as f64).sum();
    for (ty, thr) in [
        (GgmlType::Q8_0, 0.02),
        (GgmlType::Q4K, 0.02),
        (GgmlType::Q2K, 0.04),
        (GgmlType::Iq2Xxs, 0.06),
    ] {
        let w = quantize(ty, &a, n, None).unwrap();
        let mut y = [0.0f32];
        matvec(ty, &w, 1, n, &b, &mut y).unwrap();
        let err = (y[0] as f64 - exact).abs() / n as f64;
        println!("{:8} dot product error {err:.6} < {thr}", ty.name());
        assert!(err < thr, "{ty}: {err}");
    }
}

#[test]
fn matvec_parallel_serial_and_row_ranges_agree() {
    let (rows, cols) = (100, 512);
    for ty in QUANT_TYPES.into_iter().chain(FLOAT_TYPES) {
        let w = weight_rows(ty, rows, cols, 0x3A7);
        let x = gaussian(0x3A8, cols);
        let mut par = vec![0.0f32; rows];
        let mut ser = vec![0.0f32; rows];
        matvec(ty, &w, rows, cols, &x, &mut par).unwrap();
        matvec_serial(ty, &w, rows, cols, &x, &mut ser).unwrap();
        assert_eq!(par, ser, "{ty}");
        let k = DotKernel::new(ty).unwrap();
        let act = k.quantize_activations(&x).unwrap();
        let mut part = vec![0.0f32; 37];
        k.matvec_rows(&w, cols, &act, 50..87, &mut part).unwrap();
        assert_eq!(&part[..], &ser[50..87], "{ty} rows 50..87");
        k.matvec_rows_par(&w, cols, &act, 50..87, &mut part)
            .unwrap();
        assert_eq!(&part[..], &ser[50..87], "{ty} rows 50..87 parallel");
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let k = DotKernel::new(GgmlType::Q2K).unwrap();
    let act = k.quantize_activations(&[0.5; 512]).unwrap();
    let w = vec![0u8; 84 * 2 * 3];
    let mut y = vec![0.0f32; 3];
    assert!(k.matvec(&w, 3, 512, &act, &mut y).is_ok());
    assert!(k.matvec(&w[1..], 3, 512, &act, &mut y).is_err());
    assert!(k.matvec(&w, 3, 500, &act, &mut y).is_err());
    assert!(k.matvec_rows(&w, 512, &act, 2..4, &mut y[..2]).is_err());
    assert!(k.matvec_rows(&w, 512, &act, 0..2, &mut y).is_err());
    let wrong = DotKernel::new(GgmlType::Q8_0)
        .unwrap()
        .quantize_activations(&[0.5; 512])
        .unwrap();
    assert!(k.matvec(&w, 3, 512, &wrong, &mut y).is_err());
    assert!(k.dot(&w[..84], &act).is_err());
    assert!(k.quantize_activations(&[0.0; 100]).is_err());
    assert!(DotKernel::new(GgmlType::I8).is_err());
    assert!(matches!(Activations::F32(vec![]).len(), 0));
}

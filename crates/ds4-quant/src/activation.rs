//! Quantized activation vectors, as ds4's CPU decode builds them.
//!
//! Both formats clamp to [−127, 127]. ds4 clamps to [−128, 127], but with a
//! scale of amax/127 the rounded values never leave [−127, 127] (|x|·id exceeds
//! 127 by a few ulps at most), so the results are the same; the tighter bound is
//! what lets the AVX2 kernels use `maddubs` with a sign trick without the
//! −128·−128 pair overflowing i16.

use crate::quantize::nearest_int;
use crate::{QK_K, QK8_0, QuantError, Result};

/// One Q8_0 activation block: unlike a stored Q8_0 weight block the scale stays
/// f32 (ds4's `quantize_q8_0_activation` keeps `xscale` as float).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0Act {
    pub d: f32,
    pub qs: [i8; QK8_0],
}

/// One Q8_K block (ggml's `block_q8_K`, 292 bytes): scale, 256 values, and the
/// sums of each 16 values that the K-quant dots use for their min terms.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// Quantize `x` to Q8_0 activation blocks (ds4 `quantize_q8_0_activation`):
/// `d = amax/127`, `q = rint(x · (1/d))`.
pub fn quantize_q8_0_activation(x: &[f32]) -> Result<Vec<BlockQ8_0Act>> {
    if !x.len().is_multiple_of(QK8_0) {
        return Err(QuantError::Length {
            what: "Q8_0 activation vector (multiple of 32)",
            expected: x.len().next_multiple_of(QK8_0),
            got: x.len(),
        });
    }
    Ok(x.chunks_exact(QK8_0)
        .map(|xb| {
            let amax = xb
                .iter()
                .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; QK8_0];
            for (q, &v) in qs.iter_mut().zip(xb) {
                *q = nearest_int(v * id).clamp(-127, 127) as i8;
            }
            BlockQ8_0Act { d, qs }
        })
        .collect())
}

/// Quantize `x` to Q8_K blocks (ds4 `ds4_quantize_row_q8_K`, llama.cpp
/// `quantize_row_q8_K_ref`): the element of largest magnitude (first on ties)
/// maps to −127, `d = 1/iscale`.
pub fn quantize_q8_k(x: &[f32]) -> Result<Vec<BlockQ8K>> {
    if !x.len().is_multiple_of(QK_K) {
        return Err(QuantError::Length {
            what: "Q8_K activation vector (multiple of 256)",
            expected: x.len().next_multiple_of(QK_K),
            got: x.len(),
        });
    }
    Ok(x.chunks_exact(QK_K).map(quantize_q8_k_block).collect())
}

fn quantize_q8_k_block(xb: &[f32]) -> BlockQ8K {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let mut blk = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    if amax == 0.0 {
        return blk;
    }
    let iscale = -127.0 / max;
    for (q, &v) in blk.qs.iter_mut().zip(xb) {
        *q = nearest_int(iscale * v).clamp(-127, 127) as i8;
    }
    for (s, q) in blk.bsums.iter_mut().zip(blk.qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| v as i16).sum();
    }
    blk.d = 1.0 / iscale;
    blk
}

/// An activation vector in the form a weight type's dot kernel consumes, as
/// built by [`crate::DotKernel::quantize_activations`]. If you build one by
/// hand, keep quantized values in [−127, 127] (the module docs say why): with
/// −128 the SIMD kernels' i16 pair sums may saturate and differ from scalar.
#[derive(Clone, Debug, PartialEq)]
pub enum Activations {
    F32(Vec<f32>),
    Q8_0(Vec<BlockQ8_0Act>),
    Q8K(Vec<BlockQ8K>),
}

impl Activations {
    /// Number of activation elements.
    pub fn len(&self) -> usize {
        match self {
            Activations::F32(v) => v.len(),
            Activations::Q8_0(v) => v.len() * QK8_0,
            Activations::Q8K(v) => v.len() * QK_K,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values these activations stand for (`d·q` per element).
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Activations::F32(v) => v.clone(),
            Activations::Q8_0(v) => v
                .iter()
                .flat_map(|b| b.qs.iter().map(move |&q| b.d * q as f32))
                .collect(),
            Activations::Q8K(v) => v
                .iter()
                .flat_map(|b| b.qs.iter().map(move |&q| b.d * q as f32))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8k_maps_largest_to_minus_127_and_sums() {
        let mut x = vec![0.0f32; 256];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 100.0) * 0.01;
        }
        x[7] = -3.0; // largest magnitude, negative
        let b = quantize_q8_k(&x).unwrap();
        assert_eq!(b[0].qs[7], -127); // the largest element maps to -127
        assert!((b[0].d - 3.0 / 127.0).abs() < 1e-7);
        for i in 0..16 {
            let s: i32 = b[0].qs[16 * i..16 * i + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(b[0].bsums[i] as i32, s);
        }
        let zero = quantize_q8_k(&[0.0; 256]).unwrap();
        assert_eq!(zero[0].d, 0.0);
        assert!(quantize_q8_k(&[0.0; 100]).is_err());
    }

    #[test]
    fn q8_0_activation_round_half_even() {
        let mut x = vec![0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5; // ties to even → 2
        x[2] = -3.5; // → -4
        let b = quantize_q8_0_activation(&x).unwrap();
        assert_eq!(b[0].d, 1.0);
        assert_eq!(&b[0].qs[..3], &[127, 2, -4]);
    }
}

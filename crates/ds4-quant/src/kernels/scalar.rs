//! Scalar reference kernels: the definition the SIMD kernels must reproduce.
//! Integer block sums are exact; blocks are combined in f32 as
//! `acc += (d_w·d_x)·isum` (Q8_0) or `acc += (d_x·d)·isum − (d_x·dmin)·summs`
//! (K-quants), block by block, in row order.

// These loops walk several index-parallel arrays the way the reference
// algorithms are written; iterator chains would hide that correspondence.
#![allow(clippy::needless_range_loop)]

use crate::activation::{BlockQ8_0Act, BlockQ8K};
use crate::dequant::{q4k_scale_min, rd_u16, rd_u32};
use crate::half::{bf16_to_f32, f16_to_f32};
use crate::tables::{IQ2XXS_GRID, KSIGNS};

/// Q8_0 weights × Q8_0 activations (ds4 `dot_q8_0_row`).
pub fn dot_q8_0(row: &[u8], act: &[BlockQ8_0Act]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in row.chunks_exact(34).zip(act) {
        let mut isum = 0i32;
        for (&w, &x) in b[2..34].iter().zip(&a.qs) {
            isum += (w as i8 as i32) * (x as i32);
        }
        acc += f16_to_f32(rd_u16(b, 0)) * a.d * isum as f32;
    }
    acc
}

/// Σ over sub-blocks of `min_scale · bsum`, the part of a K-quant dot that the
/// per-sub-block minimum contributes.
#[inline]
pub(crate) fn q2k_summs(scales: &[u8], a: &BlockQ8K) -> i32 {
    scales
        .iter()
        .zip(&a.bsums)
        .map(|(&s, &b)| (s >> 4) as i32 * b as i32)
        .sum()
}

/// Q2_K weights × Q8_K activations (ds4 `ds4_vec_dot_q2_K_q8_K`).
pub fn dot_q2_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(84).zip(act) {
        let sc = &b[0..16];
        let qs = &b[16..80];
        let mut isum = 0i32;
        for k in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let s = (sc[8 * k + 2 * j + h] & 0xf) as i32;
                    let mut part = 0i32;
                    for l in 0..16 {
                        let i = 16 * h + l;
                        let q = ((qs[32 * k + i] >> (2 * j)) & 3) as i32;
                        part += q * a.qs[128 * k + 32 * j + i] as i32;
                    }
                    isum += s * part;
                }
            }
        }
        let summs = q2k_summs(sc, a);
        let dall = a.d * f16_to_f32(rd_u16(b, 80));
        let dmin = a.d * f16_to_f32(rd_u16(b, 82));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Σ_j m_j·(bsums[2j] + bsums[2j+1]) for a Q4_K block.
#[inline]
pub(crate) fn q4k_summs(scales: &[u8], a: &BlockQ8K) -> i32 {
    (0..8)
        .map(|j| {
            q4k_scale_min(j, scales).1 as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32)
        })
        .sum()
}

/// Q4_K weights × Q8_K activations (ds4's GPU `dev_dot_q4_K_q8_K_block`
/// formula; the C CPU path has no Q4_K).
pub fn dot_q4_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(144).zip(act) {
        let scales = &b[4..16];
        let qs = &b[16..144];
        let mut isum = 0i32;
        for j in 0..8 {
            let sc = q4k_scale_min(j, scales).0 as i32;
            let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            let mut part = 0i32;
            for l in 0..32 {
                part += ((q[l] >> shift) & 0xf) as i32 * a.qs[32 * j + l] as i32;
            }
            isum += sc * part;
        }
        let summs = q4k_summs(scales, a);
        let dall = a.d * f16_to_f32(rd_u16(b, 0));
        let dmin = a.d * f16_to_f32(rd_u16(b, 2));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// IQ2_XXS weights × Q8_K activations (ds4 `ds4_vec_dot_iq2_xxs_q8_K`): the
/// scale `(0.5+s)/4` is applied as the integer `2s+1` and a final `/8`.
pub fn dot_iq2_xxs(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(66).zip(act) {
        let d = f16_to_f32(rd_u16(b, 0)) * a.d;
        let mut bsum = 0i32;
        for ib in 0..8 {
            let a0 = rd_u32(b, 2 + 8 * ib);
            let a1 = rd_u32(b, 6 + 8 * ib);
            let ls = 2 * (a1 >> 28) as i32 + 1;
            let mut sumi = 0i32;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[((a0 >> (8 * l)) & 0xff) as usize].to_le_bytes();
                let signs = KSIGNS[((a1 >> (7 * l)) & 127) as usize];
                for (j, &g) in grid.iter().enumerate() {
                    let v = g as i32 * a.qs[32 * ib + 8 * l + j] as i32;
                    sumi += if (signs >> j) & 1 == 1 { -v } else { v };
                }
            }
            bsum += sumi * ls;
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

/// F32 weights × f32 activations, summed in element order.
pub fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(4)
        .zip(x)
        .map(|(c, &v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
        .fold(0.0, |a, p| a + p)
}

/// F16 weights × f32 activations with f32 accumulation (ds4 `matvec_f16`).
pub fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, &v)| f16_to_f32(u16::from_le_bytes([c[0], c[1]])) * v)
        .fold(0.0, |a, p| a + p)
}

/// BF16 weights × f32 activations.
pub fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, &v)| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) * v)
        .fold(0.0, |a, p| a + p)
}

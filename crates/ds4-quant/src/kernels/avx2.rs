//! AVX2 (+FMA, F16C) kernels. The public functions are safe: each checks the
//! CPU features (a cached atomic load) and falls back to the scalar kernel, so
//! they can be called on any x86-64 machine.
//!
//! Integer sums use `maddubs` (u8 × i8 → i16 pairs). Its unsigned operand is a
//! weight magnitude (|q8_0| ≤ 128 via the sign trick, 2-bit/4-bit levels, grid
//! bytes ≤ 43) and its signed operand an activation in [−127, 127], so no i16
//! pair can saturate (max 2·128·127 = 32512). The per-block float combination
//! is done lane by lane in scalar order, so results equal the scalar kernels.

use std::arch::x86_64::*;

use super::scalar;
use crate::activation::{BlockQ8_0Act, BlockQ8K};
use crate::dequant::{q4k_scale_min, rd_u16, rd_u32};
use crate::half::f16_to_f32;
use crate::tables::{IQ2XXS_GRID, KSIGNS_EXPANDED};

#[inline]
fn ok() -> bool {
    super::avx2_available()
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

// ------------------------------------------------------------------ Q8_0

pub fn dot_q8_0(row: &[u8], act: &[BlockQ8_0Act]) -> f32 {
    if !ok() {
        return scalar::dot_q8_0(row, act);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_q8_0_impl(row, act) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0_impl(row: &[u8], act: &[BlockQ8_0Act]) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = 0.0f32;
    for (b, a) in row.chunks_exact(34).zip(act) {
        // SAFETY: `b` is 34 bytes, so bytes 2..34 are a valid 32-byte read;
        // `a.qs` is 32 bytes. Unaligned loads.
        let (w, x) = unsafe {
            (
                _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i),
                _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
            )
        };
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        let isum = hsum_i32(_mm256_madd_epi16(p16, ones));
        acc += f16_to_f32(rd_u16(b, 0)) * a.d * isum as f32;
    }
    acc
}

// ------------------------------------------------------------------ Q2_K

pub fn dot_q2_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    if !ok() {
        return scalar::dot_q2_k(row, act);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_q2_k_impl(row, act) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q2_k_impl(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mask3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    // pshufb masks that spread sub-block scale 2t over i16 lanes 0..8 and
    // 2t+1 over lanes 8..16 (index byte, then 0x80 = zero for the high byte).
    let shuf: [__m256i; 8] = std::array::from_fn(|t| {
        let lo = (0x8000 | (2 * t)) as u16 as i16;
        let hi = (0x8000 | (2 * t + 1)) as u16 as i16;
        _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
    });
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(84).zip(act) {
        // SAFETY: the block is 84 bytes: scales at 0..16, quants at 16..80;
        // `a.bsums` is 16 i16 = 32 bytes.
        let (sc_bytes, bits0, bits1, bsums) = unsafe {
            (
                _mm_loadu_si128(b.as_ptr() as *const __m128i),
                _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i),
                _mm256_loadu_si256(b.as_ptr().add(48) as *const __m256i),
                _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i),
            )
        };
        let scales = _mm256_broadcastsi128_si256(_mm_and_si128(sc_bytes, m4));
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc_bytes, 4), m4));
        let summs = hsum_i32(_mm256_madd_epi16(mins, bsums));
        let mut acc = _mm256_setzero_si256();
        for (k, bits) in [bits0, bits1].into_iter().enumerate() {
            // A 16-bit shift moves bits between the bytes of a lane, but the
            // mask keeps bits 0..2 of each byte, which came from that byte.
            let levels = [
                _mm256_and_si256(bits, mask3),
                _mm256_and_si256(_mm256_srli_epi16(bits, 2), mask3),
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), mask3),
                _mm256_and_si256(_mm256_srli_epi16(bits, 6), mask3),
            ];
            for (j, q) in levels.into_iter().enumerate() {
                // SAFETY: 32 activations at 128k + 32j ≤ 224 are in bounds.
                let x = unsafe {
                    _mm256_loadu_si256(a.qs.as_ptr().add(128 * k + 32 * j) as *const __m256i)
                };
                // i16 lanes 0..8 hold elements 0..16 (sub-block 8k+2j), 8..16 the next.
                let p16 = _mm256_maddubs_epi16(q, x);
                let scv = _mm256_shuffle_epi8(scales, shuf[4 * k + j]);
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, scv));
            }
        }
        let isum = hsum_i32(acc);
        let dall = a.d * f16_to_f32(rd_u16(b, 80));
        let dmin = a.d * f16_to_f32(rd_u16(b, 82));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

// ------------------------------------------------------------------ Q4_K

pub fn dot_q4_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    if !ok() {
        return scalar::dot_q4_k(row, act);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_q4_k_impl(row, act) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k_impl(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mask4 = _mm256_set1_epi8(0x0f);
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(144).zip(act) {
        let scales = &b[4..16];
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: bytes 16+32c .. 48+32c lie inside the 144-byte block;
            // activations 64c .. 64c+64 inside the 256.
            let (q4, xl, xh) = unsafe {
                (
                    _mm256_loadu_si256(b.as_ptr().add(16 + 32 * c) as *const __m256i),
                    _mm256_loadu_si256(a.qs.as_ptr().add(64 * c) as *const __m256i),
                    _mm256_loadu_si256(a.qs.as_ptr().add(64 * c + 32) as *const __m256i),
                )
            };
            let lo = _mm256_and_si256(q4, mask4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), mask4);
            let s_lo = q4k_scale_min(2 * c, scales).0 as i16;
            let s_hi = q4k_scale_min(2 * c + 1, scales).0 as i16;
            acc = _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_set1_epi16(s_lo)),
            );
            acc = _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_set1_epi16(s_hi)),
            );
        }
        let isum = hsum_i32(acc);
        let summs = scalar::q4k_summs(scales, a);
        let dall = a.d * f16_to_f32(rd_u16(b, 0));
        let dmin = a.d * f16_to_f32(rd_u16(b, 2));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

// ------------------------------------------------------------------ IQ2_XXS

pub fn dot_iq2_xxs(row: &[u8], act: &[BlockQ8K]) -> f32 {
    if !ok() {
        return scalar::dot_iq2_xxs(row, act);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_iq2_xxs_impl(row, act) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_iq2_xxs_impl(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(66).zip(act) {
        let d = f16_to_f32(rd_u16(b, 0)) * a.d;
        let mut acc = _mm256_setzero_si256();
        for ib in 0..8 {
            let a0 = rd_u32(b, 2 + 8 * ib);
            let a1 = rd_u32(b, 6 + 8 * ib);
            let g = |l: u32| IQ2XXS_GRID[((a0 >> (8 * l)) & 0xff) as usize] as i64;
            let s = |l: u32| KSIGNS_EXPANDED[((a1 >> (7 * l)) & 127) as usize] as i64;
            let grid = _mm256_set_epi64x(g(3), g(2), g(1), g(0));
            let signs = _mm256_set_epi64x(s(3), s(2), s(1), s(0));
            // SAFETY: activations 32ib .. 32ib+32 are inside the 256.
            let x = unsafe { _mm256_loadu_si256(a.qs.as_ptr().add(32 * ib) as *const __m256i) };
            let p16 = _mm256_maddubs_epi16(grid, _mm256_sign_epi8(x, signs));
            let ls = (2 * (a1 >> 28) + 1) as i16;
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(ls)));
        }
        sumf += d * hsum_i32(acc) as f32;
    }
    0.125 * sumf
}

// ------------------------------------------------------------------ float rows

pub fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    if !ok() {
        return scalar::dot_f32(row, x);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_f32_impl(row, x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 4);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8u + 8 ≤ n, within both `row` (4n bytes) and `x`.
            let (w, v) = unsafe {
                (
                    _mm256_loadu_ps(row.as_ptr().add(4 * (i + 8 * u)) as *const f32),
                    _mm256_loadu_ps(x.as_ptr().add(i + 8 * u)),
                )
            };
            *a = _mm256_fmadd_ps(w, v, *a);
        }
        i += 32;
    }
    let mut s = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    s += scalar::dot_f32(&row[4 * i..4 * n], &x[i..n]);
    s
}

pub fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    if !ok() {
        return scalar::dot_f16(row, x);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_f16_impl(row, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 2);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8u + 8 ≤ n, within both `row` (2n bytes) and `x`.
            let (h, v) = unsafe {
                (
                    _mm_loadu_si128(row.as_ptr().add(2 * (i + 8 * u)) as *const __m128i),
                    _mm256_loadu_ps(x.as_ptr().add(i + 8 * u)),
                )
            };
            *a = _mm256_fmadd_ps(_mm256_cvtph_ps(h), v, *a);
        }
        i += 32;
    }
    let mut s = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    s += scalar::dot_f16(&row[2 * i..2 * n], &x[i..n]);
    s
}

pub fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    if !ok() {
        return scalar::dot_bf16(row, x);
    }
    // SAFETY: the required CPU features were checked above.
    unsafe { dot_bf16_impl(row, x) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_bf16_impl(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 2);
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8u + 8 ≤ n, within both `row` (2n bytes) and `x`.
            let (h, v) = unsafe {
                (
                    _mm_loadu_si128(row.as_ptr().add(2 * (i + 8 * u)) as *const __m128i),
                    _mm256_loadu_ps(x.as_ptr().add(i + 8 * u)),
                )
            };
            let w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
            *a = _mm256_fmadd_ps(w, v, *a);
        }
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    s += scalar::dot_bf16(&row[2 * i..2 * n], &x[i..n]);
    s
}

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
use crate::dequant::{rd_u16, rd_u32};
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

/// Σ w·x over one Q8_0 block as 8 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
fn q8_0_block_partials(b: &[u8], a: &BlockQ8_0Act) -> __m256i {
    assert!(b.len() >= 34);
    // SAFETY: `b` has ≥ 34 bytes (asserted), so bytes 2..34 are a valid
    // 32-byte read; `a.qs` is 32 bytes. Unaligned loads.
    let (w, x) = unsafe {
        (
            _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i),
            _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
        )
    };
    // |w| as u8 (−128 → 128) times x·sign(w): the product keeps w·x.
    let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0_impl(row: &[u8], act: &[BlockQ8_0Act]) -> f32 {
    let mut acc = 0.0f32;
    let mut rows4 = row.chunks_exact(4 * 34);
    let mut acts4 = act.chunks_exact(4);
    // Four blocks at a time: one horizontal reduction (hadd tree) for all
    // four integer sums and one F16C conversion for the four weight scales.
    // F16C equals `f16_to_f32` for every non-NaN half. The per-block products
    // (d_w·d_x)·isum are computed lane-wise with the scalar rounding, then added
    // to the accumulator one block at a time, in order, exactly as in scalar.
    for (r, a) in (&mut rows4).zip(&mut acts4) {
        let p0 = q8_0_block_partials(&r[0..34], &a[0]);
        let p1 = q8_0_block_partials(&r[34..68], &a[1]);
        let p2 = q8_0_block_partials(&r[68..102], &a[2]);
        let p3 = q8_0_block_partials(&r[102..136], &a[3]);
        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
        let sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        let dh = _mm_setr_epi16(
            rd_u16(r, 0) as i16,
            rd_u16(r, 34) as i16,
            rd_u16(r, 68) as i16,
            rd_u16(r, 102) as i16,
            0,
            0,
            0,
            0,
        );
        let dw = _mm_cvtph_ps(dh);
        let dx = _mm_setr_ps(a[0].d, a[1].d, a[2].d, a[3].d);
        let prod = _mm_mul_ps(_mm_mul_ps(dw, dx), _mm_cvtepi32_ps(sums));
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` is 4 f32; unaligned store.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), prod) };
        for v in lanes {
            acc += v;
        }
    }
    for (b, a) in rows4.remainder().chunks_exact(34).zip(acts4.remainder()) {
        let isum = hsum_i32(q8_0_block_partials(b, a));
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

/// The integer parts of one Q2_K block: (Σ_i sc_i·Σ q·x, Σ_i m_i·bsum_i), each
/// as 8 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
fn q2_k_block_partials(b: &[u8], a: &BlockQ8K, shuf: &[__m256i; 8]) -> (__m256i, __m256i) {
    assert!(b.len() >= 84);
    let mask3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    // SAFETY: the block has ≥ 84 bytes (asserted): scales at 0..16, quants at
    // 16..80; `a.bsums` is 16 i16 = 32 bytes. Unaligned loads.
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
    let summs = _mm256_madd_epi16(mins, bsums);
    let mut acc = _mm256_setzero_si256();
    for (k, bits) in [bits0, bits1].into_iter().enumerate() {
        // A 16-bit shift moves bits between the bytes of a lane, but the mask
        // keeps bits 0..2 of each byte, which came from that byte.
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
    (acc, summs)
}

/// Horizontal sums of four i32x8 vectors, as [Σv0, Σv1, Σv2, Σv3].
#[inline]
#[target_feature(enable = "avx2")]
fn hsum4_i32(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q2_k_impl(row: &[u8], act: &[BlockQ8K]) -> f32 {
    // pshufb masks that spread sub-block scale 2t over i16 lanes 0..8 and
    // 2t+1 over lanes 8..16 (index byte, then 0x80 = zero for the high byte).
    let shuf: [__m256i; 8] = std::array::from_fn(|t| {
        let lo = (0x8000 | (2 * t)) as u16 as i16;
        let hi = (0x8000 | (2 * t + 1)) as u16 as i16;
        _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
    });
    let mut sumf = 0.0f32;
    let mut rows4 = row.chunks_exact(4 * 84);
    let mut acts4 = act.chunks_exact(4);
    // Four blocks at a time share the horizontal reductions and one F16C
    // conversion of their eight scales (equal to `f16_to_f32` for non-NaN
    // halves); the f32 combination is lane-wise with the scalar rounding and
    // accumulated block by block in order, so the result equals scalar.
    for (r, a) in (&mut rows4).zip(&mut acts4) {
        let (i0, m0) = q2_k_block_partials(&r[0..84], &a[0], &shuf);
        let (i1, m1) = q2_k_block_partials(&r[84..168], &a[1], &shuf);
        let (i2, m2) = q2_k_block_partials(&r[168..252], &a[2], &shuf);
        let (i3, m3) = q2_k_block_partials(&r[252..336], &a[3], &shuf);
        let isum = _mm_cvtepi32_ps(hsum4_i32(i0, i1, i2, i3));
        let summs = _mm_cvtepi32_ps(hsum4_i32(m0, m1, m2, m3));
        let h = |o: usize| rd_u16(r, o) as i16;
        let dmh = _mm_setr_epi16(h(80), h(164), h(248), h(332), h(82), h(166), h(250), h(334));
        let dm = _mm256_cvtph_ps(dmh);
        let d = _mm256_castps256_ps128(dm);
        let dmin = _mm256_extractf128_ps(dm, 1);
        let dx = _mm_setr_ps(a[0].d, a[1].d, a[2].d, a[3].d);
        let dall = _mm_mul_ps(dx, d);
        let dmn = _mm_mul_ps(dx, dmin);
        let v = _mm_sub_ps(_mm_mul_ps(dall, isum), _mm_mul_ps(dmn, summs));
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` is 4 f32; unaligned store.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
        for x in lanes {
            sumf += x;
        }
    }
    for (b, a) in rows4.remainder().chunks_exact(84).zip(acts4.remainder()) {
        let (i, m) = q2_k_block_partials(b, a, &shuf);
        let dall = a.d * f16_to_f32(rd_u16(b, 80));
        let dmin = a.d * f16_to_f32(rd_u16(b, 82));
        sumf += dall * hsum_i32(i) as f32 - dmin * hsum_i32(m) as f32;
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

/// The 8 six-bit scales (bytes 0..8) and mins (bytes 8..16) of a Q4_K block,
/// unpacked from its 12 bytes with word operations (same values as
/// `q4k_scale_min`).
#[inline]
fn q4k_unpack_scales(s: &[u8]) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let (u0, u1, u2) = (rd_u32(s, 0), rd_u32(s, 4), rd_u32(s, 8));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

/// The integer parts of one Q4_K block: (Σ_j sc_j·Σ q·x, Σ_j m_j·(bsums of
/// sub-block j)), as 8 and 4 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
fn q4_k_block_partials(b: &[u8], a: &BlockQ8K) -> (__m256i, __m128i) {
    assert!(b.len() >= 144);
    let mask4 = _mm256_set1_epi8(0x0f);
    let u = q4k_unpack_scales(&b[4..16]);
    let sc0 = u[0].to_le_bytes();
    let sc1 = u[1].to_le_bytes();
    let sc = [
        sc0[0], sc0[1], sc0[2], sc0[3], sc1[0], sc1[1], sc1[2], sc1[3],
    ];
    let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
    // SAFETY: `a.bsums` is 16 i16 = 32 bytes; unaligned loads.
    let (bs_lo, bs_hi) = unsafe {
        (
            _mm_loadu_si128(a.bsums.as_ptr() as *const __m128i),
            _mm_loadu_si128(a.bsums.as_ptr().add(8) as *const __m128i),
        )
    };
    // bsums[2j] + bsums[2j+1] ≤ 2·16·127, so the i16 pair sums cannot overflow.
    let summs = _mm_madd_epi16(mins, _mm_hadd_epi16(bs_lo, bs_hi));
    let mut acc = _mm256_setzero_si256();
    for c in 0..4 {
        // SAFETY: bytes 16+32c .. 48+32c lie inside the ≥144-byte block
        // (asserted); activations 64c .. 64c+64 inside the 256.
        let (q4, xl, xh) = unsafe {
            (
                _mm256_loadu_si256(b.as_ptr().add(16 + 32 * c) as *const __m256i),
                _mm256_loadu_si256(a.qs.as_ptr().add(64 * c) as *const __m256i),
                _mm256_loadu_si256(a.qs.as_ptr().add(64 * c + 32) as *const __m256i),
            )
        };
        let lo = _mm256_and_si256(q4, mask4);
        let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), mask4);
        let p_lo = _mm256_madd_epi16(
            _mm256_maddubs_epi16(lo, xl),
            _mm256_set1_epi16(sc[2 * c] as i16),
        );
        let p_hi = _mm256_madd_epi16(
            _mm256_maddubs_epi16(hi, xh),
            _mm256_set1_epi16(sc[2 * c + 1] as i16),
        );
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(p_lo, p_hi));
    }
    (acc, summs)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k_impl(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    let mut rows4 = row.chunks_exact(4 * 144);
    let mut acts4 = act.chunks_exact(4);
    // Four blocks at a time, combined exactly as in the Q2_K kernel.
    for (r, a) in (&mut rows4).zip(&mut acts4) {
        let (i0, m0) = q4_k_block_partials(&r[0..144], &a[0]);
        let (i1, m1) = q4_k_block_partials(&r[144..288], &a[1]);
        let (i2, m2) = q4_k_block_partials(&r[288..432], &a[2]);
        let (i3, m3) = q4_k_block_partials(&r[432..576], &a[3]);
        let isum = _mm_cvtepi32_ps(hsum4_i32(i0, i1, i2, i3));
        let summs = _mm_cvtepi32_ps(_mm_hadd_epi32(
            _mm_hadd_epi32(m0, m1),
            _mm_hadd_epi32(m2, m3),
        ));
        let h = |o: usize| rd_u16(r, o) as i16;
        let dmh = _mm_setr_epi16(h(0), h(144), h(288), h(432), h(2), h(146), h(290), h(434));
        let dm = _mm256_cvtph_ps(dmh);
        let dx = _mm_setr_ps(a[0].d, a[1].d, a[2].d, a[3].d);
        let dall = _mm_mul_ps(dx, _mm256_castps256_ps128(dm));
        let dmn = _mm_mul_ps(dx, _mm256_extractf128_ps(dm, 1));
        let v = _mm_sub_ps(_mm_mul_ps(dall, isum), _mm_mul_ps(dmn, summs));
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` is 4 f32; unaligned store.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
        for x in lanes {
            sumf += x;
        }
    }
    for (b, a) in rows4.remainder().chunks_exact(144).zip(acts4.remainder()) {
        let (i, m) = q4_k_block_partials(b, a);
        let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
        let m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0b10_11_00_01));
        let dall = a.d * f16_to_f32(rd_u16(b, 0));
        let dmin = a.d * f16_to_f32(rd_u16(b, 2));
        sumf += dall * hsum_i32(i) as f32 - dmin * _mm_cvtsi128_si32(m) as f32;
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

// ------------------------------------------------------------------ AVX-512BW

/// Q2_K with AVX-512BW: both 128-element halves of a block go through one
/// 512-bit vector, halving the shift/mask/maddubs/madd steps. Same integer
/// sums and the same f32 combination as [`dot_q2_k`], hence the same bits.
pub fn dot_q2_k_avx512(row: &[u8], act: &[BlockQ8K]) -> f32 {
    if !super::avx512_available() {
        return dot_q2_k(row, act);
    }
    // SAFETY: the required CPU features were checked above (AVX-512F/BW plus
    // the AVX2/FMA/F16C set the shared code uses).
    unsafe { dot_q2_k_avx512_impl(row, act) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn q2_k_block_partials_512(b: &[u8], a: &BlockQ8K, shuf: &[__m512i; 4]) -> (__m256i, __m256i) {
    assert!(b.len() >= 84);
    let mask3 = _mm512_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    // SAFETY: the block has ≥ 84 bytes (asserted): scales at 0..16, quants at
    // 16..80 (one 64-byte load); `a.bsums` is 32 bytes; `a.qs` 256 bytes.
    let (sc_bytes, bits, bsums) = unsafe {
        (
            _mm_loadu_si128(b.as_ptr() as *const __m128i),
            _mm512_loadu_si512(b.as_ptr().add(16) as *const __m512i),
            _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i),
        )
    };
    let scales = _mm512_broadcast_i32x4(_mm_and_si128(sc_bytes, m4));
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc_bytes, 4), m4));
    let summs = _mm256_madd_epi16(mins, bsums);
    let levels = [
        _mm512_and_si512(bits, mask3),
        _mm512_and_si512(_mm512_srli_epi16(bits, 2), mask3),
        _mm512_and_si512(_mm512_srli_epi16(bits, 4), mask3),
        _mm512_and_si512(_mm512_srli_epi16(bits, 6), mask3),
    ];
    let mut acc = _mm512_setzero_si512();
    for (j, q) in levels.into_iter().enumerate() {
        // SAFETY: activations 32j..32j+32 and 128+32j..160+32j are in bounds.
        let x = unsafe {
            _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256(
                    a.qs.as_ptr().add(32 * j) as *const __m256i
                )),
                _mm256_loadu_si256(a.qs.as_ptr().add(128 + 32 * j) as *const __m256i),
                1,
            )
        };
        let p16 = _mm512_maddubs_epi16(q, x);
        let scv = _mm512_shuffle_epi8(scales, shuf[j]);
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p16, scv));
    }
    let isum = _mm256_add_epi32(
        _mm512_castsi512_si256(acc),
        _mm512_extracti64x4_epi64(acc, 1),
    );
    (isum, summs)
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn dot_q2_k_avx512_impl(row: &[u8], act: &[BlockQ8K]) -> f32 {
    // 128-bit lane L of step j holds 16 elements of sub-block 2j + (L & 1) +
    // 8·(L >> 1); the mask spreads that sub-block's scale over the lane's i16s.
    let shuf: [__m512i; 4] = std::array::from_fn(|j| {
        let m = |sb: usize| _mm_set1_epi16((0x8000 | sb) as u16 as i16);
        _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_set_m128i(m(2 * j + 1), m(2 * j))),
            _mm256_set_m128i(m(9 + 2 * j), m(8 + 2 * j)),
            1,
        )
    });
    let mut sumf = 0.0f32;
    let mut rows4 = row.chunks_exact(4 * 84);
    let mut acts4 = act.chunks_exact(4);
    for (r, a) in (&mut rows4).zip(&mut acts4) {
        let (i0, m0) = q2_k_block_partials_512(&r[0..84], &a[0], &shuf);
        let (i1, m1) = q2_k_block_partials_512(&r[84..168], &a[1], &shuf);
        let (i2, m2) = q2_k_block_partials_512(&r[168..252], &a[2], &shuf);
        let (i3, m3) = q2_k_block_partials_512(&r[252..336], &a[3], &shuf);
        let isum = _mm_cvtepi32_ps(hsum4_i32(i0, i1, i2, i3));
        let summs = _mm_cvtepi32_ps(hsum4_i32(m0, m1, m2, m3));
        let h = |o: usize| rd_u16(r, o) as i16;
        let dm = _mm256_cvtph_ps(_mm_setr_epi16(
            h(80),
            h(164),
            h(248),
            h(332),
            h(82),
            h(166),
            h(250),
            h(334),
        ));
        let dx = _mm_setr_ps(a[0].d, a[1].d, a[2].d, a[3].d);
        let dall = _mm_mul_ps(dx, _mm256_castps256_ps128(dm));
        let dmn = _mm_mul_ps(dx, _mm256_extractf128_ps(dm, 1));
        let v = _mm_sub_ps(_mm_mul_ps(dall, isum), _mm_mul_ps(dmn, summs));
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` is 4 f32; unaligned store.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
        for x in lanes {
            sumf += x;
        }
    }
    for (b, a) in rows4.remainder().chunks_exact(84).zip(acts4.remainder()) {
        let (i, m) = q2_k_block_partials_512(b, a, &shuf);
        let dall = a.d * f16_to_f32(rd_u16(b, 80));
        let dmin = a.d * f16_to_f32(rd_u16(b, 82));
        sumf += dall * hsum_i32(i) as f32 - dmin * hsum_i32(m) as f32;
    }
    sumf
}

//! NEON (aarch64) kernels. NEON is part of the aarch64 baseline, so no run-time
//! check is needed. Block integer sums use widening multiplies (`vmull_s8`,
//! at most 2·128·127 per i16 lane before `vpadalq_s16` widens to i32), and the
//! per-block f32 combination is the scalar one, so results equal the scalar
//! kernels. These compile for aarch64-unknown-linux-gnu but have not been run
//! on an ARM machine by their author; the equality tests in tests/dot_kernels.rs
//! check them wherever they do run.

use std::arch::aarch64::*;

use super::scalar;
use crate::activation::{BlockQ8_0Act, BlockQ8K};
use crate::dequant::{q4k_scale_min, rd_u16, rd_u32};
use crate::half::f16_to_f32;
use crate::tables::{IQ2XXS_GRID, KSIGNS_EXPANDED};

/// Σ a[i]·b[i] over 16 i8 lanes, exactly.
#[inline]
fn dot16(a: int8x16_t, b: int8x16_t) -> i32 {
    // SAFETY: NEON is always available on aarch64; these are register ops.
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vaddvq_s32(vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)))
    }
}

#[inline]
fn load16(p: &[u8]) -> int8x16_t {
    assert!(p.len() >= 16);
    // SAFETY: at least 16 readable bytes (checked above); unaligned load.
    unsafe { vld1q_s8(p.as_ptr() as *const i8) }
}

#[inline]
fn load16i(p: &[i8]) -> int8x16_t {
    assert!(p.len() >= 16);
    // SAFETY: at least 16 readable bytes (checked above); unaligned load.
    unsafe { vld1q_s8(p.as_ptr()) }
}

pub fn dot_q8_0(row: &[u8], act: &[BlockQ8_0Act]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in row.chunks_exact(34).zip(act) {
        let isum = dot16(load16(&b[2..18]), load16i(&a.qs[0..16]))
            + dot16(load16(&b[18..34]), load16i(&a.qs[16..32]));
        acc += f16_to_f32(rd_u16(b, 0)) * a.d * isum as f32;
    }
    acc
}

pub fn dot_q2_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(84).zip(act) {
        let sc = &b[0..16];
        let mut isum = 0i32;
        for k in 0..2 {
            for h in 0..2 {
                let bits = load16(&b[16 + 32 * k + 16 * h..]);
                // SAFETY: register-only NEON ops.
                let levels: [int8x16_t; 4] = unsafe {
                    let m = vdupq_n_s8(3);
                    [
                        vandq_s8(bits, m),
                        vandq_s8(
                            vreinterpretq_s8_u8(vshrq_n_u8(vreinterpretq_u8_s8(bits), 2)),
                            m,
                        ),
                        vandq_s8(
                            vreinterpretq_s8_u8(vshrq_n_u8(vreinterpretq_u8_s8(bits), 4)),
                            m,
                        ),
                        vandq_s8(
                            vreinterpretq_s8_u8(vshrq_n_u8(vreinterpretq_u8_s8(bits), 6)),
                            m,
                        ),
                    ]
                };
                for (j, q) in levels.into_iter().enumerate() {
                    let off = 128 * k + 32 * j + 16 * h;
                    let s = (sc[8 * k + 2 * j + h] & 0xf) as i32;
                    isum += s * dot16(q, load16i(&a.qs[off..off + 16]));
                }
            }
        }
        let summs = scalar::q2k_summs(sc, a);
        let dall = a.d * f16_to_f32(rd_u16(b, 80));
        let dmin = a.d * f16_to_f32(rd_u16(b, 82));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

pub fn dot_q4_k(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(144).zip(act) {
        let scales = &b[4..16];
        let mut isum = 0i32;
        for c in 0..4 {
            let (s_lo, s_hi) = (
                q4k_scale_min(2 * c, scales).0 as i32,
                q4k_scale_min(2 * c + 1, scales).0 as i32,
            );
            let (mut lo_sum, mut hi_sum) = (0i32, 0i32);
            for h in 0..2 {
                let q = load16(&b[16 + 32 * c + 16 * h..]);
                // SAFETY: register-only NEON ops.
                let (lo, hi) = unsafe {
                    let u = vreinterpretq_u8_s8(q);
                    (
                        vreinterpretq_s8_u8(vandq_u8(u, vdupq_n_u8(0x0f))),
                        vreinterpretq_s8_u8(vshrq_n_u8(u, 4)),
                    )
                };
                let o = 64 * c + 16 * h;
                lo_sum += dot16(lo, load16i(&a.qs[o..o + 16]));
                hi_sum += dot16(hi, load16i(&a.qs[o + 32..o + 48]));
            }
            isum += s_lo * lo_sum + s_hi * hi_sum;
        }
        let summs = scalar::q4k_summs(scales, a);
        let dall = a.d * f16_to_f32(rd_u16(b, 0));
        let dmin = a.d * f16_to_f32(rd_u16(b, 2));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

pub fn dot_iq2_xxs(row: &[u8], act: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, a) in row.chunks_exact(66).zip(act) {
        let d = f16_to_f32(rd_u16(b, 0)) * a.d;
        let mut bsum = 0i32;
        for ib in 0..8 {
            let a0 = rd_u32(b, 2 + 8 * ib);
            let a1 = rd_u32(b, 6 + 8 * ib);
            let mut sumi = 0i32;
            for pair in 0..2 {
                let l0 = 2 * pair;
                let g0 = IQ2XXS_GRID[((a0 >> (8 * l0)) & 0xff) as usize];
                let g1 = IQ2XXS_GRID[((a0 >> (8 * (l0 + 1))) & 0xff) as usize];
                let s0 = KSIGNS_EXPANDED[((a1 >> (7 * l0)) & 127) as usize];
                let s1 = KSIGNS_EXPANDED[((a1 >> (7 * (l0 + 1))) & 127) as usize];
                let o = 32 * ib + 16 * pair;
                // SAFETY: register-only NEON ops. Grid bytes ≤ 43 fit i8; the
                // sign bytes are ±1, and activations are in [−127, 127], so the
                // i8 product x·sign cannot overflow.
                let (g, x) = unsafe {
                    let g = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(g0), vcreate_u64(g1)));
                    let s = vreinterpretq_s8_u64(vcombine_u64(vcreate_u64(s0), vcreate_u64(s1)));
                    (g, vmulq_s8(load16i(&a.qs[o..o + 16]), s))
                };
                sumi += dot16(g, x);
            }
            bsum += sumi * (2 * (a1 >> 28) as i32 + 1);
        }
        sumf += d * bsum as f32;
    }
    0.125 * sumf
}

pub fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(row.len() / 4);
    let mut i = 0;
    // SAFETY: register-only NEON ops; every load reads 4 f32 at i + 4u + 4 ≤ n,
    // inside both `row` (4n bytes) and `x`.
    let mut s = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                let w = vld1q_f32(row.as_ptr().add(4 * (i + 4 * u)) as *const f32);
                let v = vld1q_f32(x.as_ptr().add(i + 4 * u));
                *a = vfmaq_f32(*a, w, v);
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ))
    };
    s += scalar::dot_f32(&row[4 * i..4 * n], &x[i..n]);
    s
}

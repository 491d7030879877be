//! Dequantization: blocks → f32.
//!
//! The arithmetic is written in the same order as llama.cpp's
//! `dequantize_row_*` and the `gguf` package (e.g. Q2_K is `(d·sc)·q − dmin·m`,
//! IQ2_XXS is `((d·(0.5+s))·0.25)·grid·sign`) because a different association
//! changes the last bit; the fixture test checks this on 10,000+ blocks a type.

use crate::half::{bf16_to_f32, f16_to_f32};
use crate::tables::{IQ2XXS_GRID, KSIGNS};
use crate::{GgmlType, QK_K, QK8_0, QuantError, Result};

#[inline]
pub(crate) fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Check that `bytes` holds exactly `n` elements of `ty`; return the block count.
pub(crate) fn check_len(ty: GgmlType, bytes: usize, n: usize, what: &'static str) -> Result<usize> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            elements: n,
            block: bs,
        });
    }
    let nb = n / bs;
    let expected = nb * ty.type_size();
    if bytes != expected {
        return Err(QuantError::ByteLength {
            ty,
            what,
            expected,
            got: bytes,
        });
    }
    Ok(nb)
}

/// Dequantize `src` (a whole number of `ty` blocks) into `dst`; `dst.len()` is
/// the element count. Supports F32, F16, BF16, I32 (converted to f32 by value),
/// Q8_0, Q2_K, Q4_K, IQ2_XXS and Q8_K.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_len(ty, src.len(), dst.len(), "source")?;
    match ty {
        GgmlType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::I32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
            }
        }
        GgmlType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::Bf16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in dst.chunks_exact_mut(QK8_0).zip(src.chunks_exact(34)) {
                dequant_q8_0_block(b, y);
            }
        }
        GgmlType::Q2K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(84)) {
                dequant_q2_k_block(b, y);
            }
        }
        GgmlType::Q4K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(144)) {
                dequant_q4_k_block(b, y);
            }
        }
        GgmlType::Iq2Xxs => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(66)) {
                dequant_iq2_xxs_block(b, y);
            }
        }
        GgmlType::Q8K => {
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(292)) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for (o, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
                    *o = d * (q as i8) as f32;
                }
            }
        }
        other => {
            return Err(QuantError::Unsupported {
                ty: other,
                op: "dequantize",
            });
        }
    }
    Ok(())
}

/// Q8_0 block: `f16 d; i8 q[32]`.
#[inline]
pub(crate) fn dequant_q8_0_block(b: &[u8], y: &mut [f32]) {
    let d = f16_to_f32(rd_u16(b, 0));
    for (o, &q) in y.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

/// Q2_K block: `u8 scales[16]; u8 qs[64]; f16 d; f16 dmin`. Element
/// `128k + 32j + l` takes bits `2j..2j+2` of `qs[32k + l]`; its sub-block of 16
/// is `(128k + 32j + l) / 16`.
#[inline]
pub(crate) fn dequant_q2_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_to_f32(rd_u16(b, 80));
    let dmin = f16_to_f32(rd_u16(b, 82));
    let scales = &b[0..16];
    let qs = &b[16..80];
    for (e, o) in y.iter_mut().enumerate() {
        let (k, r) = (e / 128, e % 128);
        let (j, l) = (r / 32, r % 32);
        let q = (qs[32 * k + l] >> (2 * j)) & 3;
        let sc = scales[e / 16];
        let dl = d * (sc & 0xf) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *o = dl * q as f32 - ml;
    }
}

/// The 6-bit scale and min of Q4_K sub-block `j` (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K block: `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]`. Sub-block `j` of
/// 32 uses the low nibbles of `qs[32(j/2)..]` when `j` is even, the high ones
/// when odd.
#[inline]
pub(crate) fn dequant_q4_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_to_f32(rd_u16(b, 0));
    let dmin = f16_to_f32(rd_u16(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..8 {
        let (sc, m) = q4k_scale_min(j, scales);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = 4 * (j % 2);
        for (l, o) in y[32 * j..32 * j + 32].iter_mut().enumerate() {
            *o = d1 * ((q[l] >> shift) & 0xf) as f32 - m1;
        }
    }
}

/// IQ2_XXS block: `f16 d; u16 qs[32]`, 8 sub-blocks of 32 elements, each two
/// u32: four grid indices, then four 7-bit sign indices and a 4-bit scale.
#[inline]
pub(crate) fn dequant_iq2_xxs_block(b: &[u8], y: &mut [f32]) {
    let d = f16_to_f32(rd_u16(b, 0));
    for ib in 0..8 {
        let a0 = rd_u32(b, 2 + 8 * ib);
        let a1 = rd_u32(b, 2 + 8 * ib + 4);
        let db = d * (0.5 + (a1 >> 28) as f32) * 0.25;
        for l in 0..4 {
            let grid = IQ2XXS_GRID[((a0 >> (8 * l)) & 0xff) as usize].to_le_bytes();
            let signs = KSIGNS[((a1 >> (7 * l)) & 127) as usize];
            for (j, &g) in grid.iter().enumerate() {
                let s = if (signs >> j) & 1 == 1 { -1.0 } else { 1.0 };
                y[32 * ib + 8 * l + j] = db * g as f32 * s;
            }
        }
    }
}

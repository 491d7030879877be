//! Lossless packing of stored KV rows (the disk cache's compact payload).
//!
//! With the model's quantization simulations on (spec §3.9), every stored row is
//! already on a small grid:
//! * a KV / compressed row's non-RoPE dims are E4M3FN codes times a power-of-two
//!   scale per block of 64, then rounded to f16 (which keeps them: a 4-bit
//!   significand survives f16, and a value that f16 flushes lands on a coarser
//!   grid that is still an E4M3 code at a smaller scale); its RoPE dims are f16;
//! * an indexer row is E2M1 codes times a power-of-two scale per block of 32.
//!
//! So a row is stored as codes plus one E8M0 exponent byte per block. The scale
//! is re-derived from the stored values (`2^ceil(log2(amax/qmax))`), not the
//! pre-rounding amax the model used: any power of two that puts every value on
//! the grid decodes to the same bits. Every row is checked by decoding it before
//! it is written; a row that does not round-trip bit for bit (simulations off, a
//! NaN) is stored as f16 when that is exact, else as f32. One tag byte per row
//! says which.

use ds4_quant::microfloat::{E2M1, E4M3FN, e8m0_to_f32};

pub const TAG_PACKED: u8 = 0;
pub const TAG_F16: u8 = 1;
pub const TAG_F32: u8 = 2;

/// Block sizes of the simulations (`qat::fp8_kv_inplace`, `qat::fp4_act_inplace`).
pub const KV_BLOCK: usize = 64;
pub const INDEX_BLOCK: usize = 32;
const E4M3_MAX: f32 = 448.0;
const E2M1_MAX: f32 = 6.0;

/// Which grid a row lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// E4M3 blocks of 64 over the first `n_nope` dims, f16 for the rest.
    Kv { n_nope: usize },
    /// E2M1 blocks of 32 over the whole row.
    Indexer,
}

/// Bytes of a packed row of `width` values (without the tag).
pub fn packed_len(kind: RowKind, width: usize) -> usize {
    match kind {
        RowKind::Kv { n_nope } => n_nope.div_ceil(KV_BLOCK) + n_nope + 2 * (width - n_nope),
        RowKind::Indexer => width.div_ceil(INDEX_BLOCK) + width.div_ceil(2),
    }
}

/// Bytes a row with `tag` takes after its tag byte.
pub fn body_len(kind: RowKind, width: usize, tag: u8) -> Option<usize> {
    match tag {
        TAG_PACKED => Some(packed_len(kind, width)),
        TAG_F16 => Some(2 * width),
        TAG_F32 => Some(4 * width),
        _ => None,
    }
}

/// The exact E4M3FN code of `w`, if `w` is one.
fn e4m3_code(w: f32) -> Option<u8> {
    let sign = if w.is_sign_negative() { 0x80u8 } else { 0 };
    let a = w.abs();
    if a == 0.0 {
        return Some(sign);
    }
    if a.is_nan() || a > E4M3_MAX {
        return None;
    }
    if a < (-6f32).exp2() {
        let m = a * 512.0;
        return (m.fract() == 0.0 && m < 8.0).then_some(sign | m as u8);
    }
    let bits = a.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let mant = bits & 0x7f_ffff;
    if mant & ((1 << 20) - 1) != 0 {
        return None;
    }
    let code = (((e + 7) as u8) << 3) | (mant >> 20) as u8;
    (code != 0x7f).then_some(sign | code)
}

/// The exact E2M1 nibble of `w`, if `w` is one.
fn e2m1_code(w: f32) -> Option<u8> {
    let sign = if w.is_sign_negative() { 8u8 } else { 0 };
    E2M1[..8]
        .iter()
        .position(|&g| g == w.abs())
        .map(|i| sign | i as u8)
}

/// The biased exponent of the smallest power of two `s` with `amax / s <= qmax`.
fn block_exponent(amax: f32, qmax: f32) -> Option<u8> {
    if amax == 0.0 {
        return Some(127);
    }
    if !amax.is_finite() {
        return None;
    }
    let e = (amax / qmax).log2().ceil() as i32;
    let b = e + 127;
    (1..=254).contains(&b).then_some(b as u8)
}

/// Packs one block into `codes` (one byte per value for E4M3, raw nibbles for
/// E2M1), returning the exponent byte, or `None` if the block is off the grid.
fn pack_block(
    block: &[f32],
    qmax: f32,
    code_of: fn(f32) -> Option<u8>,
    codes: &mut Vec<u8>,
) -> Option<u8> {
    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let b = block_exponent(amax, qmax)?;
    let inv = e8m0_to_f32(254 - b); // 2^(127 − b)
    let scale = e8m0_to_f32(b);
    for &v in block {
        let c = code_of(v * inv)?;
        codes.push(c);
        let back = if qmax == E4M3_MAX {
            E4M3FN[c as usize]
        } else {
            E2M1[c as usize]
        } * scale;
        if back.to_bits() != v.to_bits() {
            return None;
        }
    }
    Some(b)
}

fn pack_row(row: &[f32], kind: RowKind) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(packed_len(kind, row.len()));
    let mut codes = Vec::with_capacity(KV_BLOCK);
    match kind {
        RowKind::Kv { n_nope } => {
            if n_nope > row.len() {
                return None;
            }
            let (nope, rope) = row.split_at(n_nope);
            for block in nope.chunks(KV_BLOCK) {
                codes.clear();
                out.push(pack_block(block, E4M3_MAX, e4m3_code, &mut codes)?);
                out.extend_from_slice(&codes);
            }
            for &v in rope {
                let h = half::f16::from_f32(v);
                if h.to_f32().to_bits() != v.to_bits() {
                    return None;
                }
                out.extend_from_slice(&h.to_bits().to_le_bytes());
            }
        }
        RowKind::Indexer => {
            for block in row.chunks(INDEX_BLOCK) {
                codes.clear();
                out.push(pack_block(block, E2M1_MAX, e2m1_code, &mut codes)?);
                for pair in codes.chunks(2) {
                    out.push(pair[0] | pair.get(1).map_or(0, |h| h << 4));
                }
            }
        }
    }
    Some(out)
}

/// Appends `row` as a tag byte and its body, in the smallest form that decodes
/// to exactly the same bits. Returns the tag used.
pub fn encode_row(row: &[f32], kind: RowKind, out: &mut Vec<u8>) -> u8 {
    if let Some(p) = pack_row(row, kind) {
        out.push(TAG_PACKED);
        out.extend_from_slice(&p);
        return TAG_PACKED;
    }
    let halves: Option<Vec<u16>> = row
        .iter()
        .map(|&v| {
            let h = half::f16::from_f32(v);
            (h.to_f32().to_bits() == v.to_bits()).then_some(h.to_bits())
        })
        .collect();
    match halves {
        Some(h) => {
            out.push(TAG_F16);
            for v in h {
                out.extend_from_slice(&v.to_le_bytes());
            }
            TAG_F16
        }
        None => {
            out.push(TAG_F32);
            for v in row {
                out.extend_from_slice(&v.to_le_bytes());
            }
            TAG_F32
        }
    }
}

/// Decodes the body of a row of `width` values written with `tag`; `body` holds
/// exactly [`body_len`] bytes. Returns `None` for an unknown tag or a bad length.
pub fn decode_row(
    body: &[u8],
    tag: u8,
    kind: RowKind,
    width: usize,
    out: &mut Vec<f32>,
) -> Option<()> {
    if body.len() != body_len(kind, width, tag)? {
        return None;
    }
    match tag {
        TAG_F16 => out.extend(
            body.chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        TAG_F32 => out.extend(
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        _ => match kind {
            RowKind::Kv { n_nope } => {
                let mut at = 0;
                let mut left = n_nope;
                while left > 0 {
                    let n = left.min(KV_BLOCK);
                    let scale = e8m0_to_f32(body[at]);
                    out.extend(
                        body[at + 1..at + 1 + n]
                            .iter()
                            .map(|&c| E4M3FN[c as usize] * scale),
                    );
                    at += 1 + n;
                    left -= n;
                }
                out.extend(
                    body[at..]
                        .chunks_exact(2)
                        .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
                );
            }
            RowKind::Indexer => {
                let mut at = 0;
                let mut left = width;
                while left > 0 {
                    let n = left.min(INDEX_BLOCK);
                    let scale = e8m0_to_f32(body[at]);
                    let bytes = &body[at + 1..at + 1 + n.div_ceil(2)];
                    for i in 0..n {
                        let nib = (bytes[i / 2] >> (4 * (i % 2))) & 0x0f;
                        out.push(E2M1[nib as usize] * scale);
                    }
                    at += 1 + n.div_ceil(2);
                    left -= n;
                }
            }
        },
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qat;

    fn splitmix(s: &mut u64) -> u64 {
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Rows over many magnitudes (1e-9 .. 1e3), with zeros and negative zeros.
    fn random_row(width: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mag = 10f32.powf((splitmix(&mut s) % 13) as f32 - 9.0);
        (0..width)
            .map(|_| match splitmix(&mut s) % 29 {
                0 => 0.0,
                1 => -0.0,
                _ => ((splitmix(&mut s) >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * mag,
            })
            .collect()
    }

    fn round_trip(row: &[f32], kind: RowKind) -> u8 {
        let mut buf = Vec::new();
        let tag = encode_row(row, kind, &mut buf);
        assert_eq!(buf.len(), 1 + body_len(kind, row.len(), tag).unwrap());
        let mut back = Vec::new();
        decode_row(&buf[1..], buf[0], kind, row.len(), &mut back).unwrap();
        let a: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = back.iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "tag {tag}");
        tag
    }

    #[test]
    fn simulated_kv_rows_pack_and_restore_bit_exactly() {
        // Flash's head (512 = 448 + 64) and a tiny one with a partial block.
        for (width, n_nope) in [(512, 448), (64, 40), (128, 64)] {
            for seed in 0..400 {
                let mut row = random_row(width, seed);
                qat::fp8_kv_inplace(&mut row[..n_nope]);
                qat::f16_round_inplace(&mut row);
                assert_eq!(
                    round_trip(&row, RowKind::Kv { n_nope }),
                    TAG_PACKED,
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn simulated_indexer_rows_pack_and_restore_bit_exactly() {
        let mut packed = 0;
        for width in [128, 64, 48] {
            for seed in 0..400 {
                let mut row = random_row(width, seed);
                if width.is_power_of_two() {
                    qat::indexer_qat_inplace(&mut row);
                } else {
                    qat::fp4_act_inplace(&mut row);
                }
                qat::f16_round_inplace(&mut row);
                if round_trip(&row, RowKind::Indexer) == TAG_PACKED {
                    packed += 1;
                }
            }
        }
        // Only rows whose values f16 flushes below its subnormals can fall off the
        // grid; none of these magnitudes do.
        assert_eq!(packed, 1200);
    }

    #[test]
    fn rows_off_the_grid_fall_back_exactly() {
        let mut f16_rows = 0;
        for seed in 0..200 {
            let mut row = random_row(512, seed);
            assert_ne!(round_trip(&row, RowKind::Kv { n_nope: 448 }), TAG_PACKED);
            qat::f16_round_inplace(&mut row);
            // f16 values: stored as f16, or packed where f16 flushed them onto
            // an fp8 grid (the tiniest magnitudes).
            match round_trip(&row, RowKind::Kv { n_nope: 448 }) {
                TAG_F16 => f16_rows += 1,
                tag => assert_eq!(tag, TAG_PACKED, "seed {seed}"),
            }
        }
        assert!(f16_rows > 150, "{f16_rows}");
        let odd = vec![f32::NAN, f32::INFINITY, -1e30, 1e-40, 3.0];
        assert_eq!(round_trip(&odd, RowKind::Indexer), TAG_F32);
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(packed_len(RowKind::Kv { n_nope: 448 }, 512), 7 + 448 + 128);
        assert_eq!(packed_len(RowKind::Indexer, 128), 4 + 64);
        assert!(decode_row(&[0; 10], 7, RowKind::Indexer, 128, &mut Vec::new()).is_none());
        assert!(decode_row(&[0; 10], TAG_PACKED, RowKind::Indexer, 128, &mut Vec::new()).is_none());
    }
}

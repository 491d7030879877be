//! IEEE half and bfloat16 conversions.
//!
//! f16 → f32 is exact for every finite value; NaNs keep their payload
//! (`mantissa << 13`) and quiet bit as stored, which is what NumPy (and hence
//! the `gguf` package) does. Hardware F16C would set the quiet bit on a
//! signalling NaN instead; no weight scale in a valid file is a NaN, so the SIMD
//! kernels may use F16C, while dequantization goes through this function so that
//! the output matches the reference bit for bit.

/// Convert IEEE binary16 bits to f32.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: normalise. The value is man · 2^-24; with the leading
            // one at bit position p (0..=9) the f32 exponent is p - 24.
            let p = 31 - man.leading_zeros();
            let e = 127 + p - 24;
            sign | (e << 23) | ((man << (23 - p)) & 0x7f_ffff)
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// Convert f32 to IEEE binary16 bits, rounding to nearest even (what ggml's
/// `GGML_FP32_TO_FP16` does through F16C or its software fallback).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let abs = b & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        // NaN: keep it a NaN (quiet), keep the top payload bits.
        return sign | 0x7e00 | ((abs >> 13) & 0x1ff) as u16;
    }
    if abs >= 0x477f_f000 {
        // ≥ 65520 rounds to infinity (65504 is odd-mantissa, so the tie goes up).
        return sign | 0x7c00;
    }
    if abs < 0x3880_0000 {
        // Below 2^-14: the result is subnormal (or zero). Units of 2^-24.
        if abs <= 0x3300_0000 {
            // ≤ 2^-25: rounds to zero (2^-25 itself is a tie to even 0).
            return sign;
        }
        let e = (abs >> 23) as i32; // biased, 102..=112
        let man = (abs & 0x7f_ffff) | 0x80_0000;
        // value = man · 2^(e-127-23); in units of 2^-24 → shift right by (126 - e).
        let shift = (126 - e) as u32; // 14..=24
        let q = man >> shift;
        let rem = man & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        let q = if rem > half || (rem == half && (q & 1) == 1) {
            q + 1
        } else {
            q
        };
        return sign | q as u16;
    }
    // Normal range: rebias the exponent, round the 13 dropped mantissa bits;
    // a carry out of the mantissa correctly bumps the exponent.
    let v = abs - ((127 - 15) << 23);
    let q = v >> 13;
    let rem = v & 0x1fff;
    let q = if rem > 0x1000 || (rem == 0x1000 && (q & 1) == 1) {
        q + 1
    } else {
        q
    };
    sign | q as u16
}

/// Convert bfloat16 bits to f32 (exact: bf16 is the top half of an f32).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_exhaustive() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "{h:#06x} -> {f}");
        }
    }

    #[test]
    fn f32_to_f16_rounding() {
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        // smallest subnormal 2^-24, and ties at 2^-25 (→0) and 3·2^-25 (→2·2^-24).
        assert_eq!(f32_to_f16(2f32.powi(-24)), 1);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(3.0 * 2f32.powi(-25)), 2);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie to even
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        // Midpoints between adjacent halves must round to even for all normals.
        for h in 0x0400u16..0x7bff {
            let a = f16_to_f32(h) as f64;
            let b = f16_to_f32(h + 1) as f64;
            let mid = ((a + b) / 2.0) as f32;
            let expect = if h & 1 == 0 { h } else { h + 1 };
            assert_eq!(f32_to_f16(mid), expect, "{h:#x}");
        }
    }
}

//! The micro-float formats of the official DeepSeek V4 checkpoint (spec §2.5, §3.9),
//! decoded: the converter and the engine's checkpoint reader share these tables.
//!
//! * FP8 E4M3FN weights: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
//!   infinities, `S.1111.111` is NaN, max ±448.
//! * E8M0 scales: a bare biased exponent, value `2^(e − 127)`; `0xFF` is NaN.
//!   `e = 0` is `2^−127`, below f32's normal range but exact as a subnormal.
//! * FP4 E2M1 experts: 1 sign, 2 exponent (bias 1), 1 mantissa bit, values
//!   {0, .5, 1, 1.5, 2, 3, 4, 6}; packed two per byte, low nibble first.

/// All 256 E4M3FN codes as f32, built from the bit fields at compile time.
pub const E4M3FN: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut c = 0;
    while c < 256 {
        let mag = c & 0x7f;
        let e = (mag >> 3) as i32;
        let m = (mag & 7) as f32;
        let v = if mag == 0x7f {
            f32::NAN
        } else if e == 0 {
            // Subnormal: m · 2^−9 (= m/8 · 2^(1−7)).
            m * (1.0 / 512.0)
        } else {
            (1.0 + m / 8.0) * pow2(e - 7)
        };
        t[c] = if c & 0x80 != 0 { -v } else { v };
        c += 1;
    }
    t
};

/// The 16 E2M1 codes (index = nibble). Code 8 is −0, as the format defines and
/// PyTorch decodes it; the official table writes it as 0.0, which compares equal.
pub const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

const fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

#[inline]
pub fn e4m3fn_to_f32(code: u8) -> f32 {
    E4M3FN[code as usize]
}

#[inline]
pub fn e2m1_to_f32(nibble: u8) -> f32 {
    E2M1[(nibble & 0x0f) as usize]
}

/// `2^(code − 127)`; code 0 is the subnormal `2^−127`, 0xFF is NaN.
#[inline]
pub fn e8m0_to_f32(code: u8) -> f32 {
    match code {
        0xff => f32::NAN,
        0 => f32::from_bits(0x0040_0000),
        e => f32::from_bits(u32::from(e) << 23),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landmarks() {
        assert_eq!(e4m3fn_to_f32(0x7e), 448.0);
        assert_eq!(e4m3fn_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3fn_to_f32(0x38), 1.0);
        assert_eq!(e4m3fn_to_f32(0xb8), -1.0);
        assert!(e4m3fn_to_f32(0xff).is_nan() && e4m3fn_to_f32(0x7f).is_nan());
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert_eq!(e2m1_to_f32(0x7), 6.0);
        assert_eq!(e2m1_to_f32(0xf), -6.0);
        assert!(e2m1_to_f32(0x8).is_sign_negative());
    }
}

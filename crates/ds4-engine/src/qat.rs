//! The model's own quantization simulations (spec §3.9): FP8 E4M3 on the non-RoPE
//! dims of KV rows, Hadamard + FP4 E2M1 on indexer inputs, and f16 rounding of stored
//! rows. They are part of the model's math (it was trained with them); only the
//! `no_qat_sim` diagnostic switch turns them off, to compare with transformers.

/// Largest finite E4M3FN magnitude.
const E4M3_MAX: f32 = 448.0;
/// E2M1 magnitudes, index order.
const E2M1: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// Rounds to the nearest E4M3FN value, ties to the even code; `|x| <= 448`.
pub fn e4m3_round(x: f32) -> f32 {
    let a = x.abs();
    if a == 0.0 {
        return x;
    }
    let exp = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
    // 3 mantissa bits: the step inside a binade is 2^(e−3); below the smallest normal
    // (2^−6) the subnormal step is a constant 2^−9.
    let step = if exp < -6 {
        (-9f32).exp2()
    } else {
        ((exp - 3) as f32).exp2()
    };
    let q = (a / step).round_ties_even() * step;
    q.min(E4M3_MAX).copysign(x)
}

/// Rounds to the nearest E2M1 value, ties to the even index; `|x| <= 6`.
pub fn e2m1_round(x: f32) -> f32 {
    let a = x.abs();
    let mut best = 0;
    for (i, &g) in E2M1.iter().enumerate().skip(1) {
        let (d_best, d_i) = ((a - E2M1[best]).abs(), (a - g).abs());
        if d_i < d_best || (d_i == d_best && i % 2 == 0) {
            best = i;
        }
    }
    E2M1[best].copysign(x)
}

/// Block-scaled fake quantization: per block, `s = 2^ceil(log2(amax/qmax))`,
/// `v ← round(clamp(v/s, ±qmax))·s`.
fn block_quantize(x: &mut [f32], block: usize, qmax: f32, amax_floor: f32, round: fn(f32) -> f32) {
    for b in x.chunks_mut(block) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(amax_floor);
        let s = (amax / qmax).log2().ceil().exp2();
        for v in b {
            *v = round((*v / s).clamp(-qmax, qmax)) * s;
        }
    }
}

/// `fp8_sim` on a KV or compressed row's non-RoPE dims: blocks of 64, amax floor 1e-4.
pub fn fp8_kv_inplace(nope: &mut [f32]) {
    block_quantize(nope, 64, E4M3_MAX, 1e-4, e4m3_round);
}

/// ds4's FP4 amax floor, written there as 7.052966104933725e-38 (it rounds to this f32).
const FP4_AMAX_FLOOR: f32 = 7.052_966e-38;

/// `fp4_sim`: blocks of 32, max 6, amax floor 7.052966e-38.
pub fn fp4_act_inplace(x: &mut [f32]) {
    block_quantize(x, 32, 6.0, FP4_AMAX_FLOOR, e2m1_round);
}

/// Walsh–Hadamard transform (butterflies of stride 1, 2, 4, …) scaled by 1/√n;
/// `x.len()` is a power of two (checked by the config).
pub fn hadamard_inplace(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    for v in x {
        *v *= s;
    }
}

/// The indexer QAT: Hadamard rotation then FP4, per head vector.
pub fn indexer_qat_inplace(x: &mut [f32]) {
    hadamard_inplace(x);
    fp4_act_inplace(x);
}

/// Stored rows are f16 on disk and in ds4's caches.
pub fn f16_round_inplace(x: &mut [f32]) {
    for v in x {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every E4M3FN finite magnitude, decoded from its bit pattern.
    fn e4m3_grid() -> Vec<f32> {
        (0u32..127)
            .map(|c| {
                let (e, m) = ((c >> 3) as i32, (c & 7) as f32);
                if e == 0 {
                    m * (-9f32).exp2()
                } else {
                    (1.0 + m / 8.0) * ((e - 7) as f32).exp2()
                }
            })
            .collect()
    }

    #[test]
    fn e4m3_matches_brute_force_nearest_even() {
        let grid = e4m3_grid();
        assert_eq!(*grid.last().unwrap(), 448.0);
        let mut x = -448.0f32;
        while x <= 448.0 {
            let a = x.abs();
            // nearest code, ties to the even code index
            let mut best = 0usize;
            for (i, &g) in grid.iter().enumerate() {
                let (db, di) = ((a - grid[best]).abs(), (a - g).abs());
                if di < db || (di == db && i % 2 == 0) {
                    best = i;
                }
            }
            assert_eq!(e4m3_round(x), grid[best].copysign(x), "x = {x}");
            x += 0.0137;
        }
        // exact ties: midway between 1.0 (code 56) and 1.125 (57) goes to the even code
        assert_eq!(e4m3_round(1.0625), 1.0);
        assert_eq!(e4m3_round(1.1875), 1.25);
        // subnormal tie between 1·2^−9 and 2·2^−9
        assert_eq!(e4m3_round(1.5 * (-9f32).exp2()), 2.0 * (-9f32).exp2());
    }

    #[test]
    fn e2m1_ties_go_to_even_index() {
        assert_eq!(e2m1_round(0.25), 0.0);
        assert_eq!(e2m1_round(0.75), 1.0);
        assert_eq!(e2m1_round(1.25), 1.0);
        assert_eq!(e2m1_round(1.75), 2.0);
        assert_eq!(e2m1_round(2.5), 2.0);
        assert_eq!(e2m1_round(3.5), 4.0);
        assert_eq!(e2m1_round(5.0), 4.0);
        assert_eq!(e2m1_round(-5.1), -6.0);
    }

    #[test]
    fn fp8_block_scale_is_power_of_two() {
        let mut v: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.01).collect();
        let orig = v.clone();
        fp8_kv_inplace(&mut v);
        // amax 0.315 → s = 2^ceil(log2(0.315/448)) = 2^-10; values are s·e4m3 codes
        let s = (-10f32).exp2();
        for (a, b) in v.iter().zip(&orig) {
            assert_eq!(e4m3_round(a / s) * s, *a);
            assert!((a - b).abs() <= b.abs() / 16.0 + s * (-9f32).exp2());
        }
    }

    #[test]
    fn hadamard_is_orthonormal() {
        let mut x: Vec<f32> = (0..128).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let orig = x.clone();
        hadamard_inplace(&mut x);
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 * n0);
        hadamard_inplace(&mut x);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}

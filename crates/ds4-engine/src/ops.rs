//! Primitive operations of spec §3.1 and the RoPE/YaRN tables of §1.3.

/// `x_i·w_i / sqrt(mean(x²) + eps)`; the sum of squares is accumulated in f64 as ds4's
/// CPU path does, so long rows do not lose precision.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let r = rms_scale(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * r * g;
    }
}

/// Weightless RMSNorm in place (per-head Q norm, the HC state norm).
pub fn rmsnorm0_inplace(x: &mut [f32], eps: f32) {
    let r = rms_scale(x, eps);
    for v in x {
        *v *= r;
    }
}

pub fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    (1.0 / (ss / x.len() as f64 + eps as f64).sqrt()) as f32
}

pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Softplus with the ±20 cutoffs of spec §3.1 (PyTorch's threshold on the upper side).
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else if x < -20.0 {
        x.exp()
    } else {
        x.exp().ln_1p()
    }
}

/// Indices of the `k` largest values, ties to the lower index (spec §7), in
/// descending order of value.
pub fn topk_desc(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// RoPE on the last `2·freqs.len()` dims of a vector, adjacent pairs (GGML "normal" /
/// interleaved layout, not NeoX halves).
#[derive(Debug, Clone)]
pub struct Rope {
    /// Per-pair angular frequency, already rounded to f32 like the references' tables.
    pub freqs: Vec<f32>,
}

impl Rope {
    /// Plain RoPE: `f_k = base^(−2k/n_rot)`.
    pub fn plain(n_rot: usize, base: f64) -> Self {
        let freqs = (0..n_rot / 2)
            .map(|k| base.powf(-2.0 * k as f64 / n_rot as f64) as f32)
            .collect();
        Rope { freqs }
    }

    /// DeepSeek's YaRN frequency blend without magnitude scaling (spec §1.3):
    /// pairs below `lo` keep the extrapolated frequency, pairs above `hi` are divided
    /// by `factor`, and a linear ramp blends the ones between.
    pub fn yarn(
        n_rot: usize,
        base: f64,
        factor: f64,
        orig_ctx: f64,
        beta_fast: f64,
        beta_slow: f64,
    ) -> Self {
        let d = n_rot as f64;
        let corr = |beta: f64| {
            d * (orig_ctx / (beta * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
        };
        let lo = corr(beta_fast).floor().max(0.0);
        let hi = corr(beta_slow).ceil().min(d - 1.0);
        let span = if hi - lo < 0.001 { 0.001 } else { hi - lo };
        let freqs = (0..n_rot / 2)
            .map(|k| {
                let extrap = base.powf(-2.0 * k as f64 / d);
                let ramp = ((k as f64 - lo) / span).clamp(0.0, 1.0);
                (extrap / factor * ramp + extrap * (1.0 - ramp)) as f32
            })
            .collect();
        Rope { freqs }
    }

    pub fn n_rot(&self) -> usize {
        2 * self.freqs.len()
    }

    /// Rotates the tail of `x` by `pos` (by `−pos` when `inverse`).
    pub fn apply(&self, x: &mut [f32], pos: usize, inverse: bool) {
        let off = x.len() - self.n_rot();
        // The references form the angle as an f32 product of an f32 position and an
        // f32 frequency; doing the same keeps long positions bit-compatible with them.
        let p = pos as f32;
        for (k, &f) in self.freqs.iter().enumerate() {
            let ang = (p * f) as f64;
            let (s, c) = ang.sin_cos();
            let (s, c) = (if inverse { -s } else { s } as f32, c as f32);
            let (a, b) = (x[off + 2 * k], x[off + 2 * k + 1]);
            x[off + 2 * k] = a * c - b * s;
            x[off + 2 * k + 1] = a * s + b * c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_matches_flash_ramp() {
        // Flash: lo = 15, hi = 25 (spec §1.3).
        let plain = Rope::plain(64, 160000.0);
        let y = Rope::yarn(64, 160000.0, 16.0, 65536.0, 32.0, 1.0);
        for k in 0..=15 {
            assert_eq!(y.freqs[k], plain.freqs[k], "pair {k}");
        }
        for k in 25..32 {
            assert!((y.freqs[k] - plain.freqs[k] / 16.0).abs() <= plain.freqs[k] * 1e-6);
        }
        let r = 0.5; // pair 20 is halfway through the ramp
        let want = plain.freqs[20] as f64 * (1.0 - r) + plain.freqs[20] as f64 / 16.0 * r;
        assert!((y.freqs[20] as f64 - want).abs() < 1e-9);
    }

    #[test]
    fn rope_inverse_undoes_forward_and_keeps_head() {
        let r = Rope::plain(8, 10000.0);
        let orig: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut x = orig.clone();
        r.apply(&mut x, 77, false);
        assert_eq!(&x[..8], &orig[..8]);
        assert!(
            x[8..]
                .iter()
                .zip(&orig[8..])
                .any(|(a, b)| (a - b).abs() > 1e-3)
        );
        r.apply(&mut x, 77, true);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn topk_prefers_lower_index_on_ties() {
        assert_eq!(topk_desc(&[1.0, 3.0, 3.0, 2.0, 3.0], 2), vec![1, 2]);
    }
}

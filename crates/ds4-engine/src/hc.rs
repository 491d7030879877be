//! Manifold hyper-connections (mHC, spec §3.3, §3.4, §3.11). The residual stream of a
//! token is `hc` parallel streams of `n_embd`; each sublayer reads a gated mix of them
//! and writes back through a doubly-stochastic (Sinkhorn) mixing matrix.

use crate::error::Result;
use crate::ops::{rmsnorm0_inplace, sigmoid};
use crate::weights::HcWeights;

/// The mixing decided by `hc_pre`, reused by the matching `hc_post`.
#[derive(Debug, Clone)]
pub struct HcMix {
    pub post: Vec<f32>,
    /// `comb[a·hc + b]`: weight of source stream `a` in output stream `b`.
    pub comb: Vec<f32>,
}

/// `z = fn · rmsnorm0(X)` over the whole flattened state.
fn control(x: &[f32], w: &HcWeights, rms_eps: f32) -> Result<Vec<f32>> {
    let mut flat = x.to_vec();
    rmsnorm0_inplace(&mut flat, rms_eps);
    w.fn_.matvec_alloc(&flat)
}

/// `z = fn · rmsnorm0(X)` for a batch of tokens (one pass over `fn`).
pub fn hc_control_batch(xs: &[Vec<f32>], w: &HcWeights, rms_eps: f32) -> Result<Vec<Vec<f32>>> {
    let flats: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            let mut flat = x.clone();
            rmsnorm0_inplace(&mut flat, rms_eps);
            flat
        })
        .collect();
    w.fn_.matmul(&flats)
}

/// Returns the sublayer input `Σ_h pre[h]·X[h]` and the mixing for `hc_post`,
/// given the control vector `z` of `x` ([`hc_control_batch`]).
pub fn hc_pre(
    x: &[f32],
    z: &[f32],
    w: &HcWeights,
    hc: usize,
    iters: usize,
    hc_eps: f32,
) -> (Vec<f32>, HcMix) {
    let n = x.len() / hc;
    let pre: Vec<f32> = (0..hc)
        .map(|i| sigmoid(z[i] * w.scale[0] + w.base[i]) + hc_eps)
        .collect();
    let post: Vec<f32> = (0..hc)
        .map(|i| 2.0 * sigmoid(z[hc + i] * w.scale[1] + w.base[hc + i]))
        .collect();
    let mut c: Vec<f32> = (0..hc * hc)
        .map(|i| z[2 * hc + i] * w.scale[2] + w.base[2 * hc + i])
        .collect();
    for row in c.chunks_mut(hc) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        for v in row.iter_mut() {
            *v = *v / s + hc_eps;
        }
    }
    // Sinkhorn starts with a column pass; then (row, column) pairs until `iters`
    // column passes have run. The ε in the denominators is part of the model.
    let col_pass = |c: &mut [f32]| {
        for b in 0..hc {
            let s: f32 = (0..hc).map(|a| c[a * hc + b]).sum();
            for a in 0..hc {
                c[a * hc + b] /= s + hc_eps;
            }
        }
    };
    col_pass(&mut c);
    for _ in 1..iters {
        for row in c.chunks_mut(hc) {
            let s: f32 = row.iter().sum();
            for v in row.iter_mut() {
                *v /= s + hc_eps;
            }
        }
        col_pass(&mut c);
    }
    let mut y = vec![0.0f32; n];
    for (h, stream) in x.chunks_exact(n).enumerate() {
        for (o, &v) in y.iter_mut().zip(stream) {
            *o += pre[h] * v;
        }
    }
    (y, HcMix { post, comb: c })
}

/// `X'[b] = post[b]·F + Σ_a comb[a][b]·X[a]`: the only residual path.
pub fn hc_post(f: &[f32], x: &[f32], mix: &HcMix, hc: usize) -> Vec<f32> {
    let n = f.len();
    let mut out = vec![0.0f32; x.len()];
    for (b, dst) in out.chunks_exact_mut(n).enumerate() {
        for (j, d) in dst.iter_mut().enumerate() {
            let mut acc = mix.post[b] * f[j];
            for a in 0..hc {
                acc += mix.comb[a * hc + b] * x[a * n + j];
            }
            *d = acc;
        }
    }
    out
}

/// Output collapse: `Σ_h (σ(z_h·scale + base_h) + ε)·X[h]`.
pub fn hc_head(x: &[f32], w: &HcWeights, hc: usize, hc_eps: f32, rms_eps: f32) -> Result<Vec<f32>> {
    let n = x.len() / hc;
    let z = control(x, w, rms_eps)?;
    let mut y = vec![0.0f32; n];
    for (h, stream) in x.chunks_exact(n).enumerate() {
        let g = sigmoid(z[h] * w.scale[0] + w.base[h]) + hc_eps;
        for (o, &v) in y.iter_mut().zip(stream) {
            *o += g * v;
        }
    }
    Ok(y)
}

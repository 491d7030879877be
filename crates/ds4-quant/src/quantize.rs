//! Quantizers: f32 rows → Q8_0, Q2_K, Q4_K, IQ2_XXS blocks.
//!
//! Without importance weights these are llama.cpp's reference quantizers
//! (`quantize_row_*_ref`), so files we write match what llama.cpp's
//! `quantize` produces. With importance weights (one per column, as an imatrix
//! gives) Q2_K and Q4_K follow `quantize_row_{q2,q4}_K_impl`: the weight of
//! element `i` becomes `imp[i]·sqrt(σ² + x_i²)` and the per-sub-block scale/min
//! search and the super-block scale search minimise that weighted error.
//! llama.cpp ignores importance for Q8_0; we use it to pick among a few
//! candidate scales (the plain one included), so the weighted error can only
//! go down.

// These loops walk several index-parallel arrays the way the reference
// algorithms are written; iterator chains would hide that correspondence.
#![allow(clippy::needless_range_loop)]

use crate::half::{f16_to_f32, f32_to_f16};
use crate::{GgmlType, QK_K, QK8_0, QuantError, Result};

/// Round to nearest, ties to even, for |x| ≤ 2^22 (ggml's `nearest_int`: adding
/// 1.5·2^23 puts the integer in the low mantissa bits). Outside that range the
/// result is meaningless but defined; every caller clamps it.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
}

/// Quantize a row-major matrix `src` of rows of `n_per_row` elements.
/// `importance`, when given, has `n_per_row` non-negative entries (one per
/// column). F32/F16/BF16 are converted directly (importance is meaningless).
pub fn quantize(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    importance: Option<&[f32]>,
) -> Result<Vec<u8>> {
    if n_per_row == 0 || !src.len().is_multiple_of(n_per_row) {
        return Err(QuantError::Length {
            what: "matrix elements (multiple of the row length)",
            expected: src.len().next_multiple_of(n_per_row.max(1)),
            got: src.len(),
        });
    }
    let bs = ty.block_size();
    if !n_per_row.is_multiple_of(bs) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            elements: n_per_row,
            block: bs,
        });
    }
    let row_bytes = n_per_row / bs * ty.type_size();
    let rows = src.len() / n_per_row;
    let mut out = vec![0u8; rows * row_bytes];
    for (x, y) in src
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        quantize_row(ty, x, importance, y)?;
    }
    Ok(out)
}

/// Quantize one row `x` into `dst` (exactly the row's byte size).
pub fn quantize_row(
    ty: GgmlType,
    x: &[f32],
    importance: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<()> {
    crate::dequant::check_len(ty, dst.len(), x.len(), "destination")?;
    if let Some(w) = importance
        && w.len() != x.len()
    {
        return Err(QuantError::Length {
            what: "importance weights (one per column)",
            expected: x.len(),
            got: w.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, v) in dst.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, &v) in dst.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_f16(v).to_le_bytes());
            }
        }
        GgmlType::Bf16 => {
            for (o, &v) in dst.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            for (i, (xb, yb)) in x
                .chunks_exact(QK8_0)
                .zip(dst.chunks_exact_mut(34))
                .enumerate()
            {
                let w = importance.map(|w| &w[i * QK8_0..(i + 1) * QK8_0]);
                quantize_q8_0_block(xb, w, yb);
            }
        }
        GgmlType::Q2K => {
            for (i, (xb, yb)) in x
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(84))
                .enumerate()
            {
                match importance {
                    None => quantize_q2_k_ref(xb, yb),
                    Some(w) => quantize_q2_k_impl(xb, &w[i * QK_K..(i + 1) * QK_K], yb),
                }
            }
        }
        GgmlType::Q4K => {
            for (i, (xb, yb)) in x
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(144))
                .enumerate()
            {
                match importance {
                    None => quantize_q4_k_ref(xb, yb),
                    Some(w) => quantize_q4_k_impl(xb, &w[i * QK_K..(i + 1) * QK_K], yb),
                }
            }
        }
        GgmlType::Iq2Xxs => {
            for (i, (xb, yb)) in x
                .chunks_exact(QK_K)
                .zip(dst.chunks_exact_mut(66))
                .enumerate()
            {
                let w = importance.map(|w| &w[i * QK_K..(i + 1) * QK_K]);
                crate::iq2xxs::quantize_iq2_xxs_block(xb, w, yb);
            }
        }
        other => {
            return Err(QuantError::Unsupported {
                ty: other,
                op: "quantize",
            });
        }
    }
    Ok(())
}

/// f32 → bf16 with round-to-nearest-even, NaNs kept quiet (ggml
/// `ggml_compute_fp32_to_bf16`).
pub fn f32_to_bf16(x: f32) -> u16 {
    let n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return ((n >> 16) | 64) as u16;
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

// ---------------------------------------------------------------- Q8_0

fn q8_0_round_away(v: f32) -> i8 {
    // llama.cpp's reference uses roundf (half away from zero) here.
    v.round().clamp(-128.0, 127.0) as i8
}

fn quantize_q8_0_block(x: &[f32], imp: Option<&[f32]>, y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_0];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = q8_0_round_away(v * id);
    }
    let mut dh = f32_to_f16(d);
    if let Some(w) = imp
        && amax > 0.0
    {
        let err = |dh: u16, qs: &[i8; QK8_0]| -> f32 {
            let dd = f16_to_f32(dh);
            x.iter()
                .zip(qs)
                .zip(w)
                .map(|((&v, &q), &w)| {
                    let e = v - dd * q as f32;
                    w * e * e
                })
                .sum()
        };
        let mut best = err(dh, &qs);
        // Candidates: slightly smaller scales (the largest element clamps at
        // 127), each requantized against its own f16-rounded scale, then the
        // weighted least-squares scale for the winner's integers.
        for k in 1..=8 {
            let dc = f32_to_f16(amax / (127.0 + 0.5 * k as f32));
            let dd = f16_to_f32(dc);
            if dd == 0.0 {
                continue;
            }
            let mut qc = [0i8; QK8_0];
            for (q, &v) in qc.iter_mut().zip(x) {
                *q = (v / dd).round().clamp(-127.0, 127.0) as i8;
            }
            let e = err(dc, &qc);
            if e < best {
                best = e;
                dh = dc;
                qs = qc;
            }
        }
        let (mut sxq, mut sqq) = (0.0f32, 0.0f32);
        for ((&v, &q), &w) in x.iter().zip(&qs).zip(w) {
            sxq += w * v * q as f32;
            sqq += w * (q as f32) * (q as f32);
        }
        if sqq > 0.0 {
            let dc = f32_to_f16(sxq / sqq);
            if err(dc, &qs) < best {
                dh = dc;
            }
        }
    }
    y[0..2].copy_from_slice(&dh.to_le_bytes());
    for (o, &q) in y[2..34].iter_mut().zip(&qs) {
        *o = q as u8;
    }
}

// ---------------------------------------------------------------- K-quant helpers

/// Fit `x ≈ scale·L + min` with `L ∈ [0, nmax]`, `min ≤ 0`, trying `nstep+1`
/// inverse scales around `nmax/(max−min)` and refitting scale and min by
/// weighted least squares (ggml `make_qkx2_quants`). Returns `(scale, −min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Like [`make_qkx2_quants`] but guards the trial levels against a min that
/// has moved to (or past) the max (ggml `make_qkx3_quants`), used by the
/// importance-weighted paths.
#[allow(clippy::too_many_arguments)]
fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best += weights[i] * diff * diff;
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let v = iscale * (x[i] - min);
            let l = if v > 0.0 {
                nearest_int(v.min(nmax as f32))
            } else {
                0
            };
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur += weights[i] * diff * diff;
            }
            if cur < best {
                l_out[..n].copy_from_slice(&laux[..n]);
                best = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantize non-negative `x` to `L ∈ [0, nmax]` with one scale, minimising the
/// weighted squared error (ggml `make_qp_quants`): used for the super-block
/// scale of the sub-block scales and mins.
pub(crate) fn make_qp_quants_pub(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    make_qp_quants(nmax, x, l_out, qw)
}

fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let max = x.iter().fold(0.0f32, |m, &v| m.max(v));
    if max < 1e-15 {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let lf = l as f32;
        sumlx += qw[i] * x[i] * lf;
        suml2 += qw[i] * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

// ---------------------------------------------------------------- Q2_K

/// Pack 256 2-bit levels: byte `32k + l` holds elements `128k + l + 32j` in
/// bits `2j..2j+2`.
fn pack_q2(l: &[u8; QK_K], qs: &mut [u8]) {
    for k in 0..2 {
        for i in 0..32 {
            let b = 128 * k + i;
            qs[32 * k + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

/// Requantize every element against the final f16 scales (both ggml paths
/// do this: the levels found during the search used unrounded scales).
fn q2_requantize(x: &[f32], scales: &[u8], dm: f32, mm: f32, l: &mut [u8; QK_K]) {
    for j in 0..16 {
        let d = dm * (scales[j] & 0xf) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (scales[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
        }
    }
}

fn quantize_q2_k_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut weights = [0.0f32; 16];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        dd[0..2].copy_from_slice(&f32_to_f16(max_scale / 15.0).to_le_bytes());
    } else {
        sc.iter_mut().for_each(|s| *s = 0);
        dd[0..2].copy_from_slice(&f32_to_f16(0.0).to_le_bytes());
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) as u8) << 4;
        }
        dd[2..4].copy_from_slice(&f32_to_f16(max_min / 15.0).to_le_bytes());
    } else {
        dd[2..4].copy_from_slice(&f32_to_f16(0.0).to_le_bytes());
    }
    let dm = f16_to_f32(u16::from_le_bytes([dd[0], dd[1]]));
    let mm = f16_to_f32(u16::from_le_bytes([dd[2], dd[3]]));
    q2_requantize(x, sc, dm, mm, &mut l);
    pack_q2(&l, qs);
}

fn quantize_q2_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut weight = [0.0f32; 16];
    let sumx2: f32 = x.iter().map(|v| v * v).sum();
    let sigma2 = sumx2 / QK_K as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for ((w, &q), &v) in weight.iter_mut().zip(&qw[16 * j..16 * j + 16]).zip(xs) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        sw[j] = weight.iter().sum();
        let (s, m) = make_qkx3_quants(3, xs, &weight, &mut l[16 * j..16 * j + 16], -0.9, 0.05, 36);
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    let dh = f32_to_f16(dm);
    let mh = f32_to_f16(mm);
    dd[0..2].copy_from_slice(&dh.to_le_bytes());
    dd[2..4].copy_from_slice(&mh.to_le_bytes());
    for j in 0..16 {
        sc[j] = ls[j] | (lm[j] << 4);
    }
    q2_requantize(x, sc, f16_to_f32(dh), f16_to_f32(mh), &mut l);
    pack_q2(&l, qs);
}

// ---------------------------------------------------------------- Q4_K

/// Pack the 8 six-bit scales and mins into ggml's 12-byte layout (the inverse
/// of `get_scale_min_k4`).
fn pack_q4k_scales(ls: &[u8; 8], lm: &[u8; 8], s: &mut [u8]) {
    s.iter_mut().for_each(|b| *b = 0);
    for j in 0..8 {
        let (a, m) = (ls[j].min(63), lm[j].min(63));
        if j < 4 {
            s[j] = a;
            s[j + 4] = m;
        } else {
            s[j + 4] = (a & 0xf) | ((m & 0xf) << 4);
            s[j - 4] |= (a >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
}

fn q4k_finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K]) {
    let d = f16_to_f32(u16::from_le_bytes([y[0], y[1]]));
    let dmin = f16_to_f32(u16::from_le_bytes([y[2], y[3]]));
    for j in 0..8 {
        let (sc, m) = crate::dequant::q4k_scale_min(j, &y[4..16]);
        let dd = d * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, 15) as u8;
        }
    }
    let qs = &mut y[16..144];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

fn quantize_q4_k_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut weights = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            15,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -1.0,
            0.1,
            20,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before MIN(63, ·): the same
        // truncation to 8 bits is kept here.
        ls[j] = nearest_int(inv_scale * scales[j]) as u8;
        lm[j] = nearest_int(inv_min * mins[j]) as u8;
    }
    pack_q4k_scales(&ls, &lm, &mut y[4..16]);
    y[0..2].copy_from_slice(&f32_to_f16(max_scale / 63.0).to_le_bytes());
    y[2..4].copy_from_slice(&f32_to_f16(max_min / 63.0).to_le_bytes());
    q4k_finish(x, y, &mut l);
}

fn quantize_q4_k_impl(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut weights = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let sum_x2: f32 = x.iter().map(|v| v * v).sum();
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        for ((w, &q), &v) in weights.iter_mut().zip(&qw[32 * j..32 * j + 32]).zip(xs) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        sw[j] = weights.iter().sum();
        let (s, m) = make_qkx3_quants(
            15,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -0.9,
            0.05,
            36,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    pack_q4k_scales(&ls, &lm, &mut y[4..16]);
    y[0..2].copy_from_slice(&f32_to_f16(d_block).to_le_bytes());
    y[2..4].copy_from_slice(&f32_to_f16(m_block).to_le_bytes());
    q4k_finish(x, y, &mut l);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie → even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::NAN) & 0x7fc0, 0x7fc0);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(quantize(GgmlType::Q2K, &[0.0; 300], 300, None).is_err());
        assert!(quantize(GgmlType::Q8_0, &[0.0; 64], 32, Some(&[1.0; 31])).is_err());
        assert!(quantize(GgmlType::Q8K, &[0.0; 256], 256, None).is_err());
        assert!(quantize(GgmlType::Q8_0, &[0.0; 64], 0, None).is_err());
    }
}

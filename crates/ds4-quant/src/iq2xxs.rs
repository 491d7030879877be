//! IQ2_XXS quantizer (llama.cpp `quantize_row_iq2_xxs_impl`).
//!
//! Each group of 8 magnitudes must be one of the 256 grid points (levels
//! {1, 3, 5} ↔ stored bytes {8, 25, 43}). For a trial scale every group is
//! rounded to the nearest level vector; when that vector is not on the grid
//! the group takes the best (weighted) point among its precomputed neighbours:
//! the grid points at the smallest and second-smallest squared distance. The
//! 8th sign of a group is implied by parity, so a group with an odd number of
//! negative values flips the sign of its least important element first.

// These loops walk several index-parallel arrays the way the reference
// algorithms are written; iterator chains would hide that correspondence.
#![allow(clippy::needless_range_loop)]

use std::sync::OnceLock;

use crate::half::f32_to_f16;
use crate::quantize::nearest_int;
use crate::tables::IQ2XXS_GRID;

const K_MAX_Q: i32 = 3;
/// Largest packed index of 8 levels in 0..=2 (2 bits each): 0xAAAA.
const KMAP_SIZE: usize = 0xAAAA + 1;

struct Iq2Tables {
    /// Grid points as odd levels 2l+1 ∈ {1, 3, 5}.
    grid: [[i8; 8]; 256],
    /// Packed level index → grid index, or −1 when not on the grid.
    map: Vec<i32>,
    /// Packed level index → start of its neighbour list in `neighbours`.
    neighbour_start: Vec<u32>,
    /// Concatenated lists: a count, then that many grid indices.
    neighbours: Vec<u16>,
}

fn level_of_byte(b: u8) -> i8 {
    match b {
        8 => 0,
        25 => 1,
        _ => 2,
    }
}

fn tables() -> &'static Iq2Tables {
    static T: OnceLock<Iq2Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut grid = [[0i8; 8]; 256];
        let mut map = vec![-1i32; KMAP_SIZE];
        for (k, g) in IQ2XXS_GRID.iter().enumerate() {
            let mut index = 0usize;
            for (i, b) in g.to_le_bytes().into_iter().enumerate() {
                let l = level_of_byte(b);
                grid[k][i] = 2 * l + 1;
                index |= (l as usize) << (2 * i);
            }
            map[index] = k as i32;
        }
        let mut neighbour_start = vec![u32::MAX; KMAP_SIZE];
        let mut neighbours = Vec::new();
        let mut dist: Vec<(i32, u16)> = Vec::with_capacity(256);
        // Only level vectors with every level in 0..=2 are ever looked up.
        for idx in 0..KMAP_SIZE {
            if map[idx] >= 0 || (0..8).any(|k| (idx >> (2 * k)) & 3 == 3) {
                continue;
            }
            let pos: [i32; 8] = std::array::from_fn(|k| 2 * ((idx >> (2 * k)) & 3) as i32 + 1);
            dist.clear();
            for (j, g) in grid.iter().enumerate() {
                let d2: i32 = g
                    .iter()
                    .zip(&pos)
                    .map(|(&a, &b)| (a as i32 - b) * (a as i32 - b))
                    .sum();
                dist.push((d2, j as u16));
            }
            // Ties in distance keep grid order, as ggml's comparator does.
            dist.sort_unstable();
            neighbour_start[idx] = neighbours.len() as u32;
            let count_at = neighbours.len();
            neighbours.push(0);
            let mut d2 = dist[0].0;
            let mut nhave = 1;
            let mut n = 0u16;
            for &(d, j) in &dist {
                if d > d2 {
                    if nhave == 2 {
                        break;
                    }
                    d2 = d;
                    nhave += 1;
                }
                neighbours.push(j);
                n += 1;
            }
            neighbours[count_at] = n;
        }
        Iq2Tables {
            grid,
            map,
            neighbour_start,
            neighbours,
        }
    })
}

/// Among the neighbours of off-grid index `u`, the grid point minimising the
/// weighted error of `scale·q − x`; writes its levels to `l` and returns it.
fn best_neighbour(
    t: &Iq2Tables,
    u: usize,
    xval: &[f32],
    waux: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    let start = t.neighbour_start[u] as usize;
    let n = t.neighbours[start] as usize;
    let mut best_d2 = f32::MAX;
    let mut best = t.neighbours[start + 1] as usize;
    for &gi in &t.neighbours[start + 1..start + 1 + n] {
        let g = &t.grid[gi as usize];
        let mut d2 = 0.0f32;
        for i in 0..8 {
            let diff = scale * g[i] as f32 - xval[i];
            d2 += waux[i] * diff * diff;
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = gi as usize;
        }
    }
    for i in 0..8 {
        l[i] = (t.grid[best][i] - 1) / 2;
    }
    best
}

fn pack_levels(l: &[i8]) -> usize {
    l.iter()
        .enumerate()
        .fold(0usize, |u, (i, &v)| u | ((v as usize) << (2 * i)))
}

/// Levels for one group of 8 at inverse scale `id`, snapped onto the grid.
fn snap_group(
    t: &Iq2Tables,
    id: f32,
    scale: f32,
    xval: &[f32],
    waux: &[f32],
    l: &mut [i8],
) -> usize {
    for i in 0..8 {
        l[i] = nearest_int(0.5 * (id * xval[i] - 1.0)).clamp(0, K_MAX_Q - 1) as i8;
    }
    let u = pack_levels(l);
    match t.map[u] {
        gi if gi >= 0 => gi as usize,
        _ => best_neighbour(t, u, xval, waux, scale, l),
    }
}

/// Weighted least-squares scale for non-negative `x` with levels in
/// `0..=nmax` (the first step of ggml's `make_qp_quants` is all this
/// quantizer uses from it: its returned scale seeds the search below).
fn seed_scale(nmax: i32, x: &[f32], w: &[f32]) -> f32 {
    let mut l = [0u8; 32];
    crate::quantize::make_qp_quants_pub(nmax, x, &mut l, w)
}

/// Quantize one 256-element block. Without importance weights every column
/// weighs 1 (llama.cpp requires an imatrix for this type; a flat one is the
/// natural default).
pub(crate) fn quantize_iq2_xxs_block(x: &[f32], imp: Option<&[f32]>, y: &mut [u8]) {
    let t = tables();
    let mut q2 = [0u32; 16];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let sumx2: f32 = x.iter().map(|v| v * v).sum();
    let sigma2 = sumx2 / 256.0;
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        let mut weight = [0.0f32; 32];
        let mut waux = [0.0f32; 32];
        for i in 0..32 {
            let q = imp.map_or(1.0, |w| w[32 * ib + i]);
            weight[i] = q * (sigma2 + xb[i] * xb[i]).sqrt();
            waux[i] = weight[i].sqrt();
        }
        let mut xval = [0.0f32; 32];
        let mut block_signs = [0u8; 4];
        for k in 0..4 {
            let mut nflip = 0;
            let mut s = 0u8;
            for i in 0..8 {
                let v = xb[8 * k + i];
                if v >= 0.0 {
                    xval[8 * k + i] = v;
                } else {
                    xval[8 * k + i] = -v;
                    nflip += 1;
                    s |= 1 << i;
                }
            }
            if nflip % 2 == 1 {
                let mut imin = 0;
                let mut min = weight[8 * k] * xb[8 * k] * xb[8 * k];
                for i in 1..8 {
                    let ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                    if ax < min {
                        min = ax;
                        imin = i;
                    }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= 1 << imin;
            }
            block_signs[k] = s & 127;
        }
        let max = xval.iter().fold(xval[0], |m, &v| m.max(v));
        if max < 1e-15 {
            continue; // scale 0, levels 0, grid index 0, signs unused
        }
        let mut scale = seed_scale(K_MAX_Q + 1, &xval, &weight);
        let eff_max = scale * K_MAX_Q as f32;
        if eff_max <= 0.0 {
            continue;
        }
        let mut l = [0i8; 32];
        let mut laux = [0i8; 32];
        let mut best = 0.0f32;
        for is in -6i32..=6 {
            let id = (2.0 * K_MAX_Q as f32 - 1.0 + is as f32 * 0.1) / eff_max;
            let this_scale = 1.0 / id;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                snap_group(
                    t,
                    id,
                    this_scale,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    &mut laux[r],
                );
            }
            let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
            for i in 0..32 {
                let q = 2.0 * laux[i] as f32 + 1.0;
                sumqx += weight[i] * xval[i] * q;
                sumq2 += weight[i] * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l = laux;
            }
        }
        if scale > 0.0 {
            let id = 1.0 / scale;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                snap_group(t, id, scale, &xval[r.clone()], &waux[r.clone()], &mut l[r]);
            }
            let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
            for i in 0..32 {
                let q = 2.0 * l[i] as f32 + 1.0;
                sumqx += weight[i] * xval[i] * q;
                sumq2 += weight[i] * q * q;
            }
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        if scale < 0.0 {
            scale = -scale;
            for s in block_signs.iter_mut() {
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            let u = pack_levels(&l[8 * k..8 * k + 8]);
            // Every level vector in `l` came from the grid (snap_group), so the
            // lookup cannot miss; index 0 is a harmless fallback regardless.
            let gi = t.map[u].max(0) as u32;
            q2[2 * ib] |= gi << (8 * k);
            q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = max_scale.max(scale);
    }
    if max_scale == 0.0 {
        y.iter_mut().for_each(|b| *b = 0);
        return;
    }
    let d = max_scale / 31.0;
    y[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    let id = 1.0 / d;
    for ib in 0..8 {
        let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15) as u32;
        q2[2 * ib + 1] |= l << 28;
    }
    for (i, w) in q2.iter().enumerate() {
        y[2 + 4 * i..6 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_tables_are_consistent() {
        let t = tables();
        assert_eq!(t.map.iter().filter(|&&m| m >= 0).count(), 256);
        // 3^8 level vectors, 256 on the grid: the rest each have a list.
        let with_list = t.neighbour_start.iter().filter(|&&s| s != u32::MAX).count();
        assert_eq!(with_list, 6561 - 256);
        for (u, &s) in t.neighbour_start.iter().enumerate() {
            if s == u32::MAX {
                continue;
            }
            let n = t.neighbours[s as usize] as usize;
            assert!(n > 0);
            // The first neighbour is a nearest grid point.
            let pos: [i32; 8] = std::array::from_fn(|k| 2 * ((u >> (2 * k)) & 3) as i32 + 1);
            let d = |g: &[i8; 8]| -> i32 {
                g.iter()
                    .zip(&pos)
                    .map(|(&a, &b)| (a as i32 - b).pow(2))
                    .sum()
            };
            let dmin = t.grid.iter().map(d).min().unwrap_or(0);
            assert_eq!(d(&t.grid[t.neighbours[s as usize + 1] as usize]), dmin);
        }
    }
}

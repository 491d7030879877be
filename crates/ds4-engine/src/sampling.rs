//! Token sampling: temperature, top-k, top-p, min-p and a seeded RNG.
//!
//! The CLI and the server share it. The filters run in
//! llama.cpp's order (top-k, then the temperature softmax, then min-p relative to
//! the best token, then nucleus top-p), which is also ds4's.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The knobs of one request, after thinking-mode overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// `<= 0` means greedy.
    pub temperature: f32,
    /// `0` disables.
    pub top_k: usize,
    /// `>= 1` disables.
    pub top_p: f32,
    /// `<= 0` disables; a candidate survives if `p >= min_p * p_max`.
    pub min_p: f32,
    pub seed: u64,
}

impl SamplingParams {
    /// ds4's fixed thinking-mode sampler: client knobs are ignored while thinking.
    pub fn thinking(seed: u64) -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.05,
            seed,
        }
    }
}

/// A sampler with its own RNG stream (same seed and logits → same tokens).
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// The candidates of a draw: their walking-order key (see `best_first`, which holds
    /// the id) and softmax weight.
    scratch: Vec<(u64, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
            scratch: Vec::new(),
        }
    }

    pub fn params(&self) -> SamplingParams {
        self.params
    }

    /// Whether every draw is the argmax (temperature 0 or top-k 1): a caller may then
    /// let the backend pick (`ForwardState::forward_greedy`).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 || self.params.top_k == 1
    }

    /// Picks the next token. `greedy` forces argmax (DSML syntax). Returns `None`
    /// for empty logits or when every logit is NaN/-inf.
    pub fn sample(&mut self, logits: &[f32], greedy: bool) -> Option<u32> {
        let p = self.params;
        if greedy || self.is_greedy() {
            return argmax(logits);
        }
        let best = argmax(logits)?;
        let l_max = logits[best as usize];
        let inv_t = 1.0 / p.temperature;
        let floor = min_p_floor(p, l_max);
        // Softmax weights relative to the best logit (never overflow), one exp each.
        let c = &mut self.scratch;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| is_candidate(**l, floor))
                .map(|(i, &l)| (best_first(i as u32, l), ((l - l_max) * inv_t).exp())),
        );
        // The candidates are walked best first (higher logit, then lower id), but only a
        // head of that order is ever read: top-k keeps k, top-p stops at its mass and the
        // draw where its share runs out. So the order is built a block at a time — the
        // next best selected out of the rest, then sorted — instead of sorting the whole
        // vocabulary (129k candidates without min-p: ~7 ms a token, as long as a GPU step).
        if p.top_k > 0 && c.len() > p.top_k {
            c.select_nth_unstable_by_key(p.top_k - 1, |e| e.0);
            c.truncate(p.top_k);
        }
        // The weights' sum in index order (the order of the rest is not known yet).
        let mut sum: f64 = c.iter().map(|e| e.1 as f64).sum();
        let mut sorted = 0;
        if p.top_p < 1.0 {
            let mut acc = 0.0f64;
            let mut keep = c.len();
            for i in 0..c.len() {
                sorted = sort_head(c, sorted, i + 1);
                acc += c[i].1 as f64 / sum;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            sorted = sort_head(c, sorted, keep);
            c.truncate(keep.max(1));
            sum = c.iter().map(|e| e.1 as f64).sum();
        }
        let mut r = self.rng.random::<f64>() * sum;
        for i in 0..c.len() {
            sorted = sort_head(c, sorted, i + 1);
            r -= c[i].1 as f64;
            if r <= 0.0 {
                return Some(c[i].0 as u32);
            }
        }
        c.last().map(|e| e.0 as u32).or(Some(best))
    }
}

/// The sampler's plain definition, sorting every candidate: [`Sampler::sample`] must
/// pick the same token for the same draw (its tests) and beat it (`examples/sampler_speed.rs`).
#[doc(hidden)]
pub fn sample_full_sort(p: SamplingParams, rng: &mut StdRng, logits: &[f32]) -> Option<u32> {
    let best = argmax(logits)?;
    let l_max = logits[best as usize];
    let inv_t = 1.0 / p.temperature;
    let floor = min_p_floor(p, l_max);
    let mut c: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| is_candidate(**l, floor))
        .map(|(i, l)| (i as u32, *l))
        .collect();
    c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 && c.len() > p.top_k {
        c.truncate(p.top_k);
    }
    let mut sum = 0.0f64;
    for e in c.iter_mut() {
        e.1 = ((e.1 - l_max) * inv_t).exp();
        sum += e.1 as f64;
    }
    if p.top_p < 1.0 {
        let mut acc = 0.0f64;
        let mut keep = c.len();
        for (i, e) in c.iter().enumerate() {
            acc += e.1 as f64 / sum;
            if acc >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        c.truncate(keep.max(1));
        sum = c.iter().map(|e| e.1 as f64).sum();
    }
    let mut r = rng.random::<f64>() * sum;
    for e in c.iter() {
        r -= e.1 as f64;
        if r <= 0.0 {
            return Some(e.0);
        }
    }
    c.last().map(|e| e.0).or(Some(best))
}

/// min-p in log space, before anything is sorted: p_i / p_max = exp((l_i - l_max) / T),
/// so a logit below the floor is out (most of a 129k vocabulary, where min-p is set).
fn min_p_floor(p: SamplingParams, l_max: f32) -> f32 {
    if p.min_p > 0.0 && p.min_p < 1.0 {
        l_max + p.min_p.ln() * p.temperature
    } else if p.min_p >= 1.0 {
        l_max
    } else {
        f32::NEG_INFINITY
    }
}

/// Whether a logit may be drawn at all: a number, finite below, at or above the floor.
fn is_candidate(l: f32, floor: f32) -> bool {
    !l.is_nan() && l >= floor && l > f32::NEG_INFINITY
}

/// The walking order of candidates as an integer key, smaller first: higher logit
/// (`f32::total_cmp`'s order, through the sign-flipped bits), then lower id, which is
/// the key's low half. Stored keys sort several times faster than a two-field comparison.
fn best_first(id: u32, logit: f32) -> u64 {
    let b = logit.to_bits();
    let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (u64::from(!ordered) << 32) | u64::from(id)
}

/// Makes at least the first `need` candidates sorted best first, given that the first
/// `sorted` are (and are the best of all): the next block — seven times those sorted, at
/// least 1,024, or all the rest once that is within 2x — is selected out of the rest and
/// sorted, so a flat distribution's long top-p walk costs two selections and one sort.
/// Returns how many are now sorted.
fn sort_head(c: &mut [(u64, f32)], sorted: usize, need: usize) -> usize {
    if need <= sorted {
        return sorted;
    }
    let rest = &mut c[sorted..];
    let mut m = (need - sorted).max(7 * sorted).max(1024);
    if m >= rest.len() / 2 {
        m = rest.len();
    }
    if m < rest.len() {
        rest.select_nth_unstable_by_key(m - 1, |e| e.0);
    }
    rest[..m].sort_unstable_by_key(|e| e.0);
    sorted + m
}

/// Index of the largest logit, NaNs skipped; ties go to the lowest id. `None` when
/// every logit is NaN (or there are none).
///
/// Every decode step calls this on the whole vocabulary (129k logits), so it runs in two
/// passes the compiler vectorizes rather than one with a branch per logit (that took 218
/// µs on 129,280 logits, this 23, on the development machine): the maximum over 16
/// independent lanes, then the first logit equal to it. `f32::max` ignores NaN; -0.0 and +0.0 compare
/// equal, so the first zero wins as before.
/// [`argmax`] with `banned` (an id a caller excludes, such as EOS) set to −∞ first.
pub fn argmax_banned(logits: &mut [f32], banned: Option<u32>) -> Option<u32> {
    if let Some(l) = banned.and_then(|b| logits.get_mut(b as usize)) {
        *l = f32::NEG_INFINITY;
    }
    argmax(logits)
}

pub fn argmax(logits: &[f32]) -> Option<u32> {
    const LANES: usize = 16;
    let mut lane = [f32::NAN; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &l) in lane.iter_mut().zip(c) {
            *m = m.max(l);
        }
    }
    let m = lane.iter().chain(tail).fold(f32::NAN, |a, &b| a.max(b));
    if m.is_nan() {
        return None;
    }
    logits.iter().position(|&l| l == m).map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed: 7,
        }
    }

    fn histogram(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        let mut h = vec![0; logits.len()];
        for _ in 0..n {
            h[s.sample(logits, false).expect("token") as usize] += 1;
        }
        h
    }

    #[test]
    fn argmax_matches_a_plain_scan() {
        // The one-pass definition the vectorized argmax must agree with.
        fn reference(logits: &[f32]) -> Option<u32> {
            let mut best: Option<(usize, f32)> = None;
            for (i, &l) in logits.iter().enumerate() {
                if !l.is_nan() && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
            best.map(|(i, _)| i as u32)
        }
        let mut rng = StdRng::seed_from_u64(3);
        let specials = [
            f32::NAN,
            f32::NEG_INFINITY,
            f32::INFINITY,
            0.0,
            -0.0,
            1.5,
            -1.5,
        ];
        for len in [0usize, 1, 2, 15, 16, 17, 33, 100, 1000, 129_280] {
            for trial in 0..20 {
                let v: Vec<f32> = (0..len)
                    .map(|_| {
                        if rng.random::<f32>() < 0.2 {
                            specials[rng.random_range(0..specials.len())]
                        } else if trial % 2 == 0 {
                            // few distinct values: many ties
                            rng.random_range(-3i32..3) as f32
                        } else {
                            rng.random::<f32>() * 40.0 - 20.0
                        }
                    })
                    .collect();
                assert_eq!(argmax(&v), reference(&v), "len {len} trial {trial}");
            }
        }
        assert_eq!(argmax(&[f32::NAN; 40]), None);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), Some(0));
        let mut v = vec![f32::NAN; 40];
        v[37] = f32::NEG_INFINITY;
        assert_eq!(argmax(&v), Some(37));
    }

    #[test]
    fn greedy_and_zero_temperature_pick_argmax() {
        let logits = [0.1, 3.0, 2.9, f32::NAN];
        assert_eq!(
            Sampler::new(params(0.0, 0, 1.0, 0.0)).sample(&logits, false),
            Some(1)
        );
        assert_eq!(
            Sampler::new(params(5.0, 0, 1.0, 0.0)).sample(&logits, true),
            Some(1)
        );
        assert_eq!(
            Sampler::new(params(1.0, 0, 1.0, 0.0)).sample(&[], false),
            None
        );
    }

    #[test]
    fn distribution_follows_softmax() {
        // p = softmax([0, ln 3]) = [0.25, 0.75].
        let logits = [0.0, 3f32.ln()];
        let h = histogram(&mut Sampler::new(params(1.0, 0, 1.0, 0.0)), &logits, 20_000);
        let frac = h[1] as f64 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn filters_cut_the_tail() {
        // p ∝ [8, 4, 2, 1]/15.
        let logits = [8f32.ln(), 4f32.ln(), 2f32.ln(), 0.0];
        let h = histogram(&mut Sampler::new(params(1.0, 2, 1.0, 0.0)), &logits, 5000);
        assert_eq!((h[2], h[3]), (0, 0), "top-k 2: {h:?}");
        let h = histogram(&mut Sampler::new(params(1.0, 0, 0.75, 0.0)), &logits, 5000);
        assert!(h[1] > 0 && h[2] == 0 && h[3] == 0, "top-p 0.75: {h:?}");
        // min-p 0.2: 2/8 = 0.25 survives, 1/8 does not.
        let h = histogram(&mut Sampler::new(params(1.0, 0, 1.0, 0.2)), &logits, 5000);
        assert!(h[2] > 0 && h[3] == 0, "min-p 0.2: {h:?}");
    }

    #[test]
    fn head_sorting_picks_what_a_full_sort_picks() {
        let mut draw_logits = StdRng::seed_from_u64(11);
        let cases = [
            params(0.7, 0, 0.95, 0.0),
            params(1.0, 0, 1.0, 0.0),
            params(0.6, 40, 0.95, 0.0),
            params(1.0, 0, 1.0, 0.05),
            params(1.3, 200, 1.0, 0.0),
            params(0.9, 0, 0.5, 0.01),
        ];
        let mut draws = 0;
        for len in [1usize, 3, 64, 65, 500, 5000, 129_280] {
            for (ci, &p) in cases.iter().enumerate() {
                // A peaked distribution (a real model's) or a flat one, with ties.
                let spread = if ci % 2 == 0 { 12.0 } else { 2.0 };
                let logits: Vec<f32> = (0..len)
                    .map(|_| (draw_logits.random::<f32>() * spread * 8.0).round() / 8.0)
                    .collect();
                let mut fast = Sampler::new(p);
                let mut slow = StdRng::seed_from_u64(p.seed);
                for _ in 0..20 {
                    let want = sample_full_sort(p, &mut slow, &logits);
                    assert_eq!(fast.sample(&logits, false), want, "len {len} params {p:?}");
                    draws += 1;
                }
            }
        }
        assert_eq!(draws, 7 * 6 * 20);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0, 0, 1.0, 0.0)
            });
            (0..64)
                .map(|_| s.sample(&logits, false).expect("token"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}

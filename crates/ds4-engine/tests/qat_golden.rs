//! The engine's quantization simulations (spec §3.9) against an independent float64
//! reference that applies the same simulations with PyTorch's own roundings
//! (tools/v4_reference.py, data written by tools/gen_qat_golden.py):
//!
//! * the tiny-v4 model with the simulations ON, first 300 prompt tokens, logits at
//!   every position and the indexer's selections;
//! * E2M1 rounding on a dense sweep and on whole fp4_sim blocks.
//!
//! transformers has none of the simulations, so tests/hf_golden.rs can only check the
//! engine with them off; this file closes that gap.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use ds4_engine::qat::{e2m1_round, fp4_act_inplace};
use ds4_engine::{ForwardOptions, Model, Trace};
use safetensors::{Dtype, SafeTensors};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// f32 tensors (as f32) and integer tensors (widened to i64) of a safetensors file.
#[allow(clippy::type_complexity)]
fn load(
    name: &str,
) -> (
    HashMap<String, (Vec<usize>, Vec<f32>)>,
    HashMap<String, (Vec<usize>, Vec<i64>)>,
) {
    let bytes = std::fs::read(data(name)).expect("fixture file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (mut f, mut i) = (HashMap::new(), HashMap::new());
    for (n, v) in st.tensors() {
        let shape = v.shape().to_vec();
        let raw = v.data();
        match v.dtype() {
            Dtype::F32 => {
                let d = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                f.insert(n, (shape, d));
            }
            Dtype::I32 => {
                let d = raw
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect();
                i.insert(n, (shape, d));
            }
            Dtype::I16 => {
                let d = raw
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect();
                i.insert(n, (shape, d));
            }
            other => panic!("unexpected dtype {other:?} for {n}"),
        }
    }
    (f, i)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
        / max_abs(want)
}

const EARLY: usize = 50;

#[test]
fn logits_with_simulations_match_the_float64_reference() {
    let model = Model::from_official_dir(&data("tiny-v4")).expect("load tiny model");
    let v = model.cfg.n_vocab;
    let (hf_f, hf_i) = load("tiny-v4/golden.safetensors");
    let (qf, qi) = load("qat_tiny_golden.safetensors");
    let (shape, want_on) = &qf["logits"];
    let s = shape[0];
    assert_eq!(shape[1], v);
    assert!(s >= 300, "the fixture covers {s} positions");
    let ids: Vec<u32> = hf_i["input_ids"].1[..s].iter().map(|&t| t as u32).collect();
    let hf = &hf_f["logits"].1;

    let mut on_cache = model.new_cache();
    let mut off_cache = model.new_cache();
    let mut trace = Trace::default();
    let mut rel_on = Vec::with_capacity(s);
    let mut worst_off = 0.0f32;
    let mut ref_vs_hf = Vec::with_capacity(s);
    let (mut argmax_ok, mut idx_checked) = (0, 0);
    // (layer, position, rows only the engine picked, rows only the reference picked)
    let mut idx_diff: Vec<(usize, usize, Vec<usize>, Vec<usize>)> = Vec::new();
    for (t, &tok) in ids.iter().enumerate() {
        let on = model
            .forward_token_traced(
                &mut on_cache,
                tok,
                ForwardOptions { no_qat_sim: false },
                Some(&mut trace),
            )
            .unwrap();
        let off = model
            .forward_token(&mut off_cache, tok, ForwardOptions { no_qat_sim: true })
            .unwrap();
        let want = &want_on[t * v..(t + 1) * v];
        let hf_t = &hf[t * v..(t + 1) * v];
        rel_on.push(rel_err(&on, want));
        argmax_ok += (argmax(&on) == argmax(want)) as usize;
        worst_off = worst_off.max(rel_err(&off, hf_t));
        ref_vs_hf.push(rel_err(want, hf_t));

        for (l, lt) in trace.layers.iter().enumerate() {
            let Some((ishape, gold)) = qi.get(&format!("indexer_topk.{l}")) else {
                continue;
            };
            let k = ishape[1];
            let want: BTreeSet<usize> = gold[t * k..(t + 1) * k]
                .iter()
                .filter(|&&c| c >= 0)
                .map(|&c| c as usize)
                .collect();
            let got: BTreeSet<usize> = match &lt.indexer_selected {
                Some(sel) => sel.iter().copied().collect(),
                None => (0..(t + 1) / 4).collect(),
            };
            idx_checked += 1;
            if got != want {
                idx_diff.push((
                    l,
                    t,
                    got.difference(&want).copied().collect(),
                    want.difference(&got).copied().collect(),
                ));
            }
        }
    }
    let n_within = |tol: f32| rel_on.iter().filter(|&&r| r <= tol).count();
    let (w4, w3, w2) = (n_within(1e-4), n_within(1e-3), n_within(1e-2));
    let (worst_pos, worst) = rel_on
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0f32), |b, (i, r)| if r > b.1 { (i, r) } else { b });
    let mean = rel_on.iter().sum::<f32>() / s as f32;
    let mut sorted = rel_on.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[s / 2];
    let first_over = rel_on.iter().position(|&r| r > 1e-4);
    let early = rel_on[..EARLY].iter().fold(0.0f32, |m, &r| m.max(r));
    ref_vs_hf.sort_by(f32::total_cmp);
    let sim_effect = ref_vs_hf[s / 2];
    eprintln!(
        "tiny-v4 with simulations vs float64 reference, {s} positions: max rel err {worst:.3e} at {worst_pos}, \
         mean {mean:.3e}, median {median:.3e}; within 1e-4: {w4}/{s}, 1e-3: {w3}/{s}, 1e-2: {w2}/{s}; \
         first position beyond 1e-4: {first_over:?}; max over positions 0..{EARLY}: {early:.3e}; argmax agrees at {argmax_ok}/{s}; \
         indexer sets differ at {}/{idx_checked} (layer, pos, engine-only rows, reference-only rows) {:?}",
        idx_diff.len(),
        &idx_diff[..idx_diff.len().min(8)],
    );
    eprintln!(
        "simulations off vs transformers, same positions: max rel err {worst_off:.3e}; \
         the simulations' own effect (reference vs transformers): median rel difference {sim_effect:.3e}"
    );
    // The simulations must matter, or agreeing with the reference would prove nothing.
    assert!(
        sim_effect > 100.0 * median,
        "the simulations' effect {sim_effect:e} is not well above the engine's error {median:e}"
    );
    assert!(
        worst_off < 1e-5,
        "simulations off drifted from transformers"
    );
    // Until the first rounding flip the engine is the reference up to f32 noise, as
    // with the simulations off. On this prompt the first flip is at position 51,
    // layer 4: one KV element the reference scales to 53.99984 (3e-6 below the tie
    // 54 between E4M3 52 and 56) lands on the other side in f32.
    assert!(early < 2e-5, "before any flip: {early:e}");
    // After it, flips cascade at ~1e-4 (the first fp8 flip perturbs later layers by
    // ~1e-4, where more values sit that close to a boundary: tools/gen_qat_golden.py
    // counts them in qat_tiny_meta.json). One of them is an FP4 flip in indexer row
    // 19 of layer 4, which moves that row's score by a few percent and swaps it in
    // or out of 4 top-16 selections; those 4 positions are the only ones beyond 1e-3.
    assert_eq!(argmax_ok, s, "argmax differs");
    assert!(
        idx_diff.len() * 100 <= idx_checked,
        "indexer selections differ at {} of {idx_checked}",
        idx_diff.len()
    );
    for (t, &r) in rel_on.iter().enumerate() {
        let selection_differs = idx_diff.iter().any(|d| d.1 == t);
        assert!(
            r < 1e-3 || (selection_differs && r < 5e-2),
            "position {t}: {r:e} (indexer selection differs: {selection_differs})"
        );
    }
    assert!(w3 * 100 >= s * 98, "only {w3}/{s} positions within 1e-3");
}

#[derive(serde::Deserialize)]
/// Floats as their IEEE bit patterns, read by PyTorch as int32.
struct E2m1Vectors {
    codes: Vec<i32>,
    #[serde(rename = "in")]
    input: Vec<i32>,
    out: Vec<i32>,
    fp4_rows_in: Vec<i32>,
    fp4_rows_out: Vec<i32>,
    fp4_row_len: usize,
}

fn f(bits: i32) -> f32 {
    f32::from_bits(bits as u32)
}

fn e2m1_vectors() -> E2m1Vectors {
    let text = std::fs::read_to_string(data("qat_e2m1_torch.json")).expect("e2m1 fixture");
    serde_json::from_str(&text).expect("e2m1 json")
}

#[test]
fn e2m1_rounding_matches_pytorch_on_a_dense_sweep() {
    let v = e2m1_vectors();
    // PyTorch's 16 codes: 0..7 positive magnitudes, 8..15 the same negated.
    assert_eq!(v.codes.len(), 16);
    let codes: Vec<f32> = v.codes.iter().map(|&b| f(b)).collect();
    for (c, &x) in codes.iter().enumerate() {
        assert_eq!(e2m1_round(x).to_bits(), x.to_bits(), "code {c} = {x}");
        if c >= 8 {
            assert_eq!(x.to_bits(), (-codes[c - 8]).to_bits());
        }
    }
    assert!(v.input.len() > 800);
    let mut ties = 0;
    for (&i, &o) in v.input.iter().zip(&v.out) {
        let (x, want) = (f(i), f(o));
        let got = e2m1_round(x.clamp(-6.0, 6.0));
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "x = {x:e}: {got} vs PyTorch {want}"
        );
        // a midpoint between neighbouring codes
        ties += codes[..8]
            .windows(2)
            .any(|w| (w[0] + w[1]) / 2.0 == x.abs()) as usize;
    }
    assert!(ties >= 14, "the sweep covers {ties} exact ties");
}

#[test]
fn fp4_blocks_match_pytorch_reference() {
    let v = e2m1_vectors();
    let mut got: Vec<f32> = v.fp4_rows_in.iter().map(|&b| f(b)).collect();
    for row in got.chunks_mut(v.fp4_row_len) {
        fp4_act_inplace(row);
    }
    let mut changed = 0;
    for (k, ((g, &w), &i)) in got
        .iter()
        .zip(&v.fp4_rows_out)
        .zip(&v.fp4_rows_in)
        .enumerate()
    {
        // ±0 are the same value after the block's scale; compare values, not bits
        assert_eq!(*g, f(w), "element {k}, input {:e}", f(i));
        changed += (w != i) as usize;
    }
    assert!(
        changed > got.len() / 2,
        "the rounding changed only {changed} values"
    );
}

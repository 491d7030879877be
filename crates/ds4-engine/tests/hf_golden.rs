//! The forward pass against transformers' DeepseekV4ForCausalLM on the tiny fixture
//! written by tools/gen_tiny_fixtures.py (640-token prompt; window 48, ratios 4 and
//! 32, indexer top-16 of up to 160 rows, 2 hash-routed layers, 4 HC streams).
//!
//! With the QAT simulations off the engine must reproduce HF's logits at every
//! position to 1e-4 relative (max |Δ| over the vocabulary / max |logit|).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use ds4_engine::{ForwardOptions, Model, Session, Trace};
use safetensors::{Dtype, SafeTensors};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4")
}

struct Golden {
    f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    i32s: HashMap<String, (Vec<usize>, Vec<i32>)>,
}

impl Golden {
    fn load() -> Golden {
        let bytes = std::fs::read(data_dir().join("golden.safetensors")).expect("golden file");
        let st = SafeTensors::deserialize(&bytes).expect("golden safetensors");
        let mut g = Golden {
            f32s: HashMap::new(),
            i32s: HashMap::new(),
        };
        for (name, v) in st.tensors() {
            let shape = v.shape().to_vec();
            let raw = v.data();
            match v.dtype() {
                Dtype::F32 => {
                    let d = raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    g.f32s.insert(name, (shape, d));
                }
                Dtype::I32 => {
                    let d = raw
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    g.i32s.insert(name, (shape, d));
                }
                other => panic!("unexpected dtype {other:?} for {name}"),
            }
        }
        g
    }
    fn f(&self, k: &str) -> &(Vec<usize>, Vec<f32>) {
        &self.f32s[k]
    }
    fn i(&self, k: &str) -> &(Vec<usize>, Vec<i32>) {
        &self.i32s[k]
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn logits_match_transformers_at_every_position() {
    let model = Model::from_official_dir(&data_dir()).expect("load tiny model");
    let cfg = &model.cfg;
    let g = Golden::load();
    let ids: Vec<u32> = g.i("input_ids").1.iter().map(|&t| t as u32).collect();
    let (lshape, logits) = g.f("logits");
    let (s, v) = (lshape[0], lshape[1]);
    assert_eq!((s, v), (ids.len(), cfg.n_vocab));
    assert!(s >= 600);
    let probes: Vec<usize> = g.i("probe_pos").1.iter().map(|&p| p as usize).collect();

    let opts = ForwardOptions { no_qat_sim: true };
    let mut cache = model.new_cache();
    let mut trace = Trace::default();
    let (mut worst, mut worst_pos, mut within, mut argmax_ok) = (0.0f32, 0, 0, 0);
    let mut rel_errs = Vec::with_capacity(s);
    let mut hidden_worst = 0.0f32;
    let (mut idx_checked, mut idx_mismatch) = (0, Vec::new());
    let (mut route_checked, mut route_mismatch) = (0, 0);
    for (t, &tok) in ids.iter().enumerate() {
        let out = model
            .forward_token_traced(&mut cache, tok, opts, Some(&mut trace))
            .unwrap();
        let want = &logits[t * v..(t + 1) * v];
        let diff = out
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let rel = diff / max_abs(want);
        rel_errs.push(rel);
        if rel > worst {
            (worst, worst_pos) = (rel, t);
        }
        within += (rel <= 1e-4) as usize;
        argmax_ok += (argmax(&out) == argmax(want)) as usize;

        if let Some(pi) = probes.iter().position(|&p| p == t) {
            for (l, h) in trace.hidden.iter().enumerate() {
                let (shape, gold) = g.f(&format!("hidden.{l}"));
                let n: usize = shape[1..].iter().product();
                let want = &gold[pi * n..(pi + 1) * n];
                let d = h
                    .iter()
                    .zip(want)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
                    / max_abs(want);
                hidden_worst = hidden_worst.max(d);
            }
        }
        for (l, lt) in trace.layers.iter().enumerate() {
            if let Some((shape, gold)) = g.i32s.get(&format!("indexer_topk.{l}")) {
                let k = shape[1];
                let want: BTreeSet<usize> = gold[t * k..(t + 1) * k]
                    .iter()
                    .filter(|&&c| c >= 0)
                    .map(|&c| c as usize)
                    .collect();
                let n_comp = (t + 1) / 4;
                let got: BTreeSet<usize> = match &lt.indexer_selected {
                    Some(sel) => sel.iter().copied().collect(),
                    None => (0..n_comp).collect(),
                };
                idx_checked += 1;
                if got != want {
                    idx_mismatch.push((l, t, got.symmetric_difference(&want).count()));
                }
            }
            let (shape, gold) = g.i(&format!("router_idx.{l}"));
            let k = shape[1];
            let want: BTreeSet<i32> = gold[t * k..(t + 1) * k].iter().copied().collect();
            let got: BTreeSet<i32> = lt.experts.iter().map(|&(e, _)| e as i32).collect();
            route_checked += 1;
            route_mismatch += (got != want) as usize;
        }
    }
    let mean = rel_errs.iter().sum::<f32>() / s as f32;
    eprintln!(
        "tiny-v4, {s} positions, no_qat_sim: max rel err {worst:.3e} at position {worst_pos}, mean {mean:.3e}; \
         {within}/{s} within 1e-4; argmax agrees at {argmax_ok}/{s}; hidden streams at {} probes: \
         worst rel err {hidden_worst:.3e}; indexer sets differ at {}/{idx_checked} (layer, pos, |Δ|) {:?}; \
         router sets differ at {route_mismatch}/{route_checked}",
        probes.len(),
        idx_mismatch.len(),
        &idx_mismatch[..idx_mismatch.len().min(8)],
    );
    assert_eq!(route_mismatch, 0, "routed experts differ");
    assert!(
        idx_mismatch.is_empty(),
        "indexer selections differ: {idx_mismatch:?}"
    );
    assert!(
        hidden_worst < 1e-4,
        "hidden streams differ: {hidden_worst:e}"
    );
    assert_eq!(
        within, s,
        "positions beyond 1e-4 (worst {worst:e} at {worst_pos})"
    );
    assert_eq!(argmax_ok, s);
}

/// `v` is `s·q` for a power-of-two `s` and every `q` on `grid` (per block).
fn on_block_grid(v: &[f32], block: usize, qmax: f32, round: fn(f32) -> f32) -> bool {
    v.chunks(block).all(|b| {
        let amax = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if amax == 0.0 {
            return true;
        }
        // the block's scale is the smallest power of two that brings amax within qmax
        let s = (amax / qmax).log2().ceil().exp2();
        b.iter().all(|&x| round(x / s) == x / s)
    })
}

fn is_f16(x: f32) -> bool {
    half::f16::from_f32(x).to_f32() == x
}

#[test]
fn qat_simulations_put_stored_rows_on_their_grids() {
    use ds4_engine::qat::{e2m1_round, e4m3_round};
    let model = Model::from_official_dir(&data_dir()).expect("load tiny model");
    let cfg = &model.cfg;
    let g = Golden::load();
    let ids: Vec<u32> = g
        .i("input_ids")
        .1
        .iter()
        .take(200)
        .map(|&t| t as u32)
        .collect();
    let v = cfg.n_vocab;
    let logits = &g.f("logits").1;
    let n_nope = cfg.head_dim - cfg.n_rot;
    for no_qat_sim in [false, true] {
        let mut sess = Session::new(&model, 1024, ForwardOptions { no_qat_sim });
        let (mut max_rel, mut argmax_ok) = (0.0f32, 0);
        for (t, &tok) in ids.iter().enumerate() {
            let out = sess.decode(tok).unwrap();
            assert!(out.iter().all(|x| x.is_finite()));
            let want = &logits[t * v..(t + 1) * v];
            let d = out
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
                / max_abs(want);
            max_rel = max_rel.max(d);
            argmax_ok += (argmax(out) == argmax(want)) as usize;
        }
        eprintln!(
            "no_qat_sim={no_qat_sim}: first {} positions, max rel deviation from HF {max_rel:.3e}, argmax agrees at {argmax_ok}",
            ids.len()
        );
        let cache = sess.cache();
        let kv_rows = cache
            .layers
            .iter()
            .flat_map(|l| l.raw.iter().map(|r| r.as_slice()).chain(l.comp.iter()));
        let idx_rows: Vec<&[f32]> = cache.layers.iter().flat_map(|l| l.icomp.iter()).collect();
        assert!(!idx_rows.is_empty());
        let kv_ok = kv_rows
            .map(|r| {
                r.iter().all(|&x| is_f16(x)) && on_block_grid(&r[..n_nope], 64, 448.0, e4m3_round)
            })
            .collect::<Vec<_>>();
        let idx_ok = idx_rows
            .iter()
            .map(|r| r.iter().all(|&x| is_f16(x)) && on_block_grid(r, 32, 6.0, e2m1_round))
            .collect::<Vec<_>>();
        if no_qat_sim {
            // plain f32 rows are essentially never on these grids
            assert!(kv_ok.iter().all(|ok| !ok) && idx_ok.iter().all(|ok| !ok));
            assert!(max_rel < 1e-4);
        } else {
            assert!(kv_ok.iter().all(|&ok| ok), "KV rows off the fp8/f16 grid");
            assert!(
                idx_ok.iter().all(|&ok| ok),
                "indexer rows off the fp4/f16 grid"
            );
            assert!(max_rel > 1e-3, "the simulations had no visible effect");
        }
    }
}

#[test]
fn session_sync_reuses_prefix_and_matches_fresh_decode() {
    let model = Model::from_official_dir(&data_dir()).expect("load tiny model");
    let g = Golden::load();
    let ids: Vec<u32> = g
        .i("input_ids")
        .1
        .iter()
        .take(90)
        .map(|&t| t as u32)
        .collect();
    let opts = ForwardOptions::default();

    let mut fresh = Session::new(&model, 256, opts);
    assert_eq!(fresh.sync(&ids).unwrap(), 90);
    let want = fresh.logits().unwrap().to_vec();

    let mut s = Session::new(&model, 256, opts);
    assert_eq!(s.sync(&ids[..50]).unwrap(), 50);
    assert_eq!(
        s.sync(&ids).unwrap(),
        40,
        "extending must only evaluate the new suffix"
    );
    assert_eq!(s.logits().unwrap(), &want[..]);
    assert_eq!(s.cache(), fresh.cache());

    // Diverging after 70 tokens, then coming back, gives the same state.
    let mut other = ids[..80].to_vec();
    other[70] = (other[70] + 1) % model.cfg.n_vocab as u32;
    s.sync(&other).unwrap();
    assert_ne!(s.logits().unwrap(), &want[..]);
    s.sync(&ids).unwrap();
    assert_eq!(s.logits().unwrap(), &want[..]);
    assert_eq!(s.tokens(), &ids[..]);

    // snapshot / restore: branch off, come back without recomputing
    let snap = s.snapshot();
    s.decode(5).unwrap();
    s.decode(6).unwrap();
    assert_eq!(s.tokens().len(), 92);
    s.restore(&snap).unwrap();
    assert_eq!(s.tokens(), &ids[..]);
    assert_eq!(s.logits().unwrap(), &want[..]);
    assert_eq!(s.cache(), fresh.cache());

    assert!(s.sync(&vec![1; 300]).is_err(), "beyond the context limit");
    assert!(
        s.decode(model.cfg.n_vocab as u32).is_err(),
        "token outside the vocabulary"
    );
    assert!(Session::new(&model, 8, opts).logits().is_err());
}

#[test]
fn chunked_prefill_equals_token_by_token_decode() {
    // Batching is only a schedule: every chunk size must give bit-identical logits
    // and caches, with the simulations on (the default) and off.
    let model = Model::from_official_dir(&data_dir()).expect("load tiny model");
    let g = Golden::load();
    let ids: Vec<u32> = g
        .i("input_ids")
        .1
        .iter()
        .take(260)
        .map(|&t| t as u32)
        .collect();
    for no_qat_sim in [false, true] {
        let opts = ForwardOptions { no_qat_sim };
        let mut dec = model.new_cache();
        let mut per_token = Vec::new();
        for &t in &ids {
            per_token.push(model.forward_token(&mut dec, t, opts).unwrap());
        }
        for chunk in [2, 7, 37, 64, 260] {
            let mut c = model.new_cache();
            let last = model.prefill(&mut c, &ids, chunk, opts).unwrap();
            assert_eq!(
                &last,
                per_token.last().unwrap(),
                "chunk {chunk}, no_qat_sim={no_qat_sim}"
            );
            assert!(
                c == dec,
                "cache after chunk {chunk} prefill differs from decode"
            );
        }
        // teacher-forced logits in chunks (the --dump-logits path)
        let tf = model.teacher_forced_logits(&ids, 45, opts).unwrap();
        assert_eq!(tf, per_token);
        // every position's logits from one batch
        let mut c = model.new_cache();
        let all = model
            .forward_batch(&mut c, &ids[..100], opts, ds4_engine::LogitsFor::All, None)
            .unwrap();
        assert_eq!(&all[..], &per_token[..100]);
        // a prefill resumed on a warm cache (prefix reuse), then decode
        let mut c = model.new_cache();
        model.prefill(&mut c, &ids[..131], 50, opts).unwrap();
        model.prefill(&mut c, &ids[131..250], 33, opts).unwrap();
        for &t in &ids[250..259] {
            model.forward_token(&mut c, t, opts).unwrap();
        }
        assert_eq!(
            model.forward_token(&mut c, ids[259], opts).unwrap(),
            per_token[259]
        );
    }
}

#[test]
fn session_payload_round_trips_and_rejects_damage() {
    let model = Model::from_official_dir(&data_dir()).expect("load tiny model");
    let g = Golden::load();
    let ids: Vec<u32> = g
        .i("input_ids")
        .1
        .iter()
        .take(170)
        .map(|&t| t as u32)
        .collect();
    let opts = ForwardOptions::default();
    let mut a = Session::new(&model, 512, opts);
    a.sync(&ids[..150]).unwrap();
    let mut bytes = Vec::new();
    a.save_payload(&mut bytes).unwrap();
    assert_eq!(&bytes[..4], b"DSV4");

    let mut b = Session::new(&model, 512, opts);
    b.load_payload(&mut bytes.as_slice()).unwrap();
    assert_eq!(b.tokens(), a.tokens());
    assert_eq!(b.logits().unwrap(), a.logits().unwrap());
    // continuing from the loaded state is the same as never stopping
    a.sync(&ids).unwrap();
    assert_eq!(b.sync(&ids).unwrap(), 20);
    assert_eq!(a.logits().unwrap(), b.logits().unwrap());
    assert!(a.cache() == b.cache());

    // damaged payloads are refused without touching the session
    let before = b.snapshot();
    for cut in [0, 10, 52, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            b.load_payload(&mut &bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    let mut wrong = bytes.clone();
    wrong[0] ^= 1;
    assert!(b.load_payload(&mut wrong.as_slice()).is_err());
    let mut wrong = bytes.clone();
    let n_layer = model.cfg.n_layer;
    let v = model.cfg.n_vocab;
    let comp_at = 52 + 150 * 4 + v * 4 + 2 * 4; // n_comp of layer 2
    wrong[comp_at] += 1;
    let e = b.load_payload(&mut wrong.as_slice()).unwrap_err();
    assert!(e.to_string().contains("layer 2"), "{e} ({n_layer} layers)");
    assert!(b.snapshot() == before);
    // a smaller context than the saved token count
    let mut small = Session::new(&model, 100, opts);
    assert!(small.load_payload(&mut bytes.as_slice()).is_err());
}

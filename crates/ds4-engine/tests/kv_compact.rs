//! The compact session payload (version 2): rows packed on their fp8/fp4 grids
//! restore bit for bit, and continuing from a restored session gives exactly the
//! logits of a session that never stopped, with the simulations on and off.

use std::path::Path;

use ds4_engine::cache::KvCache;
use ds4_engine::kvpack::{RowKind, TAG_PACKED, body_len};
use ds4_engine::{ForwardOptions, Model, Session};

fn model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4");
    Model::from_official_dir(&dir).expect("tiny checkpoint")
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % 251) as u32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every stored row equal bit for bit (raw window, compressed and indexer rows).
fn assert_rows_equal(a: &KvCache, b: &KvCache) {
    assert_eq!(a.n_tokens, b.n_tokens);
    for (l, (x, y)) in a.layers.iter().zip(&b.layers).enumerate() {
        assert_eq!(x.raw.len(), y.raw.len(), "layer {l}");
        for (r, s) in x.raw.iter().zip(&y.raw) {
            assert_eq!(bits(r), bits(s), "layer {l} raw");
        }
        assert_eq!(
            bits(x.comp.as_flat()),
            bits(y.comp.as_flat()),
            "layer {l} comp"
        );
        assert_eq!(
            bits(x.icomp.as_flat()),
            bits(y.icomp.as_flat()),
            "layer {l} icomp"
        );
    }
}

fn check(opts: ForwardOptions, expect_packed: bool) {
    let model = model();
    let all = tokens(230);
    // 150 tokens: past the 48-token window and several ratio-4 and ratio-32 rows,
    // with partly filled frontiers.
    let mut a = Session::new(&model, 512, opts);
    a.sync(&all[..150]).unwrap();
    let mut v1 = Vec::new();
    a.save_payload(&mut v1).unwrap();
    let mut v2 = Vec::new();
    a.save_payload_compact(&mut v2).unwrap();

    let mut b = Session::new(&model, 512, opts);
    b.load_payload(&mut v2.as_slice()).unwrap();
    assert_eq!(b.tokens(), a.tokens());
    assert_eq!(bits(b.logits().unwrap()), bits(a.logits().unwrap()));
    assert_rows_equal(a.cache(), b.cache());

    // Continue both, by prefill and by decode: same logits at every step.
    a.sync(&all[..200]).unwrap();
    assert_eq!(b.sync(&all[..200]).unwrap(), 50);
    assert_eq!(bits(a.logits().unwrap()), bits(b.logits().unwrap()));
    for &t in &all[200..] {
        let la = bits(a.decode(t).unwrap());
        let lb = bits(b.decode(t).unwrap());
        assert_eq!(la, lb);
    }
    assert_rows_equal(a.cache(), b.cache());

    // Count the rows that were packed: all of them with the simulations on.
    let cfg = &model.cfg;
    let kv = RowKind::Kv {
        n_nope: cfg.head_dim - cfg.n_rot,
    };
    let packed_kv = body_len(kv, cfg.head_dim, TAG_PACKED).unwrap() + 1;
    let rows: usize = a
        .cache()
        .layers
        .iter()
        .map(|l| l.raw.len() + l.comp.len())
        .sum();
    eprintln!(
        "v1 {} bytes, v2 {} bytes ({} KV rows of {} packed bytes)",
        v1.len(),
        v2.len(),
        rows,
        packed_kv
    );
    if expect_packed {
        assert!(v2.len() * 2 < v1.len(), "{} vs {}", v2.len(), v1.len());
    } else {
        assert!(v2.len() < v1.len() + v1.len() / 10);
    }
}

#[test]
fn compact_payload_restores_exactly_with_simulations() {
    check(ForwardOptions::default(), true);
}

#[test]
fn compact_payload_falls_back_exactly_without_simulations() {
    check(ForwardOptions { no_qat_sim: true }, false);
}

#[test]
fn damaged_compact_payloads_are_refused() {
    let model = model();
    let mut a = Session::new(&model, 512, ForwardOptions::default());
    a.sync(&tokens(100)).unwrap();
    let mut bytes = Vec::new();
    a.save_payload_compact(&mut bytes).unwrap();
    let mut b = Session::new(&model, 512, ForwardOptions::default());
    b.sync(&tokens(3)).unwrap();
    let before = b.snapshot();
    for cut in [0, 30, 52, bytes.len() / 3, bytes.len() - 1] {
        assert!(b.load_payload(&mut &bytes[..cut]).is_err(), "cut {cut}");
    }
    // An unknown row tag right after the logits and row counts.
    let cfg = &model.cfg;
    let first_row = 52 + 100 * 4 + cfg.n_vocab * 4 + 2 * cfg.n_layer * 4;
    let mut bad = bytes.clone();
    bad[first_row] = 9;
    let e = b.load_payload(&mut bad.as_slice()).unwrap_err();
    assert!(e.to_string().contains("row tag"), "{e}");
    assert!(b.snapshot() == before);
}

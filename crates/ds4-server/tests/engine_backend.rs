//! The ds4-engine adapter on the tiny official checkpoint (vocab 256) of
//! ds4-engine's tests: prefix reuse, extension, rewind and cancellation must give
//! the same logits as a fresh session over the same tokens.

use std::path::Path;

use ds4_engine::{ForwardOptions, Model, Session};
use ds4_server::{Backend, BackendError, EngineBackend, SyncStats};

fn model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4");
    Model::from_official_dir(&dir).expect("tiny checkpoint")
}

fn fresh_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut s = Session::new(model, 256, ForwardOptions::default());
    s.sync(tokens).expect("sync");
    s.logits().expect("logits").to_vec()
}

#[test]
fn sync_reuses_prefixes_and_matches_a_fresh_session() {
    let reference = model();
    let mut b = EngineBackend::new(model(), 256);
    let a: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 256).collect();
    let mut ab = a.clone();
    ab.extend([7, 99, 200, 3]);

    let mut calls = Vec::new();
    let st = b.sync(&a, &mut |d, t| {
        calls.push((d, t));
        true
    });
    assert_eq!(
        st.expect("sync"),
        SyncStats {
            reused: 0,
            prefilled: 12
        }
    );
    assert_eq!(calls.first(), Some(&(0, 12)));
    assert_eq!(calls.last(), Some(&(12, 12)));
    assert_eq!(
        b.logits().expect("logits"),
        fresh_logits(&reference, &a).as_slice()
    );

    let st = b.sync(&ab, &mut |_, _| true).expect("extend");
    assert_eq!(
        st,
        SyncStats {
            reused: 12,
            prefilled: 4
        }
    );
    assert_eq!(
        b.logits().expect("logits"),
        fresh_logits(&reference, &ab).as_slice()
    );

    // Same tokens again: nothing to evaluate.
    let st = b.sync(&ab, &mut |_, _| true).expect("same");
    assert_eq!(
        st,
        SyncStats {
            reused: 16,
            prefilled: 0
        }
    );

    // A strict prefix: the engine replays it (no snapshots yet), logits still exact.
    let st = b.sync(&a[..8], &mut |_, _| true).expect("rewind");
    assert_eq!(st.reused + st.prefilled, 8);
    assert_eq!(
        b.logits().expect("logits"),
        fresh_logits(&reference, &a[..8]).as_slice()
    );

    // Decode continues from there.
    b.decode(a[8]).expect("decode");
    assert_eq!(b.tokens(), &a[..9]);
    assert_eq!(
        b.logits().expect("logits"),
        fresh_logits(&reference, &a[..9]).as_slice()
    );

    // Cancelled prefill stops and says so.
    let r = b.sync(&ab, &mut |d, _| d < 2);
    assert!(matches!(r, Err(BackendError::Cancelled)));
    assert!(b.tokens().len() < ab.len());

    // The context limit is enforced.
    let long: Vec<u32> = vec![1; 300];
    assert!(matches!(
        b.sync(&long, &mut |_, _| true),
        Err(BackendError::ContextFull(256))
    ));
}

//! Replays the minimized fuzz corpus (tests/data/fuzz_corpus.bin, packed by
//! tools/gen_gguf_fixtures.py) and the fuzz seeds through the same checks as
//! the fuzz target, so CI (which cannot run libFuzzer) keeps every input the
//! fuzzer found interesting: parse or error, never panic; whatever parses
//! survives write → read → write unchanged.

use std::path::Path;

use ds4_gguf::{GgufBuilder, GgufFile};

fn rebuild(f: &GgufFile) -> Vec<u8> {
    // A parsed file always has unique keys and valid tensors, and writing
    // to memory cannot fail.
    GgufBuilder::from_file(f)
        .and_then(|b| b.to_bytes())
        .expect("a parsed file can be rewritten")
}

/// Returns whether the input parsed.
fn check(data: &[u8]) -> bool {
    let Ok(f) = GgufFile::from_bytes(data) else {
        return false;
    };
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        let _ = f.tensor_f32(t);
        let _ = f.tensor_f16(t);
    }
    for (k, v) in f.metadata().iter() {
        let _ = v.to_string();
        let _ = f.get_uint(k);
    }
    let once = rebuild(&f);
    let g = GgufFile::from_bytes(&once).unwrap();
    assert_eq!(rebuild(&g), once);
    true
}

#[test]
fn minimized_fuzz_corpus_replays_cleanly() {
    let packed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz_corpus.bin"))
            .unwrap();
    let (mut rest, mut n, mut parsed) = (&packed[..], 0, 0);
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let input = &rest[4..4 + len];
        rest = &rest[4 + len..];
        n += 1;
        parsed += usize::from(check(input));
    }
    eprintln!("{n} corpus inputs, {parsed} parse");
    assert!(n > 100, "corpus has only {n} inputs");
    // The corpus keeps inputs that reach both the error paths and a full parse.
    assert!(parsed > 0 && parsed < n);
}

#[test]
fn fuzz_seeds_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(check(&bytes));
        n += 1;
    }
    assert!(n >= 5);
}

//! Encode throughput, ours against Hugging Face `tokenizers` on the same tokenizer.json,
//! single-threaded, in one run: English prose, Rust source and Chinese prose. Also the
//! cost of loading the vocabulary on both sides.
//!
//! `cargo bench -p ds4-tokenizer --bench encode`; throughput is printed in tokens/s
//! ("elem/s").

use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ds4_tokenizer::{SpecialMode, Tokenizer};

fn tokenizer_json() -> String {
    // DS4_TOKENIZER_JSON_GZ lets a copied binary run away from the source tree.
    let path = std::env::var_os("DS4_TOKENIZER_JSON_GZ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../assets/tokenizer/deepseek-v4-tokenizer.json.gz")
        });
    let gz = std::fs::read(path).expect("bundled tokenizer");
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .expect("gunzip");
    json
}

fn inputs() -> Vec<(&'static str, String)> {
    let code = [
        include_str!("../src/lib.rs"),
        include_str!("../src/load.rs"),
        include_str!("../src/pretok.rs"),
        include_str!("../src/bpe.rs"),
        include_str!("../src/added.rs"),
        include_str!("../tests/common/mod.rs"),
    ]
    .concat();
    vec![
        ("english", include_str!("data/english.txt").repeat(10)),
        ("rust_code", code),
        ("chinese", include_str!("data/chinese.txt").repeat(10)),
    ]
}

fn bench(c: &mut Criterion) {
    let json = tokenizer_json();
    let ours = Tokenizer::from_json(&json).expect("ours");
    let hf: tokenizers::Tokenizer = json.parse().expect("hf");
    // HF's BPE keeps a per-thread word cache; ours has none, so nothing is warmed here
    // that the other side does not also get from criterion's warm-up.
    for (name, text) in inputs() {
        let ids = ours.encode(&text, SpecialMode::Recognize);
        let hf_ids = hf.encode(text.as_str(), false).expect("hf encode");
        assert_eq!(ids, hf_ids.get_ids(), "{name}: outputs differ");
        let mut group = c.benchmark_group(format!("encode/{name}"));
        group.throughput(Throughput::Elements(ids.len() as u64));
        group.bench_function("ds4-tokenizer", |b| {
            b.iter(|| ours.encode(black_box(&text), SpecialMode::Recognize))
        });
        group.bench_function("hf-tokenizers", |b| {
            b.iter(|| hf.encode(black_box(text.as_str()), false).expect("hf"))
        });
        group.finish();
    }

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("ds4-tokenizer", |b| {
        b.iter(|| Tokenizer::from_json(black_box(&json)).expect("ours"))
    });
    group.bench_function("hf-tokenizers", |b| {
        b.iter(|| {
            black_box(&json)
                .parse::<tokenizers::Tokenizer>()
                .expect("hf")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

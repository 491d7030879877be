//! Writer → reader round trips (property-based and hand-picked), the streaming
//! writer's checks, and the truncation sweep.

use ds4_gguf::{
    GgmlType, GgufBuilder, GgufError, GgufFile, GgufStreamWriter, HeaderBuilder, MetaArray,
    MetaValue, StringArray,
};
use proptest::prelude::*;

fn finite_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN != NaN", |x| !x.is_nan())
}

fn finite_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN != NaN", |x| !x.is_nan())
}

fn any_string() -> impl Strategy<Value = String> {
    // Mix ASCII, multi-byte UTF-8 and the empty string.
    prop_oneof![".{0,12}", "[a-z ]{0,6}", Just(String::new())]
}

fn leaf_array() -> impl Strategy<Value = MetaArray> {
    let n = 0..6usize;
    prop_oneof![
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(MetaArray::U8),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(MetaArray::I8),
        prop::collection::vec(any::<u16>(), n.clone()).prop_map(MetaArray::U16),
        prop::collection::vec(any::<i16>(), n.clone()).prop_map(MetaArray::I16),
        prop::collection::vec(any::<u32>(), n.clone()).prop_map(MetaArray::U32),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(MetaArray::I32),
        prop::collection::vec(finite_f32(), n.clone()).prop_map(MetaArray::F32),
        prop::collection::vec(any::<bool>(), n.clone()).prop_map(MetaArray::Bool),
        prop::collection::vec(any_string(), n.clone())
            .prop_map(|v| MetaArray::String(v.into_iter().collect())),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(MetaArray::U64),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(MetaArray::I64),
        prop::collection::vec(finite_f64(), n).prop_map(MetaArray::F64),
    ]
}

fn any_array() -> impl Strategy<Value = MetaArray> {
    leaf_array().prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(MetaArray::Array)
    })
}

fn any_value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i32>().prop_map(MetaValue::I32),
        finite_f32().prop_map(MetaValue::F32),
        any::<bool>().prop_map(MetaValue::Bool),
        any_string().prop_map(MetaValue::String),
        any_array().prop_map(MetaValue::Array),
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        finite_f64().prop_map(MetaValue::F64),
    ]
}

#[derive(Debug, Clone)]
struct TensorSpec {
    dims: Vec<u64>,
    ty: GgmlType,
    bytes: Vec<u8>,
}

fn any_tensor() -> impl Strategy<Value = TensorSpec> {
    (
        prop::sample::select(GgmlType::ALL.to_vec()),
        1..3u64,
        prop::collection::vec(1..4u64, 0..3),
    )
        .prop_flat_map(|(ty, row_blocks, rest)| {
            let mut dims = vec![row_blocks * ty.block_size() as u64];
            dims.extend(rest);
            let n: u64 = dims.iter().product();
            let n_bytes = ty.bytes_for(n).unwrap() as usize;
            prop::collection::vec(any::<u8>(), n_bytes).prop_map(move |bytes| TensorSpec {
                dims: dims.clone(),
                ty,
                bytes,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn write_then_read_is_identical(
        meta in prop::collection::vec((any_string(), any_value()), 0..8),
        tensors in prop::collection::vec(any_tensor(), 0..6),
        align_pow in prop::option::of(0u32..8),
    ) {
        let mut b = GgufBuilder::new();
        if let Some(p) = align_pow {
            b.set_alignment(1 << p).unwrap();
        }
        // Index prefixes keep keys and names unique.
        let meta: Vec<(String, MetaValue)> = meta
            .into_iter()
            .enumerate()
            .map(|(i, (k, v))| (format!("k{i}.{k}"), v))
            .collect();
        for (k, v) in &meta {
            b.add_meta(k.clone(), v.clone()).unwrap();
        }
        for (i, t) in tensors.iter().enumerate() {
            b.add_tensor(format!("t{i}"), &t.dims, t.ty, t.bytes.clone()).unwrap();
        }
        let bytes = b.to_bytes().unwrap();
        let f = GgufFile::from_bytes(&bytes).unwrap();

        prop_assert_eq!(f.version(), 3);
        let expected_align = align_pow.map_or(32, |p| 1u64 << p);
        prop_assert_eq!(f.alignment(), expected_align);
        let got: Vec<_> = f.metadata().iter().filter(|(k, _)| *k != "general.alignment").collect();
        prop_assert_eq!(got.len(), meta.len());
        for ((gk, gv), (k, v)) in got.iter().zip(&meta) {
            prop_assert_eq!(*gk, k.as_str());
            prop_assert_eq!(*gv, v);
        }
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for (i, (info, t)) in f.tensors().iter().zip(&tensors).enumerate() {
            prop_assert_eq!(&info.name, &format!("t{i}"));
            prop_assert_eq!(&info.dims, &t.dims);
            prop_assert_eq!(info.ty, t.ty);
            prop_assert_eq!(info.n_bytes, t.bytes.len() as u64);
            prop_assert_eq!(info.offset % expected_align, 0);
            prop_assert_eq!(f.tensor_data(info), &t.bytes[..]);
            prop_assert_eq!(f.tensor(&info.name), Some(info));
        }

        // Re-encoding what was read gives the same bytes.
        let again = rebuild(&f).to_bytes().unwrap();
        prop_assert_eq!(again, bytes);
    }
}

fn rebuild(f: &GgufFile) -> GgufBuilder {
    GgufBuilder::from_file(f).unwrap()
}

/// A file exercising every value type and several tensor types.
fn sample_builder() -> GgufBuilder {
    let mut b = GgufBuilder::new();
    b.add_meta("general.architecture", "deepseek4").unwrap();
    b.add_meta("u8", 200u8).unwrap();
    b.add_meta("i8", -100i8).unwrap();
    b.add_meta("u16", 60000u16).unwrap();
    b.add_meta("i16", -30000i16).unwrap();
    b.add_meta("u32", 4_000_000_000u32).unwrap();
    b.add_meta("i32", -2_000_000_000i32).unwrap();
    b.add_meta("f32", 0.1f32).unwrap();
    b.add_meta("bool", true).unwrap();
    b.add_meta("u64", u64::MAX).unwrap();
    b.add_meta("i64", i64::MIN).unwrap();
    b.add_meta("f64", -1e300f64).unwrap();
    b.add_meta("strs", vec!["a", "", "｜DSML｜"]).unwrap();
    b.add_meta("u32s", vec![1u32, 2, 3]).unwrap();
    b.add_meta(
        "nested",
        MetaArray::Array(vec![
            MetaArray::I16(vec![-1, 2]),
            MetaArray::String(["x"].into_iter().collect()),
            MetaArray::Array(vec![]),
        ]),
    )
    .unwrap();
    b.add_tensor(
        "f32",
        &[4, 2],
        GgmlType::F32,
        f32_bytes(&[1., 2., 3., 4., 5., 6., 7., 8.]),
    )
    .unwrap();
    b.add_tensor("q8", &[64], GgmlType::Q8_0, (0..68u8).collect::<Vec<_>>())
        .unwrap();
    b.add_tensor("f16", &[3], GgmlType::F16, vec![0, 0x3c, 0, 0xc0, 0, 0])
        .unwrap();
    b
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn sample_file_values_and_views() {
    let f = GgufFile::from_bytes(&sample_builder().to_bytes().unwrap()).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "deepseek4");
    assert_eq!(f.get_u8("u8").unwrap(), 200);
    assert_eq!(f.get_i8("i8").unwrap(), -100);
    assert_eq!(f.get_u16("u16").unwrap(), 60000);
    assert_eq!(f.get_i16("i16").unwrap(), -30000);
    assert_eq!(f.get_u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i32("i32").unwrap(), -2_000_000_000);
    assert_eq!(f.get_f32("f32").unwrap(), 0.1);
    assert!(f.get_bool("bool").unwrap());
    assert_eq!(f.get_u64("u64").unwrap(), u64::MAX);
    assert_eq!(f.get_i64("i64").unwrap(), i64::MIN);
    assert_eq!(f.get_f64("f64").unwrap(), -1e300);
    assert_eq!(f.get_float("f32").unwrap(), f64::from(0.1f32));
    assert_eq!(
        f.get_str_array("strs").unwrap().to_vec(),
        vec!["a", "", "｜DSML｜"]
    );
    assert_eq!(f.get_u32_array("u32s").unwrap(), &[1, 2, 3]);
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(keys[..3], ["general.architecture", "u8", "i8"]);

    let t = f.require_tensor("f32").unwrap();
    assert_eq!(
        (t.n_elements, t.n_bytes, t.n_rows(), t.row_bytes()),
        (8, 32, 2, 16)
    );
    assert_eq!(f.tensor_f32(t).unwrap(), &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let h = f.tensor_f16(f.require_tensor("f16").unwrap()).unwrap();
    assert_eq!(
        h.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
        vec![1.0, -2.0, 0.0]
    );
    let q = f.require_tensor("q8").unwrap();
    assert_eq!(f.tensor_data(q), (0..68u8).collect::<Vec<_>>());
    assert_eq!(f.tensor_bytes("q8").unwrap().len(), 68);
}

#[test]
fn nan_bit_patterns_survive() {
    let mut b = GgufBuilder::new();
    let nan32 = f32::from_bits(0x7fc0_1234);
    let nan64 = f64::from_bits(0xfff8_0000_dead_beef);
    b.add_meta("n32", nan32).unwrap();
    b.add_meta("n64", vec![nan64]).unwrap();
    let f = GgufFile::from_bytes(&b.to_bytes().unwrap()).unwrap();
    assert_eq!(f.get_f32("n32").unwrap().to_bits(), 0x7fc0_1234);
    assert_eq!(
        f.get_f64_array("n64").unwrap()[0].to_bits(),
        nan64.to_bits()
    );
}

#[test]
fn open_from_disk_matches_from_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.gguf");
    sample_builder().write_file(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let g = GgufFile::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    assert!(f.mmap().is_some());
    assert_eq!(f.path(), Some(path.as_path()));
    assert_eq!(f.metadata(), g.metadata());
    assert_eq!(f.tensors(), g.tensors());
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t), g.tensor_data(t));
    }
    let e = GgufFile::open(dir.path().join("missing.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Open { .. }));
    assert!(e.to_string().contains("missing.gguf"), "{e}");
}

#[test]
fn streaming_writer_chunks_and_matches_builder() {
    let b = sample_builder();
    let expected = b.to_bytes().unwrap();
    let f = GgufFile::from_bytes(&expected).unwrap();

    let mut w = GgufStreamWriter::new(Vec::new(), b.header()).unwrap();
    for t in f.tensors() {
        assert_eq!(
            w.next_tensor().map(|n| n.name.as_str()),
            Some(t.name.as_str())
        );
        w.begin_tensor(&t.name).unwrap();
        // Odd chunk sizes, including empty chunks.
        for chunk in f.tensor_data(t).chunks(7) {
            w.write_chunk(&[]).unwrap();
            w.write_chunk(chunk).unwrap();
        }
        w.end_tensor().unwrap();
    }
    assert_eq!(w.finish().unwrap(), expected);
}

#[test]
fn streaming_writer_rejects_misuse() {
    let mut h = HeaderBuilder::new();
    h.add_tensor("a", &[4], GgmlType::F32).unwrap();
    h.add_tensor("b", &[32], GgmlType::Q8_0).unwrap();
    let new = || GgufStreamWriter::new(Vec::new(), &h).unwrap();

    let mut w = new();
    assert!(matches!(
        w.write_chunk(&[0]),
        Err(GgufError::NoTensorStarted)
    ));
    assert!(matches!(w.end_tensor(), Err(GgufError::NoTensorStarted)));
    let e = w.begin_tensor("b").unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor data written out of order: expected \"a\" next, got \"b\""
    );

    let mut w = new();
    w.begin_tensor("a").unwrap();
    w.write_chunk(&[0; 10]).unwrap();
    let e = w.write_chunk(&[0; 7]).unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::TensorSizeMismatch {
                declared: 16,
                got: 17,
                ..
            }
        ),
        "{e:?}"
    );
    let e = w.end_tensor().unwrap_err();
    assert!(
        matches!(
            e,
            GgufError::TensorIncomplete {
                declared: 16,
                missing: 6,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        w.begin_tensor("b"),
        Err(GgufError::TensorIncomplete { .. })
    ));
    w.write_chunk(&[0; 6]).unwrap();
    w.end_tensor().unwrap();
    let e = new_finish_missing(w);
    assert!(
        matches!(&e, GgufError::MissingTensors { count: 1, first } if first == "b"),
        "{e:?}"
    );

    let mut w = new();
    w.write_tensor("a", &[0; 16]).unwrap();
    assert!(matches!(
        w.write_tensor("b", &[0; 33]),
        Err(GgufError::TensorSizeMismatch { .. })
    ));
    let mut w = new();
    w.write_tensor("a", &[0; 16]).unwrap();
    w.write_tensor("b", &[0; 34]).unwrap();
    assert!(matches!(
        w.begin_tensor("c"),
        Err(GgufError::UnexpectedTensor { .. })
    ));
    let bytes = w.finish().unwrap();
    let f = GgufFile::from_bytes(&bytes).unwrap();
    assert_eq!(f.tensors().len(), 2);
    // Padding after the last tensor too, as llama.cpp's writer does.
    assert_eq!(bytes.len() as u64 % f.alignment(), 0);

    let mut w = new();
    w.begin_tensor("a").unwrap();
    assert!(matches!(
        w.finish(),
        Err(GgufError::TensorIncomplete { .. })
    ));
}

fn new_finish_missing(w: GgufStreamWriter<Vec<u8>>) -> GgufError {
    w.finish().unwrap_err()
}

#[test]
fn builders_reject_invalid_declarations() {
    let mut b = GgufBuilder::new();
    b.add_meta("k", 1u8).unwrap();
    assert!(matches!(
        b.add_meta("k", 2u8),
        Err(GgufError::DuplicateKey { .. })
    ));
    assert!(matches!(
        b.set_alignment(0),
        Err(GgufError::BadAlignment { value: 0 })
    ));
    assert!(matches!(
        b.set_alignment(24),
        Err(GgufError::BadAlignment { value: 24 })
    ));
    assert!(matches!(
        b.add_meta("general.alignment", 32u64),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        b.add_tensor("t", &[4], GgmlType::F32, vec![0; 15]),
        Err(GgufError::TensorSizeMismatch {
            declared: 16,
            got: 15,
            ..
        })
    ));
    assert!(matches!(
        b.add_tensor("t", &[], GgmlType::F32, vec![]),
        Err(GgufError::BadDimCount { n_dims: 0, .. })
    ));
    assert!(matches!(
        b.add_tensor("t", &[1; 9], GgmlType::F32, vec![0; 4]),
        Err(GgufError::BadDimCount { n_dims: 9, .. })
    ));
    assert!(matches!(
        b.add_tensor("t", &[100, 100], GgmlType::Q4K, vec![]),
        Err(GgufError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        b.add_tensor("t", &[u64::MAX, 2], GgmlType::F32, vec![]),
        Err(GgufError::DimOverflow { .. })
    ));
    b.add_tensor("t", &[1], GgmlType::I8, vec![7]).unwrap();
    assert!(matches!(
        b.add_tensor("t", &[1], GgmlType::I8, vec![7]),
        Err(GgufError::DuplicateTensor { .. })
    ));
    let mut deep = MetaArray::U8(vec![]);
    for _ in 0..ds4_gguf::MAX_ARRAY_DEPTH {
        deep = MetaArray::Array(vec![deep]);
    }
    assert!(matches!(
        b.add_meta("deep", deep),
        Err(GgufError::ArrayTooDeep { .. })
    ));
}

#[test]
fn alignment_set_twice_keeps_one_key() {
    let mut b = GgufBuilder::new();
    b.set_alignment(64).unwrap();
    b.add_meta("x", 1u8).unwrap();
    b.set_alignment(16).unwrap();
    b.add_tensor("t", &[3], GgmlType::I8, vec![1, 2, 3])
        .unwrap();
    b.add_tensor("u", &[3], GgmlType::I8, vec![4, 5, 6])
        .unwrap();
    let f = GgufFile::from_bytes(&b.to_bytes().unwrap()).unwrap();
    assert_eq!(f.alignment(), 16);
    assert_eq!(f.metadata().len(), 2);
    assert_eq!(f.tensor("u").unwrap().offset, 16);
}

/// Cutting a valid file anywhere before the end of its last tensor must give
/// an error (never a panic); cutting only trailing padding is still valid.
#[test]
fn truncation_at_every_offset() {
    let bytes = sample_builder().to_bytes().unwrap();
    let full = GgufFile::from_bytes(&bytes).unwrap();
    let needed = full
        .tensors()
        .iter()
        .map(|t| full.tensor_file_offset(t) + t.n_bytes)
        .max()
        .unwrap() as usize;
    assert!(needed < bytes.len(), "sample should end with padding");
    let mut kinds = std::collections::BTreeMap::new();
    for len in 0..bytes.len() {
        match GgufFile::from_bytes(&bytes[..len]) {
            Ok(f) => {
                assert!(len >= needed, "prefix of {len} bytes parsed");
                assert_eq!(f.metadata(), full.metadata());
            }
            Err(e) => {
                assert!(len < needed, "prefix of {len} bytes failed: {e}");
                let kind = match e {
                    GgufError::Truncated { .. } => "truncated",
                    GgufError::CountTooLarge { .. } => "count",
                    GgufError::TensorPastEnd { .. } => "past_end",
                    other => panic!("unexpected error for prefix {len}: {other:?}"),
                };
                *kinds.entry(kind).or_insert(0usize) += 1;
            }
        }
    }
    // All three failure paths are reached by some prefix.
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}

/// Tokenizer-sized string arrays: 129,280 tokens and 127,741 merges, as in
/// the real vocabulary.
#[test]
fn vocabulary_sized_string_arrays() {
    let tokens: StringArray = (0..129_280u32)
        .map(|i| format!("Ġtok{i}{}", "é".repeat((i % 7) as usize)))
        .collect();
    let merges: StringArray = (0..127_741u32)
        .map(|i| format!("a{i} b{}", i / 3))
        .collect();
    let mut b = GgufBuilder::new();
    b.add_meta("tokenizer.ggml.tokens", tokens.clone()).unwrap();
    b.add_meta("tokenizer.ggml.merges", merges.clone()).unwrap();
    let bytes = b.to_bytes().unwrap();
    let t0 = std::time::Instant::now();
    let f = GgufFile::from_bytes(&bytes).unwrap();
    let elapsed = t0.elapsed();
    // Timing is reported, not asserted (this is the dev profile).
    eprintln!(
        "parsed {} bytes with {} + {} strings in {elapsed:?}",
        bytes.len(),
        tokens.len(),
        merges.len()
    );
    let got = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(got, &tokens);
    assert_eq!(got.get(129_279), Some("Ġtok129279ééé"));
    assert_eq!(f.get_str_array("tokenizer.ggml.merges").unwrap(), &merges);
}

/// The streaming writer to a real file: a 24 MiB Q8_0 tensor written in
/// 1 MiB chunks (so no buffer holds it whole), then read back through mmap.
#[test]
fn streaming_writer_large_tensor_on_disk() {
    const ROWS: u64 = 24 * 1024 * 1024 / 34 / 4;
    let mut h = HeaderBuilder::new();
    h.add_meta("general.architecture", "deepseek4").unwrap();
    h.add_tensor("norm", &[7], GgmlType::F32).unwrap();
    h.add_tensor("big", &[128, ROWS], GgmlType::Q8_0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    let mut w = GgufStreamWriter::create(&path, &h).unwrap();
    w.write_tensor("norm", &[0x11; 28]).unwrap();
    let big = w.next_tensor().unwrap().clone();
    w.begin_tensor("big").unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut left = big.n_bytes as usize;
    while left > 0 {
        let k = left.min(chunk.len());
        w.write_chunk(&chunk[..k]).unwrap();
        left -= k;
    }
    w.end_tensor().unwrap();
    w.finish().unwrap();

    let f = GgufFile::open(&path).unwrap();
    let t = f.require_tensor("big").unwrap();
    assert_eq!(t.n_bytes, ROWS * 4 * 34);
    assert_eq!(t.offset, 32, "norm's 28 bytes are padded to 32");
    let data = f.tensor_data(t);
    for (i, c) in data.chunks(1 << 20).enumerate() {
        assert_eq!(c, &chunk[..c.len()], "chunk {i}");
    }
    assert_eq!(
        f.tensor_data(f.require_tensor("norm").unwrap()),
        &[0x11; 28]
    );
    assert_eq!(f.file_len() % 32, 0);
}

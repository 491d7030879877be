//! One test per class of malformed input: each must come back as the right
//! error variant with a message naming what is wrong, never a panic.

mod common;

use common::Raw;
use ds4_gguf::{GgmlType, GgufBuilder, GgufError, GgufFile, MetaArray, MetaValue, StringArray};

fn err(bytes: &[u8]) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => e,
    }
}

fn msg(e: &GgufError) -> String {
    e.to_string()
}

#[test]
fn wrong_magic() {
    let mut b = Raw::header(0, 0).0;
    b[..4].copy_from_slice(b"GGML");
    let e = err(&b);
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e:?}"
    );
    assert!(msg(&e).contains("not a GGUF file"), "{e}");
}

#[test]
fn unsupported_version_is_named() {
    for v in [1u32, 2, 4, 0xffff_ffff] {
        let b = Raw(Vec::new()).bytes(b"GGUF").u32(v).u64(0).u64(0).0;
        let e = err(&b);
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version } if version == v),
            "{e:?}"
        );
        assert!(msg(&e).contains(&format!("version {v}")), "{e}");
    }
}

#[test]
fn truncation_names_what_and_where() {
    // Key length says 100 bytes, only 20 follow.
    let b = Raw::header(0, 1).u64(100).zeros(20).0;
    let e = err(&b);
    match &e {
        GgufError::Truncated {
            what,
            offset,
            needed,
            available,
        } => {
            assert_eq!(what, "name of metadata key #0");
            assert_eq!((*offset, *needed, *available), (32, 100, 20));
        }
        other => panic!("{other:?}"),
    }
    assert!(msg(&e).contains("offset 32"), "{e}");

    // Value cut inside a u32.
    let b = Raw::header(0, 1).str("k").u32(4).bytes(&[1, 2]).0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::Truncated { what, .. } if what == "value of metadata key \"k\""),
        "{e:?}"
    );
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let e = err(&Raw::header(u64::MAX, 0).0);
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg(&e).contains("tensor count"), "{e}");

    let e = err(&Raw::header(0, 1 << 40).0);
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e:?}");

    // A string array claiming 2^60 entries: 8 bytes each minimum.
    let b = Raw::header(0, 1)
        .str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(1 << 60)
        .0;
    let e = err(&b);
    match &e {
        GgufError::CountTooLarge {
            what,
            count,
            min_entry_bytes,
            ..
        } => {
            assert!(what.contains("tokenizer.ggml.tokens"), "{what}");
            assert_eq!((*count, *min_entry_bytes), (1 << 60, 8));
        }
        other => panic!("{other:?}"),
    }

    // A u64 array whose element bytes overflow u64 when multiplied.
    let b = Raw::header(0, 1)
        .str("k")
        .u32(9)
        .u32(10)
        .u64(u64::MAX / 4)
        .0;
    assert!(matches!(err(&b), GgufError::CountTooLarge { .. }));

    // A single string whose length is larger than the file.
    let b = Raw::header(0, 1).str("k").u32(8).u64(u64::MAX).0;
    assert!(matches!(err(&b), GgufError::Truncated { .. }));
}

#[test]
fn n_dims_outside_1_to_8() {
    for n in [0u32, 9, 1000] {
        let b = Raw::header(1, 0).str("t").u32(n).zeros(8 * 9 + 12).0;
        let e = err(&b);
        assert!(
            matches!(&e, GgufError::BadDimCount { tensor, n_dims } if tensor == "t" && *n_dims == n),
            "{e:?}"
        );
    }
}

#[test]
fn dims_product_overflow() {
    let b = Raw::header(1, 0)
        .tensor_info("big", &[1 << 32, 1 << 32], 0, 0)
        .0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::DimOverflow { tensor, .. } if tensor == "big"),
        "{e:?}"
    );
    // Fits in u64 but not in ggml's int64 element count.
    let b = Raw::header(1, 0).tensor_info("big", &[1 << 63], 0, 0).0;
    assert!(matches!(err(&b), GgufError::DimOverflow { .. }));
}

#[test]
fn row_not_a_multiple_of_block() {
    let b = Raw::header(1, 0).tensor_info("q", &[33, 2], 8, 0).0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::NotBlockMultiple { tensor, ty: GgmlType::Q8_0, row: 33, block: 32, .. } if tensor == "q"),
        "{e:?}"
    );
    // 16 × 16 = 256 elements is a whole Q4_K block in total, but rows of 16
    // are not.
    let b = Raw::header(1, 0).tensor_info("k", &[16, 16], 12, 0).0;
    assert!(matches!(
        err(&b),
        GgufError::NotBlockMultiple {
            row: 16,
            block: 256,
            ..
        }
    ));
}

#[test]
fn unknown_tensor_type_names_id_and_tensor() {
    let b = Raw::header(1, 0).tensor_info("blk.0.w", &[32], 2, 0).0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::UnknownTensorType { tensor, type_id: 2 } if tensor == "blk.0.w"),
        "{e:?}"
    );
    assert!(msg(&e).contains("type id 2"), "{e}");
}

#[test]
fn unknown_value_type() {
    let b = Raw::header(0, 1).str("k").u32(13).zeros(8).0;
    let e = err(&b);
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 13, .. }),
        "{e:?}"
    );
    // Inside an array.
    let b = Raw::header(0, 1).str("k").u32(9).u32(77).u64(0).0;
    assert!(matches!(
        err(&b),
        GgufError::UnknownValueType { type_id: 77, .. }
    ));
}

fn one_f32_tensor(offset: u64, data_len: usize) -> Vec<u8> {
    Raw::header(1, 0)
        .tensor_info("t", &[4], 0, offset)
        .pad(32)
        .zeros(data_len)
        .0
}

#[test]
fn misaligned_offset() {
    let e = err(&one_f32_tensor(4, 64));
    assert!(
        matches!(&e, GgufError::MisalignedOffset { tensor, offset: 4, alignment: 32 } if tensor == "t"),
        "{e:?}"
    );
}

#[test]
fn data_past_end_of_file() {
    assert!(GgufFile::from_bytes(&one_f32_tensor(0, 16)).is_ok());
    let e = err(&one_f32_tensor(0, 15));
    assert!(
        matches!(&e, GgufError::TensorPastEnd { tensor, .. } if tensor == "t"),
        "{e:?}"
    );
    let e = err(&one_f32_tensor(32, 20));
    assert!(matches!(e, GgufError::TensorPastEnd { .. }), "{e:?}");
    // An offset so large that data start + offset overflows.
    let e = err(&one_f32_tensor(u64::MAX - 31, 16));
    assert!(matches!(e, GgufError::TensorPastEnd { .. }), "{e:?}");
}

#[test]
fn overlapping_tensors() {
    let b = Raw::header(2, 0)
        .tensor_info("a", &[16], 0, 0)
        .tensor_info("b", &[16], 0, 32)
        .pad(32)
        .zeros(128)
        .0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::TensorOverlap { first, second, .. } if first == "a" && second == "b"),
        "{e:?}"
    );
    // Same offset, listed in the other order.
    let b = Raw::header(2, 0)
        .tensor_info("x", &[8], 0, 0)
        .tensor_info("y", &[8], 0, 0)
        .pad(32)
        .zeros(64)
        .0;
    assert!(matches!(err(&b), GgufError::TensorOverlap { .. }));
}

#[test]
fn duplicate_tensor_names() {
    let b = Raw::header(2, 0)
        .tensor_info("w", &[8], 0, 0)
        .tensor_info("w", &[8], 0, 32)
        .pad(32)
        .zeros(64)
        .0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::DuplicateTensor { tensor } if tensor == "w"),
        "{e:?}"
    );
}

#[test]
fn duplicate_keys() {
    let b = Raw::header(0, 2).kv_u32("a.b", 1).kv_u32("a.b", 2).0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::DuplicateKey { key } if key == "a.b"),
        "{e:?}"
    );
}

#[test]
fn alignment_zero_or_not_power_of_two() {
    for a in [0u32, 3, 48] {
        let b = Raw::header(0, 1).kv_u32("general.alignment", a).0;
        let e = err(&b);
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == u64::from(a)),
            "{e:?}"
        );
    }
    let b = Raw::header(0, 1)
        .str("general.alignment")
        .u32(8)
        .str("32")
        .0;
    let e = err(&b);
    assert!(
        matches!(&e, GgufError::WrongType { key, expected, found } if key == "general.alignment" && expected == "u32" && found == "string"),
        "{e:?}"
    );
    // A valid non-default alignment moves the data section.
    let b = Raw::header(1, 1)
        .kv_u32("general.alignment", 64)
        .tensor_info("t", &[4], 0, 0)
        .pad(64)
        .zeros(16)
        .0;
    let f = GgufFile::from_bytes(&b).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
}

#[test]
fn non_utf8_strings() {
    let bad = [b'a', 0xff, b'b'];
    let e = err(&Raw::header(0, 1).raw_str(&bad).u32(0).u8(0).0);
    assert!(
        matches!(&e, GgufError::InvalidUtf8 { what, offset: 32 } if what == "name of metadata key #0"),
        "{e:?}"
    );
    let e = err(&Raw::header(0, 1).str("k").u32(8).raw_str(&bad).0);
    assert!(
        matches!(&e, GgufError::InvalidUtf8 { what, .. } if what.contains("\"k\"")),
        "{e:?}"
    );
    let e = err(&Raw::header(0, 1)
        .str("k")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("ok")
        .raw_str(&bad)
        .0);
    assert!(
        matches!(&e, GgufError::InvalidUtf8 { what, .. } if what.starts_with("element 1 of")),
        "{e:?}"
    );
    let e = err(&Raw::header(1, 0)
        .raw_str(&bad)
        .u32(1)
        .u64(1)
        .u32(0)
        .u64(0)
        .0);
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e:?}");
}

#[test]
fn bool_must_be_0_or_1() {
    let e = err(&Raw::header(0, 1).str("flag").u32(7).u8(2).0);
    assert!(
        matches!(e, GgufError::InvalidBool { value: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn arrays_nested_too_deep() {
    let mut r = Raw::header(0, 1).str("deep").u32(9);
    for _ in 0..ds4_gguf::MAX_ARRAY_DEPTH {
        r = r.u32(9).u64(1);
    }
    let b = r.u32(0).u64(0).0;
    let e = err(&b);
    assert!(matches!(e, GgufError::ArrayTooDeep { .. }), "{e:?}");

    // One level less is fine.
    let mut r = Raw::header(0, 1).str("deep").u32(9);
    for _ in 0..ds4_gguf::MAX_ARRAY_DEPTH - 1 {
        r = r.u32(9).u64(1);
    }
    let f = GgufFile::from_bytes(&r.u32(0).u64(0).0).unwrap();
    assert!(matches!(
        f.get("deep"),
        Some(MetaValue::Array(MetaArray::Array(_)))
    ));
}

#[test]
fn typed_getters_name_key_and_types() {
    let mut b = GgufBuilder::new();
    b.add_meta("n", 5u32).unwrap();
    b.add_meta("neg", -5i32).unwrap();
    b.add_meta("s", "x").unwrap();
    b.add_meta("toks", ["a", "b"].into_iter().collect::<StringArray>())
        .unwrap();
    let f = GgufFile::from_bytes(&b.to_bytes().unwrap()).unwrap();

    let e = f.get_str("n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"n\" has type u32, expected string"
    );
    let e = f.get_u32_array("toks").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"toks\" has type array<string>, expected array<u32>"
    );
    let e = f.get_u64("missing").unwrap_err();
    assert!(matches!(&e, GgufError::MissingKey { key } if key == "missing"));
    assert_eq!(f.get_u64_opt("missing").unwrap(), None);
    assert!(f.get_u64_opt("n").is_err());
    assert_eq!(f.get_uint("n").unwrap(), 5);
    assert!(matches!(
        f.get_uint("neg"),
        Err(GgufError::ValueOutOfRange { .. })
    ));
    assert!(matches!(f.get_uint("s"), Err(GgufError::WrongType { .. })));
    assert_eq!(f.get_str_array("toks").unwrap().to_vec(), vec!["a", "b"]);
}

#[test]
fn typed_views_check_type_and_alignment() {
    let mut b = GgufBuilder::new();
    b.add_tensor("f", &[4], GgmlType::F32, vec![0u8; 16])
        .unwrap();
    let f = GgufFile::from_bytes(&b.to_bytes().unwrap()).unwrap();
    let t = f.require_tensor("f").unwrap();
    assert!(matches!(
        f.tensor_f16(t),
        Err(GgufError::ViewTypeMismatch {
            found: GgmlType::F32,
            requested: GgmlType::F16,
            ..
        })
    ));
    assert!(matches!(
        f.require_tensor("nope"),
        Err(GgufError::TensorNotFound { .. })
    ));

    // With alignment 1 an f32 tensor can land on an odd address: the typed
    // view must refuse, the byte view still works.
    let mut found_misaligned = false;
    for pad in 1..4u64 {
        let mut b = GgufBuilder::new();
        b.set_alignment(1).unwrap();
        b.add_tensor("pad", &[pad], GgmlType::I8, vec![0u8; pad as usize])
            .unwrap();
        b.add_tensor("f", &[2], GgmlType::F32, vec![1u8; 8])
            .unwrap();
        let f = GgufFile::from_bytes(&b.to_bytes().unwrap()).unwrap();
        let t = f.require_tensor("f").unwrap();
        assert_eq!(f.tensor_data(t), &[1u8; 8]);
        if !f.tensor_file_offset(t).is_multiple_of(4) {
            found_misaligned = true;
            assert!(matches!(
                f.tensor_f32(t),
                Err(GgufError::ViewMisaligned { .. })
            ));
        } else {
            assert_eq!(f.tensor_f32(t).unwrap().len(), 2);
        }
    }
    assert!(found_misaligned);
}

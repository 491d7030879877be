//! Reads the file llama.cpp's `gguf` Python writer produced
//! (tools/gen_gguf_fixtures.py) and checks every metadata value and tensor
//! against the manifest written alongside it.

mod common;

use common::manifest::value_from_json;
use ds4_gguf::{GgmlType, GgufFile};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn python_written_file_matches_manifest() {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("py_fixture.json")).unwrap())
            .unwrap();
    let f = GgufFile::open(data_dir().join(manifest["file"].as_str().unwrap())).unwrap();

    assert_eq!(
        u64::from(f.version()),
        manifest["version"].as_u64().unwrap()
    );
    assert_eq!(f.alignment(), manifest["alignment"].as_u64().unwrap());
    assert_eq!(f.data_offset(), manifest["data_offset"].as_u64().unwrap());
    assert_eq!(f.file_len(), manifest["file_len"].as_u64().unwrap());

    let want_meta = manifest["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), want_meta.len());
    for ((key, value), want) in f.metadata().iter().zip(want_meta) {
        assert_eq!(key, want["key"].as_str().unwrap());
        let want_value = value_from_json(want).unwrap();
        assert_eq!(value, &want_value, "metadata key {key}");
    }
    // Spot checks through the typed getters.
    assert_eq!(f.get_str("general.architecture").unwrap(), "deepseek4");
    assert_eq!(f.get_u64("test.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("test.f32").unwrap(), 0.1f32);
    let toks = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(toks.get(0), Some("<｜begin▁of▁sentence｜>"));
    assert_eq!(toks.get(toks.len() - 1), Some(""));

    let want_tensors = manifest["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), want_tensors.len());
    for (t, want) in f.tensors().iter().zip(want_tensors) {
        assert_eq!(t.name, want["name"].as_str().unwrap());
        let dims: Vec<u64> = want["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(
            Some(t.ty),
            GgmlType::from_name(want["type"].as_str().unwrap())
        );
        assert_eq!(t.n_bytes, want["n_bytes"].as_u64().unwrap());
        assert_eq!(t.offset, want["offset"].as_u64().unwrap());
        let digest = Sha256::digest(f.tensor_data(t));
        assert_eq!(hex(&digest), want["sha256"].as_str().unwrap(), "{}", t.name);
    }
    // Typed views agree with the bytes on an mmap (page-aligned) file.
    let t = f.require_tensor("t.f32").unwrap();
    assert_eq!(t.dims, [5, 3]);
    let v = f.tensor_f32(t).unwrap();
    assert_eq!(v.len(), 15);
    assert_eq!(v[0].to_le_bytes(), f.tensor_data(t)[..4]);
    assert_eq!(
        f.tensor_f16(f.require_tensor("t.f16").unwrap())
            .unwrap()
            .len(),
        16
    );
    assert_eq!(
        f.tensor_i64(f.require_tensor("t.i64").unwrap())
            .unwrap()
            .len(),
        3
    );
}

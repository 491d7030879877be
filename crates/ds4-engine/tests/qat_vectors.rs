//! The QAT simulations against PyTorch: E4M3 rounding against `torch.float8_e4m3fn`
//! (including every exact tie between neighbouring codes), the KV fp8_sim block
//! quantizer against the same computation in torch, and the Hadamard butterfly
//! against an explicit Sylvester matrix. Written by
//! `tools/gen_tiny_fixtures.py --qat-vectors`.

use ds4_engine::qat::{e4m3_round, fp8_kv_inplace, hadamard_inplace};

fn load() -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qat-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| f32::from_bits(b.as_i64().unwrap() as i32 as u32))
        .collect()
}

#[test]
fn e4m3_rounding_matches_torch_float8() {
    let v = load();
    let (x, want) = (floats(&v, "e4m3_in"), floats(&v, "e4m3_out"));
    assert!(x.len() > 3000);
    for (a, b) in x.iter().zip(&want) {
        assert_eq!(
            e4m3_round(*a).to_bits(),
            b.to_bits(),
            "x = {a:e}: got {} want {b}",
            e4m3_round(*a)
        );
    }
}

#[test]
fn fp8_kv_blocks_match_torch() {
    let v = load();
    let n = v["fp8_row_len"].as_u64().unwrap() as usize;
    let (x, want) = (floats(&v, "fp8_rows_in"), floats(&v, "fp8_rows_out"));
    for (row, w) in x.chunks(n).zip(want.chunks(n)) {
        let mut r = row.to_vec();
        fp8_kv_inplace(&mut r);
        assert_eq!(r, w);
    }
}

#[test]
fn hadamard_matches_sylvester_matrix() {
    let v = load();
    let n = v["hadamard_len"].as_u64().unwrap() as usize;
    let (x, want) = (floats(&v, "hadamard_in"), floats(&v, "hadamard_out"));
    for (row, w) in x.chunks(n).zip(want.chunks(n)) {
        let mut r = row.to_vec();
        hadamard_inplace(&mut r);
        for (a, b) in r.iter().zip(w) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

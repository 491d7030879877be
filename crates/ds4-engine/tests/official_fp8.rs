//! Release-checkpoint storage formats (FP8 E4M3 + 128×128 E8M0 block scales, FP4
//! E2M1 experts packed two per byte + per-32 E8M0 scales, BF16 norms) decode to the
//! values PyTorch computed (`tools/gen_tiny_fixtures.py --fp8-checkpoint`).

use ds4_engine::{OfficialCheckpoint, TensorData};

#[test]
fn fp8_fp4_bf16_tensors_decode_exactly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/official-fp8");
    let ck = OfficialCheckpoint::open_tensors(&dir, 2).unwrap();
    for (name, shape) in [
        ("layers.0.attn.wq_a.weight", [300, 260]),
        ("layers.1.ffn.experts.0.w1.weight", [64, 96]),
        ("layers.1.ffn.experts.1.w3.weight", [64, 96]),
    ] {
        let got = ck.read_official(name).unwrap().unwrap();
        let want = ck.read_official(&format!("ref.{name}")).unwrap().unwrap();
        assert_eq!(got.shape, shape, "{name}");
        let (TensorData::F32(g), TensorData::F32(w)) = (got.data, want.data) else {
            panic!("{name}: not decoded to f32");
        };
        assert_eq!(g, w, "{name}");
        assert!(g.iter().any(|&x| x != 0.0));
    }
    let norm = ck
        .read_official("layers.0.attn_norm.weight")
        .unwrap()
        .unwrap();
    let want = ck
        .read_official("ref.layers.0.attn_norm.weight")
        .unwrap()
        .unwrap();
    let (TensorData::F32(g), TensorData::F32(w)) = (norm.data, want.data) else {
        panic!("norm not decoded to f32");
    };
    assert_eq!(g, w);
    assert!(
        ck.read_official("layers.9.absent.weight")
            .unwrap()
            .is_none()
    );
}

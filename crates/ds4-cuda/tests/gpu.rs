//! The CUDA backend against the CPU reference. Every test here needs an NVIDIA GPU
//! with its driver and NVRTC; without them each prints why and passes without
//! checking (CI has no GPU; these run on the GPU machine, see the crate README).

use ds4_cuda::device::Gpu;
use ds4_cuda::forward::matmul_once;
use ds4_cuda::weights::upload_mat;
use ds4_engine::backend::teacher_forced;
use ds4_engine::weights::Bytes;
use ds4_engine::{Backend, ForwardOptions, Mat, Model};
use ds4_gguf::GgmlType;

fn gpu_or_skip(test: &str) -> Option<Gpu> {
    if let Err(e) = ds4_cuda::available() {
        println!("SKIPPED {test}: {e}");
        return None;
    }
    Some(Gpu::open(0).expect("GPU present but unusable"))
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn matvec_matches_cpu_for_every_weight_type() {
    let Some(gpu) = gpu_or_skip("matvec_matches_cpu_for_every_weight_type") else {
        return;
    };
    let (rows, cols) = (96, 1024);
    let w = rand_vec(rows * cols, 1);
    let xs: Vec<Vec<f32>> = (0..3).map(|t| rand_vec(cols, 10 + t)).collect();
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q4K,
        GgmlType::Iq2Xxs,
    ] {
        let m = if ty == GgmlType::F32 {
            Mat::from_f32(rows, cols, w.clone()).unwrap()
        } else {
            let bytes = ds4_quant::quantize(ty, &w, cols, None).unwrap();
            Mat::from_blocks(rows, cols, ty, Bytes::from_vec(bytes)).unwrap()
        };
        let cpu = m.matmul(&xs).unwrap();
        let dm = upload_mat(&gpu, &m, "test").unwrap();
        let got = matmul_once(&gpu, &dm, &xs).unwrap();
        for (t, (a, b)) in cpu.iter().zip(&got).enumerate() {
            let e = rel_err(a, b);
            println!("{ty}: token {t}: rel err {e:.3e}");
            assert!(e < 1e-5, "{ty} token {t}: rel err {e}");
        }
    }
}

#[test]
fn tiny_model_logits_match_cpu() {
    if gpu_or_skip("tiny_model_logits_match_cpu").is_none() {
        return;
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4");
    let model = Model::from_official_dir(&dir).unwrap();
    let toks: Vec<u32> = (0..300).map(|i| (i * 53 + 7) % 256).collect();
    let opts = ForwardOptions::default();
    let cpu = model.teacher_forced_logits(&toks, 32, opts).unwrap();
    let be = ds4_cuda::CudaBackend::load(&model, 0, 512, 64, &mut |_, _| {}).unwrap();
    for run in [1, 7, 64] {
        let mut st = be.new_state(512, opts).unwrap();
        let gpu = teacher_forced(st.as_mut(), &toks, run).unwrap();
        for (i, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
            let e = rel_err(a, b);
            assert!(e < 1e-3, "run {run} pos {i}: rel err {e}");
        }
    }
}

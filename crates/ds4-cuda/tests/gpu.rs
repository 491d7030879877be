//! The CUDA backend against the CPU reference. Every test here needs an NVIDIA GPU
//! with its driver and NVRTC; without them each prints why and passes without
//! checking (CI has no GPU; these run on the GPU machine, see the crate README).

use ds4_cuda::device::Gpu;
use ds4_cuda::forward::{
    experts_once, indexer_scores_once, iq2_runs_exact, matmul_once, mm_col_splits, part_bytes,
    q2k_runs_exact, q8_0_runs_exact, set_attention_wg, set_f16_ws, set_hc_ssq, set_iq2_f16,
    set_iq2_r256, set_q2k_f16, set_q2k_r256, set_q8_0_kernel, set_run_fusions, topk_once,
};
use ds4_cuda::weights::{upload_mat, upload_mats};
use ds4_engine::backend::teacher_forced;
use ds4_engine::weights::Bytes;
use ds4_engine::{Backend, ForwardOptions, Mat, Model};
use ds4_gguf::GgmlType;

/// Why a test did not run, written to the process's stderr itself: libtest keeps what a
/// passing test prints through `println!`/`eprintln!`, and a CI log without a GPU should
/// still say which tests checked nothing, and why.
fn say_skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

fn gpu_or_skip(test: &str) -> Option<Gpu> {
    if let Err(e) = ds4_cuda::available() {
        say_skipped(test, &e.to_string());
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

/// The GPU if it is a Hopper (sm_90a: the wgmma kernels), else None with the reason printed.
fn hopper_or_skip(test: &str) -> Option<Gpu> {
    let gpu = gpu_or_skip(test)?;
    if gpu.arch != "sm_90a" {
        say_skipped(test, "wgmma needs sm_90a");
        return None;
    }
    Some(gpu)
}

/// `n` random rows whose sizes step through 1e-3 .. 1e2 (the f16 paths' small and large
/// Q8 scales).
fn scaled_rows(n: u64, cols: usize, seed: u64) -> Vec<Vec<f32>> {
    (0..n)
        .map(|t| {
            let s = 10f32.powf((t % 6) as f32 - 3.0);
            rand_vec(cols, seed + t).iter().map(|v| v * s).collect()
        })
        .collect()
}

/// A random Q8_0 matrix (seeded by its width).
fn q8_0_mat(rows: usize, cols: usize) -> Mat {
    let w = rand_vec(rows * cols, 7 + cols as u64);
    let bytes = ds4_quant::quantize(GgmlType::Q8_0, &w, cols, None).unwrap();
    Mat::from_blocks(rows, cols, GgmlType::Q8_0, Bytes::from_vec(bytes)).unwrap()
}

/// `matmul_once` with the Q8_0 run product `kernel` ([`set_q8_0_kernel`]), then the
/// environment's choice again.
fn matmul_with(
    gpu: &Gpu,
    dm: &ds4_cuda::weights::DevMat,
    xs: &[Vec<f32>],
    kernel: &str,
) -> Vec<Vec<f32>> {
    set_q8_0_kernel(kernel);
    let out = matmul_once(gpu, dm, xs);
    set_q8_0_kernel("");
    out.unwrap()
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The engine's tiny V4 fixture (F32, windows 48, ratios 4 and 32, an indexer).
fn tiny_model() -> Model {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4");
    Model::from_official_dir(&dir).unwrap()
}

/// Logits of a prompt `toks[..prompt]` in runs of `run` tokens (every position), then of
/// one decode step per later token.
fn prompt_then_decode(
    st: &mut dyn ds4_engine::ForwardState,
    toks: &[u32],
    prompt: usize,
    run: usize,
) -> Vec<Vec<f32>> {
    use ds4_engine::LogitsFor;
    let mut out = Vec::new();
    for chunk in toks[..prompt].chunks(run) {
        out.extend(st.forward(chunk, LogitsFor::All).unwrap());
    }
    for &t in &toks[prompt..] {
        out.push(st.forward(&[t], LogitsFor::Last).unwrap().remove(0));
    }
    out
}

/// The tiny fixture's layout with 16 heads of 128 (the shapes the tensor-core attention
/// takes).
fn wide_tiny_config() -> ds4_engine::ModelConfig {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ds4-engine/tests/data/tiny-v4");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut cfg = ds4_engine::ModelConfig::from_official_json(&text).unwrap();
    cfg.n_head = 16;
    cfg.head_dim = 128;
    cfg
}

/// [`wide_tiny_config`] with synthetic weights from `seed`.
fn wide_tiny_model(seed: u64) -> Model {
    let cfg = wide_tiny_config();
    Model::new(cfg.clone(), &ds4_engine::SyntheticSource::new(cfg, seed)).unwrap()
}

#[test]
fn matvec_matches_cpu_for_every_weight_type() {
    let Some(gpu) = gpu_or_skip("matvec_matches_cpu_for_every_weight_type") else {
        return;
    };
    // 96 rows: a partial 64-row tile for the tensor-core kernels. 1 token takes the
    // one-item matrix-vector kernels, 3 tokens the several-item ones; 70 take, for
    // Q8_0 and F16, the tensor cores (a partial 64-token tile too) and, for the others,
    // 8 tokens per warp with a remainder.
    let (rows, cols) = (96, 1024);
    let w = rand_vec(rows * cols, 1);
    for n_tok in [1, 3, 70] {
        check_types(&gpu, rows, cols, &w, n_tok);
    }
    // Decode's wide rows (a multiple of 2,048 columns: four Q8_0 pieces a lane).
    let cols = 2048;
    let w = rand_vec(rows * cols, 2);
    check_types(&gpu, rows, cols, &w, 1);
}

#[test]
fn narrow_f16_products_split_over_columns_match_cpu() {
    let Some(gpu) = gpu_or_skip("narrow_f16_products_split_over_columns_match_cpu") else {
        return;
    };
    // The HC mixing's shape (24 rows of 16,384), the indexer weights' (64 of 4,096), the
    // router's (256) and a compressor's (512, a partial row tile short): few 64-row tiles,
    // so a run's tensor-core product splits its columns (sum_parts).
    for (rows, cols) in [(24, 16384), (64, 4096), (256, 4096), (456, 4096)] {
        let w = rand_vec(rows * cols, 3);
        let bytes = ds4_quant::quantize(GgmlType::F16, &w, cols, None).unwrap();
        let m = Mat::from_blocks(rows, cols, GgmlType::F16, Bytes::from_vec(bytes)).unwrap();
        let xs: Vec<Vec<f32>> = (0..200).map(|t| rand_vec(cols, 40 + t)).collect();
        let cpu = m.matmul(&xs).unwrap();
        let dm = upload_mat(&gpu, &m, "test").unwrap();
        let splits = mm_col_splits(&gpu, &dm, xs.len(), part_bytes(xs.len()));
        assert!(splits > 1, "{rows}x{cols}: not split");
        let got = matmul_once(&gpu, &dm, &xs).unwrap();
        let mut worst = 0f32;
        for (t, (a, b)) in cpu.iter().zip(&got).enumerate() {
            let e = rel_err(a, b);
            worst = worst.max(e);
            assert!(e < 1e-5, "{rows}x{cols} token {t}: rel err {e}");
        }
        println!(
            "F16 {rows}x{cols}, 200 tokens in {splits} column splits: worst rel err {worst:.3e}"
        );
    }
}

#[test]
fn f16_wgmma_run_kernel_matches_cpu() {
    let Some(gpu) = hopper_or_skip("f16_wgmma_run_kernel_matches_cpu") else {
        return;
    };
    // mm_f16_ws sums the same hi + lo terms as mm_f16_pf in another order (the two parts
    // apart, added at the end): f32-level differences. Partial 128-row and 128-token
    // tiles, five 64-column stages (an odd count), several waves; activations of very
    // different sizes per token. Both kernels' split loses bits where lo falls below f16's
    // normal range (tokens of 1e-3 carry ~14 bits, not ~22): a token is held to 1e-5 or
    // to twice mm_f16_pf's error on it, whichever is larger.
    for (rows, cols, n_tok) in [(136, 320, 300), (256, 4096, 129), (2048, 1024, 600)] {
        let w = rand_vec(rows * cols, 11 + rows as u64);
        let bytes = ds4_quant::quantize(GgmlType::F16, &w, cols, None).unwrap();
        let m = Mat::from_blocks(rows, cols, GgmlType::F16, Bytes::from_vec(bytes)).unwrap();
        let xs = scaled_rows(n_tok, cols, 900);
        let cpu = m.matmul(&xs).unwrap();
        let dm = upload_mat(&gpu, &m, "test").unwrap();
        set_f16_ws(Some(true));
        let ws = matmul_once(&gpu, &dm, &xs);
        set_f16_ws(Some(false));
        let pf = matmul_once(&gpu, &dm, &xs);
        set_f16_ws(None);
        let (ws, pf) = (ws.unwrap(), pf.unwrap());
        let (mut worst, mut worst_pf) = (0f32, 0f32);
        for t in 0..xs.len() {
            let e = rel_err(&cpu[t], &ws[t]);
            let e_pf = rel_err(&cpu[t], &pf[t]);
            worst = worst.max(e);
            worst_pf = worst_pf.max(e_pf);
            assert!(
                e < 1e-5f32.max(2.0 * e_pf),
                "ws {rows}x{cols}, {n_tok} tokens: token {t}: rel err {e} (pf {e_pf})"
            );
        }
        println!(
            "F16 {rows}x{cols}, {n_tok} tokens: worst rel err {worst:.3e} (ws), {worst_pf:.3e} (pf)"
        );
    }
}

#[test]
fn q8_0_run_kernels_agree_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("q8_0_run_kernels_agree_bit_for_bit") else {
        return;
    };
    // Partial 128-row and 128-token tiles, one stage (128 columns) and many, against
    // mm_q8_0_big: the wgmma kernel (Hopper) sums the same int32 block sums and scales
    // them in the same order, so the outputs must agree to the bit; both against the CPU.
    for (rows, cols, n_tok) in [(200, 1024, 300), (130, 128, 17), (256, 4096, 129)] {
        let m = q8_0_mat(rows, cols);
        let xs: Vec<Vec<f32>> = (0..n_tok).map(|t| rand_vec(cols, 500 + t)).collect();
        let cpu = m.matmul(&xs).unwrap();
        let dm = upload_mat(&gpu, &m, "test").unwrap();
        let big = matmul_with(&gpu, &dm, &xs, "big");
        let wg = matmul_with(&gpu, &dm, &xs, "wg");
        let bad: Vec<(usize, usize)> = (0..xs.len())
            .flat_map(|t| (0..rows).map(move |r| (t, r)))
            .filter(|&(t, r)| big[t][r].to_bits() != wg[t][r].to_bits())
            .collect();
        if !bad.is_empty() {
            // Where the wrong values come from, for a layout mistake: the (token, row)
            // of big's output that holds each of the first few.
            println!(
                "{rows}x{cols}, {n_tok} tokens: {} of {} outputs differ",
                bad.len(),
                rows * xs.len()
            );
            for &(t, r) in bad.iter().take(12) {
                let v = wg[t][r];
                let from = (0..xs.len())
                    .flat_map(|t2| (0..rows).map(move |r2| (t2, r2)))
                    .find(|&(t2, r2)| big[t2][r2] == v);
                println!(
                    "  token {t} row {r}: wg {v} big {} (wg's value at big {from:?})",
                    big[t][r]
                );
            }
        }
        let mut worst = 0f32;
        for t in 0..xs.len() {
            for r in 0..rows {
                assert_eq!(
                    big[t][r].to_bits(),
                    wg[t][r].to_bits(),
                    "{rows}x{cols}, {n_tok} tokens: token {t} row {r}: big {} wg {}",
                    big[t][r],
                    wg[t][r]
                );
            }
            let e = rel_err(&cpu[t], &wg[t]);
            worst = worst.max(e);
            assert!(e < 1e-5, "{rows}x{cols} token {t}: rel err {e}");
        }
        println!(
            "Q8_0 {rows}x{cols}, {n_tok} tokens ({}): big and wg identical, worst rel err {worst:.3e}",
            gpu.arch
        );
    }
}

#[test]
fn q8_0_f16_run_kernel_is_within_f16_rounding_of_cpu() {
    let Some(gpu) = hopper_or_skip("q8_0_f16_run_kernel_is_within_f16_rounding_of_cpu") else {
        return;
    };
    // mm_q8_0_wh and _wh2 sum f16(q·d) products in f32: against the CPU's exact block sums it
    // differs by the operands' f16 rounding (relative 2^-11 a term, random in sign), far
    // below the activations' Q8_0 rounding (2^-8) that both share. Partial tiles, one
    // stage and many; activations of very different sizes per token (1e-3 .. 1e2).
    // 4,096 rows × 2,048 tokens: 512 blocks, several waves (its every 31st token compared).
    for (rows, cols, n_tok) in [
        (200, 1024, 300),
        (130, 128, 17),
        (256, 4096, 129),
        (4096, 1024, 2048),
    ] {
        let m = q8_0_mat(rows, cols);
        let xs = scaled_rows(n_tok, cols, 500);
        let step = if n_tok > 1000 { 31 } else { 1 };
        let picked: Vec<Vec<f32>> = xs.iter().step_by(step).cloned().collect();
        let cpu = m.matmul(&picked).unwrap();
        let dm = upload_mat(&gpu, &m, "test").unwrap();
        let wh = matmul_with(&gpu, &dm, &xs, "wh");
        let wh2 = matmul_with(&gpu, &dm, &xs, "wh2");
        let wg = matmul_with(&gpu, &dm, &xs, "wg");
        // mm_q8_0_wr (five stages, three register sets) and wr4 (four, two): wh2's operands,
        // another summation order.
        let wr = matmul_with(&gpu, &dm, &xs, "wr");
        let wr4 = matmul_with(&gpu, &dm, &xs, "wr4");
        let (mut worst, mut worst2, mut worst_wg, mut worst_wr) = (0f32, 0f32, 0f32, 0f32);
        for (i, t) in (0..xs.len()).step_by(step).enumerate() {
            let e = rel_err(&cpu[i], &wh[t]);
            worst = worst.max(e);
            let e2 = rel_err(&cpu[i], &wh2[t]);
            worst2 = worst2.max(e2);
            assert!(
                e2 < 2e-3,
                "wh2 {rows}x{cols}, {n_tok} tokens: token {t}: rel err {e2}"
            );
            for (name, out) in [("wr", &wr), ("wr4", &wr4)] {
                let er = rel_err(&cpu[i], &out[t]);
                worst_wr = worst_wr.max(er);
                assert!(
                    er < 2e-3,
                    "{name} {rows}x{cols}, {n_tok} tokens: token {t}: rel err {er}"
                );
            }
            worst_wg = worst_wg.max(rel_err(&cpu[i], &wg[t]));
            assert!(
                e < 2e-3,
                "{rows}x{cols}, {n_tok} tokens: token {t}: rel err {e}"
            );
        }
        println!(
            "Q8_0 {rows}x{cols}, {n_tok} tokens: f16 kernels worst rel err {worst:.3e} (wh), {worst2:.3e} (wh2), {worst_wr:.3e} (wr); exact kernel {worst_wg:.3e}"
        );
    }
}

#[test]
fn q8_0_register_operand_kernel_takes_any_stage_count() {
    let Some(gpu) = hopper_or_skip("q8_0_register_operand_kernel_takes_any_stage_count") else {
        return;
    };
    // mm_q8_0_wr's stages are 64 columns (wh2's 128), taken in turns of three fragment
    // register sets (wr4: two): 5, 4 and 2 stages end after a turn and two, one or none
    // more, and before a whole turn; the tokens a partial 256-token tile and a half.
    for cols in [320, 256, 128] {
        let (rows, n_tok) = (136, 300);
        let m = q8_0_mat(rows, cols);
        let xs = scaled_rows(n_tok, cols, 77);
        let cpu = m.matmul(&xs).unwrap();
        let dm = upload_mat(&gpu, &m, "test").unwrap();
        for name in ["wr", "wr4"] {
            let out = matmul_with(&gpu, &dm, &xs, name);
            let worst = (0..xs.len())
                .map(|t| rel_err(&cpu[t], &out[t]))
                .fold(0f32, f32::max);
            assert!(
                worst < 2e-3,
                "{name} {rows}x{cols}, {n_tok} tokens: worst rel err {worst}"
            );
            println!("Q8_0 {rows}x{cols}, {n_tok} tokens: {name} worst rel err {worst:.3e}");
        }
    }
}

fn check_types(gpu: &Gpu, rows: usize, cols: usize, w: &[f32], n_tok: u64) {
    let xs: Vec<Vec<f32>> = (0..n_tok).map(|t| rand_vec(cols, 10 + t)).collect();
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
            Mat::from_f32(rows, cols, w.to_vec()).unwrap()
        } else {
            let bytes = ds4_quant::quantize(ty, w, cols, None).unwrap();
            Mat::from_blocks(rows, cols, ty, Bytes::from_vec(bytes)).unwrap()
        };
        let cpu = m.matmul(&xs).unwrap();
        let dm = upload_mat(gpu, &m, "test").unwrap();
        let got = matmul_once(gpu, &dm, &xs).unwrap();
        // The f16 Q8_0 run product (mm_q8_0_wh) rounds its operands to f16.
        let f16_run = ty == GgmlType::Q8_0 && n_tok >= 16 && !q8_0_runs_exact(gpu);
        let tol = if f16_run { 2e-3 } else { 1e-5 };
        let mut worst = 0f32;
        for (t, (a, b)) in cpu.iter().zip(&got).enumerate() {
            let e = rel_err(a, b);
            worst = worst.max(e);
            assert!(e < tol, "{ty} {n_tok} tokens, token {t}: rel err {e}");
        }
        println!("{ty}: {n_tok} tokens: worst rel err {worst:.3e}");
    }
}

/// `n_expert` random matrices of `ty` (seeds from `seed`).
fn expert_mats(ty: GgmlType, rows: usize, cols: usize, n_expert: usize, seed: u64) -> Vec<Mat> {
    (0..n_expert)
        .map(|e| {
            let w = rand_vec(rows * cols, seed + e as u64);
            let bytes = ds4_quant::quantize(ty, &w, cols, None).unwrap();
            Mat::from_blocks(rows, cols, ty, Bytes::from_vec(bytes)).unwrap()
        })
        .collect()
}

/// The items a routed-expert test compares with the CPU: all of a short run, else every
/// 7th and the last 64 (the CPU's time).
fn compared_items(n_tok: usize, items: usize) -> impl Iterator<Item = usize> {
    (0..items).filter(move |&b| n_tok <= 70 || b % 7 == 0 || b + 64 >= items)
}

/// Item `b`'s output on the CPU: its expert's matrix times its token's row (`k` items a
/// token).
fn cpu_item(mats: &[Mat], xs: &[Vec<f32>], ids: &[i32], k: usize, b: usize) -> Vec<f32> {
    mats[ids[b] as usize]
        .matmul(&xs[b / k..b / k + 1])
        .unwrap()
        .remove(0)
}

/// Expert ids of `n_tok` tokens × `k` slots, spread unevenly over the experts.
fn expert_ids(n_tok: usize, k: usize, n_expert: usize) -> Vec<i32> {
    (0..n_tok * k)
        .map(|b| ((b / k) * 3 + (b % k) * 2 + b / 7) as i32 % n_expert as i32)
        .collect()
}

#[test]
fn routed_experts_match_cpu() {
    let Some(gpu) = gpu_or_skip("routed_experts_match_cpu") else {
        return;
    };
    // The routed types of the q2 recipe, 4 experts of 96 rows (a partial 64-row tile),
    // 2 items a token. 1 token: decode's one-item kernels with expert ids; 3 and 70:
    // items grouped by expert, for the tensor-core kernels (70 tokens: 35 items an
    // expert, a full group and a partial one). The products sum each 256-column block
    // in integers as the CPU does, so they agree to float rounding. 12,289 tokens give
    // 24,578 items, past the run size from which the groups hold 64 items (the `*64`
    // kernels); there every 7th item and the last 64 are compared, to bound the CPU's time.
    let (rows, cols, n_expert, k) = (96, 1024, 4usize, 2usize);
    for ty in [GgmlType::Iq2Xxs, GgmlType::Q2K] {
        let mats = expert_mats(ty, rows, cols, n_expert, 100);
        let dm = upload_mats(&gpu, &mats, "experts").unwrap();
        for n_tok in [1usize, 3, 70, 12_289] {
            let xs: Vec<Vec<f32>> = (0..n_tok).map(|t| rand_vec(cols, 200 + t as u64)).collect();
            let ids = expert_ids(n_tok, k, n_expert);
            let got = experts_once(&gpu, &dm, &xs, &ids, n_expert).unwrap();
            // The f16 IQ2_XXS and Q2_K run kernels round their operands to f16.
            let f16_run = n_tok > 1
                && match ty {
                    GgmlType::Iq2Xxs => !iq2_runs_exact(&gpu),
                    _ => !q2k_runs_exact(&gpu),
                };
            let tol = if f16_run { 2e-3 } else { 1e-5 };
            let (mut worst, mut same) = (0f32, true);
            for b in compared_items(n_tok, got.len()) {
                let (cpu, row) = (cpu_item(&mats, &xs, &ids, k, b), &got[b]);
                let e = rel_err(&cpu, row);
                worst = worst.max(e);
                same &= cpu == *row;
                assert!(e < tol, "{ty} {n_tok} tokens, item {b}: rel err {e}");
            }
            println!(
                "{ty} experts: {n_tok} tokens: worst rel err {worst:.3e}, bit-identical: {same}"
            );
        }
    }
}

#[test]
fn iq2_xxs_f16_experts_are_within_f16_rounding_of_cpu() {
    let Some(gpu) = hopper_or_skip("iq2_xxs_f16_experts_are_within_f16_rounding_of_cpu") else {
        return;
    };
    // mm_iq2_xxs_wh64: weights grid · f16((2ls + 1) · d) rounded to f16 (two roundings;
    // DS4_CUDA_IQ2_WDL=0: f16(grid · (2ls + 1) · d), one), activations
    // f16 of the Q8_K values, f32 sums. Against the CPU's integer block sums: f16's
    // rounding (relative 2^-11 a term, random in sign). 4 experts of 200 rows (a partial
    // 128-row tile), 2 items a token, groups of 64 (the kernel's): 70 tokens give one
    // partial group an expert, 3,000 and 12,289 tokens many full ones and hundreds of
    // blocks (every 7th item and the last 64 compared). Activations of very different
    // sizes per token (1e-3 .. 1e2).
    // mm_iq2_xxs_wh256 likewise (256-row blocks, three stages).
    for r256 in [false, true] {
        println!("256 rows: {r256}");
        set_iq2_r256(Some(r256));
        f16_experts_within_rounding(&gpu, GgmlType::Iq2Xxs, 1024, 300, set_iq2_f16);
    }
    set_iq2_r256(None);
}

#[test]
fn q2_k_f16_experts_are_within_f16_rounding_of_cpu() {
    let Some(gpu) = hopper_or_skip("q2_k_f16_experts_are_within_f16_rounding_of_cpu") else {
        return;
    };
    // mm_q2_k_wf64: weights f16(q · f16(d · sc)) − f16(dmin · m), activations f16 of the
    // Q8_K values; mm_q2_k_wf256 the same on 256-row blocks, three stages. The same
    // shapes as the IQ2_XXS test, 2,048 columns (the Flash release's down products: 8
    // blocks a row).
    for r256 in [false, true] {
        println!("256 rows: {r256}");
        set_q2k_r256(Some(r256));
        f16_experts_within_rounding(&gpu, GgmlType::Q2K, 2048, 500, set_q2k_f16);
    }
    set_q2k_r256(None);
}

/// A routed f16 run kernel (chosen by `set`) against the CPU within f16's rounding.
fn f16_experts_within_rounding(
    gpu: &Gpu,
    ty: GgmlType,
    cols: usize,
    seed: u64,
    set: fn(Option<bool>),
) {
    let (rows, n_expert, k) = (200, 4usize, 2usize);
    let mats = expert_mats(ty, rows, cols, n_expert, seed);
    let dm = upload_mats(gpu, &mats, "experts").unwrap();
    for n_tok in [70usize, 3_000, 12_289] {
        let xs = scaled_rows(n_tok as u64, cols, seed + 100);
        let ids = expert_ids(n_tok, k, n_expert);
        set(Some(true));
        let got = experts_once(gpu, &dm, &xs, &ids, n_expert);
        set(None);
        let got = got.unwrap();
        let mut worst = 0f32;
        let mut bad = Vec::new();
        for b in compared_items(n_tok, got.len()) {
            let (cpu, row) = (cpu_item(&mats, &xs, &ids, k, b), &got[b]);
            let e = rel_err(&cpu, row);
            worst = worst.max(e);
            if e >= 2e-3 {
                // Where a wrong output is (its rows), for a staging mistake.
                let rows_bad: Vec<usize> = (0..rows)
                    .filter(|&r| (cpu[r] - row[r]).abs() > 2e-3 * cpu[r].abs().max(1e-3))
                    .collect();
                bad.push((b, e, rows_bad.len(), rows_bad.first().copied()));
            }
        }
        println!(
            "{ty} f16 experts: {n_tok} tokens: worst rel err {worst:.3e}, {} outputs over 2e-3",
            bad.len()
        );
        for (b, e, nr, r0) in bad.iter().take(12) {
            println!(
                "  item {b} (token {}, expert {}): rel err {e:.3e}, {nr} rows off from {r0:?}",
                b / k,
                ids[*b]
            );
        }
        assert!(
            bad.is_empty(),
            "{ty} {n_tok} tokens: {} outputs over 2e-3",
            bad.len()
        );
    }
}

#[test]
fn tiny_model_logits_match_cpu() {
    if gpu_or_skip("tiny_model_logits_match_cpu").is_none() {
        return;
    }
    let model = tiny_model();
    // cuda_check's prompt for this model (seed 7), 400 tokens.
    let mut s = 7u64;
    let toks: Vec<u32> = (0..400)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 256) as u32
        })
        .collect();
    let opts = ForwardOptions::default();
    let cpu = model.teacher_forced_logits(&toks, 16, opts).unwrap();
    let be = ds4_cuda::CudaBackend::load(&model, 0, 512, 64, &mut |_, _| {}).unwrap();
    // The model's fp8/fp4/f16 simulations are steps: a ulp-level difference in a stored
    // row can round it the other way, which moves later logits by up to a few 1e-3
    // (cuda_check attributes each such position). Most positions must agree to 1e-3,
    // none may be far off, greedy picks must agree wherever the margin is clear, and
    // runs of 1 and 7 (the same matrix-vector kernels) must give the same bits; a run of
    // 64 multiplies its Q8_0 matrices on the tensor cores, which sum in another order.
    let mut first: Option<Vec<Vec<f32>>> = None;
    for run in [1, 7, 64] {
        let mut st = be.new_state(512, opts).unwrap();
        let gpu = teacher_forced(st.as_mut(), &toks, run).unwrap();
        let mut over = 0;
        for (i, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
            let e = rel_err(a, b);
            assert!(e < 5e-2, "run {run} pos {i}: rel err {e}");
            over += (e > 1e-3) as usize;
            let am = |v: &[f32]| (0..v.len()).fold(0, |m, j| if v[j] > v[m] { j } else { m });
            let (ca, ga) = (am(a), am(b));
            let mut sorted = a.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            if sorted[0] - sorted[1] > 1e-2 {
                assert_eq!(ca, ga, "run {run} pos {i}: greedy pick differs");
            }
        }
        assert!(
            over * 100 <= toks.len(),
            "run {run}: {over} positions above 1e-3"
        );
        match &first {
            None => first = Some(gpu),
            Some(f) if run < 16 => assert_eq!(f, &gpu, "run {run} differs from run 1"),
            Some(_) => {}
        }
    }
}

/// Runs of tokens take the tensor-core attention (16 heads of 128 dimensions) at a
/// context where a ratio-32 layer reads an odd number of rows (48 + 288/32 + 2 = 59):
/// its row table once pushed the f16 staging off 16-byte alignment and the run failed
/// with a misaligned address (v18: any context with ctx / 128 odd on the Flash layout).
/// Synthetic weights with the HC mixing matrices in F16, the attention's grouped output in
/// Q8_0 and the routed experts' down products in Q2_K, as the Flash release has them (the
/// fixture's are F32), so that runs take the F16 tensor-core mixing product, out_a reads
/// Q8_0 activations and swiglu writes Q8_K ones.
struct FlashTypes(ds4_engine::SyntheticSource);

impl ds4_engine::weights::WeightSource for FlashTypes {
    fn tensor(&self, name: &str) -> ds4_engine::error::Result<Option<ds4_engine::weights::Tensor>> {
        use ds4_engine::weights::TensorData;
        let mut t = self.0.tensor(name)?;
        let ty = if name.ends_with("hc_attn_fn.weight") || name.ends_with("hc_ffn_fn.weight") {
            GgmlType::F16
        } else if name.ends_with("attn_output_a.weight") {
            GgmlType::Q8_0
        } else if name.ends_with("ffn_down_exps.weight") {
            GgmlType::Q2K
        } else {
            return Ok(t);
        };
        if let Some(t) = t.as_mut()
            && let TensorData::F32(v) = &t.data
        {
            let cols = *t.shape.last().unwrap();
            let bytes = ds4_quant::quantize::quantize(ty, v, cols, None).unwrap();
            t.data = TensorData::Blocks {
                ty,
                bytes: Bytes::from_vec(bytes),
            };
        }
        Ok(t)
    }
}

/// The run paths that fold a step into a neighbouring kernel, against the kernels they
/// replace, on a 16-head model (the tensor-core attention) with the Flash types: the
/// attention's epilogue writing o's Q8_0 gives quant_q8_0's values and its staging of the
/// queries head_norm_rope_w's, swiglu_qk's values and Q8_K blocks swiglu's and hc_post4's
/// sums hc_post's, so the logits are equal bit for bit; the HC pre-step with
/// the norm's factors applied by the mixing product and hc_pre_norm4 differs from the
/// normed copy, product and hc_pre_norm only by the order of a double sum of squares.
/// (Against the CPU, the Q8_0 activations of such a model move its logits by up to ~0.2
/// relative through random weights: cuda_check's per-layer check on the synthetic q2
/// files, which take these paths, is that gate.)
#[test]
fn run_fusions_match_the_kernels_they_replace() {
    if gpu_or_skip("run_fusions_match_the_kernels_they_replace").is_none() {
        return;
    }
    let mut cfg = wide_tiny_config();
    cfg.expert_ff = 256; // whole Q2_K rows for the routed down products
    let model = Model::new(
        cfg.clone(),
        &FlashTypes(ds4_engine::SyntheticSource::new(cfg.clone(), 9)),
    )
    .unwrap();
    let lw = &model.weights.layers[0];
    assert_eq!(lw.hc_attn.fn_.ty(), GgmlType::F16);
    assert_eq!(lw.out_a.ty(), GgmlType::Q8_0);
    assert_eq!(lw.down_exps[0].ty(), GgmlType::Q2K);
    let toks: Vec<u32> = (0..192u32).map(|i| (i * 37 + 11) % 256).collect();
    let opts = ForwardOptions::default();
    let be = ds4_cuda::CudaBackend::load(&model, 0, 256, 64, &mut |_, _| {}).unwrap();
    // [HC pre-step, o's Q8_0, the queries' norm, swiglu_qk, hc_post4]
    let run = |f: [bool; 5]| {
        set_run_fusions(f.map(Some));
        let mut st = be.new_state(256, opts).unwrap();
        teacher_forced(st.as_mut(), &toks, 64).unwrap()
    };
    let base = run([false; 5]);
    let exact = run([false, true, true, true, true]);
    let all = run([true; 5]);
    set_run_fusions([None; 5]);
    assert_eq!(base, exact, "a bit-exact fusion changed the logits");
    let worst = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| rel_err(x, y))
            .fold(0f32, f32::max)
    };
    let hc = worst(&base, &all);
    println!("HC pre-step fused: worst rel err {hc:.3e} from the separate kernels");
    assert!(hc < 1e-5, "fused HC pre-step: rel err {hc}");
    // The norm factors from hc_post4's sums of squares (DS4_CUDA_HC_SSQ) against
    // rms_factor's pass: the same double sums in another order.
    set_hc_ssq(Some(false));
    let pass = run([true; 5]);
    set_hc_ssq(Some(true));
    let ssq = run([true; 5]);
    set_hc_ssq(None);
    set_run_fusions([None; 5]);
    let e = worst(&pass, &ssq);
    println!("HC norm factors from hc_post4's sums: worst rel err {e:.3e} from rms_factor's");
    assert!(
        e < 1e-5,
        "HC norm factors from hc_post4's sums: rel err {e}"
    );
}

#[test]
fn tensor_core_attention_takes_an_odd_row_count() {
    if gpu_or_skip("tensor_core_attention_takes_an_odd_row_count").is_none() {
        return;
    }
    let model = wide_tiny_model(5);
    let ctx = 288;
    let toks: Vec<u32> = (0..200u32).map(|i| (i * 53 + 7) % 256).collect();
    let opts = ForwardOptions::default();
    let cpu = model.teacher_forced_logits(&toks, 64, opts).unwrap();
    let be = ds4_cuda::CudaBackend::load(&model, 0, ctx, 64, &mut |_, _| {}).unwrap();
    let mut st = be.new_state(ctx, opts).unwrap();
    let gpu = teacher_forced(st.as_mut(), &toks, 64).unwrap();
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| rel_err(a, b))
        .fold(0f32, f32::max);
    println!(
        "odd row count: worst rel err {worst:.3e} over {} positions",
        toks.len()
    );
    assert!(worst < 5e-2, "worst rel err {worst}");
}

/// Runs on Hopper with heads of 512 (the Flash layout) take the wgmma attention
/// (`attention_wg_kh`, 32 heads a block): against the CPU, and against `attention_mma` (the
/// same operand splits, other summation orders and exponentials), on the tiny fixture
/// widened to the Flash release's 64 heads of 512 with a window of 100, so a token's rows
/// (up to 165) span three 64-row tiles, the last one partial. The selection (80) keeps
/// every compressed row here: with random weights a selection that flips on a near-tie
/// moves a position's logits by up to 0.3 whichever kernel runs (v31a), so the logits are
/// compared where no such discrete choice intervenes; cuda_check's per-layer check on
/// 32 × 512 and 64 × 512 q2 files (bench/checked-ab.sh) covers rows through a selection.
#[test]
fn wgmma_attention_matches_cpu_and_the_mma_kernel() {
    let Some(gpu) = gpu_or_skip("wgmma_attention_matches_cpu_and_the_mma_kernel") else {
        return;
    };
    let mut cfg = wide_tiny_config();
    cfg.n_head = 64;
    cfg.head_dim = 512;
    cfg.sliding_window = 100;
    cfg.indexer_top_k = 80;
    let model = Model::new(cfg.clone(), &ds4_engine::SyntheticSource::new(cfg, 13)).unwrap();
    let ctx = 320;
    let toks: Vec<u32> = (0..260u32).map(|i| (i * 41 + 5) % 256).collect();
    let opts = ForwardOptions::default();
    let cpu = model.teacher_forced_logits(&toks, 64, opts).unwrap();
    let be = ds4_cuda::CudaBackend::load(&model, 0, ctx, 64, &mut |_, _| {}).unwrap();
    let run = |wg: bool| {
        set_attention_wg(Some(wg));
        let mut st = be.new_state(ctx, opts).unwrap();
        let out = teacher_forced(st.as_mut(), &toks, 64).unwrap();
        set_attention_wg(None);
        out
    };
    let worst = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| rel_err(x, y))
            .fold(0f32, f32::max)
    };
    let mma = run(false);
    let e_mma = worst(&cpu, &mma);
    let wg = run(true);
    let (e_wg, e_k) = (worst(&cpu, &wg), worst(&mma, &wg));
    println!(
        "512-wide heads on {}: attention_mma {e_mma:.3e} from the CPU; attention_wg_kh \
         {e_wg:.3e} from the CPU, {e_k:.3e} from attention_mma",
        gpu.arch
    );
    assert!(e_mma < 5e-2, "mma attention: rel err {e_mma} from the CPU");
    assert!(e_wg < 5e-2, "attention_wg_kh: rel err {e_wg} from the CPU");
    if gpu.arch == "sm_90a" {
        assert!(e_k > 0.0, "attention_wg_kh was not taken");
        assert!(
            e_k < 2e-2,
            "attention_wg_kh against attention_mma: rel err {e_k}"
        );
    }
}

/// The wgmma run attention writes o's Q8_0 and, for out_a's `mm_q8_0_wr`, its f16 in
/// `q8_0_to_f16_p`'s order (that launch then skipped) instead of o in f32: the logits
/// equal, bit for bit, those of o in f32 quantized and converted by the separate kernels,
/// on 64 heads of 512 with out_a in Q8_0, its groups 128 rows (wr's tiles) and runs of 192
/// tokens (more than wr's 128).
#[test]
fn wgmma_attention_f16_o_matches_the_separate_conversion() {
    if hopper_or_skip("wgmma_attention_f16_o_matches_the_separate_conversion").is_none() {
        return;
    }
    let mut cfg = wide_tiny_config();
    cfg.n_head = 64;
    cfg.head_dim = 512;
    cfg.o_lora = 128;
    cfg.expert_ff = 256; // whole Q2_K rows for the routed down products
    let model = Model::new(
        cfg.clone(),
        &FlashTypes(ds4_engine::SyntheticSource::new(cfg.clone(), 21)),
    )
    .unwrap();
    let toks: Vec<u32> = (0..384u32).map(|i| (i * 53 + 7) % 256).collect();
    let opts = ForwardOptions::default();
    let mut be = ds4_cuda::CudaBackend::load(&model, 0, 512, 192, &mut |_, _| {}).unwrap();
    be.gpu.set_profiling(true);
    let run = |fused: bool| {
        set_run_fusions([None, Some(fused), None, None, None]);
        let mut st = be.new_state(512, opts).unwrap();
        let out = teacher_forced(st.as_mut(), &toks, 192).unwrap();
        set_run_fusions([None; 5]);
        let prof = be.gpu.take_profile().unwrap();
        let conv = prof
            .iter()
            .find(|k| k.name == "q8_0_to_f16_p")
            .map_or(0, |k| k.launches);
        (out, conv)
    };
    let (sep, n_sep) = run(false);
    let (fused, n_fused) = run(true);
    println!("q8_0_to_f16_p launches: {n_sep} separate, {n_fused} with the attention's f16");
    assert!(n_fused < n_sep, "out_a's conversion was not skipped");
    assert_eq!(sep, fused, "the attention's f16 o changed the logits");
}

/// A state keeping its K=V and indexer rows in f16 (the default under the QAT
/// simulation, whose rows are f16 values) gives the logits of one keeping them in f32,
/// bit for bit: prompts in runs (the tensor-core or multi-head attention, the run
/// compressor and indexer) and decode steps (split attention, the step compressor and
/// indexer, top-k over the selection) on the tiny fixture and on a 16-head variant whose
/// runs take the tensor-core attention (two f16 tile buffers at 64 heads are the Flash
/// shape only; 16 heads take the one-buffer kernel).
#[test]
fn f16_rows_give_the_logits_of_f32_rows_bit_for_bit() {
    if gpu_or_skip("f16_rows_give_the_logits_of_f32_rows_bit_for_bit").is_none() {
        return;
    }
    let models = [("tiny", tiny_model()), ("16 heads", wide_tiny_model(5))];
    let toks: Vec<u32> = (0..260u32).map(|i| (i * 29 + 3) % 256).collect();
    let opts = ForwardOptions::default();
    for (name, model) in &models {
        let be = ds4_cuda::CudaBackend::load(model, 0, 512, 64, &mut |_, _| {}).unwrap();
        let run = |half: bool| -> Vec<Vec<f32>> {
            let mut st = be.state_rows(512, opts, half).unwrap();
            prompt_then_decode(&mut st, &toks, 200, 64)
        };
        let (f16_rows, f32_rows) = (run(true), run(false));
        assert_eq!(f16_rows.len(), f32_rows.len());
        for (i, (a, b)) in f16_rows.iter().zip(&f32_rows).enumerate() {
            assert_eq!(a, b, "{name}: position {i}: f16 and f32 rows differ");
        }
    }
    // Without the simulation the rows are not f16 values: no f16 state.
    let be = ds4_cuda::CudaBackend::load(&models[0].1, 0, 256, 64, &mut |_, _| {}).unwrap();
    let no_sim = ForwardOptions { no_qat_sim: true };
    assert!(be.state_rows(256, no_sim, true).is_err());
}

#[test]
fn decode_graph_replays_the_plain_launches_bit_for_bit() {
    if gpu_or_skip("decode_graph_replays_the_plain_launches_bit_for_bit").is_none() {
        return;
    }
    use ds4_engine::{ForwardState, LogitsFor};
    let model = tiny_model();
    let toks: Vec<u32> = (0..300u32).map(|i| (i * 37 + 11) % 256).collect();
    let opts = ForwardOptions::default();
    let be = ds4_cuda::CudaBackend::load(&model, 0, 512, 64, &mut |_, _| {}).unwrap();
    // A prompt, then decode past several compression boundaries (ratio 4 and the
    // window), so the replayed graph must follow the device-resident position.
    let decode = |graph: bool, ahead: bool| -> Vec<Vec<f32>> {
        let mut st = be.state(512, opts).unwrap();
        st.set_graph(graph);
        st.set_capture_ahead(ahead);
        st.forward(&toks[..40], LogitsFor::Last).unwrap();
        assert_eq!(
            st.has_decode_graph(),
            graph && ahead,
            "captured with the prompt"
        );
        toks[40..]
            .iter()
            .map(|&t| st.forward(&[t], LogitsFor::Last).unwrap().remove(0))
            .collect()
    };
    let plain = decode(false, false);
    // The graph captured while the prompt runs, and at the first decode step.
    for ahead in [true, false] {
        let graph = decode(true, ahead);
        assert_eq!(plain.len(), graph.len());
        for (i, (a, b)) in plain.iter().zip(&graph).enumerate() {
            assert_eq!(
                a, b,
                "decode step {i}: graph (captured ahead: {ahead}) and plain launches differ"
            );
        }
    }
    // And the plain decode is the CPU's, within the tolerance of the test above.
    let cpu = model.teacher_forced_logits(&toks, 40, opts).unwrap();
    for (i, g) in plain.iter().enumerate() {
        let e = rel_err(&cpu[40 + i], g);
        assert!(e < 5e-2, "decode step {i}: rel err {e} against the CPU");
    }
}

#[test]
fn greedy_pick_on_the_gpu_is_the_hosts_argmax() {
    if gpu_or_skip("greedy_pick_on_the_gpu_is_the_hosts_argmax").is_none() {
        return;
    }
    use ds4_engine::{ForwardState, LogitsFor, sampling::argmax};
    let model = tiny_model();
    let toks: Vec<u32> = (0..120u32).map(|i| (i * 37 + 11) % 256).collect();
    let opts = ForwardOptions::default();
    let be = ds4_cuda::CudaBackend::load(&model, 0, 256, 64, &mut |_, _| {}).unwrap();
    let mut a = be.state(256, opts).unwrap();
    let mut b = be.state(256, opts).unwrap();
    a.forward(&toks[..40], LogitsFor::Last).unwrap();
    b.forward(&toks[..40], LogitsFor::Last).unwrap();
    for (i, &t) in toks[40..].iter().enumerate() {
        let logits = a.forward(&[t], LogitsFor::Last).unwrap().remove(0);
        let best = argmax(&logits).unwrap();
        // Every third step bans the best id (as EOS is banned): the runner-up.
        let banned = (i % 3 == 2).then_some(best);
        let mut l = logits.clone();
        if let Some(x) = banned {
            l[x as usize] = f32::NEG_INFINITY;
        }
        let want = argmax(&l);
        let got = b.forward_greedy(t, banned).unwrap();
        assert_eq!(got, want, "decode step {i} (banned {banned:?})");
    }
    assert_eq!(a.n_tokens(), b.n_tokens());
    // The states stayed equal: the next logits agree bit for bit.
    let la = a.forward(&[7], LogitsFor::Last).unwrap();
    let lb = b.forward(&[7], LogitsFor::Last).unwrap();
    assert_eq!(la, lb);
}

#[test]
fn fused_pairs_match_separate_products() {
    if gpu_or_skip("fused_pairs_match_separate_products").is_none() {
        return;
    }
    let model = tiny_model();
    let toks: Vec<u32> = (0..120u32).map(|i| (i * 53 + 5) % 256).collect();
    let opts = ForwardOptions::default();
    // q_a+kv, the compressors' kv+gate and gate+up as one product each, or as two
    // launches writing the same layout: the same row dot products (a matrix with more
    // rows may split its columns over fewer warps, so the sums may differ in order).
    let run = |fuse: bool| -> Vec<Vec<f32>> {
        let be =
            ds4_cuda::CudaBackend::load_with(&model, 0, 256, 64, fuse, &mut |_, _| {}).unwrap();
        let mut st = be.state(256, opts).unwrap();
        prompt_then_decode(&mut st, &toks, 64, 64)
    };
    let (fused, separate) = (run(true), run(false));
    assert_eq!(fused.len(), separate.len());
    for (i, (a, b)) in fused.iter().zip(&separate).enumerate() {
        let e = rel_err(a, b);
        assert!(e < 1e-3, "position {i}: fused and separate differ by {e}");
    }
}

/// The indexer's top-k on the GPU picks what the CPU reference's `topk_desc` picks
/// (total order of the values, ties to the lower row), with many ties at the k-th value,
/// both zeros, negatives and a NaN, for rows just past k up to several thousand.
/// A run's indexer scores, four tokens a block (`indexer_scores_tt`), are those of the
/// one-token-a-block kernel bit for bit — a run and a decode step must select the same
/// rows — and match a double-precision sum; over f16-exact rows stored as f16 (a QAT
/// state's), both kernels give the scores of the f32 rows bit for bit.
#[test]
fn run_indexer_scores_match_single_tokens_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("run_indexer_scores_match_single_tokens_bit_for_bit") else {
        return;
    };
    let (heads, di, ratio, pos0, t) = (64, 128, 4, 1001, 37);
    // Random queries and rows (f16 hi and lo parts both), then both rounded to f16 as
    // the QAT simulation leaves them (the run kernel then skips the lo products).
    for exact in [false, true] {
        let grid = |v: Vec<f32>| -> Vec<f32> {
            if exact {
                v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
            } else {
                v
            }
        };
        let qi: Vec<Vec<f32>> = (0..t)
            .map(|i| grid(rand_vec(heads * di, 100 + i as u64)))
            .collect();
        let wi: Vec<Vec<f32>> = (0..t).map(|i| rand_vec(heads, 300 + i as u64)).collect();
        let n = (pos0 + t) / ratio;
        let rows = grid(rand_vec(n * di, 7));
        let dims = (heads, di);
        let scores = |tiled: bool, half: bool| {
            indexer_scores_once(&gpu, (&qi, &wi, &rows), dims, pos0, ratio, (tiled, half)).unwrap()
        };
        let (run, per_tok) = (scores(true, false), scores(false, false));
        assert_eq!(
            run, per_tok,
            "f16-exact {exact}: tiled run against one token a block"
        );
        // f16-exact rows stored as f16 (a QAT state's rows): the same scores bit for bit.
        if exact {
            assert_eq!(run, scores(true, true), "tiled run over f16 rows");
            assert_eq!(
                per_tok,
                scores(false, true),
                "one token a block over f16 rows"
            );
        }
        for i in [0, 3, 4, 17, 36] {
            let one = indexer_scores_once(
                &gpu,
                (&qi[i..i + 1], &wi[i..i + 1], &rows),
                dims,
                pos0 + i,
                ratio,
                (false, false),
            )
            .unwrap();
            assert_eq!(
                one[0], run[i],
                "f16-exact {exact}: token {i} as a decode step"
            );
            let want: Vec<f64> = (0..(pos0 + i + 1) / ratio)
                .map(|r| {
                    (0..heads)
                        .map(|h| {
                            let d: f64 = (0..di)
                                .map(|c| qi[i][h * di + c] as f64 * rows[r * di + c] as f64)
                                .sum();
                            wi[i][h] as f64 * d.max(0.0)
                        })
                        .sum()
                })
                .collect();
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let worst = want
                .iter()
                .zip(&run[i])
                .fold(0f64, |m, (a, b)| m.max((a - *b as f64).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "f16-exact {exact}: token {i}: {worst} of {scale}"
            );
        }
    }
}

#[test]
fn topk_select_matches_cpu() {
    let Some(gpu) = gpu_or_skip("topk_select_matches_cpu") else {
        return;
    };
    let (ratio, k) = (4usize, 512usize);
    let mut seed = 7u64;
    // Both kernels: one block a token, and a cluster of blocks a token (decode's).
    for (n_max, cluster) in [
        (513usize, false),
        (600, false),
        (2048, false),
        (5000, false),
        (513, true),
        (600, true),
        (2048, true),
        (5000, true),
        (41_000, true),
    ] {
        for tied in [false, true] {
            // Three tokens of a run, the last seeing n_max rows (the first two n_max - 1).
            let pos0 = n_max * ratio - 3;
            let scores: Vec<Vec<f32>> = (0..3)
                .map(|t| {
                    seed += 1;
                    let n = (pos0 + t + 1) / ratio;
                    let mut v = rand_vec(n, seed);
                    if tied {
                        // Few distinct values: the k-th value is shared by many rows.
                        let set = [0.25f32, 0.0, -0.0, -1.5, 0.25, 3.0, 0.0];
                        for x in v.iter_mut() {
                            *x = set[((*x + 1.0) * 3.49) as usize % set.len()];
                        }
                        v[n / 2] = f32::NAN;
                    }
                    v
                })
                .collect();
            let got = topk_once(&gpu, &scores, pos0, ratio, k, cluster).unwrap();
            for (t, (sc, g)) in scores.iter().zip(&got).enumerate() {
                let n = (pos0 + t + 1) / ratio;
                let mut want: Vec<i32> = ds4_engine::ops::topk_desc(&sc[..n], k)
                    .iter()
                    .map(|&i| i as i32)
                    .collect();
                want.sort_unstable();
                if n <= k {
                    assert!(g.is_empty(), "{n} rows: no selection expected");
                } else {
                    assert_eq!(
                        g, &want,
                        "{n} rows (ties: {tied}, cluster: {cluster}), token {t}"
                    );
                }
            }
        }
    }
}

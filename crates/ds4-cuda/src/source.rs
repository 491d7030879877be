//! The kernel source as NVRTC sees it, and the contract between it and the host.
//!
//! Everything here is plain text work, so CI (no GPU, no CUDA) tests it: the tables
//! are rendered from ds4-quant's, every kernel the host launches is defined in the
//! source, and the cache key changes with anything that changes the binary.

use sha2::{Digest, Sha256};

/// The kernels' own text (header-free CUDA C).
pub const KERNELS_CU: &str = include_str!("../kernels/ds4.cu");

/// Every `extern "C" __global__` function the host launches.
pub const KERNEL_NAMES: &[&str] = &[
    "quant_q8_0",
    "quant_q8_k",
    "mv_f32",
    "mv_f32_1",
    "mv_f16",
    "mv_f16_1",
    "mm_f16",
    "mm_f16_pf",
    "sum_parts",
    "mv_bf16",
    "mv_bf16_1",
    "mv_q8_0",
    "mv_q8_0_1",
    "mv_q8_0_r2",
    "mv_q8_0_r4",
    "mm_q8_0",
    "mm_q8_0_cp",
    "mm_q8_0_big",
    "mm_q8_0_wg",
    "mm_q8_0_wh",
    "mm_q8_0_wh2",
    "mm_q8_0_wr",
    "mm_q8_0_wr4",
    "q8_0_to_f16_p",
    "mm_f16_ws",
    "f32_to_f16_hl",
    "mm_iq2_xxs_wh64",
    "mm_iq2_xxs_wh256",
    "q8_k_to_f16_iq",
    "mm_q2_k_wf64",
    "mm_q2_k_wf256",
    "q8_k_to_f16_q2",
    "q8_0_to_f16",
    "mv_q2_k",
    "mv_q2_k_1",
    "mv_q2_k_1r",
    "mm_q2_k_sm",
    "mm_q2_k_sm64",
    "mm_q2_k_sm_h",
    "attention_split_cl",
    "attention_split_cl_kh",
    "argmax_row",
    "mv_q4_k",
    "mv_q4_k_1",
    "mv_iq2_xxs",
    "mv_iq2_xxs_1",
    "mv_iq2_xxs_1t",
    "mv_iq2_xxs_1ts",
    "mv_iq2_xxs_1tx",
    "mm_iq2_xxs_st",
    "mm_iq2_xxs_st64",
    "mm_iq2_xxs_st_t8",
    "mm_iq2_xxs_st_t4",
    "mm_iq2_xxs_st64_t4",
    "mm_iq2_xxs_st64_t8",
    "embed_rows",
    "rms_norm",
    "head_norm_rope",
    "head_norm_rope_w",
    "hc_pre_norm",
    "hc_pre_norm4",
    "rms_factor",
    "hc_fn_rms_f32",
    "hc_fn_rms_f16",
    "hc_pre_late_f16",
    "hc_pre_late_f32",
    "hc_mix",
    "hc_pre_cl_f16",
    "hc_post",
    "hc_post4",
    "rms_from_ssq",
    "hc_head",
    "kv_store",
    "kv_store_kh",
    "qa_norm_kv_store",
    "qa_norm_kv_store_kh",
    "compress_run",
    "compress_run_kh",
    "compress_rows",
    "compress_rows_kh",
    "compress_state",
    "indexer_prep",
    "indexer_prep_w",
    "indexer_scores",
    "indexer_scores_kh",
    "indexer_scores_mma",
    "indexer_scores_mma_kh",
    "indexer_scores_tt",
    "indexer_scores_tt_kh",
    "topk_select",
    "topk_select_cl",
    "attention",
    "attention_kh",
    "attention_mh",
    "attention_mh_kh",
    "attention_mma",
    "attention_mma_kh",
    "attention_mma_h64",
    "attention_mma_h64_kh",
    "attention_wg_kh",
    "attention_split",
    "attention_split_kh",
    "attention_combine",
    "route",
    "route_warp",
    "group_by_expert",
    "swiglu",
    "swiglu_qk",
    "fill_f32",
    // Diagnostics (examples/cuda_sync.rs).
    "sync_chain",
    "sync_persistent",
];

/// A fill kernel (frontier scores start at the empty-slot score).
const EXTRA: &str = r#"
extern "C" __global__ void fill_f32(float* x, float v, long long n) {
    pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}
"#;

/// The full program: IQ2_XXS tables (from ds4-quant, the one copy of them), the
/// kernels, the extras.
/// KSIGNS as byte masks: byte j of entry i is 0xff where bit j of KSIGNS[i] is set.
fn ksign_masks() -> [u64; 128] {
    std::array::from_fn(|i| {
        let v = ds4_quant::tables::KSIGNS[i];
        (0..8)
            .filter(|j| (v >> j) & 1 == 1)
            .fold(0u64, |m, j| m | 0xffu64 << (8 * j))
    })
}

pub fn program() -> String {
    let mut s = String::with_capacity(KERNELS_CU.len() + 16 * 1024);
    // Switches of ds4.cu, compiled in so that a comparison run builds its own kernels.
    // On unless the variable is 0: early PDL signalling, streaming weight loads, dense
    // products' first loads before the PDL wait, the Q8_0 decode product's register cap,
    // the ldmatrix fragments of mm_f16 and mm_iq2_xxs_st, decode's Q2_K loads a round ahead,
    // its IQ2_XXS signs by a second dp4a and its lookups by 32-bit shared addresses, the
    // attention cluster's half-warp scores, their queries staged in read order and its
    // weighted sums two columns a thread;
    // prefill's IQ2_XXS grid lookups by prmt and 32-bit addresses, its Q2_K sub-block
    // pairs scaled into one k32 mma and its Q2_K staging worked out once a block.
    // Numbers (out of range: the default): launch bounds of four decode kernels and the
    // pieces in flight per lane of the Q8_0 one.
    let on = |v: &str| std::env::var(v).map_or(1, |v| u32::from(v != "0"));
    let num = |v: &str, default: u32, max: u32| {
        std::env::var(v)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| (1..=max).contains(n))
            .unwrap_or(default)
    };
    let defines = [
        ("DS4_PDL_EARLY", on("DS4_CUDA_PDL_EARLY")),
        ("DS4_WSTREAM", on("DS4_CUDA_WSTREAM")),
        ("DS4_MV_EARLY", on("DS4_CUDA_MV_EARLY")),
        ("DS4_LDSM_B", on("DS4_CUDA_LDSM")),
        ("DS4_Q2K_PF", on("DS4_CUDA_Q2K_PF")),
        ("DS4_IQ2_DP2", on("DS4_CUDA_IQ2_DP2")),
        ("DS4_ATT_HW", on("DS4_CUDA_ATTN_HW")),
        ("DS4_ATT_WV2", on("DS4_CUDA_ATTN_WV2")),
        // The attention cluster's queries staged in its half-warp scores' read order
        // (v33: consecutive float4 reads, half the shared-memory wavefronts).
        ("DS4_ATT_QP", on("DS4_CUDA_ATTN_QP")),
        ("DS4_IQ2_LA", on("DS4_CUDA_IQ2_LA")),
        ("DS4_IQ2_PLA", on("DS4_CUDA_IQ2_PLA")),
        ("DS4_Q2K_K32", on("DS4_CUDA_Q2K_K32")),
        ("DS4_Q2K_ST2", on("DS4_CUDA_Q2K_ST2")),
        // Prefill attention's scores over half the dimensions a warp, two row tiles per
        // query fragment (v26: prefill +0.6% / +2.0% on the H200).
        ("DS4_ATT_KS2", on("DS4_CUDA_ATT_KS2")),
        // mm_q8_0_wg's two accumulator sets (DS4_CUDA_MMW_PIPE=0: one, v26c).
        ("DS4_MMW_PIPE", on("DS4_CUDA_MMW_PIPE")),
        // Off unless 1: with blocks of 512 its registers cost more than it saves (v21).
        (
            "DS4_HC_XEARLY",
            u32::from(std::env::var("DS4_CUDA_HC_XEARLY").is_ok_and(|v| v == "1")),
        ),
        // The HC pre-step's second norm from the streams' Gram matrix, one cluster
        // barrier fewer (v34: the H200's step 1.5% shorter in the same call).
        ("DS4_HC_GRAM", on("DS4_CUDA_HC_GRAM")),
        ("DS4_Q8_LB", on("DS4_CUDA_Q8_LB")),
        // mm_iq2_xxs_wh64's signs by shifts, not a table (v29, H200, same call, two
        // repetitions: prefill +3.6 / +4.1% at 2k, +2.8 / +2.9% at 8k).
        ("DS4_IQ2_WSA", on("DS4_CUDA_IQ2_WSA")),
        // With it, the signs by one multiply and an xor-and a pair (v29: the same values,
        // the kernel −3.3%, prefill +1.2% / +0.8% at 2k / 8k on the H200).
        ("DS4_IQ2_WSB", on("DS4_CUDA_IQ2_WSB")),
        // mm_iq2_xxs_wh64's scale d·(2ls + 1) rounded once before the weights (two
        // roundings, one f16 step a pair fewer; v29: the kernel −7.2%, prefill +2.2% /
        // +1.2%; the tests' worst error 6.9e-4 → 8.1e-4).
        ("DS4_IQ2_WDL", on("DS4_CUDA_IQ2_WDL")),
        // mm_iq2_xxs_wh64's grid replicas (1, 2, 4 or 8; v29: 8 gave +1.0% alone, and
        // with the signs by shifts 1.5% less than those alone).
        ("DS4_IQ2_WGR", num("DS4_CUDA_IQ2_WGR", 1, 8)),
        ("DS4_IQ2_LB", num("DS4_CUDA_IQ2_LB", 3, 8)),
        ("DS4_Q2K_LB", num("DS4_CUDA_Q2K_LB", 0, 16)),
        ("DS4_F16_LB", num("DS4_CUDA_F16_LB", 0, 4)),
        ("DS4_R2_LB", num("DS4_CUDA_R2_LB", 8, 16)),
        ("DS4_Q8_U", num("DS4_CUDA_Q8_U", 4, 8)),
        // Shapes the host sizes launches by: one definition each.
        ("IDX_TT", crate::forward::IDX_TT as u32),
        ("TK_CL", crate::forward::TOPK_CLUSTER),
        ("TK_CL_MIN", crate::forward::TOPK_CLUSTER_MIN as u32),
        ("HC_BT", crate::forward::hc_bt()),
        ("HCL_CL", crate::forward::HC_CLUSTER),
        ("HCL_BT", crate::forward::HC_CLUSTER_BT),
        ("MMW_STAGE", crate::forward::MMW_STAGE as u32),
        ("MMH2_STAGE", crate::forward::MMH2_STAGE as u32),
        ("MMR_STAGE", crate::forward::MMR_STAGE as u32),
        ("MFW_STAGE", crate::forward::MFW_STAGE as u32),
        ("IQH_LDW", crate::forward::IQH_LDW as u32),
        ("Q2F_STAGE", crate::forward::Q2F_STAGE as u32),
        ("Q2R_STAGE", crate::forward::Q2R_STAGE as u32),
        ("IQR_STAGE", crate::forward::IQR_STAGE as u32),
        ("MMW_NST", crate::forward::MMW_NST as u32),
        ("AM_BLOCKS", crate::forward::ARGMAX_BLOCKS),
        // The attention cluster's size: 8 when off (the kernel compiles, unused).
        ("ATT_CL", crate::forward::attention_cluster().max(8)),
    ];
    for (name, value) in defines {
        s.push_str(&format!("#define {name} {value}\n"));
    }
    s.push_str("// generated tables (ds4-quant)\n");
    s.push_str("__device__ unsigned long long IQ2XXS_GRID[256] = {\n");
    for (i, v) in ds4_quant::tables::IQ2XXS_GRID.iter().enumerate() {
        s.push_str(&format!("0x{v:016x}ull,"));
        if i % 4 == 3 {
            s.push('\n');
        }
    }
    // Each 7-bit sign index's KSIGNS byte as a mask of 0xff bytes (the negated
    // positions), for the kernels' xor-subtract sign flip.
    s.push_str("};\n__device__ unsigned long long KSIGN_MASK[128] = {\n");
    for (i, m) in ksign_masks().iter().enumerate() {
        s.push_str(&format!("0x{m:016x}ull,"));
        if i % 4 == 3 {
            s.push('\n');
        }
    }
    s.push_str("};\n");
    s.push_str(KERNELS_CU);
    s.push_str(EXTRA);
    s
}

/// On-disk cache key of a compiled binary: the program text, the exact device
/// architecture, the NVRTC version and the options.
pub fn cache_key(program: &str, arch: &str, nvrtc_version: (i32, i32), opts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(program.as_bytes());
    h.update([0]);
    h.update(arch.as_bytes());
    h.update([0]);
    h.update(format!("{}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    for o in opts {
        h.update([0]);
        h.update(o.as_bytes());
    }
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Names of the `extern "C" __global__` functions defined in `src`.
pub fn defined_kernels(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("__global__ void ") {
        rest = &rest[i + "__global__ void ".len()..];
        // Attributes (`__launch_bounds__(n)`, `__cluster_dims__(x, y, z)`) or a macro
        // (upper case) standing for one may sit between the return type and the name,
        // on the same line or the next.
        loop {
            rest = rest.trim_start();
            if rest.starts_with("__")
                && let Some(open) = rest.find('(')
                && rest[..open]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && let Some(close) = rest[open..].find(')')
            {
                rest = &rest[open + close + 1..];
            } else if let Some((word, after)) = rest.split_once(char::is_whitespace)
                && !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                rest = after;
            } else {
                break;
            }
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_found_past_attributes_and_bounds_macros() {
        let src = "extern \"C\" __global__ void plain(int a) {}\n\
            extern \"C\" __global__ void __launch_bounds__(256, 2) bounded(int a) {}\n\
            extern \"C\" __global__ void MV_Q8_BOUNDS capped(int a) {}\n\
            extern \"C\" __global__ void __cluster_dims__(TK_CL, 1, 1) __launch_bounds__(1024)\n\
            clustered(int a) {}\n";
        assert_eq!(
            defined_kernels(src),
            ["plain", "bounded", "capped", "clustered"]
        );
    }

    #[test]
    fn every_launched_kernel_is_defined_once() {
        let defined = defined_kernels(&program());
        for name in KERNEL_NAMES {
            let n = defined.iter().filter(|d| d == name).count();
            assert_eq!(n, 1, "kernel {name} defined {n} times");
        }
        for d in &defined {
            assert!(
                KERNEL_NAMES.contains(&d.as_str()),
                "kernel {d} is never loaded"
            );
        }
    }

    /// The text of each kernel's body (from its name to the brace closing its body).
    fn kernel_bodies(src: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in defined_kernels(src) {
            let at = src
                .find(&format!("{name}("))
                .expect("kernel name in the source");
            let open = at + src[at..].find('{').expect("a body");
            let mut depth = 0;
            let mut end = open;
            for (i, c) in src[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.push((name, src[open..end].to_string()))
        }
        out
    }

    #[test]
    fn every_kernel_waits_for_the_launch_before_it() {
        // Launched with programmatic dependent launch, a kernel may start before the one
        // queued ahead of it has finished: each must wait (pdl_begin / pdl_wait) before
        // reading what that one writes. (v28's first q8_k_to_f16_iq did not, and read
        // half-quantized activations of long runs.) A kernel whose body is one call of a
        // `*_body` function is checked through that function.
        let p = program();
        for (name, body) in kernel_bodies(&p) {
            let waits = |b: &str| b.contains("pdl_begin") || b.contains("pdl_wait");
            if waits(&body) {
                continue;
            }
            let callee = body
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|w| w.ends_with("_body"))
                .unwrap_or_else(|| panic!("kernel {name} never waits for the launch before it"));
            let def = p
                .find(&format!("void {callee}("))
                .unwrap_or_else(|| panic!("{callee} (called by {name}) not found"));
            let head = &p[def..def + 3000.min(p.len() - def)];
            assert!(waits(head), "kernel {name}: {callee} never waits early");
        }
    }

    #[test]
    fn the_eighth_sign_is_the_parity_of_the_seven() {
        // mm_iq2_xxs_wh64 under DS4_IQ2_WSA forms a group's eight signs as
        // s7 | (popc(s7) & 1) << 7 instead of reading them from a table.
        for (i, &k) in ds4_quant::tables::KSIGNS.iter().enumerate() {
            let s7 = i as u32;
            assert_eq!(s7 | ((s7.count_ones() & 1) << 7), k as u32, "entry {i}");
        }
    }

    #[test]
    fn sign_masks_negate_the_bytes_ksigns_marks() {
        // Applied as in the kernels, (g ^ m) - m byte-wise, a mask negates exactly the
        // grid bytes whose KSIGNS bit is set (grid magnitudes are below 128).
        let masks = ksign_masks();
        let p = program();
        for (i, &m) in masks.iter().enumerate() {
            assert!(p.contains(&format!("0x{m:016x}ull")), "entry {i} missing");
            let signs = ds4_quant::tables::KSIGNS[i];
            for j in 0..8 {
                let g: i8 = 8 + j as i8;
                let mb = (m >> (8 * j)) as u8;
                let flipped = ((g as u8 ^ mb).wrapping_sub(mb)) as i8;
                let want = if (signs >> j) & 1 == 1 { -g } else { g };
                assert_eq!(flipped, want, "entry {i} byte {j}");
            }
        }
    }

    /// ds4.cu's iq2_sign_word, bit for bit (prmt's sign-replicate selectors included).
    fn sign_word(s7: u32, sel: u32) -> u32 {
        let t = ((s7.wrapping_mul(0x0101_0101) | (s7.count_ones() << 31)) & sel)
            .wrapping_add(0x7f7f_7f7f);
        (0..4).fold(0, |m, j| {
            m | if (t >> (8 * j + 7)) & 1 == 1 {
                0xff << (8 * j)
            } else {
                0
            }
        })
    }

    #[test]
    fn computed_sign_words_match_the_table_and_negate_like_vsub4() {
        // The kernels that compute the sign masks (iq2_sign_word) rather than load
        // KSIGN_MASK must produce the same masks, and iq2_signed's (g ^ m) + (m & 0x01..)
        // must equal the byte-wise (g ^ m) - m on every grid word.
        let masks = ksign_masks();
        let grid = ds4_quant::tables::IQ2XXS_GRID;
        for s7 in 0..128u32 {
            let lo = sign_word(s7, 0x0804_0201);
            let hi = sign_word(s7, 0x8040_2010);
            assert_eq!(
                ((hi as u64) << 32) | lo as u64,
                masks[s7 as usize],
                "index {s7}"
            );
            for &g in grid.iter() {
                for (gw, m) in [(g as u32, lo), ((g >> 32) as u32, hi)] {
                    let fast = (gw ^ m).wrapping_add(m & 0x0101_0101);
                    let bytewise = (0..4).fold(0u32, |acc, j| {
                        let (gb, mb) = ((gw >> (8 * j)) as u8, (m >> (8 * j)) as u8);
                        acc | ((gb ^ mb).wrapping_sub(mb) as u32) << (8 * j)
                    });
                    assert_eq!(fast, bytewise, "index {s7}, grid word {gw:08x}");
                }
            }
        }
    }

    #[test]
    fn program_is_header_free_and_carries_the_tables() {
        let p = program();
        assert!(
            !p.contains("#include"),
            "kernels must not need CUDA headers"
        );
        let grid = ds4_quant::tables::IQ2XXS_GRID;
        assert!(p.contains(&format!("0x{:016x}ull", grid[0])));
        assert!(p.contains(&format!("0x{:016x}ull", grid[255])));
        // braces balance (a cheap guard against a truncated edit)
        let open = p.matches('{').count();
        let close = p.matches('}').count();
        assert_eq!(open, close);
    }

    #[test]
    fn cache_key_tracks_everything_that_changes_the_binary() {
        let p = program();
        let o = vec!["--std=c++17".to_string()];
        let k = cache_key(&p, "sm_90a", (13, 0), &o);
        assert_eq!(k, cache_key(&p, "sm_90a", (13, 0), &o));
        assert_ne!(k, cache_key(&p, "sm_90", (13, 0), &o));
        assert_ne!(k, cache_key(&p, "sm_90a", (13, 1), &o));
        assert_ne!(k, cache_key(&(p.clone() + " "), "sm_90a", (13, 0), &o));
        assert_ne!(k, cache_key(&p, "sm_90a", (13, 0), &[]));
    }
}

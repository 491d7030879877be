//! Row dot-product kernels and their run-time selection.
//!
//! Every format has a scalar reference kernel. The AVX2 (x86-64, with FMA and
//! F16C) and NEON (aarch64) kernels compute each block's integer sums with SIMD
//! and then combine blocks in f32 in exactly the scalar order, so for Q8_0,
//! Q2_K, Q4_K and IQ2_XXS they return the same bits as the scalar kernel. The
//! F16/BF16/F32 kernels sum floats in a different order (8-wide FMA
//! accumulators), so they agree with scalar only to rounding.
//!
//! The AVX-512 path (AVX-512F + BW on top of the AVX2 set) has its own Q2_K
//! kernel; every other format uses the AVX2 kernel on that path.
//!
//! `DS4_CPU_KERNELS=scalar|avx2|avx512|neon|auto` forces a path (read once per
//! process); a path the CPU lacks falls back to the best available one.

use std::sync::OnceLock;

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx2;

#[cfg(target_arch = "aarch64")]
pub mod neon;

/// A family of CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl KernelPath {
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            KernelPath::Avx2 => avx2_available(),
            KernelPath::Avx512 => avx512_available(),
            KernelPath::Neon => cfg!(target_arch = "aarch64"),
        }
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx2_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_available() -> bool {
    avx2_available() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx512_available() -> bool {
    false
}

/// All paths this CPU can run, best last.
pub fn available_paths() -> Vec<KernelPath> {
    [
        KernelPath::Scalar,
        KernelPath::Avx2,
        KernelPath::Avx512,
        KernelPath::Neon,
    ]
    .into_iter()
    .filter(|p| p.is_available())
    .collect()
}

fn best_available() -> KernelPath {
    available_paths()
        .last()
        .copied()
        .unwrap_or(KernelPath::Scalar)
}

/// The path used by [`crate::DotKernel::new`] and [`crate::matvec`]: the best
/// one available, unless `DS4_CPU_KERNELS` asks for another.
pub fn selected_path() -> KernelPath {
    static SEL: OnceLock<KernelPath> = OnceLock::new();
    *SEL.get_or_init(|| path_from_env_value(&std::env::var("DS4_CPU_KERNELS").unwrap_or_default()))
}

/// Interpret a `DS4_CPU_KERNELS` value on this CPU.
pub fn path_from_env_value(want: &str) -> KernelPath {
    match want.trim().to_ascii_lowercase().as_str() {
        "scalar" => KernelPath::Scalar,
        "avx512" if KernelPath::Avx512.is_available() => KernelPath::Avx512,
        "avx2" | "avx512" if KernelPath::Avx2.is_available() => KernelPath::Avx2,
        "neon" if KernelPath::Neon.is_available() => KernelPath::Neon,
        _ => best_available(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values() {
        assert_eq!(path_from_env_value("scalar"), KernelPath::Scalar);
        assert_eq!(path_from_env_value(" SCALAR "), KernelPath::Scalar);
        let best = best_available();
        assert_eq!(path_from_env_value(""), best);
        assert_eq!(path_from_env_value("auto"), best);
        assert!(path_from_env_value("avx2").is_available());
        assert!(path_from_env_value("avx512").is_available());
        assert!(path_from_env_value("neon").is_available());
        if KernelPath::Avx2.is_available() && !KernelPath::Avx512.is_available() {
            assert_eq!(path_from_env_value("avx512"), KernelPath::Avx2);
        }
    }
}

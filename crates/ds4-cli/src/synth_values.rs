//! Random tensor contents for synthetic models. Quantized blocks are built
//! directly from random bits with a controlled scale field instead of
//! quantizing random floats: the file is 87 GB and IQ2_XXS's grid search would
//! take hours, while a benchmark only needs valid blocks with sane magnitudes.

use ds4_gguf::GgmlType;
use half::f16;

/// wyrand: tiny, fast, and good enough for benchmark weights; seeded per chunk
/// so the bytes do not depend on how the work is split across threads.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2d35_8dcc_aa6c_78a5)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in [-1, 1).
    #[inline]
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    fn fill_bytes(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&v[..rest.len()]);
    }
}

/// Mixes a tensor index and chunk index into a seed.
pub fn chunk_seed(seed: u64, tensor: u64, chunk: u64) -> u64 {
    let mut r = Rng::new(seed ^ tensor.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ chunk.rotate_left(32));
    r.next_u64()
}

/// Fills `out` (a whole number of blocks of `ty`) with random values of RMS
/// about `rms`. Uniform floats in [-a, a] have RMS a/√3.
pub fn fill(ty: GgmlType, rms: f32, rng: &mut Rng, out: &mut [u8]) {
    let amp = rms * 3f32.sqrt();
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(amp * rng.unit()).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(amp * rng.unit()).to_le_bytes());
            }
        }
        GgmlType::Bf16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&half::bf16::from_f32(amp * rng.unit()).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            // Uniform int8 in [-127, 127] has RMS ≈ 73.3.
            let d = f16::from_f32(rms / 73.3).to_le_bytes();
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(34) {
                b[..2].copy_from_slice(&d);
                for q in &mut b[2..] {
                    if *q == 0x80 {
                        *q = 0x81;
                    }
                }
            }
        }
        GgmlType::Q2K => {
            // value = d·sc·q − dmin·m with q∈0..3 and 4-bit sc, m. dmin = 1.5·d
            // centres the mean (E[sc·q] = 7.5·1.5, E[m] = 7.5); RMS ≈ 9.2·d.
            let d = rms / 9.2;
            let (dd, dm) = (
                f16::from_f32(d).to_le_bytes(),
                f16::from_f32(1.5 * d).to_le_bytes(),
            );
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(84) {
                b[80..82].copy_from_slice(&dd);
                b[82..84].copy_from_slice(&dm);
            }
        }
        GgmlType::Q4K => {
            // value = d·sc·q − dmin·m with q∈0..15 and 6-bit sc, m; dmin = 7.5·d
            // centres it; RMS ≈ 170·d.
            let d = rms / 170.0;
            let (dd, dm) = (
                f16::from_f32(d).to_le_bytes(),
                f16::from_f32(7.5 * d).to_le_bytes(),
            );
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(144) {
                b[0..2].copy_from_slice(&dd);
                b[2..4].copy_from_slice(&dm);
            }
        }
        GgmlType::Iq2Xxs => {
            // |grid value| ∈ {8, 25, 43}, scaled by d·(0.5+ls)/4 with a 4-bit ls:
            // RMS ≈ 56·d. Every bit pattern of the 64 payload bytes is valid.
            let d = f16::from_f32(rms / 56.0).to_le_bytes();
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(66) {
                b[..2].copy_from_slice(&d);
            }
        }
        GgmlType::I32
        | GgmlType::I8
        | GgmlType::I16
        | GgmlType::I64
        | GgmlType::F64
        | GgmlType::Q8K => {
            rng.fill_bytes(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<f32> = (0..10_000).map(|_| a.unit()).collect();
        assert!(
            xs.iter()
                .zip((0..10_000).map(|_| b.unit()))
                .all(|(x, y)| *x == y)
        );
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let rms = (xs.iter().map(|x| x * x).sum::<f32>() / xs.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.03 && (rms - 1.0 / 3f32.sqrt()).abs() < 0.02,
            "{mean} {rms}"
        );
        assert!(xs.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn q8_0_blocks_have_the_requested_scale() {
        let mut out = vec![0u8; 34 * 100];
        fill(GgmlType::Q8_0, 0.01, &mut Rng::new(1), &mut out);
        for b in out.chunks_exact(34) {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            assert!((d - 0.01 / 73.3).abs() < 1e-6);
            assert!(b[2..].iter().all(|&q| q != 0x80));
        }
    }
}

//! Shared by the integration tests: the fixture file and the deterministic
//! generators that tools/gen_quant_fixtures.py implements identically.
#![allow(dead_code)]

use sha2::{Digest, Sha256};

pub fn fixtures() -> serde_json::Value {
    let text = include_str!("../data/quant_fixtures.json");
    serde_json::from_str(text).expect("fixture JSON parses")
}

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn gauss(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Make the scale fields of random blocks finite, exactly as the generator does.
pub fn sanitize(buf: &mut [u8], size: usize, f16_offs: &[usize], f32_offs: &[usize]) {
    for b in (0..buf.len()).step_by(size) {
        for &o in f16_offs {
            let mut h = u16::from_le_bytes([buf[b + o], buf[b + o + 1]]);
            if h & 0x7c00 == 0x7c00 {
                h &= !0x4000;
            }
            buf[b + o..b + o + 2].copy_from_slice(&h.to_le_bytes());
        }
        for &o in f32_offs {
            let mut v =
                u32::from_le_bytes([buf[b + o], buf[b + o + 1], buf[b + o + 2], buf[b + o + 3]]);
            if v & 0x7f80_0000 == 0x7f80_0000 {
                v &= !0x4000_0000;
            }
            buf[b + o..b + o + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Offsets of the f16 and f32 scale fields per type (matches TYPES in the generator).
pub fn scale_offsets(name: &str) -> (&'static [usize], &'static [usize]) {
    match name {
        "Q8_0" | "IQ2_XXS" => (&[0], &[]),
        "Q2_K" => (&[80, 82], &[]),
        "Q4_K" => (&[0, 2], &[]),
        "Q8_K" => (&[], &[0]),
        _ => (&[], &[]),
    }
}

/// `n` random blocks of `name` with sanitized scales.
pub fn random_blocks(name: &str, seed: u64, block_bytes: usize, n: usize) -> Vec<u8> {
    let mut buf = SplitMix64::new(seed).bytes(n * block_bytes);
    let (a, b) = scale_offsets(name);
    sanitize(&mut buf, block_bytes, a, b);
    buf
}

pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| r.gauss() as f32).collect()
}

pub fn sha_f32(v: &[f32]) -> String {
    let mut h = Sha256::new();
    for x in v {
        h.update(x.to_le_bytes());
    }
    hex(&h.finalize())
}

pub fn sha_bytes(v: &[u8]) -> String {
    hex(&Sha256::digest(v))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// sqrt(mean((x−y)²) / mean(x²)).
pub fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let (mut e, mut s) = (0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        e += (a as f64 - b as f64).powi(2);
        s += (a as f64).powi(2);
    }
    (e / s).sqrt()
}

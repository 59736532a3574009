//! GGML block formats, with scalar reference (de)quantizers.
//!
//! Layouts follow ggml's `ggml-common.h` (<https://github.com/ggml-org/ggml/blob/master/src/ggml-common.h>):
//! a block covers 32 consecutive elements of a row; in the 4-bit formats byte `j` holds element `j`
//! in its low nibble and element `j + 16` in its high nibble. These scalar functions are the
//! reference every faster path is tested against.

pub mod packed;

use half::f16;

/// Elements per block in every format here.
pub const BLOCK: usize = 32;

/// `x = d * (q - 8)`, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// `x = d * q + m`, q in 0..16.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// `x = d * q`, q in -128..128.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

fn f16_at(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

impl BlockQ4_0 {
    pub const BYTES: usize = 18;

    /// Reads one block from its little-endian file bytes (`bytes.len() == Self::BYTES`).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { d: f16_at(bytes, 0), qs: bytes[2..18].try_into().unwrap() }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..].copy_from_slice(&self.qs);
        out
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }

    /// ggml's `quantize_row_q4_0_ref`: the scale maps the value of largest magnitude to -8.
    pub fn quantize(x: &[f32]) -> Self {
        let max = x.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as i32).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i32).min(15) as u8;
            qs[j] = q0 | (q1 << 4);
        }
        Self { d: f16::from_f32(d), qs }
    }
}

impl BlockQ4_1 {
    pub const BYTES: usize = 20;

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { d: f16_at(bytes, 0), m: f16_at(bytes, 2), qs: bytes[4..20].try_into().unwrap() }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..].copy_from_slice(&self.qs);
        out
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0f) as f32 * d + m;
            out[j + 16] = (q >> 4) as f32 * d + m;
        }
    }

    /// ggml's `quantize_row_q4_1_ref`: min-max over the block.
    pub fn quantize(x: &[f32]) -> Self {
        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i32).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i32).min(15) as u8;
            qs[j] = q0 | (q1 << 4);
        }
        Self { d: f16::from_f32(d), m: f16::from_f32(min), qs }
    }
}

impl BlockQ8_0 {
    pub const BYTES: usize = 34;

    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut qs = [0i8; 32];
        for (q, &b) in qs.iter_mut().zip(&bytes[2..34]) {
            *q = b as i8;
        }
        Self { d: f16_at(bytes, 0), qs }
    }

    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[2..].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        out
    }

    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    /// ggml's `quantize_row_q8_0_ref`.
    pub fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        Self { d: f16::from_f32(d), qs }
    }
}

/// Dequantizes a run of blocks of one format into `out` (`out.len() == blocks * 32`).
pub(crate) fn dequantize_blocks(
    bytes: &[u8],
    block_bytes: usize,
    out: &mut [f32],
    dequantize: impl Fn(&[u8], &mut [f32]),
) {
    for (block, out) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(BLOCK)) {
        dequantize(block, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<f32> {
        (0..32).map(|i| (i as f32 - 12.5) * 0.173).collect()
    }

    #[test]
    fn q4_1_round_trip_is_within_half_a_step() {
        let x = ramp();
        let b = BlockQ4_1::quantize(&x);
        let mut y = [0.0; 32];
        BlockQ4_1::from_bytes(&b.to_bytes()).dequantize(&mut y);
        let step = b.d.to_f32();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= step * 0.5 + 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn q4_0_and_q8_0_round_trip_within_one_step() {
        let x = ramp();
        let (b4, b8) = (BlockQ4_0::quantize(&x), BlockQ8_0::quantize(&x));
        let (mut y4, mut y8) = ([0.0; 32], [0.0; 32]);
        BlockQ4_0::from_bytes(&b4.to_bytes()).dequantize(&mut y4);
        BlockQ8_0::from_bytes(&b8.to_bytes()).dequantize(&mut y8);
        for i in 0..32 {
            assert!((x[i] - y4[i]).abs() <= b4.d.to_f32().abs() + 1e-3);
            assert!((x[i] - y8[i]).abs() <= b8.d.to_f32() + 1e-3);
        }
    }

    #[test]
    fn nibble_order_matches_ggml() {
        // Byte j: element j in the low nibble, element j + 16 in the high nibble.
        let mut qs = [0u8; 16];
        qs[0] = 0x3 | (0xA << 4);
        let b = BlockQ4_1 { d: f16::from_f32(1.0), m: f16::from_f32(0.0), qs };
        let mut y = [0.0; 32];
        b.dequantize(&mut y);
        assert_eq!((y[0], y[16]), (3.0, 10.0));
    }
}

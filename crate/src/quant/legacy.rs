//! ggml's first block formats: 32 elements, one f16 scale (and a minimum for the `_1` types),
//! 4, 5 or 8-bit codes. Layouts follow `ggml-common.h`
//! (<https://github.com/ggml-org/ggml/blob/master/src/ggml-common.h>); in the 4- and 5-bit formats
//! byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble, and the
//! 5-bit formats keep the fifth bit of element `j` in bit `j` of `qh` (little-endian).

use half::f16;

use super::{Block, f16_at};

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

impl Block for BlockQ4_0 {
    const ELEMENTS: usize = 32;
    const BYTES: usize = 18;

    fn from_bytes(bytes: &[u8]) -> Self {
        Self { d: f16_at(bytes, 0), qs: bytes[2..18].try_into().unwrap() }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQ4_0 {
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..].copy_from_slice(&self.qs);
        out
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

impl Block for BlockQ4_1 {
    const ELEMENTS: usize = 32;
    const BYTES: usize = 20;

    fn from_bytes(bytes: &[u8]) -> Self {
        Self { d: f16_at(bytes, 0), m: f16_at(bytes, 2), qs: bytes[4..20].try_into().unwrap() }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0f) as f32 * d + m;
            out[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

impl BlockQ4_1 {
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..].copy_from_slice(&self.qs);
        out
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

impl Block for BlockQ8_0 {
    const ELEMENTS: usize = 32;
    const BYTES: usize = 34;

    fn from_bytes(bytes: &[u8]) -> Self {
        let mut qs = [0i8; 32];
        for (q, &b) in qs.iter_mut().zip(&bytes[2..34]) {
            *q = b as i8;
        }
        Self { d: f16_at(bytes, 0), qs }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl BlockQ8_0 {
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0; Self::BYTES];
        out[..2].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in out[2..].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        out
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

/// `x = d * (q - 16)`, q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// `x = d * q + m`, q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// The 5-bit codes of a block: low nibbles from `qs`, fifth bits from `qh`.
pub(crate) fn five_bit_codes(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let high = u32::from_le_bytes(qh);
    std::array::from_fn(|j| {
        let low = if j < 16 { qs[j] & 0x0f } else { qs[j - 16] >> 4 };
        low | ((((high >> j) & 1) as u8) << 4)
    })
}

impl Block for BlockQ5_0 {
    const ELEMENTS: usize = 32;
    const BYTES: usize = 22;

    fn from_bytes(bytes: &[u8]) -> Self {
        Self { d: f16_at(bytes, 0), qh: bytes[2..6].try_into().unwrap(), qs: bytes[6..22].try_into().unwrap() }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(five_bit_codes(self.qh, &self.qs)) {
            *o = d * (q as i32 - 16) as f32;
        }
    }
}

impl Block for BlockQ5_1 {
    const ELEMENTS: usize = 32;
    const BYTES: usize = 24;

    fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            d: f16_at(bytes, 0),
            m: f16_at(bytes, 2),
            qh: bytes[4..8].try_into().unwrap(),
            qs: bytes[8..24].try_into().unwrap(),
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (o, q) in out.iter_mut().zip(five_bit_codes(self.qh, &self.qs)) {
            *o = d * q as f32 + m;
        }
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

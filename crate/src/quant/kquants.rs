//! ggml's K-quants: super-blocks of 256 elements in sub-blocks of 16 or 32, whose scales (and
//! minimums) are themselves quantized to 4, 6 or 8 bits against one or two f16 super-scales.
//! Layouts follow `ggml-common.h` and `dequantize_row_q*_K` in `ggml-quants.c`
//! (<https://github.com/ggml-org/ggml/blob/master/src/ggml-quants.c>); each dequantizer computes
//! in f32 in ggml's order (`(d · scale) · q − (dmin · min)`), so its values are the file's own.
//!
//! Element order within a super-block, as ggml lays it out: the 2- and 3-bit codes are four
//! 2-bit planes per 32 bytes (element `128 h + 32 s + l` is bits `2s..2s+2` of byte `32 h + l`),
//! the 4- and 5-bit codes two nibble planes per 32 bytes (element `64 c + 32 s + l` is nibble `s`
//! of byte `32 c + l`), and the extra high bit of Q3_K and Q5_K sits in bit `e / 32` of byte
//! `e % 32` of `hmask`/`qh`.

use half::f16;

use super::{Block, f16_at};

/// A super-block in the two-level form the packed kernels take ([`crate::quant::packed::Scales::Super`]):
/// element `e` is `(d · s) · q + dmin · n` in f32, with `(s, n) = halves[e / 16]`, which is the
/// file's value bit for bit (`d · s` and `dmin · n` are ggml's own sub-block products, exact in
/// f32: an f16 times a 6- or 8-bit integer; see each block's `split`).
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Codes in element order: unsigned 0..16 when `wide` is false, else signed 8-bit.
    pub codes: [i8; QK_K],
    pub wide: bool,
    /// `(s, n)` per 16 elements.
    pub halves: [(i8, i8); 16],
    pub d: f16,
    pub dmin: f16,
}

impl Split {
    /// Element `e`'s value, as every packed kernel computes its weight.
    pub fn value(&self, e: usize) -> f32 {
        let (s, n) = self.halves[e / 16];
        (self.d.to_f32() * s as f32) * self.codes[e] as f32 + self.dmin.to_f32() * n as f32
    }
}

impl Split {
    /// A signed split (Q6_K's `q - 32`, no offset) as unsigned codes `q` with the offset
    /// `(-32 d) s` of each half: `(d s)(q + 32) + (-32 d) s` is `(d s) q` exactly (every term a
    /// multiple of `d`'s last bit below `2^24` of it). `None` when `-32 d` overflows f16.
    pub fn unsigned(&self) -> Option<Split> {
        let dmin = f16::from_f32(-32.0 * self.d.to_f32());
        let signed = self.wide && self.dmin == f16::ZERO && self.halves.iter().all(|h| h.1 == 0);
        (signed && dmin.is_finite()).then(|| Split {
            codes: self.codes.map(|c| c + 32),
            wide: true,
            halves: self.halves.map(|(s, _)| (s, s)),
            d: self.d,
            dmin,
        })
    }
}

/// Elements per super-block.
pub const QK_K: usize = 256;

/// `x = d · (scales[i] & 15) · q − dmin · (scales[i] >> 4)` over 16 sub-blocks of 16, q in 0..4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// `x = d · (s_i − 32) · (q − 4·!h)` over 16 sub-blocks of 16: 2 low bits in `qs`, the high
/// bit in `hmask` (set means no offset), 6-bit scales packed into 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// `x = d · sc_j · q − dmin · m_j` over 8 sub-blocks of 32, q in 0..16; 6-bit `sc`, `m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q4_K with a fifth bit per code in `qh`: q in 0..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// `x = d · scales[i] · (q − 32)` over 16 sub-blocks of 16: 4 low bits in `ql`, 2 high in
/// `qh`, signed 8-bit scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N].try_into().expect("a whole block")
}

/// The 2-bit code of element `e` from four 2-bit planes per 32 bytes.
fn two_bits(qs: &[u8], e: usize) -> u8 {
    let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
    (qs[32 * h + l] >> (2 * s)) & 3
}

/// The 4-bit code of element `e` from two nibble planes per 32 bytes.
fn nibble(qs: &[u8], e: usize) -> u8 {
    let (c, s, l) = (e / 64, (e / 32) % 2, e % 32);
    (qs[32 * c + l] >> (4 * s)) & 0x0f
}

/// Bit `e / 32` of byte `e % 32`: the high bit of element `e` in Q3_K and Q5_K.
fn high_bit(bits: &[u8; 32], e: usize) -> u8 {
    (bits[e % 32] >> (e / 32)) & 1
}

/// Q4_K's and Q5_K's eight 6-bit (scale, min) pairs from their 12 bytes (`get_scale_min_k4`).
fn scale_min(scales: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    }
}

impl Block for BlockQ2K {
    const ELEMENTS: usize = QK_K;
    const BYTES: usize = 84;

    fn from_bytes(b: &[u8]) -> Self {
        Self { scales: array(b, 0), qs: array(b, 16), d: f16_at(b, 80), dmin: f16_at(b, 82) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (e, o) in out[..QK_K].iter_mut().enumerate() {
            let sc = self.scales[e / 16];
            let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
            *o = dl * two_bits(&self.qs, e) as f32 - ml;
        }
    }
}

impl BlockQ3K {
    /// The sixteen 6-bit scales, offset by 32: low nibbles in bytes 0..8 (sub-blocks 8..16 in
    /// the high nibbles), the top two bits in bytes 8..12 (`2 (j / 4)` up in byte `8 + j % 4`).
    pub(crate) fn scale(&self, j: usize) -> i32 {
        let low = if j < 8 { self.scales[j] & 0x0f } else { self.scales[j - 8] >> 4 };
        let high = (self.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    }
}

impl Block for BlockQ3K {
    const ELEMENTS: usize = QK_K;
    const BYTES: usize = 110;

    fn from_bytes(b: &[u8]) -> Self {
        Self { hmask: array(b, 0), qs: array(b, 32), scales: array(b, 96), d: f16_at(b, 108) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (e, o) in out[..QK_K].iter_mut().enumerate() {
            let dl = d * self.scale(e / 16) as f32;
            let q = two_bits(&self.qs, e) as i32 - if high_bit(&self.hmask, e) == 1 { 0 } else { 4 };
            *o = dl * q as f32;
        }
    }
}

impl Block for BlockQ4K {
    const ELEMENTS: usize = QK_K;
    const BYTES: usize = 144;

    fn from_bytes(b: &[u8]) -> Self {
        Self { d: f16_at(b, 0), dmin: f16_at(b, 2), scales: array(b, 4), qs: array(b, 16) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (e, o) in out[..QK_K].iter_mut().enumerate() {
            let (sc, m) = scale_min(&self.scales, e / 32);
            *o = d * sc as f32 * nibble(&self.qs, e) as f32 - dmin * m as f32;
        }
    }
}

impl Block for BlockQ5K {
    const ELEMENTS: usize = QK_K;
    const BYTES: usize = 176;

    fn from_bytes(b: &[u8]) -> Self {
        Self { d: f16_at(b, 0), dmin: f16_at(b, 2), scales: array(b, 4), qh: array(b, 16), qs: array(b, 48) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (e, o) in out[..QK_K].iter_mut().enumerate() {
            let (sc, m) = scale_min(&self.scales, e / 32);
            let q = nibble(&self.qs, e) | (high_bit(&self.qh, e) << 4);
            *o = d * sc as f32 * q as f32 - dmin * m as f32;
        }
    }
}

impl BlockQ6K {
    /// The 6-bit code of element `e = 128 h + r`: its low nibble is nibble `r / 64` of
    /// `ql[64 h + r % 64]`, its top two bits bits `2 (r / 32)..` of `qh[32 h + r % 32]`.
    fn code(&self, e: usize) -> i32 {
        let (h, r) = (e / 128, e % 128);
        let low = (self.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
        let high = (self.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        (low | (high << 4)) as i32 - 32
    }
}

impl Block for BlockQ6K {
    const ELEMENTS: usize = QK_K;
    const BYTES: usize = 210;

    fn from_bytes(b: &[u8]) -> Self {
        let scales: [u8; 16] = array(b, 192);
        Self { ql: array(b, 0), qh: array(b, 128), scales: scales.map(|s| s as i8), d: f16_at(b, 208) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (e, o) in out[..QK_K].iter_mut().enumerate() {
            *o = d * self.scales[e / 16] as f32 * self.code(e) as f32;
        }
    }
}

impl BlockQ2K {
    /// `(d · (sc & 15)) · q + dmin · −(sc >> 4)`: ggml's `dl · q − ml`.
    pub fn split(&self) -> Split {
        Split {
            codes: std::array::from_fn(|e| two_bits(&self.qs, e) as i8),
            wide: false,
            halves: std::array::from_fn(|i| ((self.scales[i] & 0x0f) as i8, -((self.scales[i] >> 4) as i8))),
            d: self.d,
            dmin: self.dmin,
        }
    }
}

impl BlockQ3K {
    /// Codes `q + 4` in 0..8 and `dmin = −4 d`: `(d s)(q + 4) + (−4 d) s` is `(d s) q` exactly
    /// (all multiples of `d s` below `2^21` of its last bit). `None` when `−4 d` overflows f16.
    pub fn split(&self) -> Option<Split> {
        let dmin = f16::from_f32(-4.0 * self.d.to_f32());
        dmin.is_finite().then(|| Split {
            codes: std::array::from_fn(|e| (two_bits(&self.qs, e) + 4 * high_bit(&self.hmask, e)) as i8),
            wide: false,
            halves: std::array::from_fn(|i| (self.scale(i) as i8, self.scale(i) as i8)),
            d: self.d,
            dmin,
        })
    }
}

/// Q4_K's and Q5_K's `(sc, −m)` per 16 elements: each pair of 6 bits serves both halves of
/// its 32-element sub-block.
fn min_halves(scales: &[u8; 12]) -> [(i8, i8); 16] {
    std::array::from_fn(|i| {
        let (sc, m) = scale_min(scales, i / 2);
        (sc as i8, -(m as i8))
    })
}

impl BlockQ4K {
    /// `(d · sc) · q + dmin · −m` per 32 elements: ggml's `d1 · q − m1`.
    pub fn split(&self) -> Split {
        Split {
            codes: std::array::from_fn(|e| nibble(&self.qs, e) as i8),
            wide: false,
            halves: min_halves(&self.scales),
            d: self.d,
            dmin: self.dmin,
        }
    }
}

impl BlockQ5K {
    /// As Q4_K with codes 0..32 (8-bit).
    pub fn split(&self) -> Split {
        Split {
            codes: std::array::from_fn(|e| (nibble(&self.qs, e) | (high_bit(&self.qh, e) << 4)) as i8),
            wide: true,
            halves: min_halves(&self.scales),
            d: self.d,
            dmin: self.dmin,
        }
    }
}

impl BlockQ6K {
    /// `(d · scale) · (q − 32)`, signed 8-bit codes, no offset.
    pub fn split(&self) -> Split {
        Split {
            codes: std::array::from_fn(|e| self.code(e) as i8),
            wide: true,
            halves: std::array::from_fn(|i| (self.scales[i], 0)),
            d: self.d,
            dmin: f16::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::fixture;

    fn check<B: Block>(name: &str, split: impl Fn(&B) -> Split) {
        let (bytes, want) = fixture(name);
        for (i, block) in bytes.chunks_exact(B::BYTES).enumerate() {
            let s = split(&B::from_bytes(block));
            for e in 0..QK_K {
                let (got, want) = (s.value(e), want[i * QK_K + e]);
                assert!(got == want, "{name} block {i} element {e}: {got} vs gguf's {want}");
                assert!(s.wide || (0..16).contains(&s.codes[e]), "{name}: a 4-bit code");
            }
        }
    }

    /// The two-level form every kernel uses gives the `gguf` package's values exactly.
    #[test]
    fn split_super_blocks_give_the_gguf_packages_values() {
        check::<BlockQ2K>("Q2_K", BlockQ2K::split);
        check::<BlockQ3K>("Q3_K", |b| b.split().expect("a scale in range"));
        check::<BlockQ4K>("Q4_K", BlockQ4K::split);
        check::<BlockQ5K>("Q5_K", BlockQ5K::split);
        check::<BlockQ6K>("Q6_K", BlockQ6K::split);
    }
}

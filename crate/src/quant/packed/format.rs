//! The packed device formats: code width ([`QuantFormat`]), where scales come from
//! ([`Scales`]), and the formats float matrices are quantized to ([`FloatQuant`]).

use super::*;

/// What a block's code words hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// 4-bit codes, `x = d * q + m` (GGUF Q4_0 and Q4_1).
    Q4,
    /// Signed 8-bit codes, `x = d * q + m` (GGUF Q8_0 with `m = 0`; any integer format
    /// widened, for a fusion of mixed formats or a device without narrow kernels).
    Q8,
    /// 5-bit codes 0..32 at their own width: [`Self::Q4`]'s four words of low nibbles, then
    /// one word whose bit `e` is bit 4 of element `e`. GGUF Q5_0 (`m = -16 d`), Q5_1, Q5_K.
    Q5,
    /// 6-bit codes 0..64: the low nibbles, then two words of bit 4 and bit 5 of each element.
    /// GGUF Q6_K (`q + 32` with the offset `-32 (d s)` as its super-block's `dmin`).
    Q6,
    /// IEEE half floats, two a word (element `2i` in the low half): each code is its weight,
    /// so a block has no parameter word (GGUF F16).
    F16,
    /// bfloat16, two a word as [`Self::F16`]: a weight is the f32 whose high half it is
    /// (GGUF BF16).
    Bf16,
    /// f32 bits, one a word (GGUF F32 matrices among quantized ones, kept as stored: dense f32
    /// would leave our kernels for burn's matmul, whose shader Chromium's WebGPU refuses).
    F32,
}

impl QuantFormat {
    /// Code words per block of 32 elements.
    pub const fn words_per_block(self) -> usize {
        match self {
            QuantFormat::Q4 => 4,
            QuantFormat::Q5 => 5,
            QuantFormat::Q6 => 6,
            QuantFormat::Q8 => 8,
            QuantFormat::F16 | QuantFormat::Bf16 => 16,
            QuantFormat::F32 => 32,
        }
    }

    /// Whether the codes are the weights themselves (no scales).
    pub const fn is_float(self) -> bool {
        matches!(self, QuantFormat::F16 | QuantFormat::Bf16 | QuantFormat::F32)
    }

    /// Whether the codes are 5 or 6 bits at their own width: kernels that lack them take the
    /// matrix widened to [`Self::Q8`] ([`PackedMatrix::to_q8`]).
    pub const fn is_narrow(self) -> bool {
        matches!(self, QuantFormat::Q5 | QuantFormat::Q6)
    }

    /// The format the codes take on a device without narrow kernels.
    pub const fn widened(self) -> Self {
        if self.is_narrow() { QuantFormat::Q8 } else { self }
    }

    /// Integer code `e` (0..32) of a block's words, GGUF order: a nibble format's low nibbles
    /// are elements 0..16.
    #[inline(always)]
    pub fn code(self, words: &[u32], e: usize) -> i32 {
        let nibble = || {
            let byte = (words[(e % 16) / 4] >> (8 * (e % 4))) as u8;
            (if e < 16 { byte & 15 } else { byte >> 4 }) as i32
        };
        let bit = |plane: usize| ((words[4 + plane] >> e) & 1) as i32;
        match self {
            QuantFormat::Q4 => nibble(),
            QuantFormat::Q5 => nibble() | bit(0) << 4,
            QuantFormat::Q6 => nibble() | bit(0) << 4 | bit(1) << 5,
            _ => (words[e / 4] >> (8 * (e % 4))) as u8 as i8 as i32,
        }
    }

    /// Parameter words per block: one `(d, m)` or K-quant word, none for float codes.
    pub const fn params_per_block(self) -> usize {
        if self.is_float() { 0 } else { 1 }
    }

    /// Device bytes per block: codes and parameter words.
    pub const fn bytes_per_block(self) -> usize {
        (self.words_per_block() + self.params_per_block()) * 4
    }

    /// Float code `e` (0..32) of a block's words, as f32: exact for every value.
    #[inline(always)]
    pub fn float_code(self, words: &[u32], e: usize) -> f32 {
        if self == QuantFormat::F32 {
            return f32::from_bits(words[e]);
        }
        let bits = (words[e / 2] >> (16 * (e % 2))) as u16;
        match self {
            QuantFormat::Bf16 => f32::from_bits((bits as u32) << 16),
            _ => f16::from_bits(bits).to_f32(),
        }
    }
}

/// Blocks of 32 per K-quant super-block (256 elements).
pub const SUPER: usize = QK_K / BLOCK;

/// Where a block's scale and offset come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scales {
    /// Its parameter word: f16 `d` | f16 `m` << 16 (the legacy formats, and quantized floats);
    /// none for float codes ([`QuantFormat::is_float`]).
    Block,
    /// Its parameter word of four i8 `(s_lo, n_lo, s_hi, n_hi)` and the super word of its 256
    /// elements, f16 `d` | f16 `dmin` << 16 (the K-quants).
    Super,
}

/// How a float matrix is quantized into the packed formats: ggml's reference quantizers, so
/// that a model quantized here holds the weights llama.cpp's own quantizer would give it.
#[allow(non_camel_case_types)] // ggml's names
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatQuant {
    /// 4-bit, `d * (q - 8)`, the value of largest magnitude at -8 (packed with `m = -8 d`).
    Q4_0,
    /// 4-bit, min-max: `d * q + m`.
    Q4_1,
    /// 8-bit, `d * q`.
    Q8_0,
    /// The K-quants, as ggml's reference quantizers make them ([`crate::quant::kquantize`]).
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl FloatQuant {
    /// Every one, by its lowercase ggml name.
    pub const ALL: [(Self, &str); 8] = [
        (Self::Q4_0, "q4_0"),
        (Self::Q4_1, "q4_1"),
        (Self::Q8_0, "q8_0"),
        (Self::Q2_K, "q2_k"),
        (Self::Q3_K, "q3_k"),
        (Self::Q4_K, "q4_k"),
        (Self::Q5_K, "q5_k"),
        (Self::Q6_K, "q6_k"),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(q, _)| *q == self).map(|(_, n)| *n).expect("every quantizer is named")
    }

    /// The packed format it fills.
    pub fn format(self) -> QuantFormat {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q2_K | Self::Q3_K | Self::Q4_K => QuantFormat::Q4,
            Self::Q8_0 => QuantFormat::Q8,
            Self::Q5_K => QuantFormat::Q5,
            Self::Q6_K => QuantFormat::Q6,
        }
    }

    /// How its blocks are scaled.
    pub fn scales(self) -> Scales {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => Scales::Block,
            _ => Scales::Super,
        }
    }
}

/// Whether matrices of these formats can share one matrix ([`PackedMatrix::fusable`]).
pub fn fusable_formats(parts: &[(QuantFormat, Scales)]) -> bool {
    let (format, scales) = parts[0];
    parts.iter().all(|&(f, s)| s == scales && (f == format || !(f.is_float() || format.is_float())))
}

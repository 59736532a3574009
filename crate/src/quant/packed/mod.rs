//! Quantized matrices packed for the device: 32-bit words the kernels read directly.
//!
//! A row is split into blocks of 32 elements along the input dimension. Each block has
//! - its codes: 4 words of 4-bit codes (GGUF's byte order: byte `j` holds element `j` in its low
//!   nibble and element `j + 16` in its high one) or 8 words of signed 8-bit codes;
//! - one parameter word: the f16 bits of the scale `d` (low half) and of the offset `m` (high
//!   half), so that `x = d * q + m`.
//!
//! GGUF's Q4_1 and Q8_0 map onto this without touching a bit; Q4_0's `d * (q - 8)` becomes
//! `m = -8 d`, exact in f16 (a power-of-two multiple). The 5-bit formats keep their width
//! ([`QuantFormat::Q5`]: the nibbles, then a word of fifth bits): Q5_0's `q` with `m = -16 d`,
//! Q5_1's `q` with its `m`, so each weight is the file's own `d * (q - 16)` or `d * q + m`;
//! devices without narrow kernels take them widened to 8-bit codes at upload. Keeping the
//! scales as f16 bits inside
//! words needs no shader-f16 support: kernels unpack them with integer operations.
//! Rows whose length is not a multiple of 32 are padded with zero codes and zero parameters.
//!
//! The K-quants ([`Scales::Super`]) keep ggml's two levels instead: a block's parameter word
//! holds four i8 `(s_lo, n_lo, s_hi, n_hi)`, and every 256 elements share a super word of f16
//! `d` | f16 `dmin` << 16, so element `e` of a block is `(d · s) · q + dmin · n` with the pair
//! of its half (`e / 16`). `d · s` and `dmin · n` are ggml's own sub-block products (an f16
//! times a small integer, exact in f32), so each weight is the file's value; Q4_K, Q3_K and
//! Q2_K keep 4-bit codes, Q5_K 5-bit and Q6_K 6-bit ones (`q + 32` with `dmin = -32 d`): 5.1,
//! 6.1 and 7.1 bits a weight, where a float copy is 32.

mod format;

pub use format::{FloatQuant, QuantFormat, SUPER, Scales, fusable_formats};

use half::f16;

use super::kquants::Split;
use super::legacy::five_bit_codes;
use super::{
    BLOCK, Block, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, QK_K,
};
use crate::error::{Error, Result};
use crate::format::gguf::GgmlType;

/// A `[rows, cols]` matrix in packed form, in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    pub format: QuantFormat,
    pub scales: Scales,
    pub rows: usize,
    pub cols: usize,
    /// `rows * blocks_per_row * words_per_block` code words.
    pub codes: Vec<u32>,
    /// `rows * blocks_per_row * format.params_per_block()` parameter words.
    pub params: Vec<u32>,
    /// `rows * blocks_per_row / SUPER` super words ([`Scales::Super`]; empty otherwise).
    pub supers: Vec<u32>,
}

fn param_word(d: f16, m: f16) -> u32 {
    d.to_bits() as u32 | ((m.to_bits() as u32) << 16)
}

fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()))
}

/// The code words of one block of integer codes (element order) in `format`: 8-bit codes as
/// they are; nibbles (byte `j`: element `j` low, `j + 16` high), then for 5- and 6-bit codes a
/// word per higher bit, bit `e` from element `e`.
fn block_words(format: QuantFormat, q: &[u8; BLOCK]) -> Vec<u32> {
    if format == QuantFormat::Q8 {
        return words(q).collect();
    }
    let nibbles: [u8; 16] = std::array::from_fn(|i| (q[i] & 15) | ((q[i + 16] & 15) << 4));
    let planes = match format {
        QuantFormat::Q5 => 1,
        QuantFormat::Q6 => 2,
        _ => 0,
    };
    let plane = |bit: usize| (0..BLOCK).fold(0u32, |w, e| w | (((q[e] >> bit) & 1) as u32) << e);
    words(&nibbles).chain((0..planes).map(|k| plane(4 + k))).collect()
}

/// A K-quant super-block's eight blocks: codes in the packed layout, one word of half pairs each.
fn push_split(split: &Split, format: QuantFormat, codes: &mut Vec<u32>, params: &mut Vec<u32>) {
    for (j, q) in split.codes.chunks_exact(BLOCK).enumerate() {
        let q: &[i8; BLOCK] = q.try_into().expect("blocks of 32");
        codes.extend(block_words(format, &q.map(|c| c as u8)));
        let ((s_lo, n_lo), (s_hi, n_hi)) = (split.halves[2 * j], split.halves[2 * j + 1]);
        params.push(u32::from_le_bytes([s_lo as u8, n_lo as u8, s_hi as u8, n_hi as u8]));
    }
}

impl PackedMatrix {
    pub fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }

    /// Whether some block's halves have different scales (Q2_K, Q3_K, Q6_K; never Q4_K and
    /// Q5_K, whose sub-blocks are whole blocks, nor a legacy block): kernels may then skip the
    /// second half's own parameters.
    pub fn split_halves(&self) -> bool {
        self.scales == Scales::Super && self.params.iter().any(|&w| (w & 0xffff) != (w >> 16))
    }

    /// Super words per row (the last may cover fewer than [`SUPER`] blocks of a ragged row).
    pub fn supers_per_row(&self) -> usize {
        match self.scales {
            Scales::Block => 0,
            Scales::Super => self.blocks_per_row().div_ceil(SUPER),
        }
    }

    /// Bytes the matrix takes on the device.
    pub fn device_bytes(&self) -> usize {
        (self.codes.len() + self.params.len() + self.supers.len()) * 4
    }

    /// Repacks a GGUF K-quant `[rows, cols]` tensor (`cols` a multiple of 256) into
    /// [`Scales::Super`] form, keeping every weight's value. `wide` keeps Q6_K as signed 8-bit
    /// codes `q - 32` with no offset: for a matrix whose offset `-32 d` does not fit f16.
    fn from_k_quant(name: &str, dtype: GgmlType, bytes: &[u8], rows: usize, cols: usize, wide: bool) -> Result<Self> {
        let block_bytes = match dtype {
            GgmlType::Q2_K => BlockQ2K::BYTES,
            GgmlType::Q3_K => BlockQ3K::BYTES,
            GgmlType::Q4_K => BlockQ4K::BYTES,
            GgmlType::Q5_K => BlockQ5K::BYTES,
            _ => BlockQ6K::BYTES,
        };
        if !cols.is_multiple_of(QK_K) || bytes.len() != rows * (cols / QK_K) * block_bytes {
            return Err(Error::malformed(format!(
                "tensor {name}: {} bytes for a [{rows}, {cols}] {dtype:?} matrix",
                bytes.len()
            )));
        }
        let format = match dtype {
            GgmlType::Q5_K => QuantFormat::Q5,
            GgmlType::Q6_K if wide => QuantFormat::Q8,
            GgmlType::Q6_K => QuantFormat::Q6,
            _ => QuantFormat::Q4,
        };
        let supers = rows * (cols / QK_K);
        let mut codes = Vec::with_capacity(supers * SUPER * format.words_per_block());
        let mut params = Vec::with_capacity(supers * SUPER);
        let mut super_words = Vec::with_capacity(supers);
        for block in bytes.chunks_exact(block_bytes) {
            let split = match dtype {
                GgmlType::Q2_K => BlockQ2K::from_bytes(block).split(),
                GgmlType::Q3_K => BlockQ3K::from_bytes(block)
                    .split()
                    .ok_or_else(|| Error::malformed(format!("tensor {name}: a Q3_K super-scale out of f16's range")))?,
                GgmlType::Q4_K => BlockQ4K::from_bytes(block).split(),
                GgmlType::Q5_K => BlockQ5K::from_bytes(block).split(),
                _ if wide => BlockQ6K::from_bytes(block).split(),
                _ => match BlockQ6K::from_bytes(block).split().unsigned() {
                    Some(split) => split,
                    // A scale too large for the offset: the whole matrix as signed 8-bit codes.
                    None => return Self::from_k_quant(name, dtype, bytes, rows, cols, true),
                },
            };
            push_split(&split, format, &mut codes, &mut params);
            super_words.push(param_word(split.d, split.dmin));
        }
        Ok(Self { format, scales: Scales::Super, rows, cols, codes, params, supers: super_words })
    }

    /// Repacks GGUF Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 data of a `[rows, cols]` tensor, keeping
    /// every weight's value.
    pub fn from_gguf(name: &str, dtype: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let blocks = rows * (cols / BLOCK);
        let (format, block_bytes) = match dtype {
            GgmlType::Q4_0 => (QuantFormat::Q4, BlockQ4_0::BYTES),
            GgmlType::Q4_1 => (QuantFormat::Q4, BlockQ4_1::BYTES),
            GgmlType::Q8_0 => (QuantFormat::Q8, BlockQ8_0::BYTES),
            GgmlType::Q5_0 => (QuantFormat::Q5, BlockQ5_0::BYTES),
            GgmlType::Q5_1 => (QuantFormat::Q5, BlockQ5_1::BYTES),
            k if k.is_k_quant() => return Self::from_k_quant(name, dtype, bytes, rows, cols, false),
            GgmlType::F16 | GgmlType::BF16 => return Self::from_gguf_halves(name, dtype, bytes, rows, cols),
            GgmlType::F32 => return Self::from_gguf_f32(name, bytes, rows, cols),
            other => {
                return Err(Error::UnsupportedTensorType {
                    tensor: name.into(),
                    dtype: format!("{other:?} as a packed matrix"),
                });
            }
        };
        if !cols.is_multiple_of(BLOCK) || bytes.len() != blocks * block_bytes {
            return Err(Error::malformed(format!(
                "tensor {name}: {} bytes for a [{rows}, {cols}] {dtype:?} matrix",
                bytes.len()
            )));
        }
        let mut codes = Vec::with_capacity(blocks * format.words_per_block());
        let mut params = Vec::with_capacity(blocks);
        for block in bytes.chunks_exact(block_bytes) {
            match dtype {
                GgmlType::Q4_0 => {
                    let b = BlockQ4_0::from_bytes(block);
                    let m = f16::from_f32(-8.0 * b.d.to_f32());
                    if !m.is_finite() {
                        return Err(Error::malformed(format!("tensor {name}: Q4_0 scale {} out of range", b.d)));
                    }
                    params.push(param_word(b.d, m));
                    codes.extend(words(&b.qs));
                }
                GgmlType::Q4_1 => {
                    let b = BlockQ4_1::from_bytes(block);
                    params.push(param_word(b.d, b.m));
                    codes.extend(words(&b.qs));
                }
                GgmlType::Q5_0 => {
                    // `m = -16 d`, exact in f16 as Q4_0's `-8 d`.
                    let b = BlockQ5_0::from_bytes(block);
                    let m = f16::from_f32(-16.0 * b.d.to_f32());
                    if !m.is_finite() {
                        return Err(Error::malformed(format!("tensor {name}: Q5_0 scale {} out of range", b.d)));
                    }
                    params.push(param_word(b.d, m));
                    codes.extend(block_words(QuantFormat::Q5, &five_bit_codes(b.qh, &b.qs)));
                }
                GgmlType::Q5_1 => {
                    let b = BlockQ5_1::from_bytes(block);
                    params.push(param_word(b.d, b.m));
                    codes.extend(block_words(QuantFormat::Q5, &five_bit_codes(b.qh, &b.qs)));
                }
                _ => {
                    params.push(param_word(f16::from_bits(u16::from_le_bytes([block[0], block[1]])), f16::ZERO));
                    codes.extend(words(&block[2..]));
                }
            }
        }
        Ok(Self { format, scales: Scales::Block, rows, cols, codes, params, supers: Vec::new() })
    }

    /// GGUF F16 or BF16 data of a `[rows, cols]` tensor, its bits unchanged (a ragged row's last
    /// block padded with zeros).
    fn from_gguf_halves(name: &str, dtype: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        if bytes.len() != rows * cols * 2 {
            return Err(Error::malformed(format!(
                "tensor {name}: {} bytes for a [{rows}, {cols}] {dtype:?} matrix",
                bytes.len()
            )));
        }
        let format = if dtype == GgmlType::BF16 { QuantFormat::Bf16 } else { QuantFormat::F16 };
        let bits: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Ok(Self::from_halves(format, &bits, rows, cols))
    }

    /// GGUF F32 data of a `[rows, cols]` tensor, its bits unchanged.
    fn from_gguf_f32(name: &str, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        if bytes.len() != rows * cols * 4 {
            return Err(Error::malformed(format!(
                "tensor {name}: {} bytes for a [{rows}, {cols}] F32 matrix",
                bytes.len()
            )));
        }
        let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Ok(Self::from_f32(&data, rows, cols))
    }

    /// A row-major `[rows, cols]` f32 matrix as [`QuantFormat::F32`] codes (a ragged row's last
    /// block padded with zeros).
    pub fn from_f32(data: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "from_f32: data does not match [rows, cols]");
        let padded = cols.div_ceil(BLOCK) * BLOCK;
        let mut codes = Vec::with_capacity(rows * padded);
        for row in data.chunks_exact(cols.max(1)).take(rows) {
            codes.extend(row.iter().map(|v| v.to_bits()));
            codes.resize(codes.len() + padded - cols, 0);
        }
        let format = QuantFormat::F32;
        Self { format, scales: Scales::Block, rows, cols, codes, params: Vec::new(), supers: Vec::new() }
    }

    /// A `[rows, cols]` matrix of 16-bit float bits (`format` F16 or BF16), row-major.
    pub fn from_halves(format: QuantFormat, bits: &[u16], rows: usize, cols: usize) -> Self {
        assert!(matches!(format, QuantFormat::F16 | QuantFormat::Bf16), "from_halves: {format:?} is not 16-bit");
        assert_eq!(bits.len(), rows * cols, "from_halves: bits do not match [rows, cols]");
        let padded = cols.div_ceil(BLOCK) * BLOCK;
        let mut codes = Vec::with_capacity(rows * padded / 2);
        for row in bits.chunks_exact(cols.max(1)).take(rows) {
            let half = |i: usize| row.get(i).copied().unwrap_or(0) as u32;
            codes.extend((0..padded / 2).map(|i| half(2 * i) | (half(2 * i + 1) << 16)));
        }
        Self { format, scales: Scales::Block, rows, cols, codes, params: Vec::new(), supers: Vec::new() }
    }

    /// Quantizes a row-major `[rows, cols]` f32 matrix: min-max 4-bit blocks (as Q4_1) or
    /// absolute-max 8-bit blocks (as Q8_0). A ragged last block is padded with zeros.
    pub fn quantize(format: QuantFormat, data: &[f32], rows: usize, cols: usize) -> Self {
        let kind = match format {
            QuantFormat::Q4 => FloatQuant::Q4_1,
            QuantFormat::Q8 => FloatQuant::Q8_0,
            QuantFormat::Q5 | QuantFormat::Q6 | QuantFormat::F16 | QuantFormat::Bf16 | QuantFormat::F32 => {
                panic!("quantize: {format:?} is not a format floats are quantized to block by block")
            }
        };
        Self::quantize_blocks(kind, data, rows, cols)
    }

    /// Quantizes `data` (`[rows, cols]`) as `kind` says; fails only for weights too large for
    /// a K-quant's f16 scales (past some 10^6).
    pub fn quantize_as(kind: FloatQuant, data: &[f32], rows: usize, cols: usize) -> Result<Self> {
        match kind.scales() {
            Scales::Super => Self::quantize_k(kind, data, rows, cols),
            Scales::Block => Ok(Self::quantize_blocks(kind, data, rows, cols)),
        }
    }

    /// The legacy formats, block by block.
    fn quantize_blocks(kind: FloatQuant, data: &[f32], rows: usize, cols: usize) -> Self {
        let format = kind.format();
        assert_eq!(data.len(), rows * cols, "quantize: data does not match [rows, cols]");
        let nb = cols.div_ceil(BLOCK);
        let mut codes = Vec::with_capacity(rows * nb * format.words_per_block());
        let mut params = Vec::with_capacity(rows * nb);
        let mut block = [0.0f32; BLOCK];
        for row in data.chunks_exact(cols.max(1)).take(rows) {
            for b in 0..nb {
                let part = &row[b * BLOCK..((b + 1) * BLOCK).min(cols)];
                block[..part.len()].copy_from_slice(part);
                match kind {
                    FloatQuant::Q4_0 => {
                        // Padding is zero: code 8.
                        block[part.len()..].fill(0.0);
                        let q = BlockQ4_0::quantize(&block);
                        // -8 d is exact in f16 (a power-of-two multiple) unless it overflows
                        // (weights past 32,752): such a block is quantized min-max instead.
                        let m = f16::from_f32(-8.0 * q.d.to_f32());
                        if m.is_finite() {
                            params.push(param_word(q.d, m));
                            codes.extend(words(&q.qs));
                        } else {
                            let q = BlockQ4_1::quantize(&block);
                            params.push(param_word(q.d, q.m));
                            codes.extend(words(&q.qs));
                        }
                    }
                    FloatQuant::Q4_1 => {
                        // Padding takes the block's minimum, so its codes are 0.
                        let min = part.iter().copied().fold(f32::INFINITY, f32::min);
                        block[part.len()..].fill(min);
                        let q = BlockQ4_1::quantize(&block);
                        params.push(param_word(q.d, q.m));
                        codes.extend(words(&q.qs));
                    }
                    FloatQuant::Q8_0 => {
                        block[part.len()..].fill(0.0);
                        let q = BlockQ8_0::quantize(&block);
                        params.push(param_word(q.d, f16::ZERO));
                        codes.extend(words(&q.to_bytes()[2..]));
                    }
                    _ => unreachable!("K-quants are quantized by super-blocks"),
                }
            }
        }
        Self { format, scales: Scales::Block, rows, cols, codes, params, supers: Vec::new() }
    }

    /// Quantizes `data` to a K-quant super-block by super-block; a ragged row's last
    /// super-block is quantized with zeros past the row's end (blocks past it are dropped, and
    /// its super word shared by the blocks that remain).
    fn quantize_k(kind: FloatQuant, data: &[f32], rows: usize, cols: usize) -> Result<Self> {
        assert_eq!(data.len(), rows * cols, "quantize: data does not match [rows, cols]");
        let (format, nb) = (kind.format(), cols.div_ceil(BLOCK));
        let mut out = Self {
            format,
            scales: Scales::Super,
            rows,
            cols,
            codes: Vec::new(),
            params: Vec::new(),
            supers: Vec::new(),
        };
        let mut padded = [0.0f32; QK_K];
        for row in data.chunks_exact(cols.max(1)).take(rows) {
            for (s, part) in row.chunks(QK_K).enumerate() {
                padded[..part.len()].copy_from_slice(part);
                padded[part.len()..].fill(0.0);
                let split = match kind {
                    FloatQuant::Q2_K => BlockQ2K::quantize(&padded).split(),
                    FloatQuant::Q3_K => BlockQ3K::quantize(&padded).split().ok_or_else(|| {
                        Error::BadOptions(format!("weights past f16's range cannot be quantized to {}", kind.name()))
                    })?,
                    FloatQuant::Q4_K => BlockQ4K::quantize(&padded).split(),
                    FloatQuant::Q5_K => BlockQ5K::quantize(&padded).split(),
                    _ => BlockQ6K::quantize(&padded).split().unsigned().ok_or_else(|| {
                        Error::BadOptions(format!("weights past f16's range cannot be quantized to {}", kind.name()))
                    })?,
                };
                let (mut codes, mut params) = (Vec::new(), Vec::new());
                push_split(&split, format, &mut codes, &mut params);
                let blocks = (nb - s * SUPER).min(SUPER);
                out.codes.extend_from_slice(&codes[..blocks * format.words_per_block()]);
                out.params.extend_from_slice(&params[..blocks]);
                out.supers.push(param_word(split.d, split.dmin));
            }
        }
        Ok(out)
    }

    /// The same values with 8-bit codes: 4-, 5- and 6-bit codes `q` are exact as 8-bit codes
    /// with the same `d` and `m`, so matrices of several formats can share one kernel launch,
    /// and devices without narrow kernels take 5- and 6-bit ones.
    pub fn to_q8(&self) -> Self {
        assert!(!self.format.is_float(), "to_q8: float codes have no 8-bit form");
        if self.format == QuantFormat::Q8 {
            return self.clone();
        }
        let codes = self
            .codes
            .chunks_exact(self.format.words_per_block())
            .flat_map(|block| {
                let q: [u8; BLOCK] = std::array::from_fn(|e| self.format.code(block, e) as u8);
                block_words(QuantFormat::Q8, &q)
            })
            .collect();
        Self { format: QuantFormat::Q8, codes, ..self.clone() }
    }

    /// The rows of `parts` one after another (for fusing projections that read the same
    /// input). Parts of different formats are all given 8-bit codes; their scales must be of
    /// one kind ([`Self::fusable`]).
    pub fn concat_rows(parts: &[&PackedMatrix]) -> Self {
        let cols = parts[0].cols;
        assert!(parts.iter().all(|p| p.cols == cols), "concat_rows: column counts differ");
        assert!(Self::fusable(parts), "concat_rows: block and super-block scales, or float codes, mixed");
        let mixed = parts.iter().any(|p| p.format != parts[0].format);
        let parts: Vec<PackedMatrix> = parts.iter().map(|p| if mixed { p.to_q8() } else { (*p).clone() }).collect();
        Self {
            format: parts[0].format,
            scales: parts[0].scales,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols,
            codes: parts.iter().flat_map(|p| p.codes.iter().copied()).collect(),
            params: parts.iter().flat_map(|p| p.params.iter().copied()).collect(),
            supers: parts.iter().flat_map(|p| p.supers.iter().copied()).collect(),
        }
    }

    /// Whether `parts` can share one matrix: their scales are of one kind (a legacy block's
    /// own f16 scale has no exact place in a K-quant's two levels, nor the reverse), and float
    /// codes only join codes of their own format.
    pub fn fusable(parts: &[&PackedMatrix]) -> bool {
        fusable_formats(&parts.iter().map(|p| (p.format, p.scales)).collect::<Vec<_>>())
    }

    /// Rows `a[0], b[0], a[1], b[1], ...` (for a SwiGLU epilogue that needs gate and up rows
    /// side by side).
    pub fn interleave_rows(a: &PackedMatrix, b: &PackedMatrix) -> Self {
        assert_eq!((a.rows, a.cols), (b.rows, b.cols), "interleave_rows: shapes differ");
        assert!(Self::fusable(&[a, b]), "interleave_rows: block and super-block scales, or float codes, mixed");
        let (a, b) = if a.format == b.format { (a.clone(), b.clone()) } else { (a.to_q8(), b.to_q8()) };
        let mut out = Self { rows: 0, codes: Vec::new(), params: Vec::new(), supers: Vec::new(), ..a.clone() };
        for r in 0..a.rows {
            out.push_row(&a, r);
            out.push_row(&b, r);
        }
        out
    }

    /// Appends row `r` of `from` (of the same format and width).
    fn push_row(&mut self, from: &Self, r: usize) {
        let (nb, wpb, ns) = (from.blocks_per_row(), from.format.words_per_block(), from.supers_per_row());
        let np = nb * from.format.params_per_block();
        self.codes.extend_from_slice(&from.codes[r * nb * wpb..(r + 1) * nb * wpb]);
        self.params.extend_from_slice(&from.params[r * np..(r + 1) * np]);
        self.supers.extend_from_slice(&from.supers[r * ns..(r + 1) * ns]);
        self.rows += 1;
    }

    /// Rows `range` of the matrix.
    pub fn row_range(&self, range: std::ops::Range<usize>) -> Self {
        self.reorder_rows_n(range.len(), |r| range.start + r)
    }

    /// The matrix whose row `r` is this one's row `source(r)` (a permutation of the rows).
    pub fn reorder_rows(&self, source: impl Fn(usize) -> usize) -> Self {
        self.reorder_rows_n(self.rows, source)
    }

    /// The rows `rows` (in that order): a structured pruning's kept rows, bit for bit.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        self.reorder_rows_n(rows.len(), |r| rows[r])
    }

    /// The columns `cols` (ascending) of every row. Columns that make whole blocks (whole
    /// super-blocks for [`Scales::Super`]) in place are copied bit for bit, as are float codes;
    /// any other cut splits blocks whose codes share a scale, so the kept values are quantized
    /// again, into the same kind of blocks ([`Self::requantizer`]).
    pub fn select_cols(&self, cols: &[usize]) -> Result<Self> {
        let group = match self.scales {
            Scales::Block => BLOCK,
            Scales::Super => BLOCK * SUPER,
        };
        let whole = cols.len().is_multiple_of(group)
            && cols.chunks(group).all(|g| g[0].is_multiple_of(group) && g.windows(2).all(|w| w[1] == w[0] + 1));
        if whole && !self.format.is_float() {
            let (nb, wpb, ns) = (self.blocks_per_row(), self.format.words_per_block(), self.supers_per_row());
            let np = self.format.params_per_block();
            let blocks: Vec<usize> = cols.iter().step_by(BLOCK).map(|&c| c / BLOCK).collect();
            let mut out =
                Self { cols: cols.len(), codes: Vec::new(), params: Vec::new(), supers: Vec::new(), ..self.clone() };
            for r in 0..self.rows {
                for &b in &blocks {
                    let at = r * nb + b;
                    out.codes.extend_from_slice(&self.codes[at * wpb..(at + 1) * wpb]);
                    out.params.extend_from_slice(&self.params[at * np..(at + 1) * np]);
                }
                if self.scales == Scales::Super {
                    out.supers.extend(blocks.iter().step_by(SUPER).map(|&b| self.supers[r * ns + b / SUPER]));
                }
            }
            return Ok(out);
        }
        let values: Vec<f32> = (0..self.rows).flat_map(|r| cols.iter().map(move |&c| self.get(r, c))).collect();
        Ok(match self.format {
            QuantFormat::F32 => Self::from_f32(&values, self.rows, cols.len()),
            QuantFormat::F16 => {
                let bits: Vec<u16> = values.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
                Self::from_halves(self.format, &bits, self.rows, cols.len())
            }
            QuantFormat::Bf16 => {
                let bits: Vec<u16> = values.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
                Self::from_halves(self.format, &bits, self.rows, cols.len())
            }
            QuantFormat::Q4 | QuantFormat::Q5 | QuantFormat::Q6 | QuantFormat::Q8 => {
                Self::quantize_as(self.requantizer(), &values, self.rows, cols.len())?
            }
        })
    }

    /// The quantizer that puts values back into this matrix's kind of blocks: min-max 4-bit
    /// (Q4_1: a Q4_0 block fits it as well), Q8_0 (also for 5-bit blocks, which hearth does not
    /// quantize to), Q4_K, or Q6_K for the wider K-quant codes.
    pub fn requantizer(&self) -> FloatQuant {
        match (self.format, self.scales) {
            (QuantFormat::Q4, Scales::Block) => FloatQuant::Q4_1,
            (QuantFormat::Q4, Scales::Super) => FloatQuant::Q4_K,
            (_, Scales::Super) => FloatQuant::Q6_K,
            _ => FloatQuant::Q8_0,
        }
    }

    /// `rows` rows, row `r` being this one's row `source(r)`.
    fn reorder_rows_n(&self, rows: usize, source: impl Fn(usize) -> usize) -> Self {
        let mut out = Self { rows: 0, codes: Vec::new(), params: Vec::new(), supers: Vec::new(), ..self.clone() };
        for r in 0..rows {
            out.push_row(self, source(r));
        }
        out
    }

    /// The `(d, m)` of the half of block `block` (counted row-major) holding element `e`: its
    /// own f16 pair, or the products of a K-quant's two levels; `(1, 0)` for float codes (the
    /// weight is the code).
    pub fn half_params(&self, block: usize, e: usize) -> (f32, f32) {
        if self.format.is_float() {
            return (1.0, 0.0);
        }
        let p = self.params[block];
        match self.scales {
            Scales::Block => (f16::from_bits(p as u16).to_f32(), f16::from_bits((p >> 16) as u16).to_f32()),
            Scales::Super => {
                let (nb, row) = (self.blocks_per_row(), block / self.blocks_per_row());
                let sp = self.supers[row * self.supers_per_row() + (block % nb) / SUPER];
                let (d, dmin) = (f16::from_bits(sp as u16).to_f32(), f16::from_bits((sp >> 16) as u16).to_f32());
                let half = (e / 16) as u32;
                let (s, n) = ((p >> (16 * half)) as u8 as i8, (p >> (16 * half + 8)) as u8 as i8);
                (d * s as f32, dmin * n as f32)
            }
        }
    }

    /// Element `(row, col)` as the kernels compute it: `d * q + m` in f32, or the float code.
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let (nb, wpb) = (self.blocks_per_row(), self.format.words_per_block());
        let block = row * nb + col / BLOCK;
        let e = col % BLOCK;
        let words = &self.codes[block * wpb..(block + 1) * wpb];
        if self.format.is_float() {
            return self.format.float_code(words, e);
        }
        let (d, m) = self.half_params(block, e);
        d * self.format.code(words, e) as f32 + m
    }

    /// The whole matrix in f32, row-major `[rows, cols]`: the reference for kernel tests.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.rows).flat_map(|r| (0..self.cols).map(move |c| (r, c))).map(|(r, c)| self.get(r, c)).collect()
    }
}

#[cfg(test)]
mod tests;

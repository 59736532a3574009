//! How a packed matrix is stored for the CPU kernels: row-tiled, the blocks of [`GROUP`] rows
//! side by side, and the view ([`QuantRows`]) every kernel reads.

use super::*;
use crate::quant::packed::PackedMatrix;

/// Where block `b` of `row` lies in the row-tiled order, counted in blocks.
#[inline(always)]
pub fn block_index(row: usize, b: usize, blocks: usize) -> usize {
    ((row / GROUP) * blocks + b) * GROUP + row % GROUP
}

/// A matrix's code, parameter and super words in the row-tiled order (the super words of a
/// group's four rows side by side too), its rows padded with zero blocks to a multiple of
/// [`GROUP`]. A group's block of 5- or 6-bit codes is the four rows' nibble words, then per
/// higher bit two 64-bit masks (elements 0..16, then 16..32; bit `16 r + j` from row `r`),
/// which AVX-512 loads straight into mask registers.
pub fn tile_rows(p: &PackedMatrix) -> Tiled {
    let (blocks, wpb, supers) = (p.blocks_per_row(), p.format.words_per_block(), p.supers_per_row());
    let padded = p.rows.div_ceil(GROUP) * GROUP;
    let ppb = p.format.params_per_block();
    let mut out = Tiled {
        codes: vec![0u32; padded * blocks * wpb],
        params: vec![0u32; padded * blocks * ppb],
        supers: vec![0u32; padded * supers],
    };
    for row in 0..p.rows {
        for b in 0..blocks {
            let (from, to) = (row * blocks + b, block_index(row, b, blocks));
            if ppb == 1 {
                out.params[to] = p.params[from];
            }
            let words = &p.codes[from * wpb..(from + 1) * wpb];
            if p.format.is_narrow() {
                // Nibbles of the group's rows side by side, then each plane as two masks.
                let (base, r) = ((to - row % GROUP) * wpb, row % GROUP);
                out.codes[base + 4 * r..base + 4 * r + 4].copy_from_slice(&words[..4]);
                for (k, &bits) in words[4..].iter().enumerate() {
                    for (half, bits) in [bits & 0xffff, bits >> 16].into_iter().enumerate() {
                        let bit = 64 * half + 16 * r;
                        out.codes[base + 16 + 4 * k + bit / 32] |= bits << (bit % 32);
                    }
                }
            } else {
                out.codes[to * wpb..(to + 1) * wpb].copy_from_slice(words);
            }
        }
        for s in 0..supers {
            out.supers[block_index(row, s, supers)] = p.supers[row * supers + s];
        }
    }
    out
}

/// The words of a row-tiled matrix ([`tile_rows`]).
#[derive(Clone, Debug, Default)]
pub struct Tiled {
    pub codes: Vec<u32>,
    pub params: Vec<u32>,
    pub supers: Vec<u32>,
}

/// A packed matrix as the CPU reads it, in the order [`tile_rows`] gives: code words, one
/// parameter word per block (none for float codes), and for [`Scales::Super`] one super word
/// per 256 elements.
#[derive(Clone, Copy, Debug)]
pub struct QuantRows<'a> {
    pub format: QuantFormat,
    pub scales: Scales,
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u32],
    pub params: &'a [u32],
    pub supers: &'a [u32],
    /// [`PackedMatrix::split_halves`]: false lets a K-quant tile use one set of scales per
    /// block.
    pub split_halves: bool,
}

impl QuantRows<'_> {
    pub(super) fn blocks(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }

    pub(super) fn supers_per_row(&self) -> usize {
        match self.scales {
            Scales::Block => 0,
            Scales::Super => self.blocks().div_ceil(SUPER),
        }
    }

    /// Row `r`'s (0..GROUP) `[d_lo, m_lo, d_hi, m_hi]` of block `b` of `group`: the two halves'
    /// scales and offsets (equal for [`Scales::Block`]).
    #[inline(always)]
    pub(super) fn half_params<const K: bool>(&self, group: usize, b: usize, r: usize) -> [f32; 4] {
        let blk = (group * self.blocks() + b) * GROUP + r;
        let p = self.params[blk];
        if K {
            let sp = self.supers[(group * self.supers_per_row() + b / SUPER) * GROUP + r];
            let (d, dmin) = params(sp);
            let byte = |i: u32| (p >> (8 * i)) as u8 as i8 as f32;
            [d * byte(0), dmin * byte(1), d * byte(2), dmin * byte(3)]
        } else {
            let (d, m) = params(p);
            [d, m, d, m]
        }
    }

    /// Integer code `e` of block `b` of the group's row `r`, from any integer format's layout.
    #[inline(always)]
    pub(crate) fn code<const Q8: bool>(&self, group: usize, b: usize, r: usize, e: usize) -> i32 {
        let wpb = self.format.words_per_block();
        let base = (group * self.blocks() + b) * GROUP * wpb;
        if Q8 || !self.format.is_narrow() {
            return scalar::code::<Q8>(self.format, &self.codes[base + r * wpb..base + (r + 1) * wpb], e);
        }
        let low = QuantFormat::Q4.code(&self.codes[base + 4 * r..base + 4 * r + 4], e);
        let bit = 64 * (e / 16) + 16 * r + e % 16;
        let planes = wpb - 4;
        (0..planes)
            .fold(low, |q, k| q | (((self.codes[base + 16 + 4 * k + bit / 32] >> (bit % 32)) & 1) as i32) << (4 + k))
    }

    pub(super) fn padded_rows(&self) -> usize {
        self.rows.div_ceil(GROUP) * GROUP
    }
}

//! `y = x Wᵀ` on the CPU with `W` packed in row-major blocks of 32 ([`crate::quant::packed`]),
//! for one token (decode) or many (prefill).
//!
//! Every level computes the same value: each weight is `d * q + m` in f32, exactly the value
//! the GGUF file defines (dequantized in registers and multiplied with f32 FMAs on x86;
//! simd128, which has no FMA, splits each block's sum as `d Σ q x + m Σ x`), and activations are
//! never quantized, so the result differs from the dense f32 product only in rounding. The matrix is walked in tiles of `R` rows by `T` tokens: a tile unpacks each
//! block of its rows once and applies it to all its tokens, so a decode step reads every weight
//! byte once (the bound is memory bandwidth) and prefill reuses each unpacked block `T` times
//! from registers (the bound is FMA throughput). Rows are split over the thread pool in chunks
//! that stay in cache while every token tile passes over them.
//!
//! The matrix is stored row-tiled ([`tile_rows`]): the blocks of four rows side by side, so that
//! a tile reads one stream of codes and one of parameters (the hardware prefetcher follows
//! two streams, not eight) and converts its four rows' scales with one instruction.

use std::borrow::Cow;

use super::{Isa, SharedOut, for_each};
use crate::quant::BLOCK;
use crate::quant::packed::{PackedMatrix, QuantFormat};

/// Rows stored side by side, block by block: the rows of one tile.
pub const GROUP: usize = 4;

/// Where block `b` of `row` lies in the row-tiled order, counted in blocks.
#[inline(always)]
pub fn block_index(row: usize, b: usize, blocks: usize) -> usize {
    ((row / GROUP) * blocks + b) * GROUP + row % GROUP
}

/// A matrix's code and parameter words in the row-tiled order, its rows padded with zero
/// blocks to a multiple of [`GROUP`].
pub fn tile_rows(p: &PackedMatrix) -> (Vec<u32>, Vec<u32>) {
    let (blocks, wpb) = (p.blocks_per_row(), p.format.words_per_block());
    let padded = p.rows.div_ceil(GROUP) * GROUP;
    let mut codes = vec![0u32; padded * blocks * wpb];
    let mut params = vec![0u32; padded * blocks];
    for row in 0..p.rows {
        for b in 0..blocks {
            let (from, to) = (row * blocks + b, block_index(row, b, blocks));
            params[to] = p.params[from];
            codes[to * wpb..(to + 1) * wpb].copy_from_slice(&p.codes[from * wpb..(from + 1) * wpb]);
        }
    }
    (codes, params)
}

/// A packed matrix as the CPU reads it, in the order [`tile_rows`] gives: code words and one
/// parameter word (f16 `d` | f16 `m` << 16) per block.
#[derive(Clone, Copy, Debug)]
pub struct QuantRows<'a> {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    pub codes: &'a [u32],
    pub params: &'a [u32],
}

impl QuantRows<'_> {
    fn blocks(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }

    fn padded_rows(&self) -> usize {
        self.rows.div_ceil(GROUP) * GROUP
    }
}

/// What is done with each result before it is written.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `y`
    None,
    /// `residual + y`, `residual: [m, rows]`.
    Residual(&'a [f32]),
    /// Rows are (gate, up) pairs; writes `silu(gate) * up`, `[m, rows / 2]`.
    SwiGlu,
}

/// Rows a tile covers (all levels): one group, even so that SwiGLU pairs never straddle tiles.
const TILE_ROWS: usize = GROUP;

/// Tokens a tile carries: as many as the registers hold beside the unpacked weights.
fn tile_tokens(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 4,
        Isa::Avx2 => 2,
        Isa::Scalar | Isa::Simd128 => 4,
    }
}

/// Rows per unit of work given to a thread: enough to amortize the hand-off, few enough that
/// every thread gets several units (and that a chunk's weights stay in L2 across token tiles).
fn chunk_rows(rows: usize, blocks: usize) -> usize {
    let per_thread = rows.div_ceil(4 * super::threads());
    // About 32 KiB of int4 weights per chunk at least.
    let min = (1600 / blocks.max(1)).max(TILE_ROWS);
    per_thread.max(min).div_ceil(TILE_ROWS) * TILE_ROWS
}

/// `x: [m, cols]` → `out: [m, rows]` (or `[m, rows / 2]` for SwiGLU), with `isa`'s kernels.
///
/// # Panics
/// When the slices do not match the shapes (a bug in the caller, never input data).
pub fn qgemm(isa: Isa, x: &[f32], m: usize, w: &QuantRows, epilogue: Epilogue, out: &mut [f32]) {
    let (rows, cols, blocks) = (w.rows, w.cols, w.blocks());
    assert_eq!(x.len(), m * cols, "qgemm: x is not [m, cols]");
    assert_eq!(w.codes.len(), w.padded_rows() * blocks * w.format.words_per_block(), "qgemm: code words");
    assert_eq!(w.params.len(), w.padded_rows() * blocks, "qgemm: parameter words");
    let out_cols = match epilogue {
        Epilogue::SwiGlu => {
            assert!(rows.is_multiple_of(2), "qgemm: SwiGLU needs (gate, up) row pairs");
            rows / 2
        }
        Epilogue::Residual(r) => {
            assert_eq!(r.len(), m * rows, "qgemm: residual is not [m, rows]");
            rows
        }
        Epilogue::None => rows,
    };
    assert_eq!(out.len(), m * out_cols, "qgemm: out is not [m, out_cols]");
    if m == 0 || rows == 0 {
        return;
    }
    // Kernels read whole blocks: a ragged row is padded with zeros once (its weights are zero
    // there too).
    let stride = blocks * BLOCK;
    let x: Cow<[f32]> = if stride == cols {
        Cow::Borrowed(x)
    } else {
        let mut padded = vec![0.0f32; m * stride];
        for (p, row) in padded.chunks_exact_mut(stride).zip(x.chunks_exact(cols)) {
            p[..cols].copy_from_slice(row);
        }
        Cow::Owned(padded)
    };
    let chunk = chunk_rows(rows, blocks);
    let out = SharedOut::new(out);
    let x = &*x;
    for_each(rows.div_ceil(chunk), |c| {
        let r0 = c * chunk;
        let r1 = (r0 + chunk).min(rows);
        let tt = tile_tokens(isa);
        let mut acc = [0.0f32; TILE_ROWS * 8];
        for t0 in (0..m).step_by(tt) {
            let t = tt.min(m - t0);
            for row0 in (r0..r1).step_by(TILE_ROWS) {
                let r = TILE_ROWS.min(r1 - row0);
                let xs = &x[t0 * stride..(t0 + t) * stride];
                tile(isa, w, row0, xs, t, stride, &mut acc);
                // Safety: rows row0..row0 + r belong to this chunk alone; indices are below
                // m * out_cols by the asserts above.
                unsafe { store(out, &acc, row0, r, t0, t, rows, out_cols, epilogue) };
            }
        }
    });
}

/// Writes a tile's results `acc[row * 8 + token]` (its first `r` rows) through the epilogue.
#[allow(clippy::too_many_arguments)]
unsafe fn store(
    out: SharedOut,
    acc: &[f32],
    row0: usize,
    r: usize,
    t0: usize,
    t: usize,
    rows: usize,
    out_cols: usize,
    epilogue: Epilogue,
) {
    for tk in 0..t {
        let token = t0 + tk;
        match epilogue {
            Epilogue::SwiGlu => {
                for pair in 0..r / 2 {
                    let (g, u) = (acc[2 * pair * 8 + tk], acc[(2 * pair + 1) * 8 + tk]);
                    unsafe { *out.at(token * out_cols + row0 / 2 + pair) = silu(g) * u };
                }
            }
            Epilogue::Residual(res) => {
                for i in 0..r {
                    let at = token * rows + row0 + i;
                    unsafe { *out.at(at) = acc[i * 8 + tk] + res[at] };
                }
            }
            Epilogue::None => {
                for i in 0..r {
                    unsafe { *out.at(token * rows + row0 + i) = acc[i * 8 + tk] };
                }
            }
        }
    }
}

pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// One tile: the group of rows from `row0` times tokens `x: [t, stride]` (t ≤ the level's
/// tile), into `acc[row * 8 + token]`; a group's padding rows are computed for nothing.
fn tile(isa: Isa, w: &QuantRows, row0: usize, x: &[f32], t: usize, stride: usize, acc: &mut [f32; 32]) {
    let q8 = w.format == QuantFormat::Q8;
    let group = row0 / GROUP;
    macro_rules! dispatch {
        ($f:ident, $($tn:literal)+) => {
            match (t, q8) {
                $( ($tn, false) => $f::<$tn, false>(w, group, x, stride, acc),
                   ($tn, true) => $f::<$tn, true>(w, group, x, stride, acc), )+
                _ => unreachable!("tile of {t} tokens"),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // Safety: Avx2 and Avx512 are only ever reported by `Isa::available` when the CPU has
        // them; the kernels read only inside the slices (`qgemm`'s asserts).
        Isa::Avx512 => unsafe { dispatch!(avx512_tile, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dispatch!(avx2_tile, 1 2) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => dispatch!(simd128_tile, 1 2 3 4),
        _ => dispatch!(scalar_tile, 1 2 3 4),
    }
}

/// `(d, m)` of parameter word `p`.
#[inline(always)]
fn params(p: u32) -> (f32, f32) {
    (half::f16::from_bits(p as u16).to_f32(), half::f16::from_bits((p >> 16) as u16).to_f32())
}

/// Code `e` (0..32) of a block: GGUF order, low nibbles are elements 0..16.
#[inline(always)]
fn code<const Q8: bool>(words: &[u32], e: usize) -> f32 {
    if Q8 {
        (words[e / 4] >> (8 * (e % 4))) as u8 as i8 as f32
    } else {
        let byte = (words[(e % 16) / 4] >> (8 * (e % 4))) as u8;
        (if e < 16 { byte & 15 } else { byte >> 4 }) as f32
    }
}

/// The reference arithmetic in plain Rust, written so that it vectorizes (eight lanes per
/// accumulator); every SIMD level is tested against it.
fn scalar_tile<const T: usize, const Q8: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    let mut lanes = [[[0.0f32; 8]; T]; GROUP];
    let mut wb = [0.0f32; BLOCK];
    for b in 0..blocks {
        for (r, lanes) in lanes.iter_mut().enumerate() {
            let blk = (group * blocks + b) * GROUP + r;
            let (d, m) = params(w.params[blk]);
            let words = &w.codes[blk * wpb..(blk + 1) * wpb];
            for (e, v) in wb.iter_mut().enumerate() {
                *v = d * code::<Q8>(words, e) + m;
            }
            for (t, lanes) in lanes.iter_mut().enumerate() {
                let xb = &x[t * stride + b * BLOCK..][..BLOCK];
                for k in 0..BLOCK / 8 {
                    for l in 0..8 {
                        lanes[l] += wb[k * 8 + l] * xb[k * 8 + l];
                    }
                }
            }
        }
    }
    for r in 0..GROUP {
        for t in 0..T {
            acc[r * 8 + t] = lanes[r][t].iter().sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The four rows' `(d, m)` of block `b` of a group: `[d0, m0, d1, m1, d2, m2, d3, m3]`,
/// converted by F16C from the group's four parameter words. In memory, not a register:
/// broadcasts from a load use the load ports, not the shuffle port that the kernels need.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn group_params(w: &QuantRows, group: usize, b: usize) -> [f32; 2 * GROUP] {
    let mut dm = [0.0f32; 2 * GROUP];
    let first = (group * w.blocks() + b) * GROUP;
    // Safety: the group's four words lie inside `params` (`qgemm`'s asserts).
    unsafe {
        let words = _mm_loadu_si128(w.params.as_ptr().add(first) as *const __m128i);
        _mm256_storeu_ps(dm.as_mut_ptr(), _mm256_cvtph_ps(words));
    }
    dm
}

/// AVX2: a block is four vectors of 8; chunk `k` holds elements `8k..8k + 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile<const T: usize, const Q8: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    // Safety: see `tile`; every pointer is inside its slice.
    unsafe {
        let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
        let mut sums = [[_mm256_setzero_ps(); T]; GROUP];
        let xp = x.as_ptr();
        let nibble = _mm256_set1_epi32(15);
        for b in 0..blocks {
            let dm = group_params(w, group, b);
            let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
            let mut scale = [(_mm256_setzero_ps(), _mm256_setzero_ps()); GROUP];
            for (r, s) in scale.iter_mut().enumerate() {
                *s = (_mm256_set1_ps(dm[2 * r]), _mm256_set1_ps(dm[2 * r + 1]));
            }
            for k in 0..4 {
                let mut wv = [_mm256_setzero_ps(); GROUP];
                for (r, wv) in wv.iter_mut().enumerate() {
                    let block = codes.add(r * wpb * 4);
                    let q = if Q8 {
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64(block.add(8 * k) as *const __m128i))
                    } else {
                        let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(block.add(8 * (k % 2)) as *const __m128i));
                        if k < 2 { _mm256_and_si256(bytes, nibble) } else { _mm256_srli_epi32(bytes, 4) }
                    };
                    *wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), scale[r].0, scale[r].1);
                }
                for t in 0..T {
                    let xv = _mm256_loadu_ps(xp.add(t * stride + b * BLOCK + 8 * k));
                    for r in 0..GROUP {
                        sums[r][t] = _mm256_fmadd_ps(wv[r], xv, sums[r][t]);
                    }
                }
            }
        }
        for r in 0..GROUP {
            for t in 0..T {
                let s = sums[r][t];
                let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_add_ss(h, _mm_movehdup_ps(h));
                acc[r * 8 + t] = _mm_cvtss_f32(h);
            }
        }
    }
}

/// AVX-512: a block is two vectors of 16. A 4-bit row's sixteen possible values `d * q + m`
/// fit one register, so its weights are two table lookups (`vpermps` reads only the low four
/// bits of each index: the low nibbles need no mask) instead of conversions and FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn avx512_tile<const T: usize, const Q8: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    // Safety: see `tile`; every pointer is inside its slice.
    unsafe {
        let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
        let mut sums = [[_mm512_setzero_ps(); T]; GROUP];
        let xp = x.as_ptr();
        let iota = _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.);
        for b in 0..blocks {
            let dm = group_params(w, group, b);
            let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
            let mut wv = [[_mm512_setzero_ps(); 2]; GROUP];
            for (r, wv) in wv.iter_mut().enumerate() {
                let d = _mm512_set1_ps(dm[2 * r]);
                let m = _mm512_set1_ps(dm[2 * r + 1]);
                let block = codes.add(r * wpb * 4);
                if Q8 {
                    for (k, wv) in wv.iter_mut().enumerate() {
                        let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(block.add(16 * k) as *const __m128i));
                        *wv = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), d, m);
                    }
                } else {
                    let table = _mm512_fmadd_ps(iota, d, m);
                    let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(block as *const __m128i));
                    wv[0] = _mm512_permutexvar_ps(bytes, table);
                    wv[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);
                }
            }
            for t in 0..T {
                let x0 = _mm512_loadu_ps(xp.add(t * stride + b * BLOCK));
                let x1 = _mm512_loadu_ps(xp.add(t * stride + b * BLOCK + 16));
                for r in 0..GROUP {
                    sums[r][t] = _mm512_fmadd_ps(wv[r][0], x0, sums[r][t]);
                    sums[r][t] = _mm512_fmadd_ps(wv[r][1], x1, sums[r][t]);
                }
            }
        }
        for r in 0..GROUP {
            for t in 0..T {
                acc[r * 8 + t] = _mm512_reduce_add_ps(sums[r][t]);
            }
        }
    }
}

/// wasm simd128: a block is eight vectors of 4, and there is no FMA, so instead of
/// dequantizing every weight (a multiply and an add each) the block's sum is split as
/// `Σ (d q + m) x = d Σ q x + m Σ x`: the codes multiply the inputs directly, `d` scales the
/// block's partial sums once, and `Σ x` (shared by the four rows) is scaled by `m`. The same
/// value as the other levels up to f32 rounding (the test bounds it at 1e-5 of the terms).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn simd128_tile<const T: usize, const Q8: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    use core::arch::wasm32::*;
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    let mut sums = [[f32x4_splat(0.0); T]; GROUP];
    let widen = |bytes: v128, signed: bool| -> [v128; 4] {
        if signed {
            let (lo, hi) = (i16x8_extend_low_i8x16(bytes), i16x8_extend_high_i8x16(bytes));
            [
                i32x4_extend_low_i16x8(lo),
                i32x4_extend_high_i16x8(lo),
                i32x4_extend_low_i16x8(hi),
                i32x4_extend_high_i16x8(hi),
            ]
        } else {
            let (lo, hi) = (u16x8_extend_low_u8x16(bytes), u16x8_extend_high_u8x16(bytes));
            [
                u32x4_extend_low_u16x8(lo),
                u32x4_extend_high_u16x8(lo),
                u32x4_extend_low_u16x8(hi),
                u32x4_extend_high_u16x8(hi),
            ]
        }
    };
    for b in 0..blocks {
        // Each token's block of inputs, and its lane sums for the offsets.
        let mut xq = [[f32x4_splat(0.0); 8]; T];
        let mut xsum = [f32x4_splat(0.0); T];
        for t in 0..T {
            let xb = &x[t * stride + b * BLOCK..][..BLOCK];
            for k in 0..8 {
                // Safety: `xb` holds a whole block of 32.
                xq[t][k] = unsafe { v128_load(xb[4 * k..4 * k + 4].as_ptr() as *const v128) };
                xsum[t] = f32x4_add(xsum[t], xq[t][k]);
            }
        }
        for (r, sums) in sums.iter_mut().enumerate() {
            let blk = (group * blocks + b) * GROUP + r;
            let (d, m) = params(w.params[blk]);
            let words = &w.codes[blk * wpb..(blk + 1) * wpb];
            // Safety: `words` holds 4 (Q4) or 8 (Q8) words, and i + 4 never passes them.
            let load = |i: usize| unsafe { v128_load(words[i..i + 4].as_ptr() as *const v128) };
            let quads: [v128; 8] = if Q8 {
                let (a, b) = (widen(load(0), true), widen(load(4), true));
                [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
            } else {
                let bytes = load(0);
                let lo = widen(v128_and(bytes, u8x16_splat(15)), false);
                let hi = widen(u8x16_shr(bytes, 4), false);
                [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
            };
            let q = quads.map(|q| f32x4_convert_i32x4(q));
            let (d, m) = (f32x4_splat(d), f32x4_splat(m));
            for t in 0..T {
                let mut dot = f32x4_mul(q[0], xq[t][0]);
                for k in 1..8 {
                    dot = f32x4_add(dot, f32x4_mul(q[k], xq[t][k]));
                }
                // Q8 blocks have `m = 0` from GGUF, but not when they hold 4-bit codes of a
                // fused matrix of mixed formats.
                sums[t] = f32x4_add(sums[t], f32x4_add(f32x4_mul(dot, d), f32x4_mul(xsum[t], m)));
            }
        }
    }
    for r in 0..GROUP {
        for t in 0..T {
            let s = sums[r][t];
            acc[r * 8 + t] = f32x4_extract_lane::<0>(s)
                + f32x4_extract_lane::<1>(s)
                + f32x4_extract_lane::<2>(s)
                + f32x4_extract_lane::<3>(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dequantize with the packed format's own `get`, then a plain f64 product: independent of
    /// every kernel here.
    fn reference(x: &[f32], m: usize, p: &PackedMatrix) -> (Vec<f64>, Vec<f64>) {
        let w = p.dequantize();
        let mut y = vec![0.0; m * p.rows];
        let mut mag = vec![0.0; m * p.rows];
        for t in 0..m {
            for r in 0..p.rows {
                for c in 0..p.cols {
                    let term = x[t * p.cols + c] as f64 * w[r * p.cols + c] as f64;
                    y[t * p.rows + r] += term;
                    mag[t * p.rows + r] += term.abs();
                }
            }
        }
        (y, mag)
    }

    fn matrix(format: QuantFormat, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
        let data: Vec<f32> =
            (0..rows * cols).map(|i| (((i as u64 + seed) * 2_654_435_761) % 2001) as f32 / 1000.0 - 1.0).collect();
        PackedMatrix::quantize(format, &data, rows, cols)
    }

    /// The row-tiled words of `p`, and a view of them.
    fn tiled(p: &PackedMatrix) -> (Vec<u32>, Vec<u32>) {
        tile_rows(p)
    }

    fn view<'a>(p: &PackedMatrix, words: &'a (Vec<u32>, Vec<u32>)) -> QuantRows<'a> {
        QuantRows { format: p.format, rows: p.rows, cols: p.cols, codes: &words.0, params: &words.1 }
    }

    /// Every level this machine has, on ragged shapes, batches 1..8 and a prefill size, equals
    /// the f64 product of the dequantized weights within 1e-5 of the terms' magnitude (the
    /// differences are f32 rounding in another summation order).
    #[test]
    fn every_level_equals_the_dequantized_product() {
        let shapes = [(13, 70), (9, 64), (33, 96), (5, 33), (64, 576), (192, 1536), (6, 32)];
        for isa in Isa::available() {
            // The third: 4-bit codes widened to 8 bits (fused matrices of mixed formats), whose
            // blocks keep their offsets.
            for (format, widened) in [(QuantFormat::Q4, false), (QuantFormat::Q8, false), (QuantFormat::Q4, true)] {
                for (i, &(rows, cols)) in shapes.iter().enumerate() {
                    for m in (1..=8).chain([67]) {
                        let p = matrix(format, rows, cols, i as u64);
                        let p = if widened { p.to_q8() } else { p };
                        let x: Vec<f32> =
                            (0..m * cols).map(|j| ((j * 104_729 + i) % 997) as f32 / 498.0 - 1.0).collect();
                        let mut got = vec![0.0; m * rows];
                        let words = tiled(&p);
                        qgemm(isa, &x, m, &view(&p, &words), Epilogue::None, &mut got);
                        let (want, mag) = reference(&x, m, &p);
                        for j in 0..m * rows {
                            let err = (got[j] as f64 - want[j]).abs();
                            assert!(
                                err <= 1e-5 * mag[j] + 1e-30,
                                "{isa:?} {format:?} {rows}x{cols} m={m} [{j}]: {} vs {} (magnitude {})",
                                got[j],
                                want[j],
                                mag[j]
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every level agrees with the scalar level on the same matrix, and the epilogues do what
    /// they say: `residual + y` and `silu(gate) * up` over row pairs.
    #[test]
    fn epilogues_apply_to_the_product() {
        let (rows, cols, m) = (18, 96, 5);
        let p = matrix(QuantFormat::Q4, rows, cols, 7);
        let x: Vec<f32> = (0..m * cols).map(|j| (j as f32 * 0.37).sin()).collect();
        let residual: Vec<f32> = (0..m * rows).map(|j| j as f32 * 0.01).collect();
        let words = tiled(&p);
        let w = view(&p, &words);
        let mut plain = vec![0.0; m * rows];
        qgemm(Isa::Scalar, &x, m, &w, Epilogue::None, &mut plain);
        for isa in Isa::available() {
            let mut with_res = vec![0.0; m * rows];
            qgemm(isa, &x, m, &w, Epilogue::Residual(&residual), &mut with_res);
            let mut glu = vec![0.0; m * rows / 2];
            qgemm(isa, &x, m, &w, Epilogue::SwiGlu, &mut glu);
            for j in 0..m * rows {
                assert!((with_res[j] - (plain[j] + residual[j])).abs() < 1e-4, "{isa:?} residual [{j}]");
            }
            for t in 0..m {
                for pair in 0..rows / 2 {
                    let (g, u) = (plain[t * rows + 2 * pair], plain[t * rows + 2 * pair + 1]);
                    let got = glu[t * rows / 2 + pair];
                    assert!((got - silu(g) * u).abs() < 1e-4 * (1.0 + got.abs()), "{isa:?} swiglu [{t}, {pair}]");
                }
            }
        }
    }
}

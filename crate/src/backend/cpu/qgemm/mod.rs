//! `y = x Wᵀ` on the CPU with `W` packed in row-major blocks of 32 ([`crate::quant::packed`]),
//! for one token (decode) or many (prefill).
//!
//! Each weight is `d * q + m` in f32, exactly the value the GGUF file defines. How the inputs
//! meet it is a level's [`Inputs`]: on x86 they stay f32 (the weights are dequantized in
//! registers and multiplied with f32 FMAs), so the result differs from the dense f32 product only
//! in rounding; in wasm, which has neither FMA nor vectors wider than four floats, each block of
//! 32 inputs is quantized to i16 and multiplied by the codes with integer dot products (eight
//! products per instruction), its sum split as `d s Σ q x̂ + m Σ x`. An i16 input is within
//! 1/65534 of its block's largest, some 250 times closer than llama.cpp's 8-bit activations,
//! which is what keeps the real model's top-5 logits within the bound the CPU path promises
//! (see the browser tests). The matrix is walked in tiles of `R` rows by `T` tokens: a tile unpacks each
//! block of its rows once and applies it to all its tokens, so a decode step reads every weight
//! byte once (the bound is memory bandwidth) and prefill reuses each unpacked block `T` times
//! from registers (the bound is FMA throughput). Rows are split over the thread pool in chunks
//! that stay in cache while every token tile passes over them.
//!
//! The matrix is stored row-tiled ([`tile_rows`]): the blocks of four rows side by side, so that
//! a tile reads one stream of codes and one of parameters (the hardware prefetcher follows
//! two streams, not eight) and converts its four rows' scales with one instruction.
//!
//! K-quant matrices ([`Scales::Super`]) differ only in where a block's scales come from: each
//! half of a block (16 elements) has its own `(d, m)`, the products of the super word's f16
//! pair and the block word's i8 pair, formed once per block for the group's four rows (the
//! const parameter `K` of every kernel); the codes are the same 4- or 8-bit blocks.
//!
//! Float matrices (F16, BF16, F32: [`QuantFormat::is_float`]) have no scales and no integer
//! codes: every level takes their inputs in f32 and widens each 16-bit weight to its f32 value
//! in registers (F16C on x86, integer shifts elsewhere), so they stay at two bytes a weight;
//! f32 codes are loaded as they are.
//!
//! One file per instruction set, each gated once and each with one safety contract:
//! `scalar` (the reference every level is tested against), `x86` (AVX2 and AVX-512) and
//! `x86_q8` (their q8 mode), `wasm` (simd128), `neon` and `neon_q8`; `layout` holds the
//! row-tiled storage and `inputs` the inputs' preparation (f32 as they are, or i16 or i8
//! blocks).

mod inputs;
mod layout;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_q8;
mod scalar;
#[cfg(test)]
mod tests;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_q8;

use std::borrow::Cow;

use inputs::*;
pub use inputs::{Activations, Inputs};
pub use layout::{QuantRows, Tiled, block_index, tile_rows};
#[cfg(target_arch = "aarch64")]
use neon::*;
#[cfg(target_arch = "aarch64")]
use neon_q8::*;
use scalar::*;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use wasm::*;
#[cfg(target_arch = "x86_64")]
use x86::*;
#[cfg(target_arch = "x86_64")]
use x86_q8::*;

use super::{Isa, SharedOut, for_each};
use crate::config::Activation;
use crate::quant::BLOCK;
use crate::quant::packed::{QuantFormat, SUPER, Scales};

/// Rows stored side by side, block by block: the rows of one tile.
pub const GROUP: usize = 4;

/// Bytes ahead of a kernel's reads that it asks the cache to fetch (x86's `_mm_prefetch`,
/// wasm's dropped loads). On the 2-core Xeon with AVX-512 of docs/benchmarks.md, the hardware's
/// prefetchers alone left the exact mode's decode of a 1.5B model at 6.9 tokens/s; fetching
/// 1, 2 and 4 KiB ahead gave 11.7, 12.1 and 12.4.
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
const PREFETCH_BYTES: usize = 4096;

/// What is done with each result before it is written.
#[derive(Clone, Copy, Debug)]
pub enum SliceEpilogue<'a> {
    /// `y`
    None,
    /// `residual + y`, `residual: [m, rows]`.
    Residual(&'a [f32]),
    /// Rows are (gate, up) pairs; writes `act(gate) * up`, `[m, rows / 2]`.
    Glu(Activation),
}

/// Rows a tile covers (all levels): one group, even so that SwiGLU pairs never straddle tiles.
pub(super) const TILE_ROWS: usize = GROUP;

/// Tokens a tile carries: as many as the registers hold beside the unpacked weights (AVX2's
/// f32 block kernels go row by row, so that eight tokens' sums fit; its float ones take two).
fn tile_tokens(isa: Isa, format: QuantFormat, inputs: Inputs) -> usize {
    match isa {
        Isa::Avx2 if inputs == Inputs::I8 => 4,
        Isa::Avx2 if format.is_float() => 2,
        Isa::Avx2 => 8,
        Isa::Avx512 | Isa::Avx512Vnni | Isa::Scalar | Isa::Simd128 | Isa::Neon | Isa::NeonDot => 4,
    }
}

/// Rows per unit of work given to a thread: enough to amortize the hand-off, few enough that
/// every thread gets several units (and that a chunk's weights stay in L2 across token tiles).
fn chunk_rows(rows: usize, blocks: usize, many_tiles: bool) -> usize {
    let per_thread = rows.div_ceil(4 * super::threads());
    // About 32 KiB of int4 weights per chunk at least.
    let min = (1600 / blocks.max(1)).max(TILE_ROWS);
    // With several token tiles, at most about 256 KiB of int4 weights: each tile reads the
    // chunk again, from L2 only if it stays there beside the inputs.
    let max = if many_tiles { (16_000 / blocks.max(1)).max(min) } else { usize::MAX };
    per_thread.min(max).max(min).div_ceil(TILE_ROWS) * TILE_ROWS
}

/// `x: [m, cols]` → `out: [m, rows]` (or `[m, rows / 2]` for SwiGLU), with `isa`'s kernels
/// in `mode`.
///
/// # Panics
/// When the slices do not match the shapes (a bug in the caller, never input data).
pub fn qgemm(
    isa: Isa,
    mode: Activations,
    x: &[f32],
    m: usize,
    w: &QuantRows,
    epilogue: SliceEpilogue,
    out: &mut [f32],
) {
    qgemm_with(isa, Inputs::for_matrix(isa, w.format, mode), x, m, w, epilogue, out)
}

/// [`qgemm`] with the inputs taken as `inputs` says: the scalar level does every arithmetic on
/// integer codes, every other level those [`Inputs::for_matrix`] gives it (the tests compare
/// each level with the scalar level of the same arithmetic).
///
/// # Panics
/// As [`qgemm`], and when `isa` has no kernel for `inputs`.
pub fn qgemm_with(
    isa: Isa,
    inputs: Inputs,
    x: &[f32],
    m: usize,
    w: &QuantRows,
    epilogue: SliceEpilogue,
    out: &mut [f32],
) {
    assert!(!w.format.is_narrow() || isa.has_narrow_kernels(), "qgemm: {isa:?} has no {:?} kernel", w.format);
    let own = [Activations::F32, Activations::Q8].map(|mode| Inputs::for_matrix(isa, w.format, mode));
    let scalar_can = !w.format.is_float() || inputs == Inputs::F32;
    assert!(own.contains(&inputs) || (isa == Isa::Scalar && scalar_can), "qgemm: {isa:?} has no {inputs:?} kernel");
    let (rows, cols, blocks) = (w.rows, w.cols, w.blocks());
    assert_eq!(x.len(), m * cols, "qgemm: x is not [m, cols]");
    assert_eq!(w.codes.len(), w.padded_rows() * blocks * w.format.words_per_block(), "qgemm: code words");
    assert_eq!(w.params.len(), w.padded_rows() * blocks * w.format.params_per_block(), "qgemm: parameter words");
    assert_eq!(w.supers.len(), w.padded_rows() * w.supers_per_row(), "qgemm: super words");
    let out_cols = match epilogue {
        SliceEpilogue::Glu(_) => {
            assert!(rows.is_multiple_of(2), "qgemm: a gated epilogue needs (gate, up) row pairs");
            rows / 2
        }
        SliceEpilogue::Residual(r) => {
            assert_eq!(r.len(), m * rows, "qgemm: residual is not [m, rows]");
            rows
        }
        SliceEpilogue::None => rows,
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
    let x = &*x;
    let tt = tile_tokens(isa, w.format, inputs);
    let chunk = chunk_rows(rows, blocks, m > tt);
    let out = SharedOut::new(out);
    let run = |source: Source| {
        for_each(rows.div_ceil(chunk), |c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            let mut acc = [0.0f32; TILE_ROWS * 8];
            for t0 in (0..m).step_by(tt) {
                let t = tt.min(m - t0);
                let xs = source.tile(t0, t, stride, blocks);
                for row0 in (r0..r1).step_by(TILE_ROWS) {
                    let r = TILE_ROWS.min(r1 - row0);
                    tile(isa, w, row0, xs, t, stride, &mut acc);
                    // Safety: rows row0..row0 + r belong to this chunk alone; indices are below
                    // m * out_cols by the asserts above.
                    unsafe { store(out, &acc, row0, r, t0, t, rows, out_cols, epilogue) };
                }
            }
        })
    };
    match inputs {
        Inputs::F32 => run(Source::F32(x)),
        Inputs::I16 => I16_INPUTS.with_borrow_mut(|q| {
            q.quantize(x);
            run(Source::I16(q))
        }),
        Inputs::I8 => I8_INPUTS.with_borrow_mut(|q| {
            q.quantize(x);
            run(Source::I8(q))
        }),
    }
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
    epilogue: SliceEpilogue,
) {
    for tk in 0..t {
        let token = t0 + tk;
        match epilogue {
            SliceEpilogue::Glu(act) => {
                for pair in 0..r / 2 {
                    let (g, u) = (acc[2 * pair * 8 + tk], acc[(2 * pair + 1) * 8 + tk]);
                    unsafe { *out.at(token * out_cols + row0 / 2 + pair) = act.apply(g) * u };
                }
            }
            SliceEpilogue::Residual(res) => {
                for i in 0..r {
                    let at = token * rows + row0 + i;
                    unsafe { *out.at(at) = acc[i * 8 + tk] + res[at] };
                }
            }
            SliceEpilogue::None => {
                for i in 0..r {
                    unsafe { *out.at(token * rows + row0 + i) = acc[i * 8 + tk] };
                }
            }
        }
    }
}

/// One tile: the group of rows from `row0` times tokens `x: [t, stride]` (t ≤ the level's
/// tile), into `acc[row * 8 + token]`; a group's padding rows are computed for nothing.
fn tile(isa: Isa, w: &QuantRows, row0: usize, x: TileInputs, t: usize, stride: usize, acc: &mut [f32; 32]) {
    if w.format.is_float() {
        let TileInputs::F32(x) = x else { unreachable!("float codes take f32 inputs") };
        return float_tile(isa, w, row0 / GROUP, x, t, stride, acc);
    }
    let q8 = w.format == QuantFormat::Q8;
    let k = w.scales == Scales::Super;
    let group = row0 / GROUP;
    macro_rules! dispatch {
        ($f:ident, $x:expr, $($tn:literal)+) => {
            match (t, q8, k) {
                $( ($tn, false, false) => $f::<$tn, false, false>(w, group, $x, stride, acc),
                   ($tn, true, false) => $f::<$tn, true, false>(w, group, $x, stride, acc),
                   ($tn, false, true) => $f::<$tn, false, true>(w, group, $x, stride, acc),
                   ($tn, true, true) => $f::<$tn, true, true>(w, group, $x, stride, acc), )+
                _ => unreachable!("tile of {t} tokens"),
            }
        };
    }
    match (isa, x) {
        #[cfg(target_arch = "x86_64")]
        // Safety: Avx2 and Avx512 are only ever reported by `Isa::available` when the CPU has
        // them; the kernels read only inside the slices (`qgemm`'s asserts).
        (Isa::Avx512 | Isa::Avx512Vnni, TileInputs::F32(x)) => unsafe { dispatch!(avx512_tile, x, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, x @ TileInputs::I8(_)) => unsafe { dispatch!(avx512_tile_i8_bw, x, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, x @ TileInputs::I8(_)) => unsafe { dispatch!(avx512_tile_i8_vnni, x, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, x @ TileInputs::I8(_)) => unsafe { dispatch!(avx2_tile_i8, x, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, TileInputs::F32(x)) if t == 1 => unsafe { dispatch!(avx2_tile_one, x, 1) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, TileInputs::F32(x)) if t == 2 => unsafe { dispatch!(avx2_tile, x, 2) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, TileInputs::F32(x)) => unsafe { dispatch!(avx2_tile_rows, x, 3 4 5 6 7 8) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Isa::Simd128, x @ TileInputs::I16(_)) => dispatch!(simd128_tile_i16, x, 1 2 3 4),
        #[cfg(target_arch = "aarch64")]
        // Safety: Neon is only reported where the CPU has it.
        (Isa::Neon | Isa::NeonDot, x @ TileInputs::I16(_)) => unsafe { dispatch!(neon_tile_i16, x, 1 2 3 4) },
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, x @ TileInputs::I8(_)) => unsafe { dispatch!(neon_tile_i8, x, 1 2 3 4) },
        #[cfg(target_arch = "aarch64")]
        // Safety: NeonDot is only reported where the CPU has dotprod.
        (Isa::NeonDot, x @ TileInputs::I8(_)) => unsafe { dispatch!(neon_tile_i8_dot, x, 1 2 3 4) },
        (Isa::Scalar, TileInputs::F32(x)) => dispatch!(scalar_tile, x, 1 2 3 4),
        (Isa::Scalar, x @ TileInputs::I16(_)) => dispatch!(scalar_tile_i16, x, 1 2 3 4),
        (Isa::Scalar, x @ TileInputs::I8(_)) => dispatch!(scalar_tile_i8, x, 1 2 3 4),
        _ => unreachable!("qgemm_with checks that {isa:?} has this kernel"),
    }
}

/// The float tiles' const parameter for a matrix's codes: [`HALF`], [`BFLOAT`] or [`FLOAT`].
pub(super) type FloatCodes = u8;
pub(super) const HALF: FloatCodes = 1;
pub(super) const BFLOAT: FloatCodes = 2;
pub(super) const FLOAT: FloatCodes = 3;

/// The format a float tile's codes are in.
pub(super) const fn float_format(f: FloatCodes) -> QuantFormat {
    match f {
        HALF => QuantFormat::F16,
        BFLOAT => QuantFormat::Bf16,
        _ => QuantFormat::F32,
    }
}

/// Where block `b` of a group's float codes starts: `GROUP` rows of 32 codes side by side, row
/// `r`'s code `e` the `r * BLOCK + e`-th of 16 or 32 bits from there.
#[inline(always)]
pub(super) fn float_block<const F: FloatCodes>(w: &QuantRows, group: usize, b: usize) -> *const u32 {
    let wpb = float_format(F).words_per_block();
    // Safety: in bounds by `float_tile`'s assert (the pointer is only formed here).
    unsafe { w.codes.as_ptr().add((group * w.blocks() + b) * GROUP * wpb) }
}

/// [`tile`] for a matrix of float codes, at `isa`'s level.
fn float_tile(isa: Isa, w: &QuantRows, group: usize, x: &[f32], t: usize, stride: usize, acc: &mut [f32; 32]) {
    let wpb = w.format.words_per_block();
    assert!(w.codes.len() >= (group + 1) * w.blocks() * GROUP * wpb, "float_tile: code words");
    assert!(x.len() >= t * stride && stride >= w.blocks() * BLOCK, "float_tile: inputs");
    let codes = match w.format {
        QuantFormat::F16 => HALF,
        QuantFormat::Bf16 => BFLOAT,
        _ => FLOAT,
    };
    macro_rules! dispatch {
        ($f:ident, $($tn:literal)+) => {
            match (t, codes) {
                $( ($tn, HALF) => $f::<$tn, HALF>(w, group, x, stride, acc),
                   ($tn, BFLOAT) => $f::<$tn, BFLOAT>(w, group, x, stride, acc),
                   ($tn, _) => $f::<$tn, FLOAT>(w, group, x, stride, acc), )+
                _ => unreachable!("tile of {t} tokens"),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // Safety: as in `tile`; the asserts above bound every read.
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { dispatch!(avx512_tile_float, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        // Safety: as above.
        Isa::Avx2 => unsafe { dispatch!(avx2_tile_float, 1 2) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => dispatch!(simd128_tile_float, 1 2 3 4),
        #[cfg(target_arch = "aarch64")]
        // Safety: Neon is only reported where the CPU has it.
        Isa::Neon | Isa::NeonDot => unsafe { dispatch!(neon_tile_float, 1 2 3 4) },
        _ => dispatch!(scalar_tile_float, 1 2 3 4),
    }
}

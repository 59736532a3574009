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

use std::borrow::Cow;
#[cfg(target_arch = "x86_64")]
use std::hint::black_box;

use super::{Isa, SharedOut, for_each};
use crate::config::Activation;
use crate::quant::BLOCK;
use crate::quant::packed::{PackedMatrix, QuantFormat, SUPER, Scales};

/// Rows stored side by side, block by block: the rows of one tile.
pub const GROUP: usize = 4;

/// Where block `b` of `row` lies in the row-tiled order, counted in blocks.
#[inline(always)]
pub fn block_index(row: usize, b: usize, blocks: usize) -> usize {
    ((row / GROUP) * blocks + b) * GROUP + row % GROUP
}

/// A matrix's code, parameter and super words in the row-tiled order (the super words of a
/// group's four rows side by side too), its rows padded with zero blocks to a multiple of
/// [`GROUP`].
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
            out.codes[to * wpb..(to + 1) * wpb].copy_from_slice(&p.codes[from * wpb..(from + 1) * wpb]);
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
    fn blocks(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }

    fn supers_per_row(&self) -> usize {
        match self.scales {
            Scales::Block => 0,
            Scales::Super => self.blocks().div_ceil(SUPER),
        }
    }

    /// Row `r`'s (0..GROUP) `[d_lo, m_lo, d_hi, m_hi]` of block `b` of `group`: the two halves'
    /// scales and offsets (equal for [`Scales::Block`]).
    #[inline(always)]
    fn half_params<const K: bool>(&self, group: usize, b: usize, r: usize) -> [f32; 4] {
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
    /// Rows are (gate, up) pairs; writes `act(gate) * up`, `[m, rows / 2]`.
    Glu(Activation),
}

/// How a level's kernels take the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// As they are, in f32.
    F32,
    /// Each block of 32 as i16 codes `x̂` with one scale `s = max |x| / 32767` (`x ≈ s x̂`,
    /// rounded to nearest), beside the block's exact f32 sum (for the offsets `m`).
    I16,
}

impl Inputs {
    /// The arithmetic `isa`'s kernels do on integer codes; the scalar level does either (it is
    /// both references).
    pub fn of(isa: Isa) -> Self {
        match isa {
            Isa::Simd128 | Isa::Neon => Inputs::I16,
            Isa::Scalar | Isa::Avx2 | Isa::Avx512 => Inputs::F32,
        }
    }

    /// The arithmetic `isa`'s kernels do on a matrix of `format`: float codes always meet f32
    /// inputs (there is no integer code to take a dot product with).
    pub fn for_matrix(isa: Isa, format: QuantFormat) -> Self {
        if format.is_float() { Inputs::F32 } else { Self::of(isa) }
    }
}

/// Where element `e` of a block sits among a block's i16 input codes: the even elements of
/// each half of the block, then the odd ones (`0 2 .. 14, 16 18 .. 30, 1 3 .. 15, 17 .. 31`).
/// That is the order in which simd128 unpacks a block's weights from 16-bit lanes with shifts
/// and masks alone (a lane holds two bytes: elements `2i` and `2i + 1`, and for 4 bits also
/// `2i + 16` and `2i + 17`), so the inputs are permuted once instead of every weight block.
#[inline(always)]
pub(crate) const fn i16_position(e: usize) -> usize {
    (e & 1) * 16 + (e >> 4) * 8 + ((e & 15) >> 1)
}

/// Inputs `[m, stride]` quantized per block for [`Inputs::I16`]: the codes (in
/// [`i16_position`] order), and per block the scale and the f32 sum, `[m, blocks]`.
struct I16Blocks {
    codes: Vec<i16>,
    scale: Vec<f32>,
    sum: Vec<f32>,
    /// The sums of each block's halves (elements 0..16 and 16..32), `[m, 2 blocks]`: the
    /// offsets of K-quant blocks differ by half.
    half_sum: Vec<f32>,
}

impl I16Blocks {
    const fn new() -> Self {
        Self { codes: Vec::new(), scale: Vec::new(), sum: Vec::new(), half_sum: Vec::new() }
    }

    /// Quantizes `x` into these buffers (reused: a decode step makes some 120 calls). Every
    /// level quantizes with this one loop, so that they all multiply the same codes.
    fn quantize(&mut self, x: &[f32]) {
        let blocks = x.len() / BLOCK;
        for (v, n) in [(&mut self.scale, blocks), (&mut self.sum, blocks), (&mut self.half_sum, 2 * blocks)] {
            v.clear();
            v.resize(n, 0.0);
        }
        self.codes.clear();
        self.codes.resize(x.len(), 0);
        for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
            // A comparison, not `f32::max` (a libm call in wasm); a NaN fails every comparison
            // and is caught by the sum below.
            let max = xb.iter().fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
            self.sum[b] = xb.iter().sum();
            self.half_sum[2 * b] = xb[..16].iter().sum();
            self.half_sum[2 * b + 1] = xb[16..].iter().sum();
            if !(max.is_finite() && self.sum[b].is_finite()) {
                // A NaN or infinite input poisons the rows it meets, as in f32.
                self.scale[b] = f32::NAN;
            } else if max > 0.0 {
                let inv = 32767.0 / max;
                self.scale[b] = max / 32767.0;
                let codes = &mut self.codes[b * BLOCK..][..BLOCK];
                for (e, v) in xb.iter().enumerate() {
                    // Within ±32767 (the largest is `max · inv`, within an ulp of 32767).
                    codes[i16_position(e)] = (v * inv).round_ties_even() as i16;
                }
            }
        }
    }
}

thread_local! {
    /// The calling thread's quantized inputs, which its tasks on the pool read.
    static I16_INPUTS: std::cell::RefCell<I16Blocks> = const { std::cell::RefCell::new(I16Blocks::new()) };
}

/// One token tile's inputs, as its level takes them.
#[derive(Clone, Copy)]
enum TileInputs<'a> {
    F32(&'a [f32]),
    /// Codes `[t, stride]`, scales and sums `[t, blocks]`, half sums `[t, 2 blocks]`.
    I16 {
        codes: &'a [i16],
        scale: &'a [f32],
        sum: &'a [f32],
        half_sum: &'a [f32],
    },
}

impl<'a> TileInputs<'a> {
    /// The codes, scales and sums of i16 inputs, checked to hold what a kernel reads for
    /// `t` tokens and `group` of `w`: the SIMD kernels index by pointer after this.
    #[allow(clippy::type_complexity)]
    fn i16_for(
        self,
        w: &QuantRows,
        group: usize,
        t: usize,
        stride: usize,
    ) -> (&'a [i16], &'a [f32], &'a [f32], &'a [f32]) {
        let TileInputs::I16 { codes, scale, sum, half_sum } = self else { unreachable!("a kernel of i16 inputs") };
        let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
        assert!(codes.len() >= t * stride && scale.len() >= t * blocks && sum.len() >= t * blocks);
        assert!(w.params.len() >= (group + 1) * blocks * GROUP && w.codes.len() >= (group + 1) * blocks * GROUP * wpb);
        assert!(w.supers.len() >= (group + 1) * w.supers_per_row() * GROUP && half_sum.len() >= 2 * t * blocks);
        (codes, scale, sum, half_sum)
    }
}

/// Rows a tile covers (all levels): one group, even so that SwiGLU pairs never straddle tiles.
const TILE_ROWS: usize = GROUP;

/// Tokens a tile carries: as many as the registers hold beside the unpacked weights (AVX2's
/// block kernels go row by row, so that eight tokens' sums fit; its float ones take two).
fn tile_tokens(isa: Isa, format: QuantFormat) -> usize {
    match isa {
        Isa::Avx512 => 4,
        Isa::Avx2 if format.is_float() => 2,
        Isa::Avx2 => 8,
        Isa::Scalar | Isa::Simd128 | Isa::Neon => 4,
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
    qgemm_with(isa, Inputs::for_matrix(isa, w.format), x, m, w, epilogue, out)
}

/// [`qgemm`] with the inputs taken as `inputs` says: the scalar level does both on integer
/// codes, every other level only its own [`Inputs::for_matrix`] (the tests compare each level
/// with the scalar level of the same arithmetic).
///
/// # Panics
/// As [`qgemm`], and when `isa` has no kernel for `inputs`.
pub fn qgemm_with(isa: Isa, inputs: Inputs, x: &[f32], m: usize, w: &QuantRows, epilogue: Epilogue, out: &mut [f32]) {
    let own = Inputs::for_matrix(isa, w.format);
    let scalar_can = !(w.format.is_float() && inputs == Inputs::I16);
    assert!(inputs == own || (isa == Isa::Scalar && scalar_can), "qgemm: {isa:?} has no {inputs:?} kernel");
    let (rows, cols, blocks) = (w.rows, w.cols, w.blocks());
    assert_eq!(x.len(), m * cols, "qgemm: x is not [m, cols]");
    assert_eq!(w.codes.len(), w.padded_rows() * blocks * w.format.words_per_block(), "qgemm: code words");
    assert_eq!(w.params.len(), w.padded_rows() * blocks * w.format.params_per_block(), "qgemm: parameter words");
    assert_eq!(w.supers.len(), w.padded_rows() * w.supers_per_row(), "qgemm: super words");
    let out_cols = match epilogue {
        Epilogue::Glu(_) => {
            assert!(rows.is_multiple_of(2), "qgemm: a gated epilogue needs (gate, up) row pairs");
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
    let x = &*x;
    let chunk = chunk_rows(rows, blocks);
    let out = SharedOut::new(out);
    let run = |quantized: Option<&I16Blocks>| {
        for_each(rows.div_ceil(chunk), |c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            let tt = tile_tokens(isa, w.format);
            let mut acc = [0.0f32; TILE_ROWS * 8];
            for t0 in (0..m).step_by(tt) {
                let t = tt.min(m - t0);
                let xs = match quantized {
                    None => TileInputs::F32(&x[t0 * stride..(t0 + t) * stride]),
                    Some(q) => TileInputs::I16 {
                        codes: &q.codes[t0 * stride..(t0 + t) * stride],
                        scale: &q.scale[t0 * blocks..(t0 + t) * blocks],
                        sum: &q.sum[t0 * blocks..(t0 + t) * blocks],
                        half_sum: &q.half_sum[2 * t0 * blocks..2 * (t0 + t) * blocks],
                    },
                };
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
        Inputs::F32 => run(None),
        Inputs::I16 => I16_INPUTS.with_borrow_mut(|q| {
            q.quantize(x);
            run(Some(q))
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
    epilogue: Epilogue,
) {
    for tk in 0..t {
        let token = t0 + tk;
        match epilogue {
            Epilogue::Glu(act) => {
                for pair in 0..r / 2 {
                    let (g, u) = (acc[2 * pair * 8 + tk], acc[(2 * pair + 1) * 8 + tk]);
                    unsafe { *out.at(token * out_cols + row0 / 2 + pair) = act.apply(g) * u };
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
        (Isa::Avx512, TileInputs::F32(x)) => unsafe { dispatch!(avx512_tile, x, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, TileInputs::F32(x)) if t == 1 => unsafe { dispatch!(avx2_tile_one, x, 1) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, TileInputs::F32(x)) if t == 2 => unsafe { dispatch!(avx2_tile, x, 2) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, TileInputs::F32(x)) => unsafe { dispatch!(avx2_tile_rows, x, 3 4 5 6 7 8) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Isa::Simd128, x @ TileInputs::I16 { .. }) => dispatch!(simd128_tile_i16, x, 1 2 3 4),
        #[cfg(target_arch = "aarch64")]
        // Safety: Neon is only reported where the CPU has it.
        (Isa::Neon, x @ TileInputs::I16 { .. }) => unsafe { dispatch!(neon_tile_i16, x, 1 2 3 4) },
        (Isa::Scalar, TileInputs::F32(x)) => dispatch!(scalar_tile, x, 1 2 3 4),
        (Isa::Scalar, x @ TileInputs::I16 { .. }) => dispatch!(scalar_tile_i16, x, 1 2 3 4),
        _ => unreachable!("qgemm_with checks that {isa:?} has this kernel"),
    }
}

/// The float tiles' const parameter for a matrix's codes: [`HALF`], [`BFLOAT`] or [`FLOAT`].
type FloatCodes = u8;
const HALF: FloatCodes = 1;
const BFLOAT: FloatCodes = 2;
const FLOAT: FloatCodes = 3;

/// The format a float tile's codes are in.
const fn float_format(f: FloatCodes) -> QuantFormat {
    match f {
        HALF => QuantFormat::F16,
        BFLOAT => QuantFormat::Bf16,
        _ => QuantFormat::F32,
    }
}

/// Where block `b` of a group's float codes starts: `GROUP` rows of 32 codes side by side, row
/// `r`'s code `e` the `r * BLOCK + e`-th of 16 or 32 bits from there.
#[inline(always)]
fn float_block<const F: FloatCodes>(w: &QuantRows, group: usize, b: usize) -> *const u32 {
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
        Isa::Avx512 => unsafe { dispatch!(avx512_tile_float, 1 2 3 4) },
        #[cfg(target_arch = "x86_64")]
        // Safety: as above.
        Isa::Avx2 => unsafe { dispatch!(avx2_tile_float, 1 2) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Isa::Simd128 => dispatch!(simd128_tile_float, 1 2 3 4),
        #[cfg(target_arch = "aarch64")]
        // Safety: Neon is only reported where the CPU has it.
        Isa::Neon => unsafe { dispatch!(neon_tile_float, 1 2 3 4) },
        _ => dispatch!(scalar_tile_float, 1 2 3 4),
    }
}

/// The reference for float codes (`F`: [`FloatCodes`]): each weight widened to f32, the
/// products summed in eight lanes as [`scalar_tile`] sums them.
fn scalar_tile_float<const T: usize, const F: FloatCodes>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    let (blocks, format) = (w.blocks(), float_format(F));
    let wpb = format.words_per_block();
    scalar_tile_of::<T>(blocks, x, stride, acc, |b, r, wb| {
        let blk = (group * blocks + b) * GROUP + r;
        let words = &w.codes[blk * wpb..(blk + 1) * wpb];
        for (e, v) in wb.iter_mut().enumerate() {
            *v = format.float_code(words, e);
        }
    });
}

/// `(d, m)` of parameter word `p`.
#[inline(always)]
fn params(p: u32) -> (f32, f32) {
    (half::f16::from_bits(p as u16).to_f32(), half::f16::from_bits((p >> 16) as u16).to_f32())
}

/// Code `e` (0..32) of a block: GGUF order, low nibbles are elements 0..16.
#[inline(always)]
fn code<const Q8: bool>(words: &[u32], e: usize) -> i32 {
    if Q8 {
        (words[e / 4] >> (8 * (e % 4))) as u8 as i8 as i32
    } else {
        let byte = (words[(e % 16) / 4] >> (8 * (e % 4))) as u8;
        (if e < 16 { byte & 15 } else { byte >> 4 }) as i32
    }
}

/// The reference arithmetic in plain Rust, written so that it vectorizes (eight lanes per
/// accumulator); every SIMD level is tested against it.
fn scalar_tile<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    scalar_tile_of::<T>(blocks, x, stride, acc, |b, r, wb| {
        let blk = (group * blocks + b) * GROUP + r;
        let dm = w.half_params::<K>(group, b, r);
        let words = &w.codes[blk * wpb..(blk + 1) * wpb];
        for (e, v) in wb.iter_mut().enumerate() {
            let h = 2 * (e / 16);
            *v = dm[h] * code::<Q8>(words, e) as f32 + dm[h + 1];
        }
    });
}

/// The scalar tile loop: `weights(b, r, ..)` writes block `b` of the group's row `r` as 32
/// floats, which multiply each token's inputs in eight lanes.
#[inline(always)]
fn scalar_tile_of<const T: usize>(
    blocks: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
    mut weights: impl FnMut(usize, usize, &mut [f32; BLOCK]),
) {
    let mut lanes = [[[0.0f32; 8]; T]; GROUP];
    let mut wb = [0.0f32; BLOCK];
    for b in 0..blocks {
        for (r, lanes) in lanes.iter_mut().enumerate() {
            weights(b, r, &mut wb);
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

/// The reference of [`Inputs::I16`]: per block, the exact integer `Σ q x̂`, scaled by `d s`,
/// plus `m Σ x` (per half for K-quants).
fn scalar_tile_i16<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    let (xq, scale, sum, half_sum) = x.i16_for(w, group, T, stride);
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    let mut sums = [[0.0f32; T]; GROUP];
    let mut q = [0i32; BLOCK];
    for b in 0..blocks {
        for (r, sums) in sums.iter_mut().enumerate() {
            let blk = (group * blocks + b) * GROUP + r;
            let [d, m, d_hi, m_hi] = w.half_params::<K>(group, b, r);
            let words = &w.codes[blk * wpb..(blk + 1) * wpb];
            for e in 0..BLOCK {
                q[i16_position(e)] = code::<Q8>(words, e);
            }
            for (t, s) in sums.iter_mut().enumerate() {
                let xb = &xq[t * stride + b * BLOCK..][..BLOCK];
                let s_x = scale[t * blocks + b];
                if K {
                    // Positions with bit 3 clear hold elements 0..16 (`i16_position`).
                    let half = |h: usize| -> i32 {
                        (0..BLOCK).filter(|p| (p >> 3) & 1 == h).map(|p| q[p] * xb[p] as i32).sum()
                    };
                    let hs = &half_sum[2 * (t * blocks + b)..];
                    *s += half(0) as f32 * (d * s_x) + half(1) as f32 * (d_hi * s_x) + m * hs[0] + m_hi * hs[1];
                } else {
                    let dot: i32 = q.iter().zip(xb).map(|(&q, &x)| q * x as i32).sum();
                    *s += dot as f32 * (d * s_x) + m * sum[t * blocks + b];
                }
            }
        }
    }
    for r in 0..GROUP {
        acc[r * 8..r * 8 + T].copy_from_slice(&sums[r]);
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

/// The four rows' super pairs `(d, dmin)` of the super-block holding block `b` of a group,
/// spread as [`group_half_params`] multiplies them: `[d, dmin, d, dmin]` for rows 0 and 1, then
/// for rows 2 and 3. Converted once per super-block (eight blocks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn group_supers(w: &QuantRows, group: usize, b: usize) -> [__m256; 2] {
    // Safety: the group's four super words lie inside `supers` (`qgemm`'s asserts).
    unsafe {
        let sp = (group * w.supers_per_row() + b / SUPER) * GROUP;
        let dm = _mm256_cvtph_ps(_mm_loadu_si128(w.supers.as_ptr().add(sp) as *const __m128i));
        [
            _mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(0, 1, 0, 1, 2, 3, 2, 3)),
            _mm256_permutevar8x32_ps(dm, _mm256_setr_epi32(4, 5, 4, 5, 6, 7, 6, 7)),
        ]
    }
}

/// The four rows' half parameters of K-quant block `b` of a group, `[d_lo, m_lo, d_hi, m_hi]`
/// per row, as [`QuantRows::half_params`] forms them: the block words' i8 pairs widened and
/// multiplied by the super pairs ([`group_supers`]), all sixteen products in two multiplies.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn group_half_params(w: &QuantRows, group: usize, b: usize, supers: &[__m256; 2]) -> [f32; 4 * GROUP] {
    let mut out = [0.0f32; 4 * GROUP];
    // Safety: the group's four parameter words lie inside `params` (`qgemm`'s asserts).
    unsafe {
        let bytes = _mm_loadu_si128(w.params.as_ptr().add((group * w.blocks() + b) * GROUP) as *const __m128i);
        let rows01 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
        let rows23 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(bytes, bytes)));
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(supers[0], rows01));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_mul_ps(supers[1], rows23));
    }
    out
}

/// AVX2 for two tokens: a block is four vectors of 8, chunk `k` elements `8k..8k + 8`; the
/// group's four rows are unpacked chunk by chunk, each applied to both tokens (at two tokens
/// this beats [`avx2_tile_rows`], whose per-row scales and input loads cost more than they
/// save). Each
/// token's sums take the same products in the same order as [`avx2_tile_one`]'s.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile<const T: usize, const Q8: bool, const K: bool>(
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
        let mut supers = [_mm256_setzero_ps(); 2];
        for b in 0..blocks {
            let (dm, pairs) = block_scales::<K>(w, group, b, &mut supers);
            let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
            let mut scale = [(_mm256_setzero_ps(), _mm256_setzero_ps()); GROUP];
            for k in 0..4 {
                // Chunks 0 and 1 are the block's first half; a legacy block's halves are equal.
                if k == 0 || (K && w.split_halves && k == 2) {
                    for (r, s) in scale.iter_mut().enumerate() {
                        *s = match K {
                            true => (_mm256_set1_ps(dm[4 * r + k]), _mm256_set1_ps(dm[4 * r + k + 1])),
                            false => (_mm256_set1_ps(pairs[2 * r]), _mm256_set1_ps(pairs[2 * r + 1])),
                        };
                    }
                }
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
        reduce_tile256(&sums, acc);
    }
}

/// Block `b`'s scales for the group's four rows, in memory for broadcasts ([`black_box`]
/// keeps LLVM from turning those loads into shuffles, which compete with the code widenings
/// for the shuffle port): `[d_lo, m_lo, d_hi, m_hi]` per row of a K block (the super pairs in
/// `supers` converted again at each super-block), or `[d, m]` per row of a legacy one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn block_scales<const K: bool>(
    w: &QuantRows,
    group: usize,
    b: usize,
    supers: &mut [__m256; 2],
) -> ([f32; 4 * GROUP], [f32; 2 * GROUP]) {
    // Safety: as in the kernels that call it.
    unsafe {
        if K {
            if b.is_multiple_of(SUPER) {
                *supers = group_supers(w, group, b);
            }
            (black_box(group_half_params(w, group, b, supers)), [0.0; 2 * GROUP])
        } else {
            ([0.0; 4 * GROUP], black_box(group_params(w, group, b)))
        }
    }
}

/// Row `r` of one block (its codes at `block`, the tokens' 32 inputs at `xb`, `stride` apart)
/// into `sums`, one per token: chunk `k` holds elements `8k..8k + 8`, chunks 0 and 1 the
/// block's first half; each chunk is unpacked once and multiplied into every token's sum, in
/// the same order whatever `T` (what lets a token get the same bits in any tile).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn avx2_row_block<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    block: *const u8,
    xb: *const f32,
    stride: usize,
    r: usize,
    (dm, pairs): &([f32; 4 * GROUP], [f32; 2 * GROUP]),
    sums: &mut [__m256; T],
) {
    // Safety: the caller passes pointers to a whole block of codes and of every token's inputs.
    unsafe {
        let nibble = _mm256_set1_epi32(15);
        let (mut d, mut m) = match K {
            true => (_mm256_set1_ps(dm[4 * r]), _mm256_set1_ps(dm[4 * r + 1])),
            false => (_mm256_set1_ps(pairs[2 * r]), _mm256_set1_ps(pairs[2 * r + 1])),
        };
        for half in 0..2 {
            // A legacy block's halves, and those of most K-quant blocks, share scales.
            if half == 1 && K && w.split_halves {
                (d, m) = (_mm256_set1_ps(dm[4 * r + 2]), _mm256_set1_ps(dm[4 * r + 3]));
            }
            for kk in 0..2 {
                let k = 2 * half + kk;
                let q = if Q8 {
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(block.add(8 * k) as *const __m128i))
                } else {
                    let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(block.add(8 * kk) as *const __m128i));
                    if half == 0 { _mm256_and_si256(bytes, nibble) } else { _mm256_srli_epi32(bytes, 4) }
                };
                let wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), d, m);
                for (t, sum) in sums.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(xb.add(t * stride + 8 * k));
                    *sum = _mm256_fmadd_ps(wv, xv, *sum);
                }
            }
        }
    }
}

/// AVX2 for several tokens (up to eight): row by row through the whole group, so that only
/// one row's sums are live (eight tokens' beside the weights and scales: a block's chunk of 8
/// weights is unpacked once and applied to every token). The scales of the group's four rows
/// are formed at each block for each row (cheap beside eight tokens' multiply-adds). Each
/// token's sums take the same products in the same order as [`avx2_tile_one`]'s, so a pass of
/// several tokens gives each the bits a pass of one gives it.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile_rows<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    // Safety: see `tile`; every pointer is inside its slice.
    unsafe {
        let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
        let xp = x.as_ptr();
        for r in 0..GROUP {
            let mut sums = [_mm256_setzero_ps(); T];
            let mut supers = [_mm256_setzero_ps(); 2];
            for b in 0..blocks {
                let scales = block_scales::<K>(w, group, b, &mut supers);
                let block = (w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8).add(r * wpb * 4);
                avx2_row_block::<T, Q8, K>(w, block, xp.add(b * BLOCK), stride, r, &scales, &mut sums);
            }
            for t in 0..T {
                acc[r * 8 + t] = hsum256(sums[t]);
            }
        }
    }
}

/// The eight lanes of `s` added up as [`reduce_tile256`] adds them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hsum256(s: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_movehdup_ps(h));
    _mm_cvtss_f32(h)
}

/// AVX2 for one token (decode): a block is four vectors of 8, chunk `k` elements
/// `8k..8k + 8`, chunks 0 and 1 the block's first half. The tile goes row by row through a
/// block, so that a row's scales,
/// weights and sums are all that is live (four rows at once spilled registers), and the
/// scales are broadcast from memory ([`black_box`] keeps LLVM from turning those loads into
/// shuffles, which compete with the code widenings for the shuffle port).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile_one<const T: usize, const Q8: bool, const K: bool>(
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
        let mut supers = [_mm256_setzero_ps(); 2];
        for b in 0..blocks {
            let scales = block_scales::<K>(w, group, b, &mut supers);
            let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
            for r in 0..GROUP {
                avx2_row_block::<T, Q8, K>(
                    w,
                    codes.add(r * wpb * 4),
                    xp.add(b * BLOCK),
                    stride,
                    r,
                    &scales,
                    &mut sums[r],
                );
            }
        }
        reduce_tile256(&sums, acc);
    }
}

/// AVX-512: a block is two vectors of 16. A 4-bit row's sixteen possible values `d * q + m`
/// fit one register, so its weights are two table lookups (`vpermps` reads only the low four
/// bits of each index: the low nibbles need no mask) instead of conversions and FMAs.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn avx512_tile<const T: usize, const Q8: bool, const K: bool>(
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
        // A K-quant super-block's `[d, dmin, d, dmin]` per row, lane by lane against the block
        // words' i8: converted once per 256 elements, multiplied once per block.
        let mut supers = _mm512_setzero_ps();
        let mut dm = [0.0f32; 4 * GROUP];
        // A legacy block's `[d, m]` per row (its halves are alike).
        let mut pairs = [0.0f32; 2 * GROUP];
        for b in 0..blocks {
            if K {
                if b % SUPER == 0 {
                    let sp = (group * w.supers_per_row() + b / SUPER) * GROUP;
                    let pairs = _mm256_cvtph_ps(_mm_loadu_si128(w.supers.as_ptr().add(sp) as *const __m128i));
                    let spread = _mm512_setr_epi32(0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7);
                    supers = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(pairs));
                }
                let bytes = _mm_loadu_si128(w.params.as_ptr().add((group * blocks + b) * GROUP) as *const __m128i);
                let halves = _mm512_mul_ps(supers, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)));
                _mm512_storeu_ps(dm.as_mut_ptr(), halves);
            } else {
                pairs = group_params(w, group, b);
            }
            let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
            let mut wv = [[_mm512_setzero_ps(); 2]; GROUP];
            for (r, wv) in wv.iter_mut().enumerate() {
                // Vector k holds elements 16k..16k + 16: half k's parameters.
                let (d, m) = if K && w.split_halves {
                    (
                        [_mm512_set1_ps(dm[4 * r]), _mm512_set1_ps(dm[4 * r + 2])],
                        [_mm512_set1_ps(dm[4 * r + 1]), _mm512_set1_ps(dm[4 * r + 3])],
                    )
                } else if K {
                    let (d, m) = (_mm512_set1_ps(dm[4 * r]), _mm512_set1_ps(dm[4 * r + 1]));
                    ([d, d], [m, m])
                } else {
                    let (d, m) = (_mm512_set1_ps(pairs[2 * r]), _mm512_set1_ps(pairs[2 * r + 1]));
                    ([d, d], [m, m])
                };
                let block = codes.add(r * wpb * 4);
                if Q8 {
                    for (k, wv) in wv.iter_mut().enumerate() {
                        let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(block.add(16 * k) as *const __m128i));
                        *wv = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), d[k], m[k]);
                    }
                } else {
                    let table = _mm512_fmadd_ps(iota, d[0], m[0]);
                    let table_hi = if K && w.split_halves { _mm512_fmadd_ps(iota, d[1], m[1]) } else { table };
                    let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(block as *const __m128i));
                    wv[0] = _mm512_permutexvar_ps(bytes, table);
                    wv[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table_hi);
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
        reduce_tile512(&sums, acc);
    }
}

/// Each of a tile's eight-lane sums added up into `acc[r * 8 + t]`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn reduce_tile256<const T: usize>(sums: &[[__m256; T]; GROUP], acc: &mut [f32; 32]) {
    for r in 0..GROUP {
        for t in 0..T {
            acc[r * 8 + t] = unsafe { hsum256(sums[r][t]) };
        }
    }
}

/// [`reduce_tile256`] for sixteen lanes.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn reduce_tile512<const T: usize>(sums: &[[__m512; T]; GROUP], acc: &mut [f32; 32]) {
    for r in 0..GROUP {
        for t in 0..T {
            acc[r * 8 + t] = _mm512_reduce_add_ps(sums[r][t]);
        }
    }
}

/// Float codes `i..i + 8` from `codes` ([`float_block`]) as f32: F16C for halves, a shift for
/// bfloat16, a load for f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn avx2_widen<const F: FloatCodes>(codes: *const u32, i: usize) -> __m256 {
    // Safety: the caller reads inside its slice.
    unsafe {
        if F == FLOAT {
            return _mm256_loadu_ps((codes as *const f32).add(i));
        }
        let h = _mm_loadu_si128((codes as *const u16).add(i) as *const __m128i);
        if F == BFLOAT {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        }
    }
}

/// AVX2 on float codes: a block is four vectors of 8 weights, widened in registers.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile_float<const T: usize, const F: FloatCodes>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    // Safety: see `float_tile`; every pointer is inside its slice.
    unsafe {
        let blocks = w.blocks();
        let mut sums = [[_mm256_setzero_ps(); T]; GROUP];
        let xp = x.as_ptr();
        for b in 0..blocks {
            let codes = float_block::<F>(w, group, b);
            for k in 0..4 {
                let mut wv = [_mm256_setzero_ps(); GROUP];
                for (r, wv) in wv.iter_mut().enumerate() {
                    *wv = avx2_widen::<F>(codes, r * BLOCK + 8 * k);
                }
                for t in 0..T {
                    let xv = _mm256_loadu_ps(xp.add(t * stride + b * BLOCK + 8 * k));
                    for r in 0..GROUP {
                        sums[r][t] = _mm256_fmadd_ps(wv[r], xv, sums[r][t]);
                    }
                }
            }
        }
        reduce_tile256(&sums, acc);
    }
}

/// Float codes `i..i + 16` from `codes` ([`float_block`]) as f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
unsafe fn avx512_widen<const F: FloatCodes>(codes: *const u32, i: usize) -> __m512 {
    // Safety: the caller reads inside its slice.
    unsafe {
        if F == FLOAT {
            return _mm512_loadu_ps((codes as *const f32).add(i));
        }
        let h = _mm256_loadu_si256((codes as *const u16).add(i) as *const __m256i);
        if F == BFLOAT {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        } else {
            _mm512_cvtph_ps(h)
        }
    }
}

/// AVX-512 on float codes: a block is two vectors of 16 weights.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn avx512_tile_float<const T: usize, const F: FloatCodes>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    // Safety: see `float_tile`; every pointer is inside its slice.
    unsafe {
        let blocks = w.blocks();
        let mut sums = [[_mm512_setzero_ps(); T]; GROUP];
        let xp = x.as_ptr();
        for b in 0..blocks {
            let codes = float_block::<F>(w, group, b);
            let mut wv = [[_mm512_setzero_ps(); 2]; GROUP];
            for (r, wv) in wv.iter_mut().enumerate() {
                for (k, wv) in wv.iter_mut().enumerate() {
                    *wv = avx512_widen::<F>(codes, r * BLOCK + 16 * k);
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
        reduce_tile512(&sums, acc);
    }
}

/// Four f16 values, one in the low half of each lane, as f32: exactly `half`'s conversion
/// for every finite value (subnormals included: the magnitude's bits shifted into place read as
/// an f32 `2^-112` times the value), infinities and NaNs set apart. wasm has no F16C, and
/// `half`'s branchy scalar conversion of every block's parameters cost more than the block's
/// products.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn f16x4_to_f32(h: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    let magnitude = i32x4_shl(v128_and(h, u32x4_splat(0x7fff)), 13);
    let finite = f32x4_mul(magnitude, f32x4_splat(f32::from_bits((127 + 112) << 23)));
    let special = i32x4_eq(v128_and(h, u32x4_splat(0x7c00)), u32x4_splat(0x7c00));
    let value = v128_bitselect(v128_or(magnitude, u32x4_splat(0x7f80_0000)), finite, special);
    v128_or(value, i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16))
}

/// wasm simd128 on [`Inputs::I16`]: a block is four vectors of eight i16 codes (unpacked with
/// 16-bit shifts and masks, single instructions on every host, where byte shifts and widenings
/// are not), multiplied by four of inputs with `i32x4.dot_i16x8_s` (eight products and their
/// pairwise sums in one instruction); `d s` scales the block's four partial sums and `m Σ x` adds the offsets, for
/// the group's four rows in one vector. The products are exact in i32 (at most 8 · 128 · 32767
/// per lane), so the value is the scalar reference's up to f32 rounding of the scaled sums.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn simd128_tile_i16<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    use core::arch::wasm32::*;
    let (xq, scale, sum, half_sum) = x.i16_for(w, group, T, stride);
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    // A K-quant block with equal halves takes one dot product and the block's sum, as a
    // legacy one.
    let split = w.split_halves;
    let mut sums = [[f32x4_splat(0.0); T]; GROUP];
    // Lane r: row r's offsets, for each token.
    let mut offsets = [f32x4_splat(0.0); T];
    // Safety: every pointer below stays inside its slice, by `i16_for`'s asserts (the group's
    // blocks, whole blocks of T tokens' inputs).
    unsafe {
        let xp = xq.as_ptr();
        for b in 0..blocks {
            let first = (group * blocks + b) * GROUP;
            let words = v128_load(w.params.as_ptr().add(first) as *const v128);
            // Lane r: row r's (d, m) of each half (equal halves for a legacy block).
            let (d, m, d_hi, m_hi) = if K {
                let sp = (group * w.supers_per_row() + b / SUPER) * GROUP;
                let supers = v128_load(w.supers.as_ptr().add(sp) as *const v128);
                let (d, dmin) =
                    (f16x4_to_f32(v128_and(supers, u32x4_splat(0xffff))), f16x4_to_f32(u32x4_shr(supers, 16)));
                let byte = |shl: u32| f32x4_convert_i32x4(i32x4_shr(i32x4_shl(words, shl), 24));
                (f32x4_mul(d, byte(24)), f32x4_mul(dmin, byte(16)), f32x4_mul(d, byte(8)), f32x4_mul(dmin, byte(0)))
            } else {
                let (d, m) = (f16x4_to_f32(v128_and(words, u32x4_splat(0xffff))), f16x4_to_f32(u32x4_shr(words, 16)));
                (d, m, d, m)
            };
            let mut xv = [[i16x8_splat(0); 4]; T];
            let mut ds = [[f32x4_splat(0.0); 2]; T];
            for t in 0..T {
                for (k, v) in xv[t].iter_mut().enumerate() {
                    *v = v128_load(xp.add(t * stride + b * BLOCK + 8 * k) as *const v128);
                }
                let s = f32x4_splat(*scale.get_unchecked(t * blocks + b));
                ds[t] = [f32x4_mul(d, s), f32x4_mul(d_hi, s)];
                offsets[t] = if K && split {
                    let hs = half_sum.as_ptr().add(2 * (t * blocks + b));
                    let lo = f32x4_mul(m, f32x4_splat(*hs));
                    f32x4_add(offsets[t], f32x4_add(lo, f32x4_mul(m_hi, f32x4_splat(*hs.add(1)))))
                } else {
                    f32x4_add(offsets[t], f32x4_mul(m, f32x4_splat(*sum.get_unchecked(t * blocks + b))))
                };
            }
            let codes = w.codes.as_ptr().add(first * wpb) as *const v128;
            for (r, sums) in sums.iter_mut().enumerate() {
                // The codes in `i16_position` order, from 16-bit lanes of two bytes each.
                let q: [v128; 4] = if Q8 {
                    let (lo, hi) = (v128_load(codes.add(2 * r)), v128_load(codes.add(2 * r + 1)));
                    [i16x8_shr(i16x8_shl(lo, 8), 8), i16x8_shr(i16x8_shl(hi, 8), 8), i16x8_shr(lo, 8), i16x8_shr(hi, 8)]
                } else {
                    let lanes = v128_load(codes.add(r));
                    let nibble = u16x8_splat(15);
                    [
                        v128_and(lanes, nibble),
                        v128_and(u16x8_shr(lanes, 4), nibble),
                        v128_and(u16x8_shr(lanes, 8), nibble),
                        u16x8_shr(lanes, 12),
                    ]
                };
                for t in 0..T {
                    let x = &xv[t];
                    // Row r's `d s`, in every lane (the loop over r unrolls).
                    let splat = |v: v128| match r {
                        0 => i32x4_shuffle::<0, 0, 0, 0>(v, v),
                        1 => i32x4_shuffle::<1, 1, 1, 1>(v, v),
                        2 => i32x4_shuffle::<2, 2, 2, 2>(v, v),
                        _ => i32x4_shuffle::<3, 3, 3, 3>(v, v),
                    };
                    // Vectors 0 and 2 hold the block's first half (`i16_position`).
                    let (first, second) = (
                        i32x4_add(i32x4_dot_i16x8(q[0], x[0]), i32x4_dot_i16x8(q[2], x[2])),
                        i32x4_add(i32x4_dot_i16x8(q[1], x[1]), i32x4_dot_i16x8(q[3], x[3])),
                    );
                    sums[t] = if K && split {
                        let lo = f32x4_mul(f32x4_convert_i32x4(first), splat(ds[t][0]));
                        f32x4_add(sums[t], f32x4_add(lo, f32x4_mul(f32x4_convert_i32x4(second), splat(ds[t][1]))))
                    } else {
                        let dot = i32x4_add(first, second);
                        f32x4_add(sums[t], f32x4_mul(f32x4_convert_i32x4(dot), splat(ds[t][0])))
                    };
                }
            }
        }
    }
    for r in 0..GROUP {
        for t in 0..T {
            let s = sums[r][t];
            acc[r * 8 + t] = f32x4_extract_lane::<0>(s)
                + f32x4_extract_lane::<1>(s)
                + f32x4_extract_lane::<2>(s)
                + f32x4_extract_lane::<3>(s)
                + lane(offsets[t], r);
        }
    }
}

/// Lane `r` of `v`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn lane(v: core::arch::wasm32::v128, r: usize) -> f32 {
    use core::arch::wasm32::f32x4_extract_lane;
    match r {
        0 => f32x4_extract_lane::<0>(v),
        1 => f32x4_extract_lane::<1>(v),
        2 => f32x4_extract_lane::<2>(v),
        _ => f32x4_extract_lane::<3>(v),
    }
}

/// wasm simd128 on float codes and f32 inputs: four weights a vector, widened from their 16
/// bits with integer shifts ([`f16x4_to_f32`] for halves), multiplied and added (simd128 has
/// no FMA).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
fn simd128_tile_float<const T: usize, const F: FloatCodes>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    use core::arch::wasm32::*;
    let blocks = w.blocks();
    let mut sums = [[f32x4_splat(0.0); T]; GROUP];
    // Safety: every pointer below stays inside its slice, by `float_tile`'s asserts.
    unsafe {
        let xp = x.as_ptr();
        for b in 0..blocks {
            let codes = float_block::<F>(w, group, b);
            for k in 0..8 {
                let mut wv = [f32x4_splat(0.0); GROUP];
                for (r, wv) in wv.iter_mut().enumerate() {
                    let i = r * BLOCK + 4 * k;
                    *wv = if F == FLOAT {
                        v128_load((codes as *const f32).add(i) as *const v128)
                    } else {
                        let h = u32x4_extend_low_u16x8(v128_load64_zero((codes as *const u16).add(i) as *const u64));
                        if F == BFLOAT { i32x4_shl(h, 16) } else { f16x4_to_f32(h) }
                    };
                }
                for t in 0..T {
                    let xv = v128_load(xp.add(t * stride + b * BLOCK + 4 * k) as *const v128);
                    for r in 0..GROUP {
                        sums[r][t] = f32x4_add(sums[r][t], f32x4_mul(wv[r], xv));
                    }
                }
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

/// Four f16 values, one in the low half of each lane, as f32: [`f16x4_to_f32`]'s arithmetic
/// (the f16 vector types are not stable Rust).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline]
fn neon_f16x4_to_f32(h: std::arch::aarch64::uint32x4_t) -> std::arch::aarch64::float32x4_t {
    use std::arch::aarch64::*;
    let magnitude = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
    let finite = vmulq_f32(vreinterpretq_f32_u32(magnitude), vdupq_n_f32(f32::from_bits((127 + 112) << 23)));
    let special = vceqq_u32(vandq_u32(h, vdupq_n_u32(0x7c00)), vdupq_n_u32(0x7c00));
    let value = vbslq_u32(special, vorrq_u32(magnitude, vdupq_n_u32(0x7f80_0000)), vreinterpretq_u32_f32(finite));
    vreinterpretq_f32_u32(vorrq_u32(value, vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)))))
}

/// aarch64 NEON on [`Inputs::I16`]: simd128's kernel, with widening multiply-adds (`smlal`,
/// four i16 products into i32 lanes) for the dot products and FMAs for the scaling. (The
/// dotprod extension multiplies 8-bit inputs only, which this arithmetic does not make.)
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn neon_tile_i16<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    use std::arch::aarch64::*;
    let (xq, scale, sum, half_sum) = x.i16_for(w, group, T, stride);
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    // A K-quant block with equal halves takes one dot product and the block's sum, as a
    // legacy one.
    let split = w.split_halves;
    // Safety: every pointer below stays inside its slice, by `i16_for`'s asserts.
    unsafe {
        let mut sums = [[vdupq_n_f32(0.0); T]; GROUP];
        let mut offsets = [vdupq_n_f32(0.0); T];
        let xp = xq.as_ptr();
        for b in 0..blocks {
            let first = (group * blocks + b) * GROUP;
            let words = vld1q_u32(w.params.as_ptr().add(first));
            // Lane r: row r's (d, m) of each half (equal halves for a legacy block).
            let (d, m, d_hi, m_hi) = if K {
                let supers = vld1q_u32(w.supers.as_ptr().add((group * w.supers_per_row() + b / SUPER) * GROUP));
                let d = neon_f16x4_to_f32(vandq_u32(supers, vdupq_n_u32(0xffff)));
                let dmin = neon_f16x4_to_f32(vshrq_n_u32::<16>(supers));
                let words = vreinterpretq_s32_u32(words);
                let (s_lo, n_lo, s_hi, n_hi) = (
                    vshrq_n_s32::<24>(vshlq_n_s32::<24>(words)),
                    vshrq_n_s32::<24>(vshlq_n_s32::<16>(words)),
                    vshrq_n_s32::<24>(vshlq_n_s32::<8>(words)),
                    vshrq_n_s32::<24>(words),
                );
                (
                    vmulq_f32(d, vcvtq_f32_s32(s_lo)),
                    vmulq_f32(dmin, vcvtq_f32_s32(n_lo)),
                    vmulq_f32(d, vcvtq_f32_s32(s_hi)),
                    vmulq_f32(dmin, vcvtq_f32_s32(n_hi)),
                )
            } else {
                let d = neon_f16x4_to_f32(vandq_u32(words, vdupq_n_u32(0xffff)));
                let m = neon_f16x4_to_f32(vshrq_n_u32::<16>(words));
                (d, m, d, m)
            };
            let mut xv = [[vdupq_n_s16(0); 4]; T];
            let mut ds = [[vdupq_n_f32(0.0); 2]; T];
            for t in 0..T {
                for (k, v) in xv[t].iter_mut().enumerate() {
                    *v = vld1q_s16(xp.add(t * stride + b * BLOCK + 8 * k));
                }
                let s = *scale.get_unchecked(t * blocks + b);
                ds[t] = [vmulq_n_f32(d, s), vmulq_n_f32(d_hi, s)];
                if K && split {
                    let hs = half_sum.as_ptr().add(2 * (t * blocks + b));
                    offsets[t] = vfmaq_n_f32(vfmaq_n_f32(offsets[t], m, *hs), m_hi, *hs.add(1));
                } else {
                    offsets[t] = vfmaq_n_f32(offsets[t], m, *sum.get_unchecked(t * blocks + b));
                }
            }
            let codes = w.codes.as_ptr().add(first * wpb) as *const u8;
            for (r, sums) in sums.iter_mut().enumerate() {
                // The codes in `i16_position` order, from 16-bit lanes of two bytes each.
                let q: [int16x8_t; 4] = if Q8 {
                    let lo = vld1q_s16(codes.add(32 * r) as *const i16);
                    let hi = vld1q_s16(codes.add(32 * r + 16) as *const i16);
                    [
                        vshrq_n_s16::<8>(vshlq_n_s16::<8>(lo)),
                        vshrq_n_s16::<8>(vshlq_n_s16::<8>(hi)),
                        vshrq_n_s16::<8>(lo),
                        vshrq_n_s16::<8>(hi),
                    ]
                } else {
                    let lanes = vld1q_u16(codes.add(16 * r) as *const u16);
                    let nibble = vdupq_n_u16(15);
                    [
                        vreinterpretq_s16_u16(vandq_u16(lanes, nibble)),
                        vreinterpretq_s16_u16(vandq_u16(vshrq_n_u16::<4>(lanes), nibble)),
                        vreinterpretq_s16_u16(vandq_u16(vshrq_n_u16::<8>(lanes), nibble)),
                        vreinterpretq_s16_u16(vshrq_n_u16::<12>(lanes)),
                    ]
                };
                for t in 0..T {
                    let x = &xv[t];
                    // Row r's `d s`, in every lane (the loop over r unrolls).
                    let splat = |v: float32x4_t| match r {
                        0 => vdupq_laneq_f32::<0>(v),
                        1 => vdupq_laneq_f32::<1>(v),
                        2 => vdupq_laneq_f32::<2>(v),
                        _ => vdupq_laneq_f32::<3>(v),
                    };
                    // Vectors 0 and 2 hold the block's first half (`i16_position`).
                    let half = |a: usize, b: usize| {
                        let mut dot = vmull_s16(vget_low_s16(q[a]), vget_low_s16(x[a]));
                        dot = vmlal_high_s16(dot, q[a], x[a]);
                        dot = vmlal_s16(dot, vget_low_s16(q[b]), vget_low_s16(x[b]));
                        vmlal_high_s16(dot, q[b], x[b])
                    };
                    if K && split {
                        sums[t] = vfmaq_f32(sums[t], vcvtq_f32_s32(half(0, 2)), splat(ds[t][0]));
                        sums[t] = vfmaq_f32(sums[t], vcvtq_f32_s32(half(1, 3)), splat(ds[t][1]));
                    } else {
                        let mut dot = vmull_s16(vget_low_s16(q[0]), vget_low_s16(x[0]));
                        dot = vmlal_high_s16(dot, q[0], x[0]);
                        for k in 1..4 {
                            dot = vmlal_s16(dot, vget_low_s16(q[k]), vget_low_s16(x[k]));
                            dot = vmlal_high_s16(dot, q[k], x[k]);
                        }
                        sums[t] = vfmaq_f32(sums[t], vcvtq_f32_s32(dot), splat(ds[t][0]));
                    }
                }
            }
        }
        for (t, offsets) in offsets.iter().enumerate() {
            let mut off = [0.0f32; GROUP];
            vst1q_f32(off.as_mut_ptr(), *offsets);
            for r in 0..GROUP {
                acc[r * 8 + t] = vaddvq_f32(sums[r][t]) + off[r];
            }
        }
    }
}

/// aarch64 NEON on float codes and f32 inputs: simd128's kernel with FMAs.
#[cfg(target_arch = "aarch64")]
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "neon")]
unsafe fn neon_tile_float<const T: usize, const F: FloatCodes>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    use std::arch::aarch64::*;
    let blocks = w.blocks();
    // Safety: every pointer below stays inside its slice, by `float_tile`'s asserts.
    unsafe {
        let mut sums = [[vdupq_n_f32(0.0); T]; GROUP];
        let xp = x.as_ptr();
        for b in 0..blocks {
            let codes = float_block::<F>(w, group, b);
            for k in 0..8 {
                let mut wv = [vdupq_n_f32(0.0); GROUP];
                for (r, wv) in wv.iter_mut().enumerate() {
                    let i = r * BLOCK + 4 * k;
                    *wv = if F == FLOAT {
                        vld1q_f32((codes as *const f32).add(i))
                    } else {
                        let h = vmovl_u16(vld1_u16((codes as *const u16).add(i)));
                        if F == BFLOAT { vreinterpretq_f32_u32(vshlq_n_u32::<16>(h)) } else { neon_f16x4_to_f32(h) }
                    };
                }
                for t in 0..T {
                    let xv = vld1q_f32(xp.add(t * stride + b * BLOCK + 4 * k));
                    for r in 0..GROUP {
                        sums[r][t] = vfmaq_f32(sums[r][t], wv[r], xv);
                    }
                }
            }
        }
        for r in 0..GROUP {
            for t in 0..T {
                acc[r * 8 + t] = vaddvq_f32(sums[r][t]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::gguf::GgmlType;
    use crate::quant::packed::FloatQuant;

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

    /// A `[rows, cols]` matrix of random GGUF `dtype` super-blocks (codes and sub-block scales
    /// random, super-scales of a weight's usual size), repacked.
    fn k_matrix(dtype: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
        let (bytes, d_at, has_min) = match dtype {
            GgmlType::Q2_K => (84, 80, true),
            GgmlType::Q3_K => (110, 108, false),
            GgmlType::Q4_K => (144, 0, true),
            GgmlType::Q5_K => (176, 0, true),
            _ => (210, 208, false),
        };
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / 256 {
            let mut block: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
            let scale = |v: u32| half::f16::from_f32((v % 1000) as f32 * 4e-5 + 1e-3).to_le_bytes();
            block[d_at..d_at + 2].copy_from_slice(&scale(next()));
            if has_min {
                block[d_at + 2..d_at + 4].copy_from_slice(&scale(next()));
            }
            data.extend(block);
        }
        PackedMatrix::from_gguf("t", dtype, &data, rows, cols).expect("whole super-blocks")
    }

    /// The row-tiled words of `p`, and a view of them.
    fn tiled(p: &PackedMatrix) -> Tiled {
        tile_rows(p)
    }

    fn view<'a>(p: &PackedMatrix, words: &'a Tiled) -> QuantRows<'a> {
        QuantRows {
            format: p.format,
            scales: p.scales,
            rows: p.rows,
            cols: p.cols,
            codes: &words.codes,
            params: &words.params,
            supers: &words.supers,
            split_halves: p.split_halves(),
        }
    }

    const SHAPES: [(usize, usize); 7] = [(13, 70), (9, 64), (33, 96), (5, 33), (64, 576), (192, 1536), (6, 32)];

    /// The formats the kernels take: 4-bit, 8-bit, and 4-bit codes widened to 8 bits (fused
    /// matrices of mixed formats), whose blocks keep their offsets.
    const FORMATS: [(QuantFormat, bool); 3] =
        [(QuantFormat::Q4, false), (QuantFormat::Q8, false), (QuantFormat::Q4, true)];

    /// Shapes of K-quant matrices (rows of whole super-blocks), rows ragged against the tiles.
    const K_SHAPES: [(usize, usize); 4] = [(5, 256), (13, 512), (33, 768), (64, 1536)];

    /// The K-quants, and Q4_K widened to 8-bit codes (a fusion with Q6_K).
    const K_FORMATS: [(GgmlType, bool); 6] = [
        (GgmlType::Q2_K, false),
        (GgmlType::Q3_K, false),
        (GgmlType::Q4_K, false),
        (GgmlType::Q5_K, false),
        (GgmlType::Q6_K, false),
        (GgmlType::Q4_K, true),
    ];

    fn inputs(m: usize, cols: usize, i: usize) -> Vec<f32> {
        (0..m * cols).map(|j| ((j * 104_729 + i) % 997) as f32 / 498.0 - 1.0).collect()
    }

    /// Every (format, shape, batch) case: the matrix and inputs, batches 1..8 and a prefill size.
    fn cases() -> impl Iterator<Item = (PackedMatrix, Vec<f32>, usize)> {
        let legacy = FORMATS.into_iter().flat_map(|(format, widened)| {
            SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
                (1..=8).chain([67]).map(move |m| {
                    let p = matrix(format, rows, cols, i as u64);
                    let p = if widened { p.to_q8() } else { p };
                    (p, inputs(m, cols, i), m)
                })
            })
        });
        let k = K_FORMATS.into_iter().flat_map(|(dtype, widened)| {
            K_SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
                (1..=8).chain([67]).map(move |m| {
                    let p = k_matrix(dtype, rows, cols, i as u64 + 11);
                    let p = if widened { p.to_q8() } else { p };
                    (p, inputs(m, cols, i), m)
                })
            })
        });
        // Floats quantized to K-quants: ragged rows, whose last super-block is partial.
        let k_floats = [FloatQuant::Q3_K, FloatQuant::Q4_K, FloatQuant::Q6_K].into_iter().flat_map(|kind| {
            SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
                [1, 3, 8, 67].into_iter().map(move |m| {
                    let data: Vec<f32> =
                        (0..rows * cols).map(|j| ((j * 7919 + i) % 2001) as f32 / 1000.0 - 1.0).collect();
                    (PackedMatrix::quantize_as(kind, &data, rows, cols).unwrap(), inputs(m, cols, i), m)
                })
            })
        });
        // Float codes, ragged rows among them.
        let floats = [QuantFormat::F16, QuantFormat::Bf16, QuantFormat::F32].into_iter().flat_map(|format| {
            SHAPES.into_iter().enumerate().flat_map(move |(i, (rows, cols))| {
                [1, 2, 3, 5, 8, 67]
                    .into_iter()
                    .map(move |m| (float_matrix(format, rows, cols, i), inputs(m, cols, i), m))
            })
        });
        legacy.chain(k).chain(k_floats).chain(floats)
    }

    /// A `[rows, cols]` matrix of float codes (16-bit or f32): weights of the usual size, with
    /// subnormal halves, zeros of both signs and a large value among them.
    pub(crate) fn float_matrix(format: QuantFormat, rows: usize, cols: usize, seed: usize) -> PackedMatrix {
        let value = |j: usize| match (j * 7 + seed) % 23 {
            0 => 3.1e-6,
            1 => -0.0,
            2 => -2.9e-7,
            3 => 1500.0,
            _ => ((j * 7919 + seed) % 2001) as f32 / 1000.0 - 1.0,
        };
        if format == QuantFormat::F32 {
            return PackedMatrix::from_f32(&(0..rows * cols).map(value).collect::<Vec<_>>(), rows, cols);
        }
        let bits: Vec<u16> = (0..rows * cols)
            .map(|j| match format {
                QuantFormat::Bf16 => half::bf16::from_f32(value(j)).to_bits(),
                _ => half::f16::from_f32(value(j)).to_bits(),
            })
            .collect();
        PackedMatrix::from_halves(format, &bits, rows, cols)
    }

    /// `|got - want| <= bound` for element `j` of a case, saying which case it is when not.
    fn assert_within(
        what: impl std::fmt::Debug,
        p: &PackedMatrix,
        m: usize,
        j: usize,
        got: f64,
        want: f64,
        bound: f64,
    ) {
        assert!(
            (got - want).abs() <= bound,
            "{what:?} {:?} {:?} {}x{} m={m} [{j}]: {got} vs {want} (bound {bound})",
            p.format,
            p.scales,
            p.rows,
            p.cols
        );
    }

    fn run(isa: Isa, inputs: Inputs, p: &PackedMatrix, x: &[f32], m: usize) -> Vec<f32> {
        let mut got = vec![0.0; m * p.rows];
        let words = tiled(p);
        qgemm_with(isa, inputs, x, m, &view(p, &words), Epilogue::None, &mut got);
        got
    }

    /// With f32 inputs (float codes on every level), every level this machine has equals the
    /// f64 product of the dequantized weights within 1e-5 of the terms' magnitude (the differences are f32 rounding in
    /// another summation order).
    #[test]
    fn f32_inputs_give_the_dequantized_product() {
        for isa in Isa::available() {
            for (p, x, m) in cases().filter(|(p, ..)| Inputs::for_matrix(isa, p.format) == Inputs::F32) {
                let got = run(isa, Inputs::F32, &p, &x, m);
                let (want, mag) = reference(&x, m, &p);
                for j in 0..m * p.rows {
                    assert_within(isa, &p, m, j, got[j] as f64, want[j], 1e-5 * mag[j] + 1e-30);
                }
            }
        }
    }

    /// With i16 inputs the error is the inputs' rounding, at most half a step (`max / 65534`
    /// of each block) times the block's `Σ |d q|` (the offsets meet exact f32 sums), plus f32
    /// rounding: the bound is computed here from the inputs, and the scalar level (the
    /// reference of that arithmetic) stays inside it.
    #[test]
    fn i16_inputs_stay_within_their_rounding_of_the_product() {
        for (p, x, m) in cases().filter(|(p, ..)| !p.format.is_float()) {
            let got = run(Isa::Scalar, Inputs::I16, &p, &x, m);
            let (want, mag) = reference(&x, m, &p);
            let nb = p.blocks_per_row();
            let w: Vec<f32> = (0..p.rows * p.cols)
                .map(|i| {
                    let (r, c) = (i / p.cols, i % p.cols);
                    p.get(r, c) - p.half_params(r * nb + c / BLOCK, c % BLOCK).1
                })
                .collect();
            for t in 0..m {
                for r in 0..p.rows {
                    let bound: f64 = (0..p.cols)
                        .step_by(BLOCK)
                        .map(|c0| {
                            let c1 = (c0 + BLOCK).min(p.cols);
                            let max = x[t * p.cols + c0..t * p.cols + c1].iter().fold(0.0f32, |a, v| a.max(v.abs()));
                            let wsum: f64 = w[r * p.cols + c0..r * p.cols + c1].iter().map(|v| v.abs() as f64).sum();
                            max as f64 / 65534.0 * wsum
                        })
                        .sum();
                    let j = t * p.rows + r;
                    assert_within(Inputs::I16, &p, m, j, got[j] as f64, want[j], bound * 1.001 + 1e-5 * mag[j]);
                }
            }
        }
    }

    /// `Σ |x| (|d q| + |m|)` per output: the size of the terms that i16 arithmetic sums (its
    /// code products and offsets apart), which bounds its rounding.
    fn term_magnitude(x: &[f32], m: usize, p: &PackedMatrix) -> Vec<f64> {
        let nb = p.blocks_per_row();
        let mut mag = vec![0.0; m * p.rows];
        for r in 0..p.rows {
            for c in 0..p.cols {
                let offset = p.half_params(r * nb + c / BLOCK, c % BLOCK).1;
                let term = (p.get(r, c) - offset).abs() as f64 + offset.abs() as f64;
                for t in 0..m {
                    mag[t * p.rows + r] += term * x[t * p.cols + c].abs() as f64;
                }
            }
        }
        mag
    }

    /// Every level this machine has equals the scalar reference of its own arithmetic within
    /// 1e-5 of the terms' magnitude (the browser tests do the same for simd128).
    #[test]
    fn every_level_equals_the_scalar_reference_of_its_arithmetic() {
        for isa in Isa::available() {
            for (p, x, m) in cases() {
                let inputs = Inputs::for_matrix(isa, p.format);
                let (got, want) = (run(isa, inputs, &p, &x, m), run(Isa::Scalar, inputs, &p, &x, m));
                let mag = term_magnitude(&x, m, &p);
                for j in 0..m * p.rows {
                    assert_within(isa, &p, m, j, got[j] as f64, want[j] as f64, 1e-5 * mag[j] + 1e-30);
                }
            }
        }
    }

    /// A token's outputs do not depend on the tile it rides in: each of `m` tokens run together
    /// gets the bits it gets alone, at every level, so that a pass checking a speculative
    /// draft gives each position what a one-token step would.
    #[test]
    fn a_token_gets_the_same_bits_in_any_tile() {
        for isa in Isa::available() {
            for (p, x, m) in cases().filter(|c| c.2 > 1) {
                let inputs = Inputs::for_matrix(isa, p.format);
                let together = run(isa, inputs, &p, &x, m);
                for (t, token) in x.chunks_exact(p.cols).enumerate() {
                    let alone = run(isa, inputs, &p, token, 1);
                    let row = &together[t * p.rows..(t + 1) * p.rows];
                    assert!(
                        row.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa:?} {:?} {}x{}: token {t} of {m} differs from its one-token pass",
                        p.format,
                        p.rows,
                        p.cols
                    );
                }
            }
        }
    }

    /// A NaN input poisons its rows under either arithmetic, as it would in f32.
    #[test]
    fn a_nan_input_poisons_its_token() {
        let p = matrix(QuantFormat::Q4, 8, 64, 3);
        let mut x = vec![0.5f32; 2 * 64];
        x[70] = f32::NAN;
        for inputs in [Inputs::F32, Inputs::I16] {
            let got = run(Isa::Scalar, inputs, &p, &x, 2);
            assert!(
                got[..8].iter().all(|v| v.is_finite()) && got[8..].iter().all(|v| v.is_nan()),
                "{inputs:?}: {got:?}"
            );
        }
    }

    /// Every level agrees with the scalar level of its arithmetic on the same matrix, and the
    /// epilogues do what they say: `residual + y`, and `silu(gate) * up` and `gelu(gate) * up`
    /// (GELU's tanh form, as written in its paper, in f64) over row pairs.
    #[test]
    fn epilogues_apply_to_the_product() {
        let (rows, cols, m) = (18, 96, 5);
        let p = matrix(QuantFormat::Q4, rows, cols, 7);
        let x: Vec<f32> = (0..m * cols).map(|j| (j as f32 * 0.37).sin()).collect();
        let residual: Vec<f32> = (0..m * rows).map(|j| j as f32 * 0.01).collect();
        let words = tiled(&p);
        let w = view(&p, &words);
        for isa in Isa::available() {
            let mut plain = vec![0.0; m * rows];
            qgemm_with(Isa::Scalar, Inputs::of(isa), &x, m, &w, Epilogue::None, &mut plain);
            let mut with_res = vec![0.0; m * rows];
            qgemm(isa, &x, m, &w, Epilogue::Residual(&residual), &mut with_res);
            for j in 0..m * rows {
                assert!((with_res[j] - (plain[j] + residual[j])).abs() < 1e-4, "{isa:?} residual [{j}]");
            }
            let silu = |g: f64| g / (1.0 + (-g).exp());
            let gelu =
                |g: f64| 0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g.powi(3))).tanh());
            for (act, want) in [(Activation::Silu, &silu as &dyn Fn(f64) -> f64), (Activation::GeluTanh, &gelu)] {
                let mut glu = vec![0.0; m * rows / 2];
                qgemm(isa, &x, m, &w, Epilogue::Glu(act), &mut glu);
                for t in 0..m {
                    for pair in 0..rows / 2 {
                        let (g, u) = (plain[t * rows + 2 * pair], plain[t * rows + 2 * pair + 1]);
                        let (got, want) = (glu[t * rows / 2 + pair], (want(g as f64) * u as f64) as f32);
                        assert!((got - want).abs() < 1e-4 * (1.0 + got.abs()), "{isa:?} {act:?} [{t}, {pair}]");
                    }
                }
            }
        }
    }
}

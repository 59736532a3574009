//! The scalar reference of every arithmetic the levels use: f32 inputs, i16 inputs and float
//! codes. Every SIMD kernel is tested against these (see `tests.rs`); on a CPU with none of the
//! levels they are the kernels.

use super::*;

/// The reference for float codes (`F`: [`FloatCodes`]): each weight widened to f32, the
/// products summed in eight lanes as [`scalar_tile`] sums them.
pub(super) fn scalar_tile_float<const T: usize, const F: FloatCodes>(
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
pub(super) fn params(p: u32) -> (f32, f32) {
    (half::f16::from_bits(p as u16).to_f32(), half::f16::from_bits((p >> 16) as u16).to_f32())
}

/// Code `e` (0..32) of a block's words in a format that keeps a row's block contiguous (all
/// but 5- and 6-bit codes: [`QuantRows::code`]): GGUF order, low nibbles are elements 0..16.
#[inline(always)]
pub(super) fn code<const Q8: bool>(format: QuantFormat, words: &[u32], e: usize) -> i32 {
    if Q8 { (words[e / 4] >> (8 * (e % 4))) as u8 as i8 as i32 } else { format.code(words, e) }
}

/// The reference arithmetic in plain Rust, written so that it vectorizes (eight lanes per
/// accumulator); every SIMD level is tested against it.
pub(super) fn scalar_tile<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
    let blocks = w.blocks();
    scalar_tile_of::<T>(blocks, x, stride, acc, |b, r, wb| {
        let dm = w.half_params::<K>(group, b, r);
        for (e, v) in wb.iter_mut().enumerate() {
            let h = 2 * (e / 16);
            *v = dm[h] * w.code::<Q8>(group, b, r, e) as f32 + dm[h + 1];
        }
    });
}

/// The scalar tile loop: `weights(b, r, ..)` writes block `b` of the group's row `r` as 32
/// floats, which multiply each token's inputs in eight lanes.
#[inline(always)]
pub(super) fn scalar_tile_of<const T: usize>(
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
pub(super) fn scalar_tile_i16<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    scalar_tile_codes::<i16, T, Q8, K>(w, group, x.i16_for(w, group, T, stride), stride, acc)
}

/// The reference of [`Inputs::I8`]: the same arithmetic on 8-bit codes.
pub(super) fn scalar_tile_i8<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    scalar_tile_codes::<i8, T, Q8, K>(w, group, x.i8_for(w, group, T, stride), stride, acc)
}

/// Per block and row, the exact integer `Σ q x̂` of each half (or of the whole block when its
/// halves share scales) times `d s`, plus `m Σ x`, summed over blocks in f32.
fn scalar_tile_codes<C: Code, const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: Quantized<C>,
    stride: usize,
    acc: &mut [f32; 32],
) {
    let blocks = w.blocks();
    let mut sums = [[0.0f32; T]; GROUP];
    for b in 0..blocks {
        for (r, sums) in sums.iter_mut().enumerate() {
            let [d, m, d_hi, m_hi] = w.half_params::<K>(group, b, r);
            let q: [i32; BLOCK] = std::array::from_fn(|e| w.code::<Q8>(group, b, r, e));
            for (t, s) in sums.iter_mut().enumerate() {
                let xb = &x.codes[t * stride + b * BLOCK..][..BLOCK];
                let half = |h: usize| -> i32 { (16 * h..16 * h + 16).map(|e| q[e] * xb[C::position(e)].into()).sum() };
                let s_x = x.scale[t * blocks + b];
                if K {
                    let hs = &x.half_sum[2 * (t * blocks + b)..];
                    *s += half(0) as f32 * (d * s_x) + half(1) as f32 * (d_hi * s_x) + m * hs[0] + m_hi * hs[1];
                } else {
                    *s += (half(0) + half(1)) as f32 * (d * s_x) + m * x.sum[t * blocks + b];
                }
            }
        }
    }
    for r in 0..GROUP {
        acc[r * 8..r * 8 + T].copy_from_slice(&sums[r]);
    }
}

//! The aarch64 NEON kernels of the exact mode: i16 inputs against integer codes with `smlal`,
//! float codes widened in registers.
//!
//! # Safety
//!
//! Every `unsafe fn` here is `#[target_feature(enable = "neon")]` and may only run where the
//! CPU has NEON: the parent's dispatch calls them only for [`Isa::Neon`], which
//! [`Isa::available`] reports only when detected. Their reads are bounded by the asserts of
//! `qgemm_with` and `float_tile`.

use std::arch::aarch64::*;

use super::*;

/// Four f16 values, one in the low half of each lane, as f32: [`f16x4_to_f32`]'s arithmetic
/// (the f16 vector types are not stable Rust).
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn neon_f16x4_to_f32(h: uint32x4_t) -> float32x4_t {
    let magnitude = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
    let finite = vmulq_f32(vreinterpretq_f32_u32(magnitude), vdupq_n_f32(f32::from_bits((127 + 112) << 23)));
    let special = vceqq_u32(vandq_u32(h, vdupq_n_u32(0x7c00)), vdupq_n_u32(0x7c00));
    let value = vbslq_u32(special, vorrq_u32(magnitude, vdupq_n_u32(0x7f80_0000)), vreinterpretq_u32_f32(finite));
    vreinterpretq_f32_u32(vorrq_u32(value, vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)))))
}

/// Block `b`'s `(d, m, d_hi, m_hi)` of the group's four rows, one row a lane: each half's scale
/// and offset (equal halves for a legacy block), as [`QuantRows::half_params`] forms them.
#[target_feature(enable = "neon")]
#[inline]
pub(super) unsafe fn neon_half_params<const K: bool>(
    w: &QuantRows,
    group: usize,
    b: usize,
) -> (float32x4_t, float32x4_t, float32x4_t, float32x4_t) {
    // Safety: the callers checked that the group's parameter and super words are inside
    // their slices.
    unsafe {
        let words = vld1q_u32(w.params.as_ptr().add((group * w.blocks() + b) * GROUP));
        if K {
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
        }
    }
}

/// Token `t`'s share of block `b` in an integer tile (`i = t * blocks + b`, `dm` from
/// [`neon_half_params`]): `[d s, d_hi s]`, one row a lane, and the block's offsets `m Σ x` (per
/// half when `split`) added to `offsets`.
#[target_feature(enable = "neon")]
#[inline]
pub(super) unsafe fn neon_token_scales<C>(
    x: &Quantized<C>,
    i: usize,
    (d, m, d_hi, m_hi): (float32x4_t, float32x4_t, float32x4_t, float32x4_t),
    split: bool,
    offsets: &mut float32x4_t,
) -> [float32x4_t; 2] {
    // Safety: the callers' `i16_for` / `i8_for` checked the scales and sums of the tile's
    // tokens and blocks (`i` is one of them).
    unsafe {
        *offsets = if split {
            let hs = x.half_sum.as_ptr().add(2 * i);
            vfmaq_n_f32(vfmaq_n_f32(*offsets, m, *hs), m_hi, *hs.add(1))
        } else {
            vfmaq_n_f32(*offsets, m, *x.sum.get_unchecked(i))
        };
        let s = *x.scale.get_unchecked(i);
        [vmulq_n_f32(d, s), vmulq_n_f32(d_hi, s)]
    }
}

/// `acc + v · lane r of s`, `r` a row of the group (0..4): the FMA by a row's `d s`, unrolled
/// by the callers' loops over rows.
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn fma_lane(acc: float32x4_t, v: float32x4_t, s: float32x4_t, r: usize) -> float32x4_t {
    match r {
        0 => vfmaq_laneq_f32::<0>(acc, v, s),
        1 => vfmaq_laneq_f32::<1>(acc, v, s),
        2 => vfmaq_laneq_f32::<2>(acc, v, s),
        _ => vfmaq_laneq_f32::<3>(acc, v, s),
    }
}

/// Writes an integer tile's results: each row's and token's lanes added up, plus its offset.
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn neon_store_tile<const T: usize>(
    sums: &[[float32x4_t; T]; GROUP],
    offsets: &[float32x4_t; T],
    acc: &mut [f32; 32],
) {
    for (t, offsets) in offsets.iter().enumerate() {
        let mut off = [0.0f32; GROUP];
        // Safety: `off` holds four floats.
        unsafe { vst1q_f32(off.as_mut_ptr(), *offsets) };
        for r in 0..GROUP {
            acc[r * 8 + t] = vaddvq_f32(sums[r][t]) + off[r];
        }
    }
}

/// aarch64 NEON on [`Inputs::I16`]: simd128's kernel, with widening multiply-adds (`smlal`,
/// four i16 products into i32 lanes) for the dot products and FMAs for the scaling. (The
/// dotprod extension multiplies 8-bit inputs only: the q8 mode's, in `neon_q8.rs`.)
#[target_feature(enable = "neon")]
pub(super) unsafe fn neon_tile_i16<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    let x = x.i16_for(w, group, T, stride);
    let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
    // A K-quant block with equal halves takes one dot product and the block's sum, as a
    // legacy one.
    let split = K && w.split_halves;
    // Safety: every pointer below stays inside its slice, by `i16_for`'s asserts.
    unsafe {
        let mut sums = [[vdupq_n_f32(0.0); T]; GROUP];
        let mut offsets = [vdupq_n_f32(0.0); T];
        let xp = x.codes.as_ptr();
        for b in 0..blocks {
            let first = (group * blocks + b) * GROUP;
            let dm = neon_half_params::<K>(w, group, b);
            let mut xv = [[vdupq_n_s16(0); 4]; T];
            let mut ds = [[vdupq_n_f32(0.0); 2]; T];
            for t in 0..T {
                for (k, v) in xv[t].iter_mut().enumerate() {
                    *v = vld1q_s16(xp.add(t * stride + b * BLOCK + 8 * k));
                }
                ds[t] = neon_token_scales(&x, t * blocks + b, dm, split, &mut offsets[t]);
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
                    // Vectors 0 and 2 hold the block's first half (`i16_position`).
                    let half = |a: usize, b: usize| {
                        let mut dot = vmull_s16(vget_low_s16(q[a]), vget_low_s16(x[a]));
                        dot = vmlal_high_s16(dot, q[a], x[a]);
                        dot = vmlal_s16(dot, vget_low_s16(q[b]), vget_low_s16(x[b]));
                        vmlal_high_s16(dot, q[b], x[b])
                    };
                    if split {
                        sums[t] = fma_lane(sums[t], vcvtq_f32_s32(half(0, 2)), ds[t][0], r);
                        sums[t] = fma_lane(sums[t], vcvtq_f32_s32(half(1, 3)), ds[t][1], r);
                    } else {
                        let mut dot = vmull_s16(vget_low_s16(q[0]), vget_low_s16(x[0]));
                        dot = vmlal_high_s16(dot, q[0], x[0]);
                        for k in 1..4 {
                            dot = vmlal_s16(dot, vget_low_s16(q[k]), vget_low_s16(x[k]));
                            dot = vmlal_high_s16(dot, q[k], x[k]);
                        }
                        sums[t] = fma_lane(sums[t], vcvtq_f32_s32(dot), ds[t][0], r);
                    }
                }
            }
        }
        neon_store_tile(&sums, &offsets, acc);
    }
}

/// aarch64 NEON on float codes and f32 inputs: simd128's kernel with FMAs.
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "neon")]
pub(super) unsafe fn neon_tile_float<const T: usize, const F: FloatCodes>(
    w: &QuantRows,
    group: usize,
    x: &[f32],
    stride: usize,
    acc: &mut [f32; 32],
) {
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

//! The wasm simd128 kernels: i16 inputs against integer codes with `i32x4.dot_i16x8_s`, float
//! codes widened with integer shifts (wasm has no F16C and no FMA).
//!
//! # Safety
//!
//! Nothing here is `unsafe` to call: simd128 is a compile-time feature of the whole module
//! (this file is built only with `target_feature = "simd128"`), and every load goes through
//! bounds-checked slices or pointers formed within the asserts of `qgemm_with`.

use super::*;

/// Four f16 values, one in the low half of each lane, as f32: exactly `half`'s conversion
/// for every finite value (subnormals included: the magnitude's bits shifted into place read as
/// an f32 `2^-112` times the value), infinities and NaNs set apart. wasm has no F16C, and
/// `half`'s branchy scalar conversion of every block's parameters cost more than the block's
/// products.
#[inline(always)]
pub(super) fn f16x4_to_f32(h: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
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
pub(super) fn simd128_tile_i16<const T: usize, const Q8: bool, const K: bool>(
    w: &QuantRows,
    group: usize,
    x: TileInputs,
    stride: usize,
    acc: &mut [f32; 32],
) {
    use core::arch::wasm32::*;
    let Quantized { codes: xq, scale, sum, half_sum } = x.i16_for(w, group, T, stride);
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
            // Every cache line of the group's block (two for 8-bit codes), and its parameters,
            // in decode: a prefill tile reads the rows again from the cache for each tile of
            // tokens, and its products hide the memory's latency.
            if T == 1 {
                for line in (0..GROUP * wpb).step_by(LINE_WORDS) {
                    touch(w.codes, first * wpb + line);
                }
                touch(w.params, first);
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

/// How far ahead of the words in use [`touch`] reads, in 32-bit words.
const TOUCH_WORDS: usize = PREFETCH_BYTES / 4;

/// 32-bit words in a cache line.
const LINE_WORDS: usize = 64 / 4;

/// Reads the word `TOUCH_WORDS` past `at` (clamped to the matrix) and drops it: wasm
/// has no prefetch instruction, but a load whose value nobody waits for is one, to the
/// hardware. The hardware prefetchers stop at each 4 KiB page; this keeps the next page's
/// lines coming while the kernel works on this one.
#[inline(always)]
fn touch(words: &[u32], at: usize) {
    let i = (at + TOUCH_WORDS).min(words.len() - 1);
    // Safety: `i` is within `words` (a kernel's matrix is never empty). Volatile, so that the
    // compiler keeps a load whose value is unused.
    unsafe { core::ptr::read_volatile(words.as_ptr().add(i)) };
}

/// Lane `r` of `v`.
#[inline(always)]
pub(super) fn lane(v: core::arch::wasm32::v128, r: usize) -> f32 {
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
pub(super) fn simd128_tile_float<const T: usize, const F: FloatCodes>(
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

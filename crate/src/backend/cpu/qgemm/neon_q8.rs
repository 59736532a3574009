//! The aarch64 kernels of the q8 mode ([`Inputs::I8`]): 8-bit inputs against the packed codes
//! with integer dot products, as llama.cpp's `ggml-cpu` multiplies its Q8_0 activations on Arm.
//!
//! NEON multiplies signed bytes by signed bytes, so neither the codes nor the inputs need the
//! sign games of x86's `vpmaddubsw`: 4-bit codes (0..15) are unpacked to bytes and 8-bit codes
//! (5- and 6-bit ones widened at upload among them) are loaded as they are. With dotprod,
//! `sdot` sums four byte products into each i32 lane; without it, `smull` / `smlal2` sum two
//! into an i16 lane (at most 2 · 128 · 127, never past i16) and `sadalp` adds pairs of those
//! into i32 lanes. Either way a block's integer sums are
//! exact, `d s` scales them in f32 and `m Σ x` adds the offsets from the inputs' code sums, as
//! [`scalar_tile_i8`] does, in another order of f32 additions.
//!
//! Lanes: a 4-bit block of a group is 64 bytes, row `r`'s 16 at `16 r` (low nibbles elements
//! 0..16, high nibbles 16..32); an 8-bit block is 128 bytes, row `r`'s 32 at `32 r` in element
//! order. Either way a row's block is two vectors of 16 bytes, its halves, against the token's
//! two vectors of inputs.
//!
//! # Safety
//!
//! Every `unsafe fn` here is compiled for the features its `#[target_feature]` names and is
//! called only for the [`Isa`] level that [`Isa::available`] reports after detecting them
//! (`neon` for [`Isa::Neon`], with `dotprod` for [`Isa::NeonDot`]); reads are bounded by
//! `qgemm_with`'s asserts and [`Quantized::checked`].

use std::arch::aarch64::*;

use super::*;

/// `acc + Σ₄ a·b` per i32 lane, without dotprod: the byte products of each half summed in pairs
/// to i16, then in pairs into the i32 lanes (which lane holds which products differs from
/// `sdot`'s, and nothing reads a lane alone).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot_smull(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let pairs = vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b);
    vpadalq_s16(acc, pairs)
}

/// `acc + Σ₄ a·b` per i32 lane in one instruction. `vdotq_s32` is not stable Rust (1.95), so
/// the instruction is written out; the function's `dotprod` feature lets the assembler take it.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn dot_sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // Safety: reads and writes registers only; the caller runs only where dotprod is.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

macro_rules! neon_tile_i8 {
    ($name:ident, $features:literal, $dot:ident) => {
        /// NEON on [`Inputs::I8`] (see the module's lanes): per block, row and token, two dot
        /// instructions per half of the row's codes, the sums converted and scaled by `d s` into
        /// f32 lanes; the offsets `m Σ x` gather in one vector of the four rows per token.
        #[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const T: usize, const Q8: bool, const K: bool>(
            w: &QuantRows,
            group: usize,
            x: TileInputs,
            stride: usize,
            acc: &mut [f32; 32],
        ) {
            let x = x.i8_for(w, group, T, stride);
            let (blocks, wpb) = (w.blocks(), w.format.words_per_block());
            let split = K && w.split_halves;
            // Safety: see the module; every pointer is inside its slice by the checks above.
            unsafe {
                let zero = vdupq_n_s32(0);
                let nibble = vdupq_n_u8(15);
                let mut sums = [[vdupq_n_f32(0.0); T]; GROUP];
                let mut offsets = [vdupq_n_f32(0.0); T];
                let xp = x.codes.as_ptr();
                for b in 0..blocks {
                    let dm = neon_half_params::<K>(w, group, b);
                    let mut xv = [[vdupq_n_s8(0); 2]; T];
                    let mut ds = [[vdupq_n_f32(0.0); 2]; T];
                    for t in 0..T {
                        let at = xp.add(t * stride + b * BLOCK);
                        xv[t] = [vld1q_s8(at), vld1q_s8(at.add(16))];
                        ds[t] = neon_token_scales(&x, t * blocks + b, dm, split, &mut offsets[t]);
                    }
                    let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
                    for r in 0..GROUP {
                        // The row's halves: elements 0..16 and 16..32.
                        let q = if Q8 {
                            let at = codes.add(32 * r) as *const i8;
                            [vld1q_s8(at), vld1q_s8(at.add(16))]
                        } else {
                            let c = vld1q_u8(codes.add(16 * r));
                            [vreinterpretq_s8_u8(vandq_u8(c, nibble)), vreinterpretq_s8_u8(vshrq_n_u8::<4>(c))]
                        };
                        for t in 0..T {
                            if split {
                                let (lo, hi) = ($dot(zero, q[0], xv[t][0]), $dot(zero, q[1], xv[t][1]));
                                sums[r][t] = fma_lane(sums[r][t], vcvtq_f32_s32(lo), ds[t][0], r);
                                sums[r][t] = fma_lane(sums[r][t], vcvtq_f32_s32(hi), ds[t][1], r);
                            } else {
                                let dot = $dot($dot(zero, q[0], xv[t][0]), q[1], xv[t][1]);
                                sums[r][t] = fma_lane(sums[r][t], vcvtq_f32_s32(dot), ds[t][0], r);
                            }
                        }
                    }
                }
                neon_store_tile(&sums, &offsets, acc);
            }
        }
    };
}

neon_tile_i8!(neon_tile_i8, "neon", dot_smull);
neon_tile_i8!(neon_tile_i8_dot, "neon,dotprod", dot_sdot);

//! The x86-64 kernels of the q8 mode ([`Inputs::I8`]): 8-bit inputs against the packed codes
//! with integer dot products, four products summed into each i32 lane by one instruction
//! (`vpdpbusd` with VNNI; `vpmaddubsw` then `vpmaddwd` without), as llama.cpp's `ggml-cpu`
//! multiplies its Q8_0 activations.
//!
//! The dot instructions multiply unsigned bytes by signed ones. 4-bit codes are unsigned
//! (0..15) and meet the signed inputs as they are; 8-bit codes are signed, so their magnitudes
//! meet inputs that take the codes' signs. Every block's integer sums are exact (at most
//! 4 · 128 · 127 a lane); `d s` scales them in f32 and `m Σ x` adds the offsets from the
//! inputs' exact sums, as [`scalar_tile_i8`] does, in another order of f32 additions.
//!
//! Lanes: a 4-bit block of a group is 64 bytes, row `r`'s 16 code bytes in 128-bit lane `r`
//! (low nibbles elements 0..16, high nibbles 16..32), so each row's sums land in four i32 lanes
//! against inputs broadcast to every 128-bit lane; an 8-bit block is 128 bytes, row `r`'s 32 in
//! a 256-bit half, its first four i32 lanes the block's first half.
//!
//! # Safety
//!
//! As in `x86.rs`: each `unsafe fn` is compiled for the features its `#[target_feature]` names
//! and is called only for the [`Isa`] level that [`Isa::available`] reports after detecting
//! them; reads are bounded by `qgemm_with`'s asserts and [`Quantized::checked`].

use std::arch::x86_64::*;

use super::*;

/// Adds block `b`'s offsets to each token's: `m Σ x` for the four rows (`m` the offsets of
/// the rows' first and second halves, whose sums are taken apart when `split`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn add_offsets<const T: usize>(
    offsets: &mut [__m128; T],
    (m_lo, m_hi): (__m128, __m128),
    x: &Quantized<i8>,
    b: usize,
    blocks: usize,
    split: bool,
) {
    // Safety: `i8_for` checked the sums of T tokens' `blocks` blocks (`b` is one of them).
    unsafe {
        for (t, offsets) in offsets.iter_mut().enumerate() {
            let i = t * blocks + b;
            *offsets = if split {
                let hs = x.half_sum.as_ptr().add(2 * i);
                let lo = _mm_fmadd_ps(m_lo, _mm_set1_ps(*hs), *offsets);
                _mm_fmadd_ps(m_hi, _mm_set1_ps(*hs.add(1)), lo)
            } else {
                _mm_fmadd_ps(m_lo, _mm_set1_ps(*x.sum.get_unchecked(i)), *offsets)
            };
        }
    }
}

/// Writes a token's four row results into the tile's `acc[row * 8 + t]`.
#[target_feature(enable = "sse")]
#[inline]
unsafe fn store_rows(acc: &mut [f32; 32], t: usize, rows: __m128) {
    let mut out = [0.0f32; GROUP];
    // Safety: `out` holds four floats.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), rows) };
    for (r, v) in out.into_iter().enumerate() {
        acc[r * 8 + t] = v;
    }
}

/// `acc + Σ₄ u·s` per i32 lane, without VNNI: the byte products summed in pairs to i16 (at most
/// 2 · 128 · 127, so never saturated), then in pairs to i32.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn dot512_bw(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)))
}

/// `acc + Σ₄ u·s` per i32 lane in one instruction.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn dot512_vnni(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(acc, u, s)
}

/// The group's `[d_lo, m_lo, d_hi, m_hi]` per row of block `b` (four lanes a row), as
/// [`QuantRows::half_params`] forms them; `supers` holds the super pairs spread as
/// `[d, dmin, d, dmin]` per row, converted again at each super-block.
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
unsafe fn avx512_half_params<const K: bool>(w: &QuantRows, group: usize, b: usize, supers: &mut __m512) -> __m512 {
    // Safety: the group's parameter and super words lie inside their slices (the callers'
    // checks).
    unsafe {
        let spread = _mm512_setr_epi32(0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7);
        let words = _mm_loadu_si128(w.params.as_ptr().add((group * w.blocks() + b) * GROUP) as *const __m128i);
        if K {
            if b.is_multiple_of(SUPER) {
                let sp = (group * w.supers_per_row() + b / SUPER) * GROUP;
                let pairs = _mm256_cvtph_ps(_mm_loadu_si128(w.supers.as_ptr().add(sp) as *const __m128i));
                *supers = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(pairs));
            }
            _mm512_mul_ps(*supers, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(words)))
        } else {
            _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(_mm256_cvtph_ps(words)))
        }
    }
}

/// The four rows' sums of a token's two vectors of lanes: a 4-bit row's four lanes in each
/// vector (its 128-bit lane), an 8-bit row's eight lanes (a 256-bit half).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_row_sums<const Q8: bool>(v: [__m512; 2]) -> __m128 {
    // Within each 128-bit lane: every lane gets the lane's total.
    let lane_totals = |v: __m512| {
        let v = _mm512_add_ps(v, _mm512_permute_ps(v, 0b10_11_00_01));
        _mm512_add_ps(v, _mm512_permute_ps(v, 0b01_00_11_10))
    };
    if Q8 {
        // Rows 0, 1 in v[0]'s halves, 2, 3 in v[1]'s: add each half's two 128-bit lanes.
        let pairs = v.map(|v| lane_totals(_mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0b10_11_00_01))));
        let at = _mm512_setr_epi32(0, 8, 16, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castps512_ps128(_mm512_permutex2var_ps(pairs[0], at, pairs[1]))
    } else {
        let v = lane_totals(_mm512_add_ps(v[0], v[1]));
        _mm512_castps512_ps128(_mm512_permutexvar_ps(
            _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
            v,
        ))
    }
}

macro_rules! avx512_tile_i8 {
    ($name:ident, $features:literal, $dot:ident) => {
        /// AVX-512 on [`Inputs::I8`] (see the module's lanes): per block and token, one or two
        /// dot instructions per vector of codes, the sums converted and scaled by `d s` into f32
        /// lanes; the offsets `m Σ x` gather in one vector of the four rows.
        #[allow(clippy::needless_range_loop)] // `[token][vector]` tile coordinates
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
                let zero = _mm512_setzero_si512();
                // Lane i's scale among a block's `[d_lo, m_lo, d_hi, m_hi]` per row: 4-bit
                // rows by 128-bit lane (low and high halves), 8-bit rows by 256-bit half.
                let lo4 = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
                let hi4 = _mm512_setr_epi32(2, 2, 2, 2, 6, 6, 6, 6, 10, 10, 10, 10, 14, 14, 14, 14);
                let rows01 = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
                let rows23 = _mm512_setr_epi32(8, 8, 8, 8, 10, 10, 10, 10, 12, 12, 12, 12, 14, 14, 14, 14);
                let offsets_at = _mm512_setr_epi32(1, 5, 9, 13, 3, 7, 11, 15, 0, 0, 0, 0, 0, 0, 0, 0);
                let mut sums = [[_mm512_setzero_ps(); 2]; T];
                let mut offsets = [_mm_setzero_ps(); T];
                let mut supers = _mm512_setzero_ps();
                let xp = x.codes.as_ptr() as *const u8;
                for b in 0..blocks {
                    let dm = avx512_half_params::<K>(w, group, b, &mut supers);
                    let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
                    prefetch(codes);
                    if Q8 {
                        let c = [_mm512_loadu_si512(codes as *const _), _mm512_loadu_si512(codes.add(64) as *const _)];
                        let magnitude = [_mm512_abs_epi8(c[0]), _mm512_abs_epi8(c[1])];
                        let negative = [_mm512_movepi8_mask(c[0]), _mm512_movepi8_mask(c[1])];
                        // Codes that are all non-negative (Q5_0, Q5_1, widened 4-bit codes)
                        // leave the inputs' signs alone.
                        let signs = (negative[0] | negative[1]) != 0;
                        let d = [_mm512_permutexvar_ps(rows01, dm), _mm512_permutexvar_ps(rows23, dm)];
                        for t in 0..T {
                            let xt =
                                _mm512_broadcast_i64x4(_mm256_loadu_si256(xp.add(t * stride + b * BLOCK) as *const _));
                            let s = _mm512_set1_ps(*x.scale.get_unchecked(t * blocks + b));
                            for v in 0..2 {
                                let signed = if signs { _mm512_mask_sub_epi8(xt, negative[v], zero, xt) } else { xt };
                                let dot = $dot(zero, magnitude[v], signed);
                                sums[t][v] =
                                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d[v], s), sums[t][v]);
                            }
                        }
                    } else {
                        let (lo, hi) = avx512_nibbles(w.format, codes);
                        let d_lo = _mm512_permutexvar_ps(lo4, dm);
                        let d_hi = _mm512_permutexvar_ps(hi4, dm);
                        for t in 0..T {
                            let at = xp.add(t * stride + b * BLOCK);
                            let x_lo = _mm512_broadcast_i32x4(_mm_loadu_si128(at as *const _));
                            let x_hi = _mm512_broadcast_i32x4(_mm_loadu_si128(at.add(16) as *const _));
                            let s = _mm512_set1_ps(*x.scale.get_unchecked(t * blocks + b));
                            if split {
                                let (l, h) = ($dot(zero, lo, x_lo), $dot(zero, hi, x_hi));
                                sums[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l), _mm512_mul_ps(d_lo, s), sums[t][0]);
                                sums[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(h), _mm512_mul_ps(d_hi, s), sums[t][1]);
                            } else {
                                let dot = $dot($dot(zero, lo, x_lo), hi, x_hi);
                                sums[t][0] =
                                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d_lo, s), sums[t][0]);
                            }
                        }
                    }
                    let m = _mm512_permutexvar_ps(offsets_at, dm);
                    let m = (_mm512_castps512_ps128(m), _mm512_extractf32x4_ps(m, 1));
                    add_offsets(&mut offsets, m, &x, b, blocks, split);
                }
                for t in 0..T {
                    store_rows(acc, t, _mm_add_ps(avx512_row_sums::<Q8>(sums[t]), offsets[t]));
                }
            }
        }
    };
}

avx512_tile_i8!(avx512_tile_i8_bw, "avx512f,avx512bw,avx2,fma,f16c", dot512_bw);
avx512_tile_i8!(avx512_tile_i8_vnni, "avx512f,avx512bw,avx512vnni,avx2,fma,f16c", dot512_vnni);

/// `acc + Σ₄ u·s` per i32 lane with AVX2 (`vpmaddubsw`, `vpmaddwd`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot256(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}

/// AVX2 on [`Inputs::I8`]: the AVX-512 kernel's arithmetic in 256-bit vectors, a 4-bit block
/// as two vectors of two rows, an 8-bit one as four of one row (magnitudes and signs with
/// `vpsignb`).
#[allow(clippy::needless_range_loop)] // `[token][vector]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_tile_i8<const T: usize, const Q8: bool, const K: bool>(
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
        let zero = _mm256_setzero_si256();
        let nibble = _mm256_set1_epi8(15);
        let lo4 = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
        let hi4 = _mm256_setr_epi32(2, 2, 2, 2, 6, 6, 6, 6);
        let row_at = [_mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2), _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)];
        let offsets_at = _mm256_setr_epi32(1, 5, 3, 7, 0, 0, 0, 0);
        let mut sums = [[_mm256_setzero_ps(); 4]; T];
        let mut offsets = [_mm_setzero_ps(); T];
        let mut supers = [_mm256_setzero_ps(); 2];
        let xp = x.codes.as_ptr() as *const u8;
        for b in 0..blocks {
            // `[d_lo, m_lo, d_hi, m_hi]` of rows 0 and 1, then of rows 2 and 3.
            let dm = if K {
                let h = group_half_params(w, group, b, {
                    if b.is_multiple_of(SUPER) {
                        supers = group_supers(w, group, b);
                    }
                    &supers
                });
                [_mm256_loadu_ps(h.as_ptr()), _mm256_loadu_ps(h.as_ptr().add(8))]
            } else {
                let pairs = _mm256_loadu_ps(group_params(w, group, b).as_ptr());
                [
                    _mm256_permutevar8x32_ps(pairs, _mm256_setr_epi32(0, 1, 0, 1, 2, 3, 2, 3)),
                    _mm256_permutevar8x32_ps(pairs, _mm256_setr_epi32(4, 5, 4, 5, 6, 7, 6, 7)),
                ]
            };
            let codes = w.codes.as_ptr().add((group * blocks + b) * GROUP * wpb) as *const u8;
            prefetch(codes);
            if Q8 {
                let c: [__m256i; 4] = std::array::from_fn(|r| _mm256_loadu_si256(codes.add(32 * r) as *const _));
                let magnitude = c.map(|c| _mm256_sign_epi8(c, c));
                // As in the AVX-512 kernel: non-negative codes leave the inputs as they are.
                let signs = c.iter().any(|&c| _mm256_movemask_epi8(c) != 0);
                let d: [__m256; 4] = std::array::from_fn(|r| _mm256_permutevar8x32_ps(dm[r / 2], row_at[r % 2]));
                for t in 0..T {
                    let xt = _mm256_loadu_si256(xp.add(t * stride + b * BLOCK) as *const _);
                    let s = _mm256_set1_ps(*x.scale.get_unchecked(t * blocks + b));
                    for r in 0..GROUP {
                        let signed = if signs { _mm256_sign_epi8(xt, c[r]) } else { xt };
                        let dot = dot256(zero, magnitude[r], signed);
                        sums[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d[r], s), sums[t][r]);
                    }
                }
            } else {
                let c = [_mm256_loadu_si256(codes as *const _), _mm256_loadu_si256(codes.add(32) as *const _)];
                let lo = c.map(|c| _mm256_and_si256(c, nibble));
                let hi = c.map(|c| _mm256_and_si256(_mm256_srli_epi16(c, 4), nibble));
                let d_lo = dm.map(|dm| _mm256_permutevar8x32_ps(dm, lo4));
                let d_hi = dm.map(|dm| _mm256_permutevar8x32_ps(dm, hi4));
                for t in 0..T {
                    let at = xp.add(t * stride + b * BLOCK);
                    let x_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(at as *const _));
                    let x_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(at.add(16) as *const _));
                    let s = _mm256_set1_ps(*x.scale.get_unchecked(t * blocks + b));
                    for v in 0..2 {
                        if split {
                            let (l, h) = (dot256(zero, lo[v], x_lo), dot256(zero, hi[v], x_hi));
                            sums[t][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), _mm256_mul_ps(d_lo[v], s), sums[t][v]);
                            sums[t][2 + v] =
                                _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_mul_ps(d_hi[v], s), sums[t][2 + v]);
                        } else {
                            let dot = dot256(dot256(zero, lo[v], x_lo), hi[v], x_hi);
                            sums[t][v] =
                                _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d_lo[v], s), sums[t][v]);
                        }
                    }
                }
            }
            let m01 = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm[0], offsets_at));
            let m23 = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(dm[1], offsets_at));
            add_offsets(&mut offsets, (_mm_movelh_ps(m01, m23), _mm_movehl_ps(m23, m01)), &x, b, blocks, split);
        }
        for t in 0..T {
            store_rows(acc, t, _mm_add_ps(avx2_row_sums::<Q8>(sums[t]), offsets[t]));
        }
    }
}

/// The four rows' sums of a token's four vectors of lanes: 4-bit rows 0, 1 in the 128-bit
/// halves of vectors 0 and 2, rows 2, 3 in those of 1 and 3; 8-bit row `r` in vector `r`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn avx2_row_sums<const Q8: bool>(v: [__m256; 4]) -> __m128 {
    // [a0+a1, a2+a3, b0+b1, b2+b3] for each 128-bit half (a: first vector, b: second).
    let pair = |a: __m256, b: __m256| _mm256_hadd_ps(a, b);
    if Q8 {
        // Halves: [r0 r0 r1 r1 | r0 r0 r1 r1] and the same of rows 2, 3.
        let (h01, h23) = (pair(v[0], v[1]), pair(v[2], v[3]));
        let q = pair(h01, h23); // [r0 r1 r2 r3 | r0 r1 r2 r3]
        _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1))
    } else {
        let (v01, v23) = (_mm256_add_ps(v[0], v[2]), _mm256_add_ps(v[1], v[3]));
        let q = pair(pair(v01, v23), _mm256_setzero_ps()); // [r0 r2 0 0 | r1 r3 0 0]
        let (lo, hi) = (_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1));
        _mm_unpacklo_ps(lo, hi)
    }
}

//! The x86-64 kernels: AVX2 with FMA and F16C, and AVX-512F (f32 inputs, weights dequantized
//! in registers).
//!
//! # Safety
//!
//! Every `unsafe fn` here is compiled with `#[target_feature]` for AVX2 (+FMA, F16C) or
//! AVX-512F and may only run on a CPU that has those features: the dispatch in the parent
//! module calls them only for [`Isa::Avx2`] and [`Isa::Avx512`], which [`Isa::available`]
//! reports only after detecting the features at run time. Their reads are bounded by the asserts
//! in `qgemm_with` and `float_tile` (codes, parameters and inputs of whole groups and blocks).

use std::arch::x86_64::*;
use std::hint::black_box;

use super::*;

/// Asks for the cache line `PREFETCH_BYTES` past `at` (never faults: past the end of the
/// matrix it fetches nothing useful, and the pointer is never read).
#[inline(always)]
pub(super) fn prefetch<T>(at: *const T) {
    // Safety: a prefetch hint reads nothing and cannot fault; SSE is in every x86-64.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((at as *const i8).wrapping_add(PREFETCH_BYTES)) }
}

/// The four rows' `(d, m)` of block `b` of a group: `[d0, m0, d1, m1, d2, m2, d3, m3]`,
/// converted by F16C from the group's four parameter words. In memory, not a register:
/// broadcasts from a load use the load ports, not the shuffle port that the kernels need.
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn group_params(w: &QuantRows, group: usize, b: usize) -> [f32; 2 * GROUP] {
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
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn group_supers(w: &QuantRows, group: usize, b: usize) -> [__m256; 2] {
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
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn group_half_params(
    w: &QuantRows,
    group: usize,
    b: usize,
    supers: &[__m256; 2],
) -> [f32; 4 * GROUP] {
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_tile<const T: usize, const Q8: bool, const K: bool>(
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
            prefetch(codes);
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
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn block_scales<const K: bool>(
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
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn avx2_row_block<const T: usize, const Q8: bool, const K: bool>(
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_tile_rows<const T: usize, const Q8: bool, const K: bool>(
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
                prefetch(block);
                avx2_row_block::<T, Q8, K>(w, block, xp.add(b * BLOCK), stride, r, &scales, &mut sums);
            }
            for t in 0..T {
                acc[r * 8 + t] = hsum256(sums[t]);
            }
        }
    }
}

/// The eight lanes of `s` added up as [`reduce_tile256`] adds them.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn hsum256(s: __m256) -> f32 {
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_tile_one<const T: usize, const Q8: bool, const K: bool>(
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
            prefetch(codes);
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
/// bits of each index: the low nibbles need no mask) instead of conversions and FMAs; 5- and
/// 6-bit rows add their higher bits' `16 d`, `32 d` under masks read straight from the layout.
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(super) unsafe fn avx512_tile<const T: usize, const Q8: bool, const K: bool>(
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
        let (narrow, six) = (w.format.is_narrow(), w.format == QuantFormat::Q6);
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
            prefetch(codes);
            // A 6-bit block's codes as bytes, row `r` in 128-bit lane `r` of each half.
            let codes6 = match six {
                true => {
                    let (lo, hi) = avx512_nibbles(w.format, codes);
                    [lo, hi]
                }
                false => [_mm512_setzero_si512(); 2],
            };
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
                } else if six {
                    // 6-bit codes, assembled for the group's four rows at once (`codes6`),
                    // converted and scaled: `d q + m` is exact in f32.
                    for (k, wv) in wv.iter_mut().enumerate() {
                        let lane = match r {
                            0 => _mm512_castsi512_si128(codes6[k]),
                            1 => _mm512_extracti32x4_epi32::<1>(codes6[k]),
                            2 => _mm512_extracti32x4_epi32::<2>(codes6[k]),
                            _ => _mm512_extracti32x4_epi32::<3>(codes6[k]),
                        };
                        let q = _mm512_cvtepu8_epi32(lane);
                        *wv = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), d[k], m[k]);
                    }
                } else if narrow {
                    // 5-bit codes: a table lookup of the nibble's `d q + m`, then `16 d` added
                    // where the row's mask bits say (every step exact: all are multiples of
                    // `d`'s last bit below 2^24 of it).
                    let nibbles = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.add(16 * r) as *const __m128i));
                    let idx = [nibbles, _mm512_srli_epi32(nibbles, 4)];
                    let masks = codes.add(64) as *const u64;
                    for (k, wv) in wv.iter_mut().enumerate() {
                        let bits = |plane: usize| (masks.add(2 * plane + k).read_unaligned() >> (16 * r)) as u16;
                        let v = _mm512_permutexvar_ps(idx[k], _mm512_fmadd_ps(iota, d[k], m[k]));
                        *wv = _mm512_mask_add_ps(v, bits(0), v, _mm512_mul_ps(d[k], _mm512_set1_ps(16.0)));
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn reduce_tile256<const T: usize>(sums: &[[__m256; T]; GROUP], acc: &mut [f32; 32]) {
    for r in 0..GROUP {
        for t in 0..T {
            acc[r * 8 + t] = unsafe { hsum256(sums[r][t]) };
        }
    }
}

/// [`reduce_tile256`] for sixteen lanes.
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn reduce_tile512<const T: usize>(sums: &[[__m512; T]; GROUP], acc: &mut [f32; 32]) {
    for r in 0..GROUP {
        for t in 0..T {
            acc[r * 8 + t] = _mm512_reduce_add_ps(sums[r][t]);
        }
    }
}

/// Float codes `i..i + 8` from `codes` ([`float_block`]) as f32: F16C for halves, a shift for
/// bfloat16, a load for f32.
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub(super) unsafe fn avx2_widen<const F: FloatCodes>(codes: *const u32, i: usize) -> __m256 {
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_tile_float<const T: usize, const F: FloatCodes>(
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
            prefetch(codes);
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
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
pub(super) unsafe fn avx512_widen<const F: FloatCodes>(codes: *const u32, i: usize) -> __m512 {
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
#[allow(clippy::needless_range_loop)] // `[row][token]` tile coordinates
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn avx512_tile_float<const T: usize, const F: FloatCodes>(
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
            prefetch(codes);
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

/// A group's block of 4-, 5- or 6-bit codes (from `codes`) as bytes, row `r` in 128-bit lane
/// `r`: elements 0..16 (`lo`) and 16..32 (`hi`). The nibbles are 64 contiguous bytes; a narrow
/// block's higher bits follow as 64-bit masks in that byte order ([`tile_rows`]), adding 16
/// (and 32) where they are set.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) unsafe fn avx512_nibbles(format: QuantFormat, codes: *const u8) -> (__m512i, __m512i) {
    // Safety: the caller passes a whole group block of codes.
    unsafe {
        let nibble = _mm512_set1_epi8(15);
        let c = _mm512_loadu_si512(codes as *const _);
        let (mut lo, mut hi) = (_mm512_and_si512(c, nibble), _mm512_and_si512(_mm512_srli_epi16(c, 4), nibble));
        if format.is_narrow() {
            let masks = codes.add(64) as *const u64;
            for plane in 0..format.words_per_block() - 4 {
                let value = _mm512_set1_epi8(16 << plane);
                lo = _mm512_mask_add_epi8(lo, masks.add(2 * plane).read_unaligned(), lo, value);
                hi = _mm512_mask_add_epi8(hi, masks.add(2 * plane + 1).read_unaligned(), hi, value);
            }
        }
        (lo, hi)
    }
}

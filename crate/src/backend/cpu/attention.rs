//! Causal grouped-query attention over the KV cache on the CPU: the arithmetic of the cubecl
//! kernel ([`crate::backend::kernels::attention`]), one (token, head) pair per task on the thread pool.
//!
//! Each SIMD level scores four keys at once (four independent multiply-add chains) and keeps the
//! weighted sum of values in registers; the generic loop, for other head sizes and the scalar
//! level, runs over 16 lanes added by halving (a sequential `sum()`, a chain of dependent adds,
//! once made attention a quarter of a decode step).

use super::{Isa, SharedOut, for_each};
use crate::config::Heads;

/// Work below this many multiply-adds runs on the calling thread: handing it out costs more.
const PARALLEL_WORK: usize = 1 << 15;

/// `q: [m, n_heads head_dim]`, caches `[n_kv_heads, capacity, head_dim]` → `out: [m, n_heads
/// head_dim]`: token `t` sits at slot `slot + t` and attends to slots `0..=slot + t`, or to the
/// last `window` of them.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    m: usize,
    heads: Heads,
    capacity: usize,
    slot: usize,
    window: Option<usize>,
    out: &mut [f32],
) {
    let Heads { n_heads, n_kv_heads, head_dim } = heads;
    let d = n_heads * head_dim;
    assert!(q.len() == m * d && out.len() == m * d, "attention: q and out are not [m, n_heads head_dim]");
    assert!(k.len() == n_kv_heads * capacity * head_dim && v.len() == k.len(), "attention: cache shape");
    assert!(slot + m <= capacity, "attention: past the cache");
    let out_ptr = SharedOut::new(out);
    let task = |i: usize| {
        let (t, h) = (i / n_heads, i % n_heads);
        // Safety: task i alone writes row t, head h of `out`, which is inside it (asserts above).
        let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.at(t * d + h * head_dim), head_dim) };
        let base = (h / (n_heads / n_kv_heads)) * capacity * head_dim;
        let end = slot + t + 1;
        let first = window.map_or(0, |w| end.saturating_sub(w));
        let (from, to) = (base + first * head_dim, base + end * head_dim);
        let (keys, values) = (&k[from..to], &v[from..to]);
        one_head(isa, &q[t * d + h * head_dim..][..head_dim], keys, values, o);
    };
    let work = m * n_heads * (slot + m) * head_dim;
    if work >= PARALLEL_WORK {
        for_each(m * n_heads, task);
    } else {
        (0..m * n_heads).for_each(task);
    }
}

thread_local! {
    /// One query's scores, reused by every head this thread computes (no allocation per token).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn one_head(isa: Isa, q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32]) {
    SCORES.with_borrow_mut(|scores| {
        scores.clear();
        scores.resize(keys.len() / q.len(), 0.0);
        match isa {
            #[cfg(target_arch = "x86_64")]
            // Safety: reported only where the CPU has AVX2 and FMA.
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni if q.len().is_multiple_of(8) => unsafe {
                one_head_avx2(q, keys, values, scores, out)
            },
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 if q.len().is_multiple_of(4) => one_head_simd128(q, keys, values, scores, out),
            _ => one_head_generic(q, keys, values, scores, out),
        }
    });
}

/// The softmax of `scores` in place (already scaled), returning `1 / Σ exp`: the weights are
/// `scores[i] * inv`.
#[inline(always)]
fn softmax_unnormalized(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    1.0 / sum
}

/// AVX2: four keys scored at once (four independent FMA chains; one key's chain alone waits
/// on its own latency), and the weighted sum of values kept in registers, 32 columns a pass.
/// Left to the compiler, the 16-lane loops below became 2-wide multiplies without FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn one_head_avx2(q: &[f32], keys: &[f32], values: &[f32], scores: &mut [f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = q.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let n = scores.len();
    // Safety: keys and values hold n rows of hd; hd is a multiple of 8; every offset below
    // stays inside them.
    unsafe {
        let (qp, kp, vp) = (q.as_ptr(), keys.as_ptr(), values.as_ptr());
        let hsum = |v: __m256| {
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
        };
        let mut i = 0;
        while i + 4 <= n {
            let mut acc = [_mm256_setzero_ps(); 4];
            for c in (0..hd).step_by(8) {
                let qv = _mm256_loadu_ps(qp.add(c));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add((i + j) * hd + c)), *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                scores[i + j] = hsum(*a) * scale;
            }
            i += 4;
        }
        for (i, s) in scores.iter_mut().enumerate().skip(i) {
            let mut a = _mm256_setzero_ps();
            for c in (0..hd).step_by(8) {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(kp.add(i * hd + c)), a);
            }
            *s = hsum(a) * scale;
        }
        let inv = softmax_unnormalized(scores);
        let mut c0 = 0;
        while c0 < hd {
            let width = (hd - c0).min(32) / 8;
            let mut acc = [_mm256_setzero_ps(); 4];
            for (s, &p) in scores.iter().enumerate() {
                let p = _mm256_set1_ps(p * inv);
                for (j, a) in acc.iter_mut().enumerate().take(width) {
                    *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(vp.add(s * hd + c0 + 8 * j)), *a);
                }
            }
            for (j, a) in acc.iter().enumerate().take(width) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * j), *a);
            }
            c0 += 8 * width;
        }
    }
}

/// simd128: the AVX2 arithmetic in four lanes, with a multiply and an add for each FMA.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn one_head_simd128(q: &[f32], keys: &[f32], values: &[f32], scores: &mut [f32], out: &mut [f32]) {
    use core::arch::wasm32::*;
    let hd = q.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let n = scores.len();
    // Safety: as in `one_head_avx2`, with hd a multiple of 4.
    let load = |s: &[f32], at: usize| unsafe { v128_load(s.as_ptr().add(at) as *const v128) };
    let hsum = |v: v128| {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    };
    let mut i = 0;
    while i + 4 <= n {
        let mut acc = [f32x4_splat(0.0); 4];
        for c in (0..hd).step_by(4) {
            let qv = load(q, c);
            for (j, a) in acc.iter_mut().enumerate() {
                *a = f32x4_add(*a, f32x4_mul(qv, load(keys, (i + j) * hd + c)));
            }
        }
        for (j, a) in acc.iter().enumerate() {
            scores[i + j] = hsum(*a) * scale;
        }
        i += 4;
    }
    for (i, s) in scores.iter_mut().enumerate().skip(i) {
        let mut a = f32x4_splat(0.0);
        for c in (0..hd).step_by(4) {
            a = f32x4_add(a, f32x4_mul(load(q, c), load(keys, i * hd + c)));
        }
        *s = hsum(a) * scale;
    }
    let inv = softmax_unnormalized(scores);
    let mut c0 = 0;
    while c0 < hd {
        let width = (hd - c0).min(32) / 4;
        let mut acc = [f32x4_splat(0.0); 8];
        for (s, &p) in scores.iter().enumerate() {
            let p = f32x4_splat(p * inv);
            for (j, a) in acc.iter_mut().enumerate().take(width) {
                *a = f32x4_add(*a, f32x4_mul(p, load(values, s * hd + c0 + 4 * j)));
            }
        }
        for (j, a) in acc.iter().enumerate().take(width) {
            // Safety: c0 + 4 j + 4 ≤ hd = out.len().
            unsafe { v128_store(out.as_mut_ptr().add(c0 + 4 * j) as *mut v128, *a) };
        }
        c0 += 4 * width;
    }
}

/// Softmax of the scaled scores (one per key, in `scores`), then their weighted sum of
/// values, for one query.
#[inline(always)]
fn one_head_generic(q: &[f32], keys: &[f32], values: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let head_dim = q.len();
    let scale = 1.0 / (head_dim as f32).sqrt();
    for (s, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
        *s = dot(q, key) * scale;
    }
    let inv = softmax_unnormalized(scores);
    out.fill(0.0);
    for (p, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
        let p = p * inv;
        for (o, v) in out.iter_mut().zip(value) {
            *o += p * v;
        }
    }
}

/// Σ a·b in 16 lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l];
        }
    }
    // Halving, not `sum()`: sixteen dependent adds cost more than the products.
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level equals a plain f64 softmax-attention, with 3 query heads per KV head, a
    /// chunk of several tokens after cached ones, a head size that is not a multiple of 16,
    /// and sliding windows (shorter than what is cached, and longer).
    #[test]
    fn every_level_equals_plain_attention() {
        let cases = [(64usize, 1usize, 37usize, None), (20, 5, 3, None), (64, 9, 0, None), (24, 3, 6, None)];
        let windowed = [(96, 2, 40, None), (64, 4, 37, Some(7)), (20, 5, 3, Some(2)), (24, 3, 6, Some(50))];
        for &(head_dim, m, slot, window) in cases.iter().chain(&windowed) {
            let heads = Heads { n_heads: 6, n_kv_heads: 2, head_dim };
            let capacity = slot + m + 4;
            let d = heads.n_heads * head_dim;
            let f = |i: usize, s: f32| (i as f32 * s).sin() * 2.0;
            let q: Vec<f32> = (0..m * d).map(|i| f(i, 0.37)).collect();
            let k: Vec<f32> = (0..2 * capacity * head_dim).map(|i| f(i, 0.11)).collect();
            let v: Vec<f32> = (0..2 * capacity * head_dim).map(|i| f(i, 0.23)).collect();
            for isa in Isa::available() {
                let mut out = vec![0.0; m * d];
                attention(isa, &q, &k, &v, m, heads, capacity, slot, window, &mut out);
                for t in 0..m {
                    let first = window.map_or(0, |w: usize| (slot + t + 1).saturating_sub(w));
                    for h in 0..heads.n_heads {
                        let base = (h / 3) * capacity * head_dim;
                        let qh = &q[t * d + h * head_dim..][..head_dim];
                        let scores: Vec<f64> = (first..=slot + t)
                            .map(|s| {
                                let key = &k[base + s * head_dim..][..head_dim];
                                qh.iter().zip(key).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                                    / (head_dim as f64).sqrt()
                            })
                            .collect();
                        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                        for i in 0..head_dim {
                            let want: f64 = (first..=slot + t)
                                .map(|s| (scores[s - first] - max).exp() / total * v[base + s * head_dim + i] as f64)
                                .sum();
                            let got = out[t * d + h * head_dim + i] as f64;
                            assert!(
                                (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                                "{isa:?} t={t} h={h} i={i}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

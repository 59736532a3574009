//! Causal grouped-query attention over the KV cache on the CPU: the arithmetic of the cubecl
//! kernel ([`crate::kernels::attention`]), one (token, head) pair per task on the thread pool.
//!
//! Dot products and the weighted sum of values run over 16 independent lanes so that they
//! vectorize, and the lanes are added by halving: a sequential `sum()` (a chain of dependent
//! adds) made attention a quarter of a decode step.

use super::{Isa, SharedOut, for_each};
use crate::kernels::rope::Heads;

/// Work below this many multiply-adds runs on the calling thread: handing it out costs more.
const PARALLEL_WORK: usize = 1 << 15;

/// `q: [m, n_heads head_dim]`, caches `[n_kv_heads, capacity, head_dim]` → `out: [m, n_heads
/// head_dim]`: token `t` sits at slot `slot + t` and attends to slots `0..=slot + t`.
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
        let seen = slot + t + 1;
        let (keys, values) = (&k[base..base + seen * head_dim], &v[base..base + seen * head_dim]);
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
            Isa::Avx2 | Isa::Avx512 => unsafe { one_head_avx2(q, keys, values, scores, out) },
            _ => one_head_generic(q, keys, values, scores, out),
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn one_head_avx2(q: &[f32], keys: &[f32], values: &[f32], scores: &mut [f32], out: &mut [f32]) {
    one_head_generic(q, keys, values, scores, out)
}

/// Softmax of the scaled scores (one per key, in `scores`), then their weighted sum of
/// values, for one query.
#[inline(always)]
fn one_head_generic(q: &[f32], keys: &[f32], values: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let head_dim = q.len();
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut max = f32::NEG_INFINITY;
    for (s, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
        *s = dot(q, key) * scale;
        max = max.max(*s);
    }
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
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
    /// chunk of several tokens after cached ones, and a head size that is not a multiple of 16.
    #[test]
    fn every_level_equals_plain_attention() {
        for &(head_dim, m, slot) in &[(64usize, 1usize, 37usize), (20, 5, 3), (64, 9, 0)] {
            let heads = Heads { n_heads: 6, n_kv_heads: 2, head_dim };
            let capacity = slot + m + 4;
            let d = heads.n_heads * head_dim;
            let f = |i: usize, s: f32| ((i as f32 * s).sin() * 2.0);
            let q: Vec<f32> = (0..m * d).map(|i| f(i, 0.37)).collect();
            let k: Vec<f32> = (0..2 * capacity * head_dim).map(|i| f(i, 0.11)).collect();
            let v: Vec<f32> = (0..2 * capacity * head_dim).map(|i| f(i, 0.23)).collect();
            for isa in Isa::available() {
                let mut out = vec![0.0; m * d];
                attention(isa, &q, &k, &v, m, heads, capacity, slot, &mut out);
                for t in 0..m {
                    for h in 0..heads.n_heads {
                        let base = (h / 3) * capacity * head_dim;
                        let qh = &q[t * d + h * head_dim..][..head_dim];
                        let scores: Vec<f64> = (0..=slot + t)
                            .map(|s| {
                                let key = &k[base + s * head_dim..][..head_dim];
                                qh.iter().zip(key).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                                    / (head_dim as f64).sqrt()
                            })
                            .collect();
                        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                        for i in 0..head_dim {
                            let want: f64 = (0..=slot + t)
                                .map(|s| (scores[s] - max).exp() / total * v[base + s * head_dim + i] as f64)
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

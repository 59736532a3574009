//! Math on logits read back to the host, written once for every caller (sampling, early exit's
//! confidence, teacher-forced log-probabilities, the heavy-hitter tests): each in the same f32
//! operations in the same order everywhere, so that two paths that should agree bit for bit do.

/// The largest of `values`; `-inf` when there is none.
pub fn max(values: &[f32]) -> f32 {
    values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `Σ exp(l - max)` over `logits`: the softmax's denominator, stable when `max` is their
/// largest.
pub fn exp_sum(logits: &[f32], max: f32) -> f32 {
    logits.iter().map(|&l| (l - max).exp()).sum()
}

/// `log softmax(logits)[index]`, stable.
pub fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = max(logits);
    logits[index] - max - exp_sum(logits, max).ln()
}

/// The `k` indices of the largest values, largest first (ties: the lower index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..values.len() as u32).collect();
    let k = k.min(ids.len());
    let order = |a: &u32, b: &u32| values[*b as usize].total_cmp(&values[*a as usize]).then(a.cmp(b));
    if k < ids.len() {
        ids.select_nth_unstable_by(k, order);
        ids.truncate(k);
    }
    ids.sort_by(order);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let logits = [1.0f32, 2.0, 3.0, -1.0];
        let total: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let want = l as f64 - total.ln();
            assert!((log_softmax_at(&logits, i) as f64 - want).abs() < 1e-6, "{i}");
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn top_k_takes_the_largest_in_order() {
        assert_eq!(top_k(&[0.1, 3.0, -1.0, 3.0, 2.0], 3), vec![1, 3, 4]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }
}

//! `heavy-hitters`' scores: the attention each slot receives, summed over layers, heads and
//! queries, and which slots stay when some must go.

use burn::tensor::activation::softmax;

use super::*;
use crate::backend::kernels::attention::scores_qk;

/// Most attention scores [`KvCache::observe_attention`] holds at once (64 MiB of f32).
pub(super) const SCORE_ELEMENTS: usize = 1 << 24;

/// The slots `heavy-hitters` keeps when `count` of `scores.len()` must go: the first `sinks`,
/// the last `recent`, and of the rest those with the largest scores (earlier first on ties).
pub fn heavy_hitters_keep(scores: &[f32], sinks: usize, recent: usize, count: usize) -> Vec<usize> {
    let len = scores.len();
    let middle_end = len.saturating_sub(recent).max(sinks);
    let mut middle: Vec<usize> = (sinks..middle_end).collect();
    // Lowest scores first; on equal scores the newer token goes first.
    middle.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)));
    let mut evict = vec![false; len];
    for &s in middle.iter().take(count) {
        evict[s] = true;
    }
    // Not enough in the middle: the oldest recent tokens go too.
    for s in (middle_end..len).take(count.saturating_sub(middle.len())) {
        evict[s] = true;
    }
    (0..len).filter(|&s| !evict[s]).collect()
}

impl KvCache {
    /// Whether [`Self::observe_attention`] is wanted.
    pub(crate) fn tracks_attention(&self) -> bool {
        self.scores.is_some()
    }

    /// `heavy-hitters`: adds the attention that the queries `q: [m, n_heads head_dim]` (rotated,
    /// at slots `slot..`) pay to every occupied slot of `layer`, summed over heads and queries.
    ///
    /// Queries go in blocks of rows so that no temporary holds more than [`SCORE_ELEMENTS`]
    /// numbers whatever the capacity, and the causal mask is made on the device from two index
    /// ranges: nothing of size `m × seen` is ever built on the host.
    pub(crate) fn observe_attention(&mut self, layer: usize, q: &Tensor<2>, heads: Heads, slot: usize) {
        if let Some(span) = self.tentative.as_mut() {
            span.observations.push(Observation { layer, q: q.clone(), heads, slot });
            return;
        }
        self.observe_attention_in_blocks(layer, q, heads, slot, SCORE_ELEMENTS);
    }

    /// [`Self::observe_attention`] with blocks of at most `block_elements` scores.
    pub(super) fn observe_attention_in_blocks(
        &mut self,
        layer: usize,
        q: &Tensor<2>,
        heads: Heads,
        slot: usize,
        block_elements: usize,
    ) {
        let Some(scores) = self.scores.as_mut() else { return };
        let Heads { n_heads, n_kv_heads, head_dim } = heads;
        // In the layer's rows: a sliding-window layer's row 0 holds slot `base`.
        let base = self.layers[layer].base;
        let slot = slot - base;
        let m = q.dims()[0];
        let seen = slot + m;
        let group = n_heads / n_kv_heads;
        let device = q.device();
        let k = self.layers[layer].k.clone().slice([0..n_kv_heads, 0..seen, 0..head_dim]);
        let tokens_per_block = (block_elements / (n_heads * seen)).clamp(1, m);
        let mut received: Option<Tensor<1>> = None;
        for t0 in (0..m).step_by(tokens_per_block) {
            let t = tokens_per_block.min(m - t0);
            let rows = t * group;
            // [n_kv, t * group, hd]: row r is token t0 + r / group.
            let qb = q
                .clone()
                .slice(t0..t0 + t)
                .reshape([t, n_kv_heads, group, head_dim])
                .swap_dims(0, 1)
                .reshape([n_kv_heads, rows, head_dim]);
            let mut logits = scores_qk(qb, k.clone()) / (head_dim as f32).sqrt();
            let window = self.layers[layer].window.filter(|&w| w < seen);
            if slot + t0 + 1 < seen || window.is_some() {
                // Row r may see slots up to slot + t0 + r / group, and in a sliding-window
                // layer only the last `window` of those.
                let cols = Tensor::<1, Int>::arange(0..seen as i64, &device).float().reshape([1, seen]);
                let last = Tensor::<1, Int>::arange(0..rows as i64, &device)
                    .div_scalar(group as i64)
                    .add_scalar((slot + t0) as i64)
                    .float()
                    .reshape([rows, 1]);
                let ahead = cols.expand([rows, seen]).sub(last.expand([rows, seen]));
                let mut hidden = ahead.clone().greater_elem(0.5);
                if let Some(w) = window {
                    hidden = hidden.bool_or(ahead.lower_elem(0.5 - w as f32));
                }
                logits = logits.mask_fill(hidden.unsqueeze::<3>().expand([n_kv_heads, rows, seen]), f32::NEG_INFINITY);
            }
            let block = softmax(logits, 2).sum_dim(1).sum_dim(0).reshape([seen]);
            received = Some(match received {
                Some(sum) => sum + block,
                None => block,
            });
        }
        let Some(received) = received else { return };
        scores.inplace(|s| {
            let old = s.clone().slice(base..base + seen);
            s.slice_assign(base..base + seen, old + received)
        });
    }
}

//! Making room: which slots stay when tokens must go (per policy), and moving the kept ones down
//! with their keys rotated back by the distance moved. Sliding-window layers keep fewer rows.

use super::*;

/// Rows a sliding-window layer keeps instead of one per slot: the window less one (what the
/// next token sees besides itself) and room for a pass of `window` tokens (16..=256): Gemma 3's
/// 512-token window takes 767 rows whatever the capacity. `None` when that saves nothing, or
/// when eviction could keep a slot the window needs out of those rows (a cache too small for
/// its eviction to leave the last window of tokens in place, or heavy hitters whose recent
/// span is shorter than the window).
pub(super) fn window_rows(
    config: &ModelConfig,
    capacity: usize,
    policy: EvictionPolicy,
    sinks: usize,
    recent: usize,
) -> Option<usize> {
    let window = config.sliding_window?;
    if !(0..config.n_layers).any(|i| config.layer_attention(i).window.is_some()) {
        return None;
    }
    let rows = window - 1 + window.clamp(16, 256);
    let evicts_safely = match policy {
        EvictionPolicy::None => true,
        EvictionPolicy::SinksWindow => capacity >= (2 * rows).saturating_add(sinks),
        EvictionPolicy::HeavyHitters => capacity >= (2 * rows).saturating_add(sinks) && recent >= window - 1,
    };
    (rows < capacity && evicts_safely).then_some(rows)
}

impl KvCache {
    /// Most tokens [`Self::slide`] takes at once.
    pub(crate) fn slide_chunk(&self) -> usize {
        ((self.capacity - self.sinks.min(self.capacity / 4)) / 2).max(1)
    }

    /// Makes room for `n` tokens as `sinks-window` would, whatever the cache's own policy:
    /// scoring a long prompt slides through any cache.
    pub(crate) async fn slide(&mut self, n: usize) -> Result<usize> {
        let sinks = self.sinks.min(self.capacity / 4);
        self.evict(n, EvictionPolicy::SinksWindow, sinks, self.slide_chunk()).await
    }

    pub(super) async fn evict(
        &mut self,
        n: usize,
        policy: EvictionPolicy,
        sinks: usize,
        limit: usize,
    ) -> Result<usize> {
        if n <= self.remaining() {
            return Ok(0);
        }
        if self.tentative.is_some() {
            return Err(Error::BadOptions("a KV cache cannot evict during a tentative span".into()));
        }
        if policy == EvictionPolicy::None || n > limit {
            return Err(Error::KvCacheFull { capacity: self.capacity });
        }
        let count = n - self.remaining();
        let keep = self.choose_keep(policy, sinks, count).await?;
        self.compact(&keep);
        Ok(count)
    }

    /// The slots to keep when `count` must go, ascending.
    pub(super) async fn choose_keep(&self, policy: EvictionPolicy, sinks: usize, count: usize) -> Result<Vec<usize>> {
        let len = self.len();
        let sinks = sinks.min(len);
        Ok(match policy {
            EvictionPolicy::None => (0..len).collect(),
            EvictionPolicy::SinksWindow => (0..sinks).chain(sinks + count..len).collect(),
            EvictionPolicy::HeavyHitters => {
                let scores = match &self.scores {
                    Some(s) => read_f32(s.clone().slice(0..len)).await?,
                    None => vec![0.0; len],
                };
                heavy_hitters_keep(&scores, sinks, self.recent, count)
            }
        })
    }

    /// Moves the tokens in slots `keep` (ascending) to slots `0..keep.len()`, rotating each
    /// key back by the distance it moved (one kernel per layer).
    pub(super) fn compact(&mut self, keep: &[usize]) {
        let kept = keep.len();
        let device = self.rope[0].cos.device();
        let from =
            Tensor::<1, Int>::from_data(TensorData::new(keep.iter().map(|&s| s as i32).collect(), [kept]), &device);
        for layer in &mut self.layers {
            let (cos, sin) = self.rope[layer.rope].turn();
            match layer.window.filter(|_| layer.rows() < self.capacity) {
                None => compact_kv(&from, 0, cos, sin, &mut layer.k, &mut layer.v),
                Some(w) => {
                    // A sliding-window layer keeps the last `w - 1` kept slots (at least), which
                    // `window_rows` guarantees are among its rows, moved as the others move.
                    let base = layer.base.min(kept.saturating_sub(w - 1));
                    let rows: Vec<i32> = keep[base..]
                        .iter()
                        .map(|&s| {
                            assert!(s >= layer.base, "compact: slot {s} left the window's rows");
                            (s - layer.base) as i32
                        })
                        .collect();
                    let n = rows.len();
                    let from = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
                    compact_kv(&from, layer.base - base, cos, sin, &mut layer.k, &mut layer.v);
                    layer.base = base;
                }
            }
        }
        if let Some(scores) = self.scores.as_mut() {
            let capacity = self.capacity;
            let moved = scores.clone().select(0, from);
            scores.inplace(|s| {
                s.slice_assign(0..kept, moved).slice_assign(kept..capacity, Tensor::zeros([capacity - kept], &device))
            });
        }
        self.evicted += self.len() - kept;
        self.origin = keep.iter().map(|&s| self.origin[s]).collect();
    }
}

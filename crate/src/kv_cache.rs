//! Per-conversation attention state: keys and values of every layer, in slots allocated once,
//! and the policy that decides which tokens leave when the slots run out.

use std::str::FromStr;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::device::Limits;
use crate::error::{Error, Result};
use crate::kernels::compact::compact_kv;
use crate::kernels::rope::Heads;
use crate::readback::read_f32;

/// The largest cache a session gets unless asked for another size (tokens).
pub const DEFAULT_CAPACITY: usize = 2048;

/// Which tokens leave a full cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// Refuse with [`Error::KvCacheFull`].
    None,
    /// StreamingLLM (arXiv:2309.17453): keep the first `sinks` tokens and the most recent ones.
    #[default]
    SinksWindow,
    /// H2O (arXiv:2306.14048): keep the sinks, a recent window, and the tokens that received
    /// the most attention so far (summed over layers, heads and queries: one kept set for all
    /// layers, so that slots stay shared).
    HeavyHitters,
}

impl EvictionPolicy {
    pub const NAMES: &str = "none, sinks-window or heavy-hitters";
    const ALL: [Self; 3] = [Self::None, Self::SinksWindow, Self::HeavyHitters];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SinksWindow => "sinks-window",
            Self::HeavyHitters => "heavy-hitters",
        }
    }
}

impl FromStr for EvictionPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::BadOptions(format!("unknown KV cache policy {s:?}: expected {}", Self::NAMES)))
    }
}

/// How big a session's cache is and how it evicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvOptions {
    /// Slots, in tokens. Without it (and without `capacity_bytes`) the model's context length
    /// or [`DEFAULT_CAPACITY`], whichever is smaller.
    pub capacity: Option<usize>,
    /// A memory budget for keys and values; the capacity is as many tokens as fit.
    pub capacity_bytes: Option<usize>,
    pub policy: EvictionPolicy,
    /// First tokens that are never evicted (attention sinks).
    pub sinks: usize,
    /// `heavy-hitters`: most recent tokens that are never evicted. Default: half of what the
    /// sinks leave.
    pub recent: Option<usize>,
}

impl Default for KvOptions {
    fn default() -> Self {
        Self { capacity: None, capacity_bytes: None, policy: EvictionPolicy::SinksWindow, sinks: 4, recent: None }
    }
}

impl KvOptions {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity: Some(capacity), ..Self::default() }
    }

    pub fn policy(mut self, policy: EvictionPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn sinks(mut self, sinks: usize) -> Self {
        self.sinks = sinks;
        self
    }

    /// The capacity in tokens these options give for `config`.
    pub fn resolve_capacity(&self, config: &ModelConfig) -> Result<usize> {
        let capacity = match (self.capacity, self.capacity_bytes) {
            (Some(_), Some(_)) => {
                return Err(Error::BadOptions("give the KV cache capacity in tokens or in bytes, not both".into()));
            }
            (Some(tokens), None) => tokens,
            (None, Some(bytes)) => bytes / KvCache::bytes_per_token(config),
            (None, None) => DEFAULT_CAPACITY.min(config.context_length),
        };
        if capacity == 0 {
            return Err(Error::BadOptions("KV cache capacity must be at least 1 token".into()));
        }
        if capacity > config.context_length {
            return Err(Error::BadOptions(format!(
                "KV cache capacity {capacity} exceeds the model's context length {}",
                config.context_length
            )));
        }
        Ok(capacity)
    }
}

/// Keys and values for every layer, `[n_kv_heads, capacity, head_dim]` each.
///
/// The capacity is fixed at creation and the tensors never grow: tokens are written into their
/// slots in place by the RoPE kernel. Occupied slots are always `0..len`, in the order the
/// tokens came, and a token's RoPE position is its slot: after an eviction the kept tokens are
/// moved down and their keys rotated back by the distance moved, so the model sees the
/// contiguous positions `0..len` (as StreamingLLM does) and positions never outgrow the tables.
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// The global layers' rotation tables, then the sliding-window layers' where their base
    /// differs.
    rope: Vec<RopeTable>,
    capacity: usize,
    policy: EvictionPolicy,
    sinks: usize,
    recent: usize,
    /// For each occupied slot, the index of its token in the stream since the last clear.
    origin: Vec<usize>,
    /// Tokens appended since the last clear.
    appended: usize,
    /// Tokens evicted since the last clear.
    evicted: usize,
    /// `heavy-hitters`: attention each slot has received, `[capacity]`.
    scores: Option<Tensor<1>>,
}

/// What [`KvCache::plan`] resolves options to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub capacity: usize,
    pub recent: usize,
}

struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
    /// Index of the layer's table in [`KvCache::rope`].
    rope: usize,
    /// Most recent slots a query of this layer sees; `None`: all.
    window: Option<usize>,
}

/// Rotations of positions `0..capacity` for one set of frequencies.
struct RopeTable {
    /// `[capacity, head_dim]`: `cos(p θ_i)` repeated for both elements of pair `i`.
    cos: Tensor<2>,
    /// `[capacity, head_dim]`: `(-sin(p θ_i), sin(p θ_i))` for pair `i`.
    sin: Tensor<2>,
}

impl KvCache {
    /// Allocates the slots `options` ask for on `device`, after checking every size against
    /// the device's limits: nothing is allocated for a cache that cannot fit.
    pub fn new(config: &ModelConfig, options: &KvOptions, device: &Device) -> Result<Self> {
        let Plan { capacity, recent } = Self::plan(config, options, &Limits::of(device))?;
        let (policy, sinks) = (options.policy, options.sinks);
        let shape = [config.n_kv_heads, capacity, config.head_dim()];
        let layers = (0..config.n_layers)
            .map(|i| {
                let attention = config.layer_attention(i);
                LayerKv {
                    k: Tensor::zeros(shape, device),
                    v: Tensor::zeros(shape, device),
                    rope: attention.local_rope as usize,
                    window: attention.window,
                }
            })
            .collect();
        let rope = (0..rope_table_count(config)).map(|i| rope_table(config, i == 1, capacity, device)).collect();
        let scores = (policy == EvictionPolicy::HeavyHitters).then(|| Tensor::zeros([capacity], device));
        Ok(Self {
            layers,
            rope,
            capacity,
            policy,
            sinks,
            recent,
            origin: Vec::with_capacity(capacity),
            appended: 0,
            evicted: 0,
            scores,
        })
    }

    /// Checks `options` for `config` and `limits` without allocating anything; returns the
    /// capacity and the heavy hitters' recent window they give.
    pub fn plan(config: &ModelConfig, options: &KvOptions, limits: &Limits) -> Result<Plan> {
        let capacity = options.resolve_capacity(config)?;
        let (policy, sinks) = (options.policy, options.sinks);
        let evicts = policy != EvictionPolicy::None;
        if evicts && sinks >= capacity {
            return Err(Error::BadOptions(format!(
                "{sinks} attention sinks leave no room in a KV cache of {capacity} tokens"
            )));
        }
        let recent = match policy {
            EvictionPolicy::HeavyHitters => options.recent.unwrap_or((capacity - sinks) / 2),
            _ => 0,
        };
        if policy == EvictionPolicy::HeavyHitters && sinks.checked_add(recent).is_none_or(|kept| kept >= capacity) {
            return Err(Error::BadOptions(format!(
                "{sinks} sinks and a recent window of {recent} leave no heavy hitters in a KV cache of {capacity} tokens"
            )));
        }
        Self::check_limits(config, capacity, limits)?;
        Ok(Plan { capacity, recent })
    }

    /// Each buffer of a cache of `capacity` slots against the device's largest buffer, and all
    /// of them (with the host's bookkeeping) against host memory, in u64 so that nothing wraps
    /// on wasm32.
    fn check_limits(config: &ModelConfig, capacity: usize, limits: &Limits) -> Result<()> {
        let capacity = capacity as u64;
        let f32_bytes = size_of::<f32>() as u64;
        let layer = config.kv_dim() as u64 * capacity * f32_bytes;
        limits.check_buffer(|| format!("a KV cache of {capacity} tokens (keys of one layer)"), layer)?;
        let rope = config.head_dim() as u64 * capacity * f32_bytes;
        limits.check_buffer(|| format!("the RoPE tables of a KV cache of {capacity} tokens"), rope)?;
        let tables = rope_table_count(config) as u64;
        let device_total = 2 * config.n_layers as u64 * layer + 2 * tables * rope + capacity * f32_bytes;
        let host = if limits.max_buffer_bytes == u64::MAX { device_total } else { 2 * tables * rope };
        limits.check_host(|| format!("a KV cache of {capacity} tokens"), host + capacity * 8)
    }

    /// Bytes one slot takes across all layers (keys and values, f32).
    pub fn bytes_per_token(config: &ModelConfig) -> usize {
        2 * config.n_layers * config.kv_dim() * size_of::<f32>()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    pub fn sinks(&self) -> usize {
        self.sinks
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.origin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origin.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.capacity - self.len()
    }

    /// Tokens evicted since the cache was last cleared.
    pub fn evicted(&self) -> usize {
        self.evicted
    }

    /// For each occupied slot, the index of its token among all tokens appended since the
    /// cache was last cleared.
    pub fn kept(&self) -> &[usize] {
        &self.origin
    }

    /// The most tokens one forward pass should append, so that eviction can always make room
    /// and the new tokens still see some of what came before.
    pub fn max_append(&self) -> usize {
        match self.policy {
            EvictionPolicy::None => self.capacity,
            EvictionPolicy::SinksWindow => ((self.capacity - self.sinks) / 2).max(1),
            EvictionPolicy::HeavyHitters => ((self.capacity - self.sinks - self.recent) / 2).max(1),
        }
    }

    /// Forgets every token after the first `len`; their slots are overwritten later. Only
    /// meaningful while nothing was evicted (slots and stream indices still agree).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.origin.truncate(len);
            self.appended = len;
            if let Some(scores) = self.scores.as_mut() {
                let device = scores.device();
                scores.inplace(|s| s.slice_assign(len..self.capacity, Tensor::zeros([self.capacity - len], &device)));
            }
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
        self.evicted = 0;
    }

    /// Fails unless `n` more tokens fit without evicting.
    pub(crate) fn reserve(&self, n: usize) -> Result<()> {
        if n > self.remaining() {
            return Err(Error::KvCacheFull { capacity: self.capacity });
        }
        Ok(())
    }

    /// Evicts as the policy says until `n` more tokens fit; returns how many left.
    pub async fn make_room(&mut self, n: usize) -> Result<usize> {
        self.evict(n, self.policy, self.sinks, self.max_append()).await
    }

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

    async fn evict(&mut self, n: usize, policy: EvictionPolicy, sinks: usize, limit: usize) -> Result<usize> {
        if n <= self.remaining() {
            return Ok(0);
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
    async fn choose_keep(&self, policy: EvictionPolicy, sinks: usize, count: usize) -> Result<Vec<usize>> {
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
    fn compact(&mut self, keep: &[usize]) {
        let kept = keep.len();
        let device = self.rope[0].cos.device();
        let from =
            Tensor::<1, Int>::from_data(TensorData::new(keep.iter().map(|&s| s as i32).collect(), [kept]), &device);
        for layer in &mut self.layers {
            let rope = &self.rope[layer.rope];
            compact_kv(&from, &rope.cos, &rope.sin, &mut layer.k, &mut layer.v);
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

    /// Layer `layer`'s rotation tables and its key and value tensors, for the kernels that
    /// write into the cache in place.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> (&Tensor<2>, &Tensor<2>, &mut Tensor<3>, &mut Tensor<3>) {
        let slot = &mut self.layers[layer];
        let rope = &self.rope[slot.rope];
        (&rope.cos, &rope.sin, &mut slot.k, &mut slot.v)
    }

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
        self.observe_attention_in_blocks(layer, q, heads, slot, SCORE_ELEMENTS);
    }

    /// [`Self::observe_attention`] with blocks of at most `block_elements` scores.
    fn observe_attention_in_blocks(
        &mut self,
        layer: usize,
        q: &Tensor<2>,
        heads: Heads,
        slot: usize,
        block_elements: usize,
    ) {
        let Some(scores) = self.scores.as_mut() else { return };
        let Heads { n_heads, n_kv_heads, head_dim } = heads;
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
            let old = s.clone().slice(0..seen);
            s.slice_assign(0..seen, old + received)
        });
    }

    /// Marks `seq` written slots as occupied.
    pub(crate) fn advance(&mut self, seq: usize) {
        self.origin.extend(self.appended..self.appended + seq);
        self.appended += seq;
    }
}

/// Elements above which [`scores_qk`] uses a matmul (natively) or works in row blocks (wasm).
const QK_ELEMENTS: usize = 1 << 22;

/// Most attention scores [`KvCache::observe_attention`] holds at once (64 MiB of f32).
const SCORE_ELEMENTS: usize = 1 << 24;

/// `q: [h, rows, d]` times `k: [h, seen, d]` transposed. Small products (every decode step)
/// are a broadcast multiply and a sum; burn's f32 matmul kernel fails to compile on some WebGPU
/// adapters (SwiftShader), so in the browser large ones go through the same path in row blocks.
fn scores_qk(q: Tensor<3>, k: Tensor<3>) -> Tensor<3> {
    let [h, rows, d] = q.dims();
    let seen = k.dims()[1];
    let product = |q: Tensor<3>| {
        let r = q.dims()[1];
        (q.unsqueeze_dim::<4>(2) * k.clone().unsqueeze_dim::<4>(1)).sum_dim(3).reshape([h, r, seen])
    };
    if h * rows * seen * d <= QK_ELEMENTS {
        return product(q);
    }
    if cfg!(not(target_arch = "wasm32")) {
        return q.matmul(k.swap_dims(1, 2));
    }
    let block = (QK_ELEMENTS / (h * seen * d)).max(1);
    let parts: Vec<Tensor<3>> =
        (0..rows).step_by(block).map(|r| product(q.clone().slice([0..h, r..(r + block).min(rows), 0..d]))).collect();
    Tensor::cat(parts, 1)
}

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

/// Rotation tables a cache of `config` keeps: one, or two when sliding-window layers rotate
/// with a base of their own.
fn rope_table_count(config: &ModelConfig) -> usize {
    1 + (0..config.n_layers).any(|i| config.layer_attention(i).local_rope) as usize
}

/// RoPE tables for positions `0..positions`, from the model's (possibly scaled) frequencies
/// ([`ModelConfig::rope_frequencies`]) for global or local layers, computed in f64 like the
/// reference implementations.
fn rope_table(config: &ModelConfig, local: bool, positions: usize, device: &Device) -> RopeTable {
    let hd = config.head_dim();
    let freqs = config.rope_frequencies(local);
    let mut cos = Vec::with_capacity(positions * hd);
    let mut sin = Vec::with_capacity(positions * hd);
    for p in 0..positions {
        for &freq in &freqs {
            let (s, c) = (p as f64 * freq).sin_cos();
            cos.extend([c as f32, c as f32]);
            sin.extend([-s as f32, s as f32]);
        }
    }
    RopeTable {
        cos: Tensor::from_data(TensorData::new(cos, [positions, hd]), device),
        sin: Tensor::from_data(TensorData::new(sin, [positions, hd]), device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    /// The attention each slot receives, summed over heads and queries, is the same however the
    /// queries are blocked, and equals a plain causal softmax computed on the host.
    #[test]
    fn observed_attention_is_blocked_exactly() {
        let device = Device::flex();
        let c = ModelConfig {
            arch: crate::config::Architecture::LLAMA,
            vocab: 16,
            d_model: 32,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            d_ff: 8,
            rope_theta: 1e4,
            rope_scaling: RopeScaling::None,
            rms_eps: 1e-5,
            context_length: 64,
            sliding_window: None,
            rope_theta_local: 1e4,
        };
        let heads = Heads { n_heads: 4, n_kv_heads: 2, head_dim: 8 };
        let kv = KvOptions { capacity: Some(40), policy: EvictionPolicy::HeavyHitters, ..KvOptions::default() };
        let (slot, m, seen) = (14, 6, 20);
        let mut x = 0.37f32;
        let mut next = move || {
            x = (x * 9301.0 + 49297.0) % 233280.0;
            x / 233280.0 - 0.5
        };
        let keys: Vec<f32> = (0..2 * 40 * 8).map(|_| next()).collect();
        let queries: Vec<f32> = (0..m * 32).map(|_| next()).collect();
        let q = Tensor::<2>::from_data(TensorData::new(queries.clone(), [m, 32]), &device);

        let mut want = vec![0.0f32; seen];
        for t in 0..m {
            for h in 0..4 {
                let kvh = h / 2;
                let qh = &queries[t * 32 + h * 8..][..8];
                let logits: Vec<f32> = (0..=slot + t)
                    .map(|s| {
                        qh.iter().zip(&keys[(kvh * 40 + s) * 8..][..8]).map(|(a, b)| a * b).sum::<f32>() / 8f32.sqrt()
                    })
                    .collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                for (s, l) in logits.iter().enumerate() {
                    want[s] += (l - max).exp() / sum;
                }
            }
        }
        for block in [SCORE_ELEMENTS, 4 * seen * 2, 1] {
            let mut cache = KvCache::new(&c, &kv, &device).unwrap();
            cache.layers[0].k = Tensor::from_data(TensorData::new(keys.clone(), [2, 40, 8]), &device);
            cache.observe_attention_in_blocks(0, &q, heads, slot, block);
            let got = cache.scores.clone().unwrap().into_data().try_into_vec_as::<f32>().unwrap();
            for s in 0..40 {
                let w = if s < seen { want[s] } else { 0.0 };
                assert!((got[s] - w).abs() < 1e-5, "block {block}, slot {s}: {} vs {w}", got[s]);
            }
        }
    }
}

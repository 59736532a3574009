//! Per-conversation attention state: keys and values of every layer, in slots allocated once,
//! and the policy that decides which tokens leave when the slots run out.

use std::str::FromStr;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::compact::compact_kv;
use crate::kernels::rope::Heads;
use crate::session::read_f32;

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
    /// `[capacity, head_dim]`: `cos(p θ_i)` repeated for both elements of pair `i`.
    rope_cos: Tensor<2>,
    /// `[capacity, head_dim]`: `(-sin(p θ_i), sin(p θ_i))` for pair `i`.
    rope_sin: Tensor<2>,
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

struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

impl KvCache {
    /// Allocates the slots `options` ask for on `device`.
    pub fn new(config: &ModelConfig, options: &KvOptions, device: &Device) -> Result<Self> {
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
        if policy == EvictionPolicy::HeavyHitters && sinks + recent >= capacity {
            return Err(Error::BadOptions(format!(
                "{sinks} sinks and a recent window of {recent} leave no heavy hitters in a KV cache of {capacity} tokens"
            )));
        }
        let shape = [config.n_kv_heads, capacity, config.head_dim()];
        let layers = (0..config.n_layers)
            .map(|_| LayerKv { k: Tensor::zeros(shape, device), v: Tensor::zeros(shape, device) })
            .collect();
        let (rope_cos, rope_sin) = rope_tables(config, capacity, device);
        let scores = (policy == EvictionPolicy::HeavyHitters).then(|| Tensor::zeros([capacity], device));
        Ok(Self {
            layers,
            rope_cos,
            rope_sin,
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
        let device = self.rope_cos.device();
        let from =
            Tensor::<1, Int>::from_data(TensorData::new(keep.iter().map(|&s| s as i32).collect(), [kept]), &device);
        for layer in &mut self.layers {
            compact_kv(&from, &self.rope_cos, &self.rope_sin, &mut layer.k, &mut layer.v);
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
        (&self.rope_cos, &self.rope_sin, &mut slot.k, &mut slot.v)
    }

    /// Whether [`Self::observe_attention`] is wanted.
    pub(crate) fn tracks_attention(&self) -> bool {
        self.scores.is_some()
    }

    /// `heavy-hitters`: adds the attention that the queries `q: [m, n_heads head_dim]` (rotated,
    /// at slots `slot..`) pay to every occupied slot of `layer`, summed over heads and queries.
    pub(crate) fn observe_attention(&mut self, layer: usize, q: &Tensor<2>, heads: Heads, slot: usize) {
        let Some(scores) = self.scores.as_mut() else { return };
        let Heads { n_heads, n_kv_heads, head_dim } = heads;
        let m = q.dims()[0];
        let seen = slot + m;
        let group = n_heads / n_kv_heads;
        let device = q.device();
        // [n_kv, m * group, hd]: row r is token r / group.
        let q = q.clone().reshape([m, n_kv_heads, group, head_dim]).swap_dims(0, 1).reshape([
            n_kv_heads,
            m * group,
            head_dim,
        ]);
        let k = self.layers[layer].k.clone().slice([0..n_kv_heads, 0..seen, 0..head_dim]);
        let mut logits = scores_qk(q, k) / (head_dim as f32).sqrt();
        if m > 1 {
            let mask: Vec<f32> = (0..m * group)
                .flat_map(|r| (0..seen).map(move |s| if s <= slot + r / group { 0.0 } else { f32::NEG_INFINITY }))
                .collect();
            logits = logits + Tensor::<2>::from_data(TensorData::new(mask, [m * group, seen]), &device).unsqueeze();
        }
        let received = softmax(logits, 2).sum_dim(1).sum_dim(0).reshape([seen]);
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

/// RoPE tables for positions `0..positions`: frequencies `θ_i = theta^(-2i / head_dim)`,
/// computed in f64 like the reference implementations.
fn rope_tables(config: &ModelConfig, positions: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let hd = config.head_dim();
    let mut cos = Vec::with_capacity(positions * hd);
    let mut sin = Vec::with_capacity(positions * hd);
    for p in 0..positions {
        for i in 0..hd / 2 {
            let freq = (config.rope_theta as f64).powf(-2.0 * i as f64 / hd as f64);
            let (s, c) = (p as f64 * freq).sin_cos();
            cos.extend([c as f32, c as f32]);
            sin.extend([-s as f32, s as f32]);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [positions, hd]), device),
        Tensor::from_data(TensorData::new(sin, [positions, hd]), device),
    )
}

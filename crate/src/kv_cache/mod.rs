//! Per-conversation attention state: keys and values of every layer, in slots allocated once,
//! and the policy that decides which tokens leave when the slots run out.

mod evict;
mod options;
mod scores;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::device::Limits;
use crate::backend::kernels::compact::compact_kv;
use crate::backend::readback::read_f32;
use crate::config::{Heads, ModelConfig, RopeTable};
use crate::error::{Error, Result};
use evict::window_rows;
pub use options::{DEFAULT_CAPACITY, EvictionPolicy, KvOptions, KvPlan};
use scores::SCORE_ELEMENTS;
pub use scores::heavy_hitters_keep;

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
    /// Set by [`Self::tentative`]: what [`Self::rollback`] may take back.
    tentative: Option<Tentative>,
}

/// Tokens appended since [`KvCache::tentative`], which [`KvCache::rollback`] may drop.
struct Tentative {
    /// Occupied slots when it began.
    len: usize,
    /// `heavy-hitters`: the queries of the passes since, not yet counted: which tokens'
    /// attention counts is known only when the caller says which stay.
    observations: Vec<Observation>,
}

/// One layer's queries of one pass, as [`KvCache::observe_attention`] takes them.
struct Observation {
    layer: usize,
    q: Tensor<2>,
    heads: Heads,
    slot: usize,
}

/// A cache's occupied state on the host ([`KvCache::contents`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KvContents {
    /// [`KvCache::kept`].
    pub kept: Vec<usize>,
    pub layers: Vec<LayerContents>,
    /// `heavy-hitters`: the attention each occupied slot received.
    pub scores: Option<Vec<f32>>,
}

/// One layer's keys and values of slots `first_slot..len`, `[n_kv_heads, len - first_slot,
/// head_dim]` each.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerContents {
    /// 0, but in a sliding-window layer that keeps fewer rows than slots.
    pub first_slot: usize,
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

struct LayerKv {
    /// `[n_kv_heads, rows, head_dim]`.
    k: Tensor<3>,
    v: Tensor<3>,
    /// Index of the layer's table in [`KvCache::rope`].
    rope: usize,
    /// Most recent slots a query of this layer sees; `None`: all.
    window: Option<usize>,
    /// The slot in row 0. Always 0 for a layer with a row per slot; a sliding-window layer
    /// with fewer rows than the cache has slots keeps its latest slots from row 0, and moves
    /// them down when a pass would run past its last row ([`KvCache::fit_pass`]).
    base: usize,
}

/// What one layer's kernels need from the cache: its rotation tables, its buffers, and the
/// slot its row 0 holds.
pub(crate) struct LayerSlots<'a> {
    pub cos: &'a Tensor<2>,
    pub sin: &'a Tensor<2>,
    pub k: &'a mut Tensor<3>,
    pub v: &'a mut Tensor<3>,
    pub base: usize,
}

impl LayerKv {
    fn rows(&self) -> usize {
        self.k.dims()[1]
    }
}

impl KvCache {
    /// Allocates the slots `options` ask for on `device`, after checking every size against
    /// the device's limits: nothing is allocated for a cache that cannot fit.
    pub fn new(config: &ModelConfig, options: &KvOptions, device: &Device) -> Result<Self> {
        let KvPlan { capacity, recent } = Self::plan(config, options, &Limits::of(device))?;
        let (policy, sinks) = (options.policy, options.sinks);
        let windowed = window_rows(config, capacity, policy, sinks, recent);
        let layers = (0..config.n_layers)
            .map(|i| {
                let attention = config.layer_attention(i);
                let rows = match (attention.window, windowed) {
                    (Some(_), Some(rows)) => rows,
                    _ => capacity,
                };
                let shape = [config.n_kv_heads, rows, config.head_dim()];
                LayerKv {
                    k: Tensor::zeros(shape, device),
                    v: Tensor::zeros(shape, device),
                    rope: attention.local_rope as usize,
                    window: attention.window,
                    base: 0,
                }
            })
            .collect();
        let rope = (0..RopeTable::count(config)).map(|i| RopeTable::new(config, i == 1, capacity, device)).collect();
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
            tentative: None,
        })
    }

    /// Checks `options` for `config` and `limits` without allocating anything; returns the
    /// capacity and the heavy hitters' recent window they give.
    pub fn plan(config: &ModelConfig, options: &KvOptions, limits: &Limits) -> Result<KvPlan> {
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
        let windowed = window_rows(config, capacity, policy, sinks, recent);
        Self::check_limits(config, capacity, windowed, limits)?;
        Ok(KvPlan { capacity, recent })
    }

    /// Each buffer of a cache of `capacity` slots against the device's largest buffer, and all
    /// of them (with the host's bookkeeping) against host memory, in u64 so that nothing wraps
    /// on wasm32.
    fn check_limits(config: &ModelConfig, capacity: usize, windowed: Option<usize>, limits: &Limits) -> Result<()> {
        let f32_bytes = size_of::<f32>() as u64;
        let rows: u64 = (0..config.n_layers)
            .map(|i| match (config.layer_attention(i).window, windowed) {
                (Some(_), Some(rows)) => rows as u64,
                _ => capacity as u64,
            })
            .sum();
        let capacity = capacity as u64;
        let layer = config.kv_dim() as u64 * capacity * f32_bytes;
        limits.check_buffer(|| format!("a KV cache of {capacity} tokens (keys of one layer)"), layer)?;
        let rope = config.head_dim() as u64 * capacity * f32_bytes;
        limits.check_buffer(|| format!("the RoPE tables of a KV cache of {capacity} tokens"), rope)?;
        let tables = RopeTable::count(config) as u64;
        let device_total = 2 * config.kv_dim() as u64 * rows * f32_bytes + 2 * tables * rope + capacity * f32_bytes;
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
    ///
    /// A cut further back than a sliding-window layer's rows still reach
    /// ([`Self::can_truncate`] says so) empties the cache instead.
    pub fn truncate(&mut self, len: usize) {
        let len = if self.can_truncate(len) { len } else { 0 };
        if len == 0 {
            self.layers.iter_mut().for_each(|l| l.base = 0);
        }
        if len < self.len() {
            self.origin.truncate(len);
            self.appended = len;
            if let Some(scores) = self.scores.as_mut() {
                let device = scores.device();
                scores.inplace(|s| s.slice_assign(len..self.capacity, Tensor::zeros([self.capacity - len], &device)));
            }
        }
    }

    /// Whether [`Self::truncate`] to `len` leaves every layer what the next token needs: a
    /// sliding-window layer that moved its slots down no longer holds those before its first
    /// row, so a cut further back than its window reaches must start over.
    pub fn can_truncate(&self, len: usize) -> bool {
        self.layers.iter().all(|l| match l.window {
            Some(w) => l.base <= len.saturating_sub(w - 1),
            None => true,
        })
    }

    /// The most tokens one pass may append: a sliding-window layer with fewer rows than slots
    /// must keep its window before the pass beside the pass's own tokens.
    pub fn max_pass(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|l| l.window.filter(|_| l.rows() < self.capacity).map(|w| l.rows() - (w - 1)))
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Rows layer `layer` keeps (`capacity`, or fewer for a sliding-window layer).
    pub fn layer_rows(&self, layer: usize) -> usize {
        self.layers[layer].rows()
    }

    /// Makes room in every sliding-window layer for `n` more tokens after the `len()` held:
    /// a layer that would run past its last row moves its last `window - 1` slots down to row
    /// 0 (keys stay as they are: they were rotated by their slot, which does not change).
    pub(crate) fn fit_pass(&mut self, n: usize) {
        let len = self.len();
        for layer in &mut self.layers {
            let (Some(w), rows) = (layer.window, layer.rows()) else { continue };
            if rows == self.capacity || len + n - layer.base <= rows {
                continue;
            }
            assert!(n + w - 1 <= rows, "fit_pass: a pass of {n} tokens is longer than max_pass");
            let base = len.saturating_sub(w - 1);
            let (from, kept) = (base - layer.base, len - base);
            let [heads, _, hd] = layer.k.dims();
            for t in [&mut layer.k, &mut layer.v] {
                let moved = t.clone().slice([0..heads, from..from + kept, 0..hd]);
                t.inplace(|t| t.slice_assign([0..heads, 0..kept, 0..hd], moved));
            }
            layer.base = base;
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
        self.evicted = 0;
        self.tentative = None;
    }

    /// Starts a span of tokens that [`Self::rollback`] can take back exactly (a speculative
    /// pass: the draft's tokens are appended, then the rejected ones dropped). Until then the
    /// attention the span's queries pay is held, not counted; nothing may be evicted.
    pub fn tentative(&mut self) {
        self.tentative = Some(Tentative { len: self.len(), observations: Vec::new() });
    }

    /// Whether a span [`Self::tentative`] began is open.
    pub fn is_tentative(&self) -> bool {
        self.tentative.is_some()
    }

    /// Ends the span [`Self::tentative`] began, dropping its last `n` tokens: the cache is then
    /// as if it had never seen them (the same occupied slots, keys and values, and stream
    /// indices; heavy-hitter scores count the kept tokens' attention as one-token passes would,
    /// since a span stands in for decoding steps); their slots are overwritten later. Fails (changing nothing) without a span, or when `n` is
    /// more than the span appended.
    pub fn rollback(&mut self, n: usize) -> Result<()> {
        let Some(span) = self.tentative.take() else {
            return Err(Error::BadOptions("KV cache rollback without a tentative span".into()));
        };
        let appended = self.len() - span.len;
        if n > appended {
            let err = format!("KV cache rollback of {n} tokens when the span appended {appended}");
            self.tentative = Some(span);
            return Err(Error::BadOptions(err));
        }
        let len = self.len() - n;
        self.origin.truncate(len);
        self.appended -= n;
        // Each kept token's queries count as if it had run in a pass of its own, layer by
        // layer, as in the one-token steps a verification pass stands in for.
        let rows = span.observations.iter().map(|o| len.saturating_sub(o.slot).min(o.q.dims()[0])).max().unwrap_or(0);
        for r in 0..rows {
            for Observation { layer, q, heads, slot } in &span.observations {
                if slot + r < len && r < q.dims()[0] {
                    self.observe_attention_in_blocks(
                        *layer,
                        &q.clone().slice(r..r + 1),
                        *heads,
                        slot + r,
                        SCORE_ELEMENTS,
                    );
                }
            }
        }
        Ok(())
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

    /// Layer `layer`'s rotation tables and its key and value tensors, for the kernels that
    /// write into the cache in place.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> LayerSlots<'_> {
        let slot = &mut self.layers[layer];
        let rope = &self.rope[slot.rope];
        LayerSlots { cos: &rope.cos, sin: &rope.sin, k: &mut slot.k, v: &mut slot.v, base: slot.base }
    }

    /// What the cache holds, read back to the host (for tests and inspection).
    pub async fn contents(&self) -> Result<KvContents> {
        let len = self.len();
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let [heads, _, hd] = layer.k.dims();
            let rows = len - layer.base;
            let read = async |t: &Tensor<3>| match rows {
                0 => Ok(Vec::new()),
                _ => read_f32(t.clone().slice([0..heads, 0..rows, 0..hd])).await,
            };
            let (keys, values) = (read(&layer.k).await?, read(&layer.v).await?);
            layers.push(LayerContents { first_slot: layer.base, keys, values });
        }
        let scores = match &self.scores {
            Some(s) if len > 0 => Some(read_f32(s.clone().slice(0..len)).await?),
            Some(_) => Some(Vec::new()),
            None => None,
        };
        Ok(KvContents { kept: self.origin.clone(), layers, scores })
    }

    /// Marks `seq` written slots as occupied.
    pub(crate) fn advance(&mut self, seq: usize) {
        self.origin.extend(self.appended..self.appended + seq);
        self.appended += seq;
    }
}

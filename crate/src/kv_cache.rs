//! Per-conversation attention state: keys and values of every layer, in slots allocated once,
//! and the policy that decides which tokens leave when the slots run out.

use std::str::FromStr;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::backend::device::Limits;
use crate::backend::kernels::compact::compact_kv;
use crate::backend::readback::read_f32;
use crate::config::Heads;
use crate::config::ModelConfig;
use crate::error::{Error, Result};

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
    /// A memory budget for keys and values; the capacity is as many tokens as fit (counting
    /// sliding-window layers at the rows they keep).
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
            (None, Some(bytes)) => self.capacity_within(config, bytes),
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

impl KvOptions {
    /// The most slots whose keys and values fit `bytes` (more than the context length is
    /// refused by the caller): every layer a row per slot, or, where the capacity lets
    /// sliding-window layers keep only their window's rows ([`window_rows`]), those rows beside
    /// a row per slot in the global layers (Gemma 3 270M: 2,309 slots in 36 MiB, not 1,024).
    fn capacity_within(&self, config: &ModelConfig, bytes: usize) -> usize {
        let row = 2 * config.kv_dim() * size_of::<f32>();
        let rows = bytes / row;
        let recent = |c: usize| self.recent.unwrap_or(c.saturating_sub(self.sinks) / 2);
        let windowed = |c: usize| window_rows(config, c, self.policy, self.sinks, recent(c));
        let local = (0..config.n_layers).filter(|&i| config.layer_attention(i).window.is_some()).count();
        let global = config.n_layers - local;
        // Every layer a row per slot (a capacity that windows some layers takes less).
        let full = rows / config.n_layers;
        // Windowed layers at their rows, global ones a row per slot.
        let split = match windowed(usize::MAX) {
            Some(w) if global > 0 => {
                let c = rows.saturating_sub(local * w) / global;
                if windowed(c) == Some(w) { c } else { 0 }
            }
            _ => 0,
        };
        full.max(split)
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

/// What [`KvCache::plan`] resolves options to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub capacity: usize,
    pub recent: usize,
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

/// Rows a sliding-window layer keeps instead of one per slot: the window less one (what the
/// next token sees besides itself) and room for a pass of `window` tokens (16..=256): Gemma 3's
/// 512-token window takes 767 rows whatever the capacity. `None` when that saves nothing, or
/// when eviction could keep a slot the window needs out of those rows (a cache too small for
/// its eviction to leave the last window of tokens in place, or heavy hitters whose recent
/// span is shorter than the window).
fn window_rows(
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

impl LayerKv {
    fn rows(&self) -> usize {
        self.k.dims()[1]
    }
}

/// Rotations of positions `0..capacity` for one set of frequencies.
struct RopeTable {
    /// `[capacity, head_dim]`: `a cos(p θ_i)` repeated for both elements of pair `i`, `a` the
    /// scaling's attention factor (1 but for LongRoPE).
    cos: Tensor<2>,
    /// `[capacity, head_dim]`: `a (-sin(p θ_i), sin(p θ_i))` for pair `i`.
    sin: Tensor<2>,
    /// The same without the factor, where there is one: eviction turns stored keys back by a
    /// distance, which must not scale them again.
    turn: Option<(Tensor<2>, Tensor<2>)>,
}

impl RopeTable {
    fn turn(&self) -> (&Tensor<2>, &Tensor<2>) {
        match &self.turn {
            Some((cos, sin)) => (cos, sin),
            None => (&self.cos, &self.sin),
        }
    }
}

impl KvCache {
    /// Allocates the slots `options` ask for on `device`, after checking every size against
    /// the device's limits: nothing is allocated for a cache that cannot fit.
    pub fn new(config: &ModelConfig, options: &KvOptions, device: &Device) -> Result<Self> {
        let Plan { capacity, recent } = Self::plan(config, options, &Limits::of(device))?;
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
            tentative: None,
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
        let windowed = window_rows(config, capacity, policy, sinks, recent);
        Self::check_limits(config, capacity, windowed, limits)?;
        Ok(Plan { capacity, recent })
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
        let tables = rope_table_count(config) as u64;
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

    /// Layer `layer`'s rotation tables and its key and value tensors, for the kernels that
    /// write into the cache in place.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> LayerSlots<'_> {
        let slot = &mut self.layers[layer];
        let rope = &self.rope[slot.rope];
        LayerSlots { cos: &rope.cos, sin: &rope.sin, k: &mut slot.k, v: &mut slot.v, base: slot.base }
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
        if let Some(span) = self.tentative.as_mut() {
            span.observations.push(Observation { layer, q: q.clone(), heads, slot });
            return;
        }
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
    let freqs = config.rope_frequencies(local, positions);
    // LongRoPE scales every rotation (so each query-key product by its square), as llama.cpp
    // and Hugging Face do.
    let factor = if local { 1.0 } else { config.rope_scaling.attention_factor() as f64 };
    let table = |scale: f64| {
        let mut cos = Vec::with_capacity(positions * hd);
        let mut sin = Vec::with_capacity(positions * hd);
        for p in 0..positions {
            for &freq in &freqs {
                let (s, c) = (p as f64 * freq).sin_cos();
                let (s, c) = (s * scale, c * scale);
                cos.extend([c as f32, c as f32]);
                sin.extend([-s as f32, s as f32]);
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [positions, hd]), device),
            Tensor::from_data(TensorData::new(sin, [positions, hd]), device),
        )
    };
    let (cos, sin) = table(factor);
    RopeTable { cos, sin, turn: (factor != 1.0).then(|| table(1.0)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    /// A byte budget counts sliding-window layers at the rows they keep: Gemma 3 270M's shapes
    /// (18 layers, one KV head of 256, a 512-token window in 15 of them) fit 2,309 slots in
    /// 36 MiB (3 x 2,309 + 15 x 767 rows of 2 KiB), where a row per slot in every layer would
    /// give 1,024; a plain model and a policy that cannot window keep the plain division.
    #[test]
    fn a_byte_budget_counts_windowed_layers_at_their_rows() {
        let gemma = ModelConfig {
            arch: crate::config::Architecture::GEMMA3,
            vocab: 262_144,
            d_model: 640,
            n_layers: 18,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            d_ff: 2048,
            rope_theta: 1e6,
            rope_scaling: RopeScaling::None,
            rms_eps: 1e-6,
            context_length: 32_768,
            sliding_window: Some(512),
            rope_theta_local: 1e4,
            global_layers: None,
        };
        let budget = KvOptions { capacity_bytes: Some(36 << 20), ..KvOptions::default() };
        let capacity = budget.resolve_capacity(&gemma).unwrap();
        assert_eq!(capacity, 2309);
        let rows = |c: usize| 3 * c + 15 * window_rows(&gemma, c, EvictionPolicy::SinksWindow, 4, 0).unwrap();
        assert!(rows(capacity) * 2048 <= 36 << 20 && rows(capacity + 1) * 2048 > 36 << 20);
        // Heavy hitters with a recent span shorter than the window keep a row per slot.
        let short = KvOptions { policy: EvictionPolicy::HeavyHitters, recent: Some(100), ..budget.clone() };
        assert_eq!(short.resolve_capacity(&gemma).unwrap(), (36 << 20) / KvCache::bytes_per_token(&gemma));
        // Absurd budgets and counts are refused, not wrapped.
        for policy in [EvictionPolicy::SinksWindow, EvictionPolicy::HeavyHitters] {
            let huge = KvOptions {
                capacity: None,
                capacity_bytes: Some(usize::MAX),
                policy,
                sinks: usize::MAX,
                recent: Some(usize::MAX),
            };
            assert!(matches!(huge.resolve_capacity(&gemma), Err(Error::BadOptions(_))));
        }
        let plain = ModelConfig { arch: crate::config::Architecture::LLAMA, sliding_window: None, ..gemma };
        assert_eq!(budget.resolve_capacity(&plain).unwrap(), (36 << 20) / KvCache::bytes_per_token(&plain));
    }

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
            global_layers: None,
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

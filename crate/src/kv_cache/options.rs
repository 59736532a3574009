//! What a cache is asked for: its capacity (in tokens or bytes), the eviction policy and its
//! parameters, resolved against a model's config.

use super::*;
use crate::names::named_enum;

/// The largest cache a session gets unless asked for another size (tokens).
pub const DEFAULT_CAPACITY: usize = 2048;

/// Which tokens leave a full cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
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

named_enum!(EvictionPolicy, "KV cache policy", {
    None => "none",
    SinksWindow => "sinks-window",
    HeavyHitters => "heavy-hitters",
});

/// How big a session's cache is and how it evicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
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

/// What [`KvCache::plan`] resolves options to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPlan {
    pub capacity: usize,
    pub recent: usize,
}

//! Per-conversation attention state: keys and values of every layer, in slots allocated once.

use burn::prelude::*;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::rope::Placement;

/// Keys and values for every layer, `[n_kv_heads, capacity, head_dim]` each.
///
/// The capacity is fixed at creation and the tensors never grow: tokens are written into their
/// slots in place by the RoPE kernel. Occupancy (`len`) and the position fed to RoPE (`next_position`) are
/// separate fields: today a token's position equals its slot, but an eviction policy can
/// change one without the other. Keys are stored after rotation.
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// `[capacity, head_dim]`: `cos(p θ_i)` repeated for both elements of pair `i`.
    rope_cos: Tensor<2>,
    /// `[capacity, head_dim]`: `(-sin(p θ_i), sin(p θ_i))` for pair `i`.
    rope_sin: Tensor<2>,
    capacity: usize,
    len: usize,
    next_position: usize,
}

struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

impl KvCache {
    /// Allocates `capacity` slots per layer on `device`.
    pub fn new(config: &ModelConfig, capacity: usize, device: &Device) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::BadOptions("KV cache capacity must be at least 1 token".into()));
        }
        if capacity > config.context_length {
            return Err(Error::BadOptions(format!(
                "KV cache capacity {capacity} exceeds the model's context length {}",
                config.context_length
            )));
        }
        let shape = [config.n_kv_heads, capacity, config.head_dim()];
        let layers = (0..config.n_layers)
            .map(|_| LayerKv { k: Tensor::zeros(shape, device), v: Tensor::zeros(shape, device) })
            .collect();
        let (rope_cos, rope_sin) = rope_tables(config, capacity, device);
        Ok(Self { layers, rope_cos, rope_sin, capacity, len: 0, next_position: 0 })
    }

    /// Bytes one slot takes across all layers (keys and values, f32).
    pub fn bytes_per_token(config: &ModelConfig) -> usize {
        2 * config.n_layers * config.kv_dim() * size_of::<f32>()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// The RoPE position the next token gets.
    pub fn next_position(&self) -> usize {
        self.next_position
    }

    /// Forgets every token after the first `len`; their slots are overwritten later.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.next_position = len;
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Fails unless `n` more tokens fit.
    pub(crate) fn reserve(&self, n: usize) -> Result<()> {
        if n > self.remaining() {
            return Err(Error::KvCacheFull { capacity: self.capacity });
        }
        Ok(())
    }

    /// Where the next tokens go: their first RoPE position and cache slot.
    pub(crate) fn placement(&self) -> Placement {
        Placement { position: self.next_position, slot: self.len }
    }

    /// Layer `layer`'s rotation tables and its key and value tensors, for the kernels that
    /// write into the cache in place.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> (&Tensor<2>, &Tensor<2>, &mut Tensor<3>, &mut Tensor<3>) {
        let slot = &mut self.layers[layer];
        (&self.rope_cos, &self.rope_sin, &mut slot.k, &mut slot.v)
    }

    /// Marks `seq` written slots as occupied.
    pub(crate) fn advance(&mut self, seq: usize) {
        self.len += seq;
        self.next_position += seq;
    }
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

//! Model hyper-parameters: read from GGUF metadata or a Hugging Face `config.json` into a
//! [`RawConfig`] that mirrors the file, then validated once into a [`ModelConfig`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::format::gguf::Value;

mod family;
mod raw;
mod rope;

pub use family::{Activation, Architecture, GELU_K};
pub use raw::RawConfig;
pub use rope::{RopeScaling, RopeTable};

/// Upper bounds that no real Llama-family model approaches; anything above is a broken or
/// hostile file, refused before memory is sized from it.
const MAX_D_MODEL: usize = 1 << 16;
const MAX_D_FF: usize = 1 << 18;
const MAX_LAYERS: usize = 1 << 10;
const MAX_HEADS: usize = 1 << 10;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CONTEXT: usize = 1 << 24;

/// How one layer attends: over which past and with which rotary base.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerAttention {
    /// Most recent tokens (the current one included) a query sees; `None`: all of them.
    pub window: Option<usize>,
    /// Whether the layer's RoPE uses the local base (`rope_theta_local`, unscaled) instead of
    /// the global one.
    pub local_rope: bool,
}

/// The validated hyper-parameters of a decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Usually `d_model / n_heads`; stated apart by models whose heads are wider or narrower
    /// (Qwen3, Gemma 3, Mistral Nemo), so that `n_heads * head_dim` need not be `d_model`.
    pub head_dim: usize,
    pub d_ff: usize,
    pub rope_theta: f32,
    /// How the rotary frequencies are stretched for long contexts.
    pub rope_scaling: RopeScaling,
    pub rms_eps: f32,
    /// The longest sequence the model was trained for.
    pub context_length: usize,
    /// Tokens a sliding-window layer sees, where the architecture has such layers.
    pub sliding_window: Option<usize>,
    /// The RoPE base of sliding-window layers (Gemma 3: 10,000 beside 1,000,000).
    pub rope_theta_local: f32,
    /// The layers that attend globally, where stated layer by layer (Hugging Face's
    /// `layer_types`: a model with layers dropped keeps each layer's kind); `None`: every
    /// [`Architecture::global_every`]th.
    pub global_layers: Option<Vec<usize>>,
}

impl ModelConfig {
    /// The config as a Hugging Face `config.json` (which [`RawConfig::from_hf_json`] reads back).
    pub fn to_hf_json(&self, tie_word_embeddings: bool) -> serde_json::Value {
        let act = match self.arch.activation {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        };
        let mut json = serde_json::json!({
            "model_type": if self.arch == Architecture::GEMMA3 { "gemma3_text" } else { self.arch.name },
            "hidden_act": act,
            "vocab_size": self.vocab,
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.d_ff,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.to_hf_json(),
            "rms_norm_eps": self.rms_eps,
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": tie_word_embeddings,
        });
        if let Some(window) = self.sliding_window {
            json["sliding_window"] = window.into();
            json["rope_local_base_freq"] = self.rope_theta_local.into();
            let kind =
                |l| if self.layer_attention(l).window.is_some() { "sliding_attention" } else { "full_attention" };
            json["layer_types"] = (0..self.n_layers).map(kind).collect::<Vec<_>>().into();
        }
        json
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Width of the queries (and of the attention output): `n_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// How layer `layer` attends.
    pub fn layer_attention(&self, layer: usize) -> LayerAttention {
        let global = match &self.global_layers {
            Some(layers) => layers.contains(&layer),
            None => self.arch.global_every.is_none_or(|every| (layer + 1).is_multiple_of(every)),
        };
        match self.sliding_window {
            Some(window) if !global => LayerAttention { window: Some(window), local_rope: true },
            _ => LayerAttention { window: None, local_rope: false },
        }
    }

    /// The rotary frequency of each pair `i`, `θ_i = theta^(-2i / head_dim)`, divided as
    /// [`RopeScaling`] says for global layers (`local == false`) in a cache of `positions`, from
    /// `rope_theta_local` and unscaled for sliding-window ones; in f64 like the reference
    /// implementations.
    pub fn rope_frequencies(&self, local: bool, positions: usize) -> Vec<f64> {
        let hd = self.head_dim();
        let theta = if local { self.rope_theta_local } else { self.rope_theta } as f64;
        let base: Vec<f64> = (0..hd / 2).map(|i| theta.powf(-2.0 * i as f64 / hd as f64)).collect();
        let divisors = if local { vec![1.0; base.len()] } else { self.rope_scaling.divisors(&base, positions) };
        base.iter().zip(divisors).map(|(f, d)| f / d).collect()
    }
}

/// The head layout of a model's attention: what the fused Q/K/V projection, RoPE and the
/// attention kernels need to know of it.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

#[cfg(test)]
mod tests;

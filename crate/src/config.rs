//! Model hyper-parameters: read from GGUF metadata or a Hugging Face `config.json` into a
//! [`RawConfig`] that mirrors the file, then validated once into a [`ModelConfig`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::format::gguf::Value;

/// Upper bounds that no real Llama-family model approaches; anything above is a broken or
/// hostile file, refused before memory is sized from it.
const MAX_D_MODEL: usize = 1 << 16;
const MAX_D_FF: usize = 1 << 18;
const MAX_LAYERS: usize = 1 << 10;
const MAX_HEADS: usize = 1 << 10;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CONTEXT: usize = 1 << 24;

/// The gated activation of the feed-forward block: `act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU): Llama, Qwen, Phi-3.
    Silu,
    /// GELU's tanh approximation (GeGLU): Gemma. Hugging Face calls it `gelu_pytorch_tanh`.
    GeluTanh,
}

/// `sqrt(2 / π)`, GELU's tanh approximation's constant.
pub const GELU_K: f32 = 0.797_884_6;

impl Activation {
    /// The activation of one gate value. GELU's `0.5 x (1 + tanh(z))` is written as the equal
    /// `x / (1 + exp(-2z))`, which has no overflow to guard: large `|z|` gives `x` or `-0`.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Silu => x / (1.0 + (-x).exp()),
            Self::GeluTanh => x / (1.0 + (-2.0 * GELU_K * (x + 0.044_715 * x * x * x)).exp()),
        }
    }
}

/// What a family of decoders does differently from Llama: the one decoder reads this instead
/// of each family having a model file of its own. A family is a constructor that states only
/// its differences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Architecture {
    /// GGUF's `general.architecture` (Hugging Face's `model_type` maps onto it).
    pub name: &'static str,
    /// Biases on the query, key and value projections (`blk.N.attn_{q,k,v}.bias`).
    pub qkv_bias: bool,
    /// How a GGUF of this family orders each query and key head's rows: llama.cpp's converter
    /// permutes Llama's into adjacent rotation pairs, and leaves the others (rotated by halves,
    /// llama.cpp's NEOX order) as Hugging Face has them.
    pub gguf_rope_halves: bool,
    /// An RMSNorm over each query and key head before RoPE (`blk.N.attn_{q,k}_norm.weight`).
    pub qk_norm: bool,
    /// RMSNorms on the attention output and on the feed-forward output, before each residual
    /// add (`blk.N.post_attention_norm.weight`, `blk.N.post_ffw_norm.weight`), beside the
    /// usual ones before each sub-block.
    pub post_norms: bool,
    pub activation: Activation,
    /// Token embeddings multiplied by `sqrt(d_model)` before the first block.
    pub embed_scale: bool,
    /// Hugging Face checkpoints store each RMSNorm scale as `w - 1` (the model multiplies by
    /// `1 + w`); GGUF files, as llama.cpp's converter writes them, hold `w`.
    pub hf_norm_minus_one: bool,
    /// Every `n`th layer (the last of each group of `n`) attends to the whole context, the
    /// others only to the last [`ModelConfig::sliding_window`] tokens, with their own RoPE base.
    /// `None`: every layer is global.
    pub global_every: Option<usize>,
    /// Q, K and V stored as one `attn_qkv` matrix, gate and up as one `ffn_up` of twice the
    /// rows (gate first), which loading serves as the separate matrices ([`crate::load::fused`]).
    pub fused_projections: bool,
}

impl Architecture {
    pub const LLAMA: Self = Self {
        name: "llama",
        qkv_bias: false,
        gguf_rope_halves: false,
        qk_norm: false,
        post_norms: false,
        activation: Activation::Silu,
        embed_scale: false,
        hf_norm_minus_one: false,
        global_every: None,
        fused_projections: false,
    };
    /// Qwen2 (and Qwen2.5): Llama with biases on Q, K and V.
    pub const QWEN2: Self = Self { qkv_bias: true, gguf_rope_halves: true, name: "qwen2", ..Self::LLAMA };
    /// Qwen3: Qwen2 without the biases, with an RMSNorm on each query and key head.
    pub const QWEN3: Self = Self { name: "qwen3", qkv_bias: false, qk_norm: true, ..Self::QWEN2 };
    /// Phi-3: Llama rotated by halves, its projections stored fused.
    pub const PHI3: Self = Self { name: "phi3", gguf_rope_halves: true, fused_projections: true, ..Self::LLAMA };
    /// Gemma 3: Qwen3's head norms, norms after the sub-blocks too, GeGLU, scaled embeddings,
    /// and five sliding-window layers to each global one.
    pub const GEMMA3: Self = Self {
        name: "gemma3",
        post_norms: true,
        activation: Activation::GeluTanh,
        embed_scale: true,
        hf_norm_minus_one: true,
        global_every: Some(6),
        ..Self::QWEN3
    };

    /// The family a GGUF `general.architecture` or a `config.json` `model_type` names.
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" => Ok(Self::LLAMA),
            "qwen2" => Ok(Self::QWEN2),
            "qwen3" => Ok(Self::QWEN3),
            "gemma3" | "gemma3_text" => Ok(Self::GEMMA3),
            "phi3" => Ok(Self::PHI3),
            other => Err(Error::config(format!(
                "architecture {other:?} is not supported (llama, mistral, qwen2, qwen3, gemma3, phi3)"
            ))),
        }
    }
}

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

/// How a model stretches its rotary frequencies. Only what the engine applies exactly is
/// accepted; every other kind (YaRN, dynamic NTK) is refused by name rather than run
/// with the wrong positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor` (GGUF `rope.scaling.type = "linear"`, Hugging Face
    /// `"linear"`).
    Linear { factor: f32 },
    /// Llama 3.1's scaling (Hugging Face `rope_type: "llama3"`): long wavelengths divided by
    /// `factor`, short ones kept, a smooth blend between.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_context: usize },
    /// One divisor per frequency pair, as llama.cpp's converter stores Llama 3's scaling in a
    /// GGUF (the tensor `rope_freqs.weight`, `[head_dim / 2]`).
    Factors(Vec<f32>),
    /// Phi-3's LongRoPE ("su"): a divisor per frequency pair, `short` for caches up to the
    /// original context and `long` past it (as llama.cpp chooses, by context size), and every
    /// rotation scaled by `attn_factor` (GGUF `rope_factors_short/long.weight` and
    /// `rope.scaling.attn_factor`).
    LongRope { short: Vec<f32>, long: Vec<f32>, original_context: usize, attn_factor: f32 },
}

impl RopeScaling {
    /// The divisor of each of the `pairs` base frequencies `θ_i = base^(-2i / head_dim)` in a
    /// cache of `positions`.
    fn divisors(&self, base: &[f64], positions: usize) -> Vec<f64> {
        match self {
            Self::None => vec![1.0; base.len()],
            Self::Linear { factor } => vec![*factor as f64; base.len()],
            Self::Factors(f) => f.iter().map(|&f| f as f64).collect(),
            Self::LongRope { short, long, original_context, .. } => {
                let f = if positions > *original_context { long } else { short };
                f.iter().map(|&f| f as f64).collect()
            }
            &Self::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                let (factor, low, high) = (factor as f64, low_freq_factor as f64, high_freq_factor as f64);
                let context = original_context as f64;
                let (low_wavelen, high_wavelen) = (context / low, context / high);
                base.iter()
                    .map(|&freq| {
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        if wavelen < high_wavelen {
                            1.0
                        } else if wavelen > low_wavelen {
                            factor
                        } else {
                            let smooth = (context / wavelen - low) / (high - low);
                            1.0 / ((1.0 - smooth) / factor + smooth)
                        }
                    })
                    .collect()
            }
        }
    }

    /// As Hugging Face's `rope_scaling` (`hearth-factors` for per-frequency divisors, which
    /// only hearth reads back).
    fn to_hf_json(&self) -> serde_json::Value {
        match self {
            Self::None => serde_json::Value::Null,
            Self::Linear { factor } => serde_json::json!({ "rope_type": "linear", "factor": factor }),
            Self::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_context,
            }),
            Self::Factors(f) => serde_json::json!({ "rope_type": "hearth-factors", "factors": f }),
            Self::LongRope { short, long, original_context, attn_factor } => serde_json::json!({
                "rope_type": "longrope",
                "short_factor": short,
                "long_factor": long,
                "original_max_position_embeddings": original_context,
                "attention_factor": attn_factor,
            }),
        }
    }

    /// What every rotation is scaled by (LongRoPE's attention factor; 1 otherwise).
    pub fn attention_factor(&self) -> f32 {
        match self {
            Self::LongRope { attn_factor, .. } => *attn_factor,
            _ => 1.0,
        }
    }

    /// Reads Hugging Face's `rope_scaling` object (`type` or `rope_type`); LongRoPE's original
    /// context and attention factor may sit in it or beside it (`original`, `context`: the
    /// config's `original_max_position_embeddings` and `max_position_embeddings`).
    fn from_hf_json(v: &serde_json::Value, original: Option<u64>, context: Option<u64>) -> Result<Self> {
        if v.is_null() {
            return Ok(Self::None);
        }
        let kind = v.get("rope_type").or(v.get("type")).and_then(serde_json::Value::as_str).unwrap_or("");
        let number = |key: &str| -> Result<f32> {
            v.get(key)
                .and_then(serde_json::Value::as_f64)
                .map(|x| x as f32)
                .ok_or_else(|| Error::config(format!("rope scaling {kind:?}: {key} is missing or not a number")))
        };
        match kind {
            "default" => Ok(Self::None),
            "linear" => Ok(Self::Linear { factor: number("factor")? }),
            "llama3" => Ok(Self::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_context: v
                    .get("original_max_position_embeddings")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|c| usize::try_from(c).ok())
                    .ok_or_else(|| Error::config("rope scaling llama3: original_max_position_embeddings is missing"))?,
            }),
            "longrope" | "su" => {
                let factors = |key: &str| -> Result<Vec<f32>> {
                    v.get(key)
                        .and_then(serde_json::Value::as_array)
                        .ok_or_else(|| {
                            Error::config(format!("rope scaling longrope: {key} is missing or not an array"))
                        })?
                        .iter()
                        .map(|f| {
                            f.as_f64().map(|f| f as f32).ok_or_else(|| Error::config("rope factor is not a number"))
                        })
                        .collect()
                };
                let original = v
                    .get("original_max_position_embeddings")
                    .and_then(serde_json::Value::as_u64)
                    .or(original)
                    .filter(|&o| o > 0)
                    .ok_or_else(|| {
                        Error::config("rope scaling longrope: original_max_position_embeddings is missing")
                    })?;
                // Hugging Face's and llama.cpp's converter's: sqrt(1 + ln(scale) / ln(original)).
                let scale = context.unwrap_or(original) as f64 / original as f64;
                let computed = if scale > 1.0 { (1.0 + scale.ln() / (original as f64).ln()).sqrt() } else { 1.0 };
                let attn_factor = v.get("attention_factor").and_then(serde_json::Value::as_f64).unwrap_or(computed);
                Ok(Self::LongRope {
                    short: factors("short_factor")?,
                    long: factors("long_factor")?,
                    original_context: usize::try_from(original).unwrap_or(usize::MAX),
                    attn_factor: attn_factor as f32,
                })
            }
            "hearth-factors" => {
                let factors = v
                    .get("factors")
                    .and_then(serde_json::Value::as_array)
                    .ok_or_else(|| Error::config("rope scaling hearth-factors: factors is missing or not an array"))?;
                let factors = factors
                    .iter()
                    .map(|f| f.as_f64().map(|f| f as f32).ok_or_else(|| Error::config("rope factor is not a number")))
                    .collect::<Result<_>>()?;
                Ok(Self::Factors(factors))
            }
            other => Err(Error::config(format!(
                "rope scaling {other:?} is not supported (only linear, llama3 and longrope): refusing rather than \
                 running the model at the wrong positions"
            ))),
        }
    }

    pub(crate) fn validate(&self, head_dim: usize) -> Result<()> {
        let positive = |name: &str, x: f32| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(Error::config(format!("rope scaling {name} {x} must be > 0")))
            }
        };
        match self {
            Self::None => Ok(()),
            Self::Linear { factor } => positive("factor", *factor),
            Self::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive("high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor || *original_context == 0 {
                    return Err(Error::config(format!(
                        "rope scaling llama3: high_freq_factor {high_freq_factor} must exceed low_freq_factor \
                         {low_freq_factor} and the original context {original_context} must be positive"
                    )));
                }
                Ok(())
            }
            Self::Factors(f) => {
                if f.len() != head_dim / 2 {
                    return Err(Error::config(format!(
                        "rope_freqs.weight has {} factors but the head dimension {head_dim} needs {}",
                        f.len(),
                        head_dim / 2
                    )));
                }
                f.iter().try_for_each(|&x| positive("factor", x))
            }
            Self::LongRope { short, long, attn_factor, .. } => {
                for (name, f) in [("short", short), ("long", long)] {
                    if f.len() != head_dim / 2 {
                        return Err(Error::config(format!(
                            "longrope has {} {name} factors but the head dimension {head_dim} needs {}",
                            f.len(),
                            head_dim / 2
                        )));
                    }
                    f.iter().try_for_each(|&x| positive("factor", x))?;
                }
                positive("attention factor", *attn_factor)
            }
        }
    }
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

/// The global layers `layer_types` names, for a model with sliding-window layers; `None` for
/// one whose every layer is global (Qwen3's configs list them all as `full_attention`).
fn global_layers(types: &[String], c: &ModelConfig) -> Result<Option<Vec<usize>>> {
    if types.len() != c.n_layers {
        return Err(Error::config(format!("layer_types names {} layers of {}", types.len(), c.n_layers)));
    }
    let mut global = Vec::new();
    for (i, t) in types.iter().enumerate() {
        match t.as_str() {
            "full_attention" => global.push(i),
            "sliding_attention" if c.sliding_window.is_some() => {}
            other => return Err(Error::config(format!("layer {i}'s attention {other:?} is not supported here"))),
        }
    }
    Ok(c.sliding_window.map(|_| global))
}

/// Hyper-parameters as a file states them; every field may be missing.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawConfig {
    pub vocab_size: Option<u64>,
    pub hidden_size: Option<u64>,
    pub num_hidden_layers: Option<u64>,
    pub num_attention_heads: Option<u64>,
    pub num_key_value_heads: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub rope_theta: Option<f64>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<u64>,
    pub head_dim: Option<u64>,
    pub rope_scaling: Option<serde_json::Value>,
    pub model_type: Option<String>,
    pub hidden_act: Option<String>,
    /// Gemma's name for `hidden_act`.
    pub hidden_activation: Option<String>,
    pub tie_word_embeddings: Option<bool>,
    pub sliding_window: Option<u64>,
    pub rope_local_base_freq: Option<f64>,
    /// Gemma: queries are scaled by `1 / sqrt(this)`; only `head_dim` is supported.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: soft caps the engine does not apply, refused when set.
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    /// GGUF `rope.dimension_count`: dimensions of each head that rotate (all of them, or the
    /// model is refused).
    #[serde(skip)]
    pub rope_dims: Option<u64>,
    /// Hugging Face's share of each head that rotates (Phi-4-mini: 0.75); only 1 is supported.
    pub partial_rotary_factor: Option<f64>,
    /// The context a long-context model was first trained for (Phi-3's LongRoPE).
    pub original_max_position_embeddings: Option<u64>,
    /// Each layer's attention, `"sliding_attention"` or `"full_attention"`.
    pub layer_types: Option<Vec<String>>,
}

impl RawConfig {
    /// Reads `{arch}.*` keys of GGUF metadata, for the architectures [`Architecture::named`]
    /// knows.
    pub fn from_gguf(metadata: &BTreeMap<String, Value>) -> Result<Self> {
        let arch = metadata
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config("general.architecture is missing"))?;
        let arch = Architecture::named(arch)?.name;
        let uint = |key: &str| -> Result<Option<u64>> {
            match metadata.get(&format!("{arch}.{key}")) {
                None => Ok(None),
                Some(v) => {
                    v.as_u64().map(Some).ok_or_else(|| Error::config(format!("{arch}.{key} is {v:?}, not an integer")))
                }
            }
        };
        let float = |key: &str| -> Result<Option<f64>> {
            match metadata.get(&format!("{arch}.{key}")) {
                None => Ok(None),
                Some(v) => {
                    v.as_f64().map(Some).ok_or_else(|| Error::config(format!("{arch}.{key} is {v:?}, not a number")))
                }
            }
        };
        let vocab_size = match uint("vocab_size")? {
            Some(v) => Some(v),
            None => metadata.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(|a| a.len() as u64),
        };
        let rope_scaling = match metadata.get(&format!("{arch}.rope.scaling.type")) {
            None => None,
            Some(Value::String(kind)) if kind == "none" => None,
            Some(Value::String(kind)) if kind == "linear" => {
                let factor = float("rope.scaling.factor")?.ok_or_else(|| {
                    Error::config(format!("{arch}.rope.scaling.type is linear but rope.scaling.factor is missing"))
                })?;
                Some(serde_json::json!({ "rope_type": "linear", "factor": factor }))
            }
            Some(Value::String(kind)) => Some(serde_json::json!({ "rope_type": kind })),
            Some(v) => return Err(Error::config(format!("{arch}.rope.scaling.type is {v:?}, not a string"))),
        };
        let head_dim = uint("attention.key_length")?;
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(cap) = float(key)?
                && cap != 0.0
            {
                return Err(Error::config(format!("{arch}.{key} = {cap}: logit soft-capping is not supported")));
            }
        }
        Ok(Self {
            vocab_size,
            hidden_size: uint("embedding_length")?,
            num_hidden_layers: uint("block_count")?,
            num_attention_heads: uint("attention.head_count")?,
            num_key_value_heads: uint("attention.head_count_kv")?,
            intermediate_size: uint("feed_forward_length")?,
            rope_theta: float("rope.freq_base")?,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon")?,
            max_position_embeddings: uint("context_length")?,
            head_dim,
            rope_scaling,
            model_type: Some(arch.into()),
            sliding_window: uint("attention.sliding_window")?,
            rope_dims: uint("rope.dimension_count")?,
            rope_local_base_freq: float("rope.freq_base_swa")?,
            ..Self::default()
        })
    }

    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(json: &[u8]) -> Result<Self> {
        let raw: Self = serde_json::from_slice(json).map_err(|e| Error::config(format!("config.json: {e}")))?;
        let arch = match raw.model_type.as_deref() {
            Some(name) => {
                Architecture::named(name).map_err(|e| Error::config(format!("config.json model_type: {e}")))?
            }
            None => return Err(Error::config("config.json has no model_type")),
        };
        let act = raw.hidden_activation.as_deref().or(raw.hidden_act.as_deref());
        match (arch.activation, act) {
            (_, None) | (Activation::Silu, Some("silu")) => {}
            (Activation::GeluTanh, Some("gelu_pytorch_tanh" | "gelu_tanh")) => {}
            (_, Some(other)) => {
                return Err(Error::config(format!("activation {other:?} is not supported for {}", arch.name)));
            }
        }
        if let Some(scalar) = raw.query_pre_attn_scalar
            && raw.head_dim.is_some_and(|hd| hd as f64 != scalar)
        {
            return Err(Error::config(format!(
                "query_pre_attn_scalar {scalar} differs from head_dim: only 1 / sqrt(head_dim) query scaling is supported"
            )));
        }
        for (key, cap) in [("attn", raw.attn_logit_softcapping), ("final", raw.final_logit_softcapping)] {
            if let Some(cap) = cap {
                return Err(Error::config(format!("{key}_logit_softcapping {cap}: soft-capping is not supported")));
            }
        }
        Ok(raw)
    }

    /// Fills defaults the formats define and checks every value.
    pub fn resolve(&self) -> Result<ModelConfig> {
        fn need(v: Option<u64>, name: &str, max: usize) -> Result<usize> {
            let v = v.ok_or_else(|| Error::config(format!("{name} is missing")))?;
            if v == 0 || v > max as u64 {
                return Err(Error::config(format!("{name} = {v} is outside 1..={max}")));
            }
            Ok(v as usize)
        }
        let d_model = need(self.hidden_size, "hidden size", MAX_D_MODEL)?;
        let n_heads = need(self.num_attention_heads, "attention head count", MAX_HEADS)?;
        let n_kv_heads = need(self.num_key_value_heads.or(self.num_attention_heads), "KV head count", MAX_HEADS)?;
        let mut config = ModelConfig {
            arch: Architecture::named(self.model_type.as_deref().unwrap_or("llama"))?,
            vocab: need(self.vocab_size, "vocab size", MAX_VOCAB)?,
            d_model,
            n_layers: need(self.num_hidden_layers, "layer count", MAX_LAYERS)?,
            n_heads,
            n_kv_heads,
            head_dim: match self.head_dim {
                Some(stated) => need(Some(stated), "head dimension", MAX_D_MODEL)?,
                None if d_model % n_heads == 0 => d_model / n_heads,
                None => {
                    return Err(Error::config(format!(
                        "hidden size {d_model} is not a multiple of the head count {n_heads} and no head dimension is stated"
                    )));
                }
            },
            d_ff: need(self.intermediate_size, "feed-forward size", MAX_D_FF)?,
            rope_theta: self.rope_theta.unwrap_or(10_000.0) as f32,
            rope_scaling: match &self.rope_scaling {
                Some(v) => {
                    RopeScaling::from_hf_json(v, self.original_max_position_embeddings, self.max_position_embeddings)?
                }
                None => RopeScaling::None,
            },
            rms_eps: self.rms_norm_eps.unwrap_or(1e-5) as f32,
            context_length: need(self.max_position_embeddings.or(Some(2048)), "context length", MAX_CONTEXT)?,
            sliding_window: None,
            rope_theta_local: self.rope_local_base_freq.unwrap_or(10_000.0) as f32,
            global_layers: None,
        };
        if config.arch.global_every.is_some() {
            let window = self.sliding_window.ok_or_else(|| {
                Error::config(format!("{} has sliding-window layers but no sliding window size", config.arch.name))
            })?;
            config.sliding_window = Some(need(Some(window), "sliding window", MAX_CONTEXT)?);
        }
        if let Some(types) = &self.layer_types {
            config.global_layers = global_layers(types, &config)?;
        }
        if n_heads % n_kv_heads != 0 {
            return Err(Error::config(format!(
                "head count {n_heads} is not a multiple of the KV head count {n_kv_heads}"
            )));
        }
        let head_dim = config.head_dim();
        let partial = self.partial_rotary_factor.filter(|&f| f != 1.0).map(|f| (f * head_dim as f64) as u64);
        if let Some(rotated) = self.rope_dims.filter(|&r| r != head_dim as u64).or(partial) {
            return Err(Error::config(format!(
                "RoPE rotates {rotated} of each head's {head_dim} dimensions: partial rotary embeddings are not supported"
            )));
        }
        if !head_dim.is_multiple_of(2) {
            return Err(Error::config(format!("head dimension {head_dim} is odd; rotary embeddings need pairs")));
        }
        config.rope_scaling.validate(head_dim)?;
        for theta in [config.rope_theta, config.rope_theta_local] {
            if !(theta.is_finite() && theta > 0.0) {
                return Err(Error::config(format!("rope theta {theta} must be a positive number")));
            }
        }
        if !(config.rms_eps.is_finite() && config.rms_eps > 0.0 && config.rms_eps < 1.0) {
            return Err(Error::config(format!("RMS norm epsilon {} must be in (0, 1)", config.rms_eps)));
        }
        Ok(config)
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
mod tests {
    use super::*;

    fn smollm2() -> RawConfig {
        RawConfig {
            vocab_size: Some(49152),
            hidden_size: Some(576),
            num_hidden_layers: Some(30),
            num_attention_heads: Some(9),
            num_key_value_heads: Some(3),
            intermediate_size: Some(1536),
            rope_theta: Some(100000.0),
            rms_norm_eps: Some(1e-5),
            max_position_embeddings: Some(8192),
            ..Default::default()
        }
    }

    /// `layer_types` states each layer's attention: a Gemma 3 keeps the kinds it is told (and
    /// writes them back), a model without windows may list every layer as full, a wrong count
    /// or a window on a family without one is refused.
    #[test]
    fn layer_types_state_each_layers_attention() {
        let types = |kinds: &[&str]| Some(kinds.iter().map(|k| k.to_string()).collect());
        let gemma = RawConfig {
            model_type: Some("gemma3_text".into()),
            num_hidden_layers: Some(3),
            sliding_window: Some(16),
            layer_types: types(&["sliding_attention", "full_attention", "sliding_attention"]),
            ..smollm2()
        };
        let c = gemma.resolve().unwrap();
        assert_eq!(c.global_layers, Some(vec![1]));
        assert_eq!([0, 1, 2].map(|l| c.layer_attention(l).window), [Some(16), None, Some(16)]);
        let back = RawConfig::from_hf_json(c.to_hf_json(true).to_string().as_bytes()).unwrap().resolve().unwrap();
        assert_eq!(back, c);
        let by_index = RawConfig { layer_types: None, ..gemma.clone() }.resolve().unwrap();
        assert_eq!([0, 1, 2].map(|l| by_index.layer_attention(l).window), [Some(16); 3]);
        let plain = RawConfig { num_hidden_layers: Some(2), layer_types: types(&["full_attention"; 2]), ..smollm2() };
        assert_eq!(plain.resolve().unwrap().global_layers, None);
        for bad in [
            RawConfig { layer_types: types(&["full_attention"]), ..gemma.clone() },
            RawConfig { num_hidden_layers: Some(1), layer_types: types(&["sliding_attention"]), ..smollm2() },
        ] {
            assert!(bad.resolve().is_err(), "{:?}", bad.layer_types);
        }
    }

    #[test]
    fn smollm2_resolves_with_derived_dims() {
        let c = smollm2().resolve().unwrap();
        assert_eq!((c.head_dim(), c.group_size(), c.kv_dim()), (64, 3, 192));
    }

    /// Phi-3.5-mini's `config.json` form of LongRoPE (factors in `rope_scaling`, the original
    /// context beside it): the short factors within 4096 positions, the long ones past them, the
    /// attention factor `sqrt(1 + ln 32 / ln 4096)`; and the record's own form reads back equal.
    #[test]
    fn longrope_reads_phi3s_config_and_chooses_by_context() {
        let (short, long): (Vec<f32>, Vec<f32>) = ((0..48).map(|i| 1.0 + i as f32 * 0.01).collect(), vec![5.0; 48]);
        let raw = RawConfig {
            hidden_size: Some(3072),
            num_attention_heads: Some(32),
            num_key_value_heads: Some(32),
            max_position_embeddings: Some(131_072),
            original_max_position_embeddings: Some(4096),
            rope_theta: Some(10000.0),
            rope_scaling: Some(serde_json::json!({"type": "longrope", "short_factor": short, "long_factor": long})),
            ..smollm2()
        };
        let c = raw.resolve().unwrap();
        let RopeScaling::LongRope { attn_factor, original_context, .. } = &c.rope_scaling else {
            panic!("{:?}", c.rope_scaling)
        };
        assert_eq!(*original_context, 4096);
        assert!((*attn_factor as f64 - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-6, "{attn_factor}");
        let base = |i: usize| 10000f64.powf(-2.0 * i as f64 / 96.0);
        let (within, past) = (c.rope_frequencies(false, 4096), c.rope_frequencies(false, 4097));
        assert_eq!(within[3], base(3) / short[3] as f64);
        assert_eq!(past[3], base(3) / 5.0);
        let back = RopeScaling::from_hf_json(&c.rope_scaling.to_hf_json(), None, None).unwrap();
        assert_eq!(back, c.rope_scaling);
        // Factors of the wrong length are refused.
        let bad = RawConfig {
            rope_scaling: Some(serde_json::json!({"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]})),
            ..raw
        };
        assert!(bad.resolve().is_err());
    }

    /// Llama 3.1's published scaling (factor 8, low 1, high 4, original context 8192) keeps the
    /// fastest frequencies, divides the slowest by 8 and blends in between, as Meta's
    /// reference `apply_scaling` does.
    #[test]
    fn llama3_scaling_matches_the_reference_formula() {
        let raw = RawConfig {
            hidden_size: Some(4096),
            num_attention_heads: Some(32),
            num_key_value_heads: Some(8),
            rope_theta: Some(500000.0),
            rope_scaling: Some(serde_json::json!({
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192
            })),
            ..smollm2()
        };
        let c = raw.resolve().unwrap();
        let f = c.rope_frequencies(false, 2048);
        let base = |i: usize| 500000f64.powf(-2.0 * i as f64 / 128.0);
        assert_eq!(f[0], base(0));
        assert!((f[63] - base(63) / 8.0).abs() < 1e-18);
        // A frequency in the blend: wavelength between 8192/4 and 8192.
        let i = (0..64).find(|&i| (2048.0..8192.0).contains(&(2.0 * std::f64::consts::PI / base(i)))).unwrap();
        let smooth = (8192.0 / (2.0 * std::f64::consts::PI / base(i)) - 1.0) / 3.0;
        assert!((f[i] - base(i) * ((1.0 - smooth) / 8.0 + smooth)).abs() < 1e-15);
        // It survives the trip through config.json (what .bpk records store).
        let back = RawConfig::from_hf_json(c.to_hf_json(true).to_string().as_bytes()).unwrap().resolve().unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn a_stated_head_dim_sets_the_query_width() {
        let c = RawConfig { head_dim: Some(128), ..smollm2() }.resolve().unwrap();
        assert_eq!((c.head_dim(), c.q_dim(), c.kv_dim(), c.d_model), (128, 9 * 128, 3 * 128, 576));
    }

    #[test]
    fn impossible_values_are_refused() {
        let cases = [
            RawConfig { hidden_size: Some(0), ..smollm2() },
            RawConfig { hidden_size: Some(u64::MAX), ..smollm2() },
            RawConfig { num_attention_heads: Some(7), ..smollm2() },
            RawConfig { num_key_value_heads: Some(2), ..smollm2() },
            RawConfig { vocab_size: None, ..smollm2() },
            RawConfig { rope_theta: Some(f64::NAN), ..smollm2() },
            RawConfig { rms_norm_eps: Some(-1.0), ..smollm2() },
            RawConfig { head_dim: Some(63), ..smollm2() },
            RawConfig { head_dim: Some(0), ..smollm2() },
            RawConfig { rope_dims: Some(48), ..smollm2() },
            RawConfig { partial_rotary_factor: Some(0.75), ..smollm2() },
            RawConfig { hidden_size: Some(577), ..smollm2() },
            RawConfig { rope_scaling: Some(serde_json::json!({"type": "yarn"})), ..smollm2() },
            RawConfig { rope_scaling: Some(serde_json::json!({"rope_type": "dynamic", "factor": 2.0})), ..smollm2() },
            RawConfig { rope_scaling: Some(serde_json::json!({"rope_type": "linear"})), ..smollm2() },
            RawConfig {
                rope_scaling: Some(serde_json::json!({"rope_type": "hearth-factors", "factors": [1.0]})),
                ..smollm2()
            },
        ];
        for raw in cases {
            assert!(matches!(raw.resolve(), Err(Error::Config(_))), "{raw:?}");
        }
    }
}

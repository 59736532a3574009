//! Rotary embeddings: how a model's RoPE is scaled (linear, Llama 3, LongRoPE), the frequencies
//! that gives, and the cos/sin tables of those frequencies that the KV cache keeps on the device
//! (the model's RoPE kernel and the cache's eviction both rotate with them).

use burn::prelude::{Device, Tensor, TensorData};

use super::*;

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
    pub(super) fn divisors(&self, base: &[f64], positions: usize) -> Vec<f64> {
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
    pub(super) fn to_hf_json(&self) -> serde_json::Value {
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
    pub(super) fn from_hf_json(v: &serde_json::Value, original: Option<u64>, context: Option<u64>) -> Result<Self> {
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

/// Rotations of positions `0..capacity` for one set of frequencies.
pub struct RopeTable {
    /// `[capacity, head_dim]`: `a cos(p θ_i)` repeated for both elements of pair `i`, `a` the
    /// scaling's attention factor (1 but for LongRoPE).
    pub cos: Tensor<2>,
    /// `[capacity, head_dim]`: `a (-sin(p θ_i), sin(p θ_i))` for pair `i`.
    pub sin: Tensor<2>,
    /// The same without the factor, where there is one: eviction turns stored keys back by a
    /// distance, which must not scale them again.
    pub turn: Option<(Tensor<2>, Tensor<2>)>,
}

impl RopeTable {
    /// Rotation tables a cache of `config` keeps: one, or two when sliding-window layers rotate
    /// with a base of their own.
    pub fn count(config: &ModelConfig) -> usize {
        1 + (0..config.n_layers).any(|i| config.layer_attention(i).local_rope) as usize
    }

    /// RoPE tables for positions `0..positions`, from the model's (possibly scaled) frequencies
    /// ([`ModelConfig::rope_frequencies`]) for global or local layers, computed in f64 like the
    /// reference implementations.
    pub fn new(config: &ModelConfig, local: bool, positions: usize, device: &Device) -> Self {
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

    /// The tables eviction turns stored keys back with: without the attention factor.
    pub fn turn(&self) -> (&Tensor<2>, &Tensor<2>) {
        match &self.turn {
            Some((cos, sin)) => (cos, sin),
            None => (&self.cos, &self.sin),
        }
    }
}

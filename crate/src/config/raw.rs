//! The file's config as stated ([`RawConfig`], every field optional), from GGUF metadata or a
//! Hugging Face `config.json`, and its one resolution into a validated [`ModelConfig`].

use super::*;

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

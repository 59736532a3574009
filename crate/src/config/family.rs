//! Each family's declared differences from Llama: one decoder reads an [`Architecture`], and a
//! family is a constant that states only where it differs.

use super::*;

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

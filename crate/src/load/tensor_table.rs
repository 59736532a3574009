//! What a model of a given config reads: the one table of tensor names and shapes that
//! loading, `hearth convert` and the checks made before anything reaches the device
//! ([`crate::model::checks`]) all share.

use crate::config::ModelConfig;
use crate::quant::packed::QuantFormat;

/// What a tensor is to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An RMSNorm scale, kept in f32.
    Norm,
    /// A projection's bias, kept in f32.
    Bias,
    /// A projection; quantized to `fallback` when the file has it as floats.
    Matrix { fallback: QuantFormat },
}

/// One tensor the model reads, by its GGUF name, with its row-major shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

/// The matrices of one block that are fused into one device matrix, by suffix.
pub(crate) const FUSED: [&[&str]; 4] =
    [&["attn_q", "attn_k", "attn_v"], &["attn_output"], &["ffn_gate", "ffn_up"], &["ffn_down"]];

/// Every tensor a model of `c` reads; `tied` when the output head is the token embedding.
/// The embedding falls back to 8 bits (the logits are read from it), the rest to 4.
pub fn tensor_table(c: &ModelConfig, tied: bool) -> Vec<TensorSpec> {
    let (d, q, kv, ff) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
    let matrix = |name: String, rows, cols, fallback| TensorSpec {
        name,
        shape: vec![rows, cols],
        role: Role::Matrix { fallback },
    };
    let norm = |name: String| TensorSpec { name, shape: vec![d], role: Role::Norm };
    let bias = |name: String, len: usize| TensorSpec { name, shape: vec![len], role: Role::Bias };
    let mut out = vec![matrix("token_embd.weight".into(), c.vocab, d, QuantFormat::Q8)];
    for i in 0..c.n_layers {
        out.push(norm(format!("blk.{i}.attn_norm.weight")));
        for (suffix, rows, cols) in [
            ("attn_q", q, d),
            ("attn_k", kv, d),
            ("attn_v", kv, d),
            ("attn_output", d, q),
            ("ffn_gate", ff, d),
            ("ffn_up", ff, d),
            ("ffn_down", d, ff),
        ] {
            out.push(matrix(format!("blk.{i}.{suffix}.weight"), rows, cols, QuantFormat::Q4));
        }
        out.push(norm(format!("blk.{i}.ffn_norm.weight")));
        if c.arch.post_norms {
            out.push(norm(format!("blk.{i}.post_attention_norm.weight")));
            out.push(norm(format!("blk.{i}.post_ffw_norm.weight")));
        }
        if c.arch.qk_norm {
            for suffix in ["attn_q_norm", "attn_k_norm"] {
                out.push(TensorSpec {
                    name: format!("blk.{i}.{suffix}.weight"),
                    shape: vec![c.head_dim()],
                    role: Role::Norm,
                });
            }
        }
        if c.arch.qkv_bias {
            for (suffix, len) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                out.push(bias(format!("blk.{i}.{suffix}.bias"), len));
            }
        }
    }
    out.push(norm("output_norm.weight".into()));
    if !tied {
        out.push(matrix("output.weight".into(), c.vocab, d, QuantFormat::Q4));
    }
    out
}

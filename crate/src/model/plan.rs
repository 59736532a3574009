//! What a model of a given config reads and allocates: the one table of tensor names and
//! shapes that loading, `hearth convert` and the checks made before anything reaches the
//! device all share.

use crate::config::ModelConfig;
use crate::device::Limits;
use crate::error::{Error, Result};
use crate::load::{ROPE_TENSORS, TensorSource};
use crate::quant::BLOCK;
use crate::quant::packed::{QuantFormat, Scales, fusable_formats};

use super::WeightFormat;

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

/// Checks, before anything is allocated, that `source` has every tensor a model of `c` needs
/// in the right shape, nothing the model would silently ignore, and that every device buffer
/// and the host memory the upload needs fit `limits`.
pub fn check(c: &ModelConfig, source: &dyn TensorSource, format: WeightFormat, limits: &Limits) -> Result<()> {
    let tied = !source.contains("output.weight");
    let table = tensor_table(c, tied);
    for spec in &table {
        match source.shape(&spec.name)? {
            None => return Err(Error::MissingTensor(spec.name.clone())),
            Some(shape) if shape != spec.shape => {
                return Err(Error::TensorShape {
                    tensor: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: shape,
                });
            }
            Some(_) => {}
        }
    }
    if let Some(extra) =
        source.names().into_iter().find(|n| !ROPE_TENSORS.contains(&n.as_str()) && !table.iter().any(|s| &s.name == n))
    {
        return Err(Error::config(format!(
            "tensor {extra} is not used by the {} architecture: refusing rather than running the model without it",
            c.arch.name
        )));
    }

    // One device buffer (two when packed: codes and parameters) per fused matrix.
    let mut largest_host = 0u64;
    let groups = std::iter::once(vec!["token_embd.weight".to_string()])
        .chain(
            (0..c.n_layers)
                .flat_map(|i| FUSED.iter().map(move |g| g.iter().map(|s| format!("blk.{i}.{s}.weight")).collect())),
        )
        .chain((!tied).then(|| vec!["output.weight".to_string()]));
    for group in groups {
        let specs: Vec<&TensorSpec> = group.iter().filter_map(|n| table.iter().find(|s| &s.name == n)).collect();
        let rows: u64 = specs.iter().map(|s| s.shape[0] as u64).sum();
        let cols = specs[0].shape[1] as u64;
        let what = || format!("the matrix {} ({rows} x {cols}, {})", group.join(" + "), format.name());
        // The embedding and an untied head are split over as many buffers as their rows need:
        // one row must fit.
        let split = specs.len() == 1 && specs[0].shape[0] == c.vocab && !group[0].starts_with("blk.");
        let check = |bytes: u64| match split {
            true => limits.check_buffer(what, bytes / rows),
            false => limits.check_buffer(what, bytes),
        };
        // Each part's codes and scales: as stored, or as its fallback quantizes floats.
        let mut stored = Vec::new();
        for s in &specs {
            let fallback = match s.role {
                Role::Matrix { fallback } => fallback,
                _ => QuantFormat::Q4,
            };
            stored.push(format.packed_as(source, &s.name, fallback)?);
        }
        // f32 weights: dense tensors or F32 codes (`WeightFormat::dense_on`), the same bytes
        // but for a ragged row's padding.
        let dense = format == WeightFormat::F32;
        // A packed matrix's codes, parameters and super-block pairs, in bytes.
        let packed = |f: QuantFormat, scales: Scales, rows: u64| {
            let blocks = rows * cols.div_ceil(BLOCK as u64);
            let supers = if scales == Scales::Super { rows * cols.div_ceil(256) } else { 0 };
            (
                blocks * f.words_per_block() as u64 * 4,
                (blocks * (f.words_per_block() + f.params_per_block()) as u64 + supers) * 4,
            )
        };
        // A float source is dequantized first; packed parts are copied, fused and reordered.
        let from_floats = |s: &TensorSpec, kept| -> Result<u64> {
            Ok(if source.stored_format(&s.name)? != Some(kept) { s.shape[0] as u64 * cols * 4 } else { 0 })
        };
        let bytes = if dense {
            let bytes = rows * cols * 4;
            check(rows * cols.next_multiple_of(BLOCK as u64) * 4)?;
            // The parts, their fused copy, and the upload's own.
            3 * bytes
        } else if fusable_formats(&stored) {
            // Mixed 4- and 8-bit codes fuse as 8-bit ones; float codes only with their own.
            let widest = stored.iter().map(|&(f, _)| f).max_by_key(|f| f.words_per_block()).unwrap_or(QuantFormat::Q4);
            let (codes, all) = packed(widest, stored[0].1, rows);
            check(codes)?;
            let mut floats = 0;
            for (s, &kept) in specs.iter().zip(&stored) {
                floats += from_floats(s, kept)?;
            }
            floats + 3 * all
        } else {
            // Parts whose blocks have no common form: each its own matrix.
            let mut bytes = 0;
            for (s, &(f, scales)) in specs.iter().zip(&stored) {
                let (codes, all) = packed(f, scales, s.shape[0] as u64);
                limits.check_buffer(
                    || format!("the matrix {} ({} x {cols}, {})", s.name, s.shape[0], format.name()),
                    codes,
                )?;
                bytes += from_floats(s, (f, scales))? + 2 * all;
            }
            bytes
        };
        largest_host = largest_host.max(bytes);
    }
    limits.check_host(|| format!("loading this model with {} weights", format.name()), largest_host)
}

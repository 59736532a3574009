//! Families that store projections fused (Phi-3: `attn_qkv` holds Q, K and V, `ffn_up` holds
//! gate then up) served as the separate matrices every other family has, so the decoder, the
//! load checks and `hearth convert` keep one tensor table. The parts are row ranges of the
//! stored matrix, packed blocks sliced without touching a bit.

use std::ops::Range;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::load::{HostTensor, TensorSource, halves_to_pairs, pair_source};
use crate::quant::packed::{PackedMatrix, QuantFormat, Scales};

/// A source whose fused projections appear as their parts.
pub struct Unfused<'a> {
    inner: &'a dyn TensorSource,
    config: ModelConfig,
}

/// Where a part lives: the stored matrix, its rows, and the heads whose rows come rotated by
/// halves (queries and keys: both Phi-3's GGUF and its Hugging Face checkpoint keep them so).
struct Part {
    stored: String,
    rows: Range<usize>,
    rope_heads: Option<usize>,
}

/// Calls `f` with `source` as the decoder reads it: through [`Unfused`] for a family that
/// stores its projections fused, as it is for the others.
pub fn with_parts<R>(source: &dyn TensorSource, config: &ModelConfig, f: impl FnOnce(&dyn TensorSource) -> R) -> R {
    match config.arch.fused_projections {
        true => f(&Unfused::new(source, config)),
        false => f(source),
    }
}

impl<'a> Unfused<'a> {
    pub fn new(inner: &'a dyn TensorSource, config: &ModelConfig) -> Self {
        Self { inner, config: config.clone() }
    }

    fn part(&self, name: &str) -> Option<Part> {
        let c = &self.config;
        let (layer, suffix) = name.strip_prefix("blk.")?.split_once('.')?;
        let (q, kv, ff) = (c.q_dim(), c.kv_dim(), c.d_ff);
        // A converted model (`hearth convert`) already holds the parts.
        let fused_attention = self.inner.contains(&format!("blk.{layer}.attn_qkv.weight"));
        let fused_ffn = !self.inner.contains(&format!("blk.{layer}.ffn_gate.weight"));
        let (stored, rows, rope_heads) = match suffix {
            "attn_q.weight" | "attn_k.weight" | "attn_v.weight" if !fused_attention => return None,
            "ffn_gate.weight" | "ffn_up.weight" if !fused_ffn => return None,
            "attn_q.weight" => ("attn_qkv.weight", 0..q, Some(c.n_heads)),
            "attn_k.weight" => ("attn_qkv.weight", q..q + kv, Some(c.n_kv_heads)),
            "attn_v.weight" => ("attn_qkv.weight", q + kv..q + 2 * kv, None),
            "ffn_gate.weight" => ("ffn_up.weight", 0..ff, None),
            "ffn_up.weight" => ("ffn_up.weight", ff..2 * ff, None),
            _ => return None,
        };
        Some(Part { stored: format!("blk.{layer}.{stored}"), rows, rope_heads })
    }

    /// The stored name behind `name` (itself when it is not a part).
    fn stored(&self, name: &str) -> String {
        self.part(name).map_or_else(|| name.to_string(), |p| p.stored)
    }
}

impl TensorSource for Unfused<'_> {
    fn contains(&self, name: &str) -> bool {
        match self.part(name) {
            Some(p) => self.inner.contains(&p.stored),
            None => !self.is_fused_name(name) && self.inner.contains(name),
        }
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let Some(part) = self.part(name) else { return self.inner.tensor(name) };
        let t = self.inner.tensor(&part.stored)?;
        let cols = t.shape.get(1).copied().unwrap_or(1);
        let rows = part.rows.clone();
        if t.shape.len() != 2 || t.shape[0] < rows.end {
            return Err(crate::error::Error::TensorShape {
                tensor: part.stored,
                expected: vec![self.fused_rows(name), cols],
                found: t.shape,
            });
        }
        let data = t.data[rows.start * cols..rows.end * cols].to_vec();
        let t = HostTensor { name: name.to_string(), shape: vec![rows.len(), cols], data };
        match part.rope_heads {
            Some(heads) => halves_to_pairs(t, heads),
            None => Ok(t),
        }
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let Some(part) = self.part(name) else { return self.inner.packed(name) };
        let Some(p) = self.inner.packed(&part.stored)? else { return Ok(None) };
        if p.rows < part.rows.end {
            return Err(crate::error::Error::TensorShape {
                tensor: part.stored,
                expected: vec![self.fused_rows(name), p.cols],
                found: vec![p.rows, p.cols],
            });
        }
        let p = p.row_range(part.rows.clone());
        Ok(Some(match part.rope_heads {
            Some(heads) if p.rows.is_multiple_of(2 * heads) => {
                let hd = p.rows / heads;
                p.reorder_rows(|r| pair_source(r, hd))
            }
            _ => p,
        }))
    }

    fn tensor_count(&self) -> usize {
        self.inner.tensor_count()
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.part(name) {
            None if self.is_fused_name(name) => Ok(None),
            None => self.inner.shape(name),
            Some(part) => Ok(self.inner.shape(&part.stored)?.map(|shape| match shape[..] {
                [rows, cols] if rows == self.fused_rows(name) => vec![part.rows.len(), cols],
                // A fused matrix of the wrong size: reported as such by the shape check.
                _ => shape,
            })),
        }
    }

    fn stored_format(&self, name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        self.inner.stored_format(&self.stored(name))
    }

    fn holds_quantized(&self) -> bool {
        self.inner.holds_quantized()
    }

    fn release(&self, name: &str) {
        self.inner.release(&self.stored(name))
    }

    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for name in self.inner.names() {
            match name.strip_suffix("attn_qkv.weight") {
                Some(prefix) => names.extend(["attn_q", "attn_k", "attn_v"].map(|s| format!("{prefix}{s}.weight"))),
                None => match name.strip_suffix("ffn_up.weight") {
                    Some(prefix) => names.extend(["ffn_gate", "ffn_up"].map(|s| format!("{prefix}{s}.weight"))),
                    None => names.push(name),
                },
            }
        }
        names
    }
}

impl Unfused<'_> {
    /// The rows the stored matrix behind part `name` must have.
    fn fused_rows(&self, name: &str) -> usize {
        let c = &self.config;
        if name.contains(".attn_") { c.q_dim() + 2 * c.kv_dim() } else { 2 * c.d_ff }
    }

    /// A fused name that is not also a part's name (`attn_qkv`): hidden behind its parts.
    fn is_fused_name(&self, name: &str) -> bool {
        name.ends_with(".attn_qkv.weight")
    }
}

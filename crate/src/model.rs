//! The Llama decoder: token embedding, blocks of RMSNorm → grouped-query attention with
//! rotary embeddings → RMSNorm → SwiGLU MLP, final norm, tied or separate output head.
//!
//! Weights are read-only after loading and hold no per-conversation state; the
//! [`KvCache`] is passed in, so several sessions can share one model.

use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::qgather::qgather;
use crate::kernels::qmatmul::{QuantMatrix, qmatmul};
use crate::kv_cache::KvCache;
use crate::load::{HostTensor, TensorSource};
use crate::quant::packed::{PackedMatrix, QuantFormat};

/// How the matrices of the model are kept on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dequantized to f32: the reference path.
    F32,
    /// Packed 4-bit (8-bit for the token embedding), multiplied by our fused kernels. GGUF
    /// Q4_0, Q4_1 and Q8_0 matrices keep their exact values; float matrices are quantized.
    #[default]
    Int4,
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "int4" => Ok(Self::Int4),
            other => Err(Error::BadOptions(format!("unknown weight format {other:?} (f32 or int4)"))),
        }
    }
}

/// A matrix in the chosen format: packed as stored, or quantized from floats to `fallback`.
fn load_packed(
    source: &dyn TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
    fallback: QuantFormat,
) -> Result<PackedMatrix> {
    match source.packed(name)? {
        Some(p) if (p.rows, p.cols) == (rows, cols) => Ok(p),
        Some(p) => {
            Err(Error::TensorShape { tensor: name.into(), expected: vec![rows, cols], found: vec![p.rows, p.cols] })
        }
        None => {
            let t = source.tensor(name)?.expect_shape(&[rows, cols])?;
            Ok(PackedMatrix::quantize(fallback, &t.data, rows, cols))
        }
    }
}

/// A projection `y = x Wᵀ`.
#[allow(clippy::large_enum_variant)] // short-lived, or one per weight matrix
pub enum Linear {
    /// `[d_in, d_out]`, so that the product is a plain row-major matmul.
    Dense(Tensor<2>),
    /// `[d_out, d_in]` packed.
    Quant(QuantMatrix),
}

impl Linear {
    /// From a GGUF-layout weight `[d_out, d_in]`.
    fn load(
        source: &dyn TensorSource,
        name: &str,
        d_out: usize,
        d_in: usize,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        Ok(match format {
            WeightFormat::F32 => {
                Self::Dense(upload::<2>(source.tensor(name)?.expect_shape(&[d_out, d_in])?, device).transpose())
            }
            WeightFormat::Int4 => {
                Self::Quant(QuantMatrix::upload(&load_packed(source, name, d_out, d_in, QuantFormat::Q4)?, device))
            }
        })
    }

    /// `x: [seq, d_in]` → `[seq, d_out]`
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Dense(w) => x.matmul(w.clone()),
            Self::Quant(w) => qmatmul(x, w),
        }
    }

    fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(w) => w.shape().num_elements() * 4,
            Self::Quant(w) => w.device_bytes(),
        }
    }
}

/// The token embedding `[vocab, d_model]`, which is also the output head of tied models.
#[allow(clippy::large_enum_variant)] // short-lived, or one per weight matrix
enum Embedding {
    Dense(Tensor<2>),
    /// Packed as stored, or quantized to 8 bits: the table the logits are read from deserves
    /// more precision than the blocks.
    Quant(QuantMatrix),
}

impl Embedding {
    fn load(source: &dyn TensorSource, c: &ModelConfig, format: WeightFormat, device: &Device) -> Result<Self> {
        let name = "token_embd.weight";
        Ok(match format {
            WeightFormat::F32 => Self::Dense(upload(source.tensor(name)?.expect_shape(&[c.vocab, c.d_model])?, device)),
            WeightFormat::Int4 => Self::Quant(QuantMatrix::upload(
                &load_packed(source, name, c.vocab, c.d_model, QuantFormat::Q8)?,
                device,
            )),
        })
    }

    /// Rows of `tokens`: `[seq, d_model]`.
    fn lookup(&self, tokens: &[u32], device: &Device) -> Tensor<2> {
        match self {
            Self::Dense(table) => {
                let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                table.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), device))
            }
            Self::Quant(table) => qgather(tokens, table, device),
        }
    }

    /// Logits of `x: [seq, d_model]` against every row: `[seq, vocab]`.
    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Dense(table) => x.matmul(table.clone().transpose()),
            Self::Quant(table) => qmatmul(x, table),
        }
    }

    fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.shape().num_elements() * 4,
            Self::Quant(t) => t.device_bytes(),
        }
    }
}

/// Root-mean-square layer norm with a learned scale.
struct RmsNorm {
    /// `[1, d_model]`
    weight: Tensor<2>,
    eps: f32,
}

impl RmsNorm {
    fn load(source: &dyn TensorSource, name: &str, d_model: usize, eps: f32, device: &Device) -> Result<Self> {
        let t = source.tensor(name)?.expect_shape(&[d_model])?;
        Ok(Self { weight: upload::<1>(t, device).reshape([1, d_model]), eps })
    }

    fn device_bytes(&self) -> usize {
        self.weight.shape().num_elements() * 4
    }

    /// `x: [seq, d_model]` → same shape
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let rms = x.clone().square().mean_dim(1).add_scalar(self.eps).sqrt();
        x.div(rms).mul(self.weight.clone())
    }
}

/// Rotary position embedding on adjacent pairs `(x[2i], x[2i+1])`, GGUF's layout.
/// `x: [heads, seq, head_dim]`; `cos, sin: [1, seq, head_dim]` from [`KvCache::rope`].
fn rope(x: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
    let [h, s, d] = x.dims();
    // (a, b) → (b, a); times (-sin, sin) gives (-b sin, a sin).
    let swapped = x.clone().reshape([h, s, d / 2, 2]).flip([3]).reshape([h, s, d]);
    x.mul(cos.clone()).add(swapped.mul(sin.clone()))
}

struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: RmsNorm,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

impl Block {
    fn load(
        source: &dyn TensorSource,
        c: &ModelConfig,
        i: usize,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        let (d, kv, ff) = (c.d_model, c.kv_dim(), c.d_ff);
        Ok(Self {
            attn_norm: RmsNorm::load(source, &name("attn_norm.weight"), d, c.rms_eps, device)?,
            wq: Linear::load(source, &name("attn_q.weight"), d, d, format, device)?,
            wk: Linear::load(source, &name("attn_k.weight"), kv, d, format, device)?,
            wv: Linear::load(source, &name("attn_v.weight"), kv, d, format, device)?,
            wo: Linear::load(source, &name("attn_output.weight"), d, d, format, device)?,
            ffn_norm: RmsNorm::load(source, &name("ffn_norm.weight"), d, c.rms_eps, device)?,
            w_gate: Linear::load(source, &name("ffn_gate.weight"), ff, d, format, device)?,
            w_up: Linear::load(source, &name("ffn_up.weight"), ff, d, format, device)?,
            w_down: Linear::load(source, &name("ffn_down.weight"), d, ff, format, device)?,
        })
    }

    fn device_bytes(&self) -> usize {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down]
            .iter()
            .map(|l| l.device_bytes())
            .sum::<usize>()
            + self.attn_norm.device_bytes()
            + self.ffn_norm.device_bytes()
    }

    /// `x: [seq, d_model]` → same shape; writes this layer's keys and values into `cache`.
    fn forward(
        &self,
        x: Tensor<2>,
        c: &ModelConfig,
        rotation: &(Tensor<3>, Tensor<3>),
        mask: &Tensor<4>,
        cache: &mut KvCache,
        layer: usize,
    ) -> Tensor<2> {
        let [seq, d_model] = x.dims();
        let (n_heads, n_kv, hd, group) = (c.n_heads, c.n_kv_heads, c.head_dim(), c.group_size());

        let h = self.attn_norm.forward(x.clone());
        let heads = |t: Tensor<2>, n: usize| t.reshape([seq, n, hd]).swap_dims(0, 1);
        let q = rope(heads(self.wq.forward(h.clone()), n_heads), &rotation.0, &rotation.1);
        let k = rope(heads(self.wk.forward(h.clone()), n_kv), &rotation.0, &rotation.1);
        let v = heads(self.wv.forward(h), n_kv);
        let (k, v) = cache.write(layer, k, v);
        let len = k.dims()[1];

        // Query head h reads KV head h / group: fold the group into the query rows.
        let q = q.reshape([n_kv, group * seq, hd]);
        let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (hd as f32).sqrt());
        let scores = scores.reshape([n_kv, group, seq, len]).add(mask.clone()).reshape([n_kv, group * seq, len]);
        let attn = softmax(scores, 2).matmul(v);
        let attn = attn.reshape([n_heads, seq, hd]).swap_dims(0, 1).reshape([seq, d_model]);
        let x = x.add(self.wo.forward(attn));

        let h = self.ffn_norm.forward(x.clone());
        let ff = silu(self.w_gate.forward(h.clone())).mul(self.w_up.forward(h));
        x.add(self.w_down.forward(ff))
    }
}

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: `[1, vocab]`.
    Last,
    /// Every position: `[seq, vocab]`.
    All,
}

/// A loaded Llama model on one device.
pub struct Llama {
    config: ModelConfig,
    /// Also the output head when the model ties them.
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// The output head, when the model does not tie it to the embedding.
    output: Option<Linear>,
    device: Device,
}

impl Llama {
    /// Reads every weight from `source`, checking each shape against `config`.
    pub fn load(
        config: &ModelConfig,
        source: &dyn TensorSource,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        let c = config;
        let embedding = Embedding::load(source, c, format, device)?;
        let blocks = (0..c.n_layers).map(|i| Block::load(source, c, i, format, device)).collect::<Result<_>>()?;
        let norm = RmsNorm::load(source, "output_norm.weight", c.d_model, c.rms_eps, device)?;
        let output = match source.contains("output.weight") {
            true => Some(Linear::load(source, "output.weight", c.vocab, c.d_model, format, device)?),
            false => None,
        };
        Ok(Self { config: c.clone(), embedding, blocks, norm, output, device: device.clone() })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes the weights take on the device.
    pub fn weight_bytes(&self) -> usize {
        self.embedding.device_bytes()
            + self.blocks.iter().map(Block::device_bytes).sum::<usize>()
            + self.norm.device_bytes()
            + self.output.as_ref().map_or(0, Linear::device_bytes)
    }

    /// Runs `tokens` through the model after what `cache` holds, appending them to it, and
    /// returns logits `[1 or seq, vocab]` as `logits` asks.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor<2>> {
        let c = &self.config;
        let seq = tokens.len();
        if seq == 0 {
            return Err(Error::InvalidPrompt("no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::InvalidPrompt(format!("token id {bad} is outside the vocabulary of {}", c.vocab)));
        }
        cache.reserve(seq)?;
        let start = cache.len();

        let mut x = self.embedding.lookup(tokens, &self.device);
        let rotation = cache.rope(seq);
        let mask = causal_mask(start, seq, cache.window(seq), &self.device);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, c, &rotation, &mask, cache, i);
        }
        cache.advance(seq);

        let x = match logits {
            Logits::Last => x.slice(seq - 1..seq),
            Logits::All => x,
        };
        let x = self.norm.forward(x);
        Ok(match &self.output {
            Some(head) => head.forward(x),
            None => self.embedding.logits(x),
        })
    }
}

/// Additive mask `[1, 1, seq, window]`: query `i` (slot `start + i`) sees slots `0..=start + i`.
fn causal_mask(start: usize, seq: usize, window: usize, device: &Device) -> Tensor<4> {
    let mut mask = vec![0.0f32; seq * window];
    for (i, row) in mask.chunks_exact_mut(window).enumerate() {
        row[start + i + 1..].fill(f32::NEG_INFINITY);
    }
    Tensor::from_data(TensorData::new(mask, [1, 1, seq, window]), device)
}

fn upload<const D: usize>(t: HostTensor, device: &Device) -> Tensor<D> {
    let HostTensor { shape, data, .. } = t;
    Tensor::from_data(TensorData::new(data, shape), device)
}

//! Model files to host tensors: GGUF ([`gguf`]) and Hugging Face directories ([`hf`]).
//!
//! Loaders take bytes, not paths: files, URLs and blobs are the edges' business. Both expose
//! their tensors under GGUF's names (`blk.{i}.attn_q.weight`), rows in GGUF's order, so the
//! model has one loading path.

pub mod burnpack;
pub mod fused;
pub mod gguf;
pub mod tensor_table;
mod weight_format;

pub use weight_format::WeightFormat;
pub mod hf;

use crate::config::{ModelConfig, RopeScaling};

/// The GGUF tensor holding per-frequency RoPE divisors (Llama 3's scaling).
pub const ROPE_FREQS: &str = "rope_freqs.weight";
/// LongRoPE's divisors for contexts up to the original one, and past it (Phi-3).
pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";
pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
/// Tensors that hold no weights: the RoPE scaling's, read into the config.
pub const ROPE_TENSORS: [&str; 3] = [ROPE_FREQS, ROPE_FACTORS_SHORT, ROPE_FACTORS_LONG];
use crate::error::{Error, Result};
use crate::format::gguf::{GgufFile, Value};
use crate::quant::packed::{FloatQuant, PackedMatrix, QuantFormat, Scales};
use crate::text::tokenizer::Tokenizer;

/// A dense f32 tensor in host memory, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Fails unless the shape is exactly `expected`.
    pub fn expect_shape(self, expected: &[usize]) -> Result<Self> {
        if self.shape != expected {
            return Err(Error::TensorShape { tensor: self.name, expected: expected.to_vec(), found: self.shape });
        }
        Ok(self)
    }
}

/// Tensors by GGUF name.
pub trait TensorSource {
    fn contains(&self, name: &str) -> bool;

    /// The tensor dequantized to f32.
    fn tensor(&self, name: &str) -> Result<HostTensor>;

    /// A `[rows, cols]` matrix already stored in a block format the device keeps packed, bit
    /// for bit; `None` when it is stored as floats.
    fn packed(&self, _name: &str) -> Result<Option<PackedMatrix>> {
        Ok(None)
    }

    /// How many tensors the source holds (for progress reports).
    fn tensor_count(&self) -> usize;

    /// The row-major shape of a tensor, read from the file's index without touching its data;
    /// `None` when the source does not have it.
    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>>;

    /// The block format a matrix is stored in (its codes and how its blocks are scaled), when
    /// it is one the device keeps as is.
    fn stored_format(&self, _name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        Ok(None)
    }

    /// Whether some matrix is stored in a quantized block format: then int4 weights keep the
    /// file's F32, F16 and BF16 matrices as stored rather than quantize them.
    fn holds_quantized(&self) -> bool {
        false
    }

    /// Every tensor the source holds, where unknown ones mean the model would run wrong
    /// (GGUF and `.bpk`); empty where a format carries harmless extras (Hugging Face buffers).
    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    /// The loader has read all it needs of `name`: a source holding its bytes only for the
    /// load (a streamed load's window) may drop them now.
    fn release(&self, _name: &str) {}
}

/// The heads of a query or key projection (weight or bias) whose rows [`halves_to_pairs`]
/// reorders, by tensor name; `None` for every other tensor.
pub(crate) fn rope_heads(c: &ModelConfig, name: &str) -> Option<usize> {
    rope_heads_of(name, c.n_heads, c.n_kv_heads)
}

pub(crate) fn rope_heads_of(name: &str, n_heads: usize, n_kv_heads: usize) -> Option<usize> {
    // A per-head norm's weights run along one head's rows.
    if name.ends_with(".attn_q_norm.weight") || name.ends_with(".attn_k_norm.weight") {
        Some(1)
    } else if name.ends_with(".attn_q.weight") || name.ends_with(".attn_q.bias") {
        Some(n_heads)
    } else if name.ends_with(".attn_k.weight") || name.ends_with(".attn_k.bias") {
        Some(n_kv_heads)
    } else {
        None
    }
}

/// Row `h*hd + 2i + j` of the adjacent-pair order comes from row `h*hd + j*hd/2 + i` of the
/// rotate-halves order.
pub(crate) fn pair_source(row: usize, hd: usize) -> usize {
    let (h, r) = (row / hd, row % hd);
    h * hd + (r % 2) * hd / 2 + r / 2
}

/// Reorders the output rows of a query or key projection (`[n_heads * head_dim, d_model]`, or
/// its bias `[n_heads * head_dim]`) so that rotating adjacent pairs, as the kernels do, equals
/// rotating halves (Hugging Face's order, and llama.cpp's NEOX one): what llama.cpp's converter
/// does to Llama's weights.
pub(crate) fn halves_to_pairs(t: HostTensor, n_heads: usize) -> Result<HostTensor> {
    let rows = t.shape[0];
    if t.shape.len() > 2 || !rows.is_multiple_of(2 * n_heads) {
        let cols = t.shape.get(1).copied().unwrap_or(1);
        return Err(Error::TensorShape { tensor: t.name, expected: vec![n_heads, cols], found: t.shape });
    }
    Ok(move_rows(t, n_heads, true))
}

/// The inverse of [`halves_to_pairs`].
pub(crate) fn pairs_to_halves(t: HostTensor, n_heads: usize) -> HostTensor {
    move_rows(t, n_heads, false)
}

/// Row `r` of the pair order takes row `pair_source(r)` of the halves order (`to_pairs`), or
/// gives it back.
fn move_rows(t: HostTensor, n_heads: usize, to_pairs: bool) -> HostTensor {
    let cols = t.shape.get(1).copied().unwrap_or(1);
    let hd = t.shape[0] / n_heads;
    let mut data = vec![0.0; t.data.len()];
    for row in 0..t.shape[0] {
        let other = pair_source(row, hd);
        let (dst, src) = if to_pairs { (row, other) } else { (other, row) };
        data[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
    }
    HostTensor { data, ..t }
}

/// Everything a model file provides besides its weights.
pub struct ModelParts {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// The Jinja chat template, when the file has one.
    pub chat_template: Option<String>,
    /// A name for logs and stats.
    pub name: String,
}

impl ModelParts {
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Self::from_gguf_with(file, file)
    }

    /// [`Self::from_gguf`] with the few tensors a config reads (RoPE's scaling factors) taken
    /// from `tensors`: a streamed load has only the header of `file` in memory.
    pub fn from_gguf_with(file: &GgufFile, tensors: &dyn TensorSource) -> Result<Self> {
        let mut config = crate::config::RawConfig::from_gguf(&file.metadata)?.resolve()?;
        // llama.cpp's converter stores Llama 3's RoPE scaling as per-frequency divisors.
        if file.tensor_info(ROPE_FREQS).is_some() {
            if config.rope_scaling != RopeScaling::None {
                return Err(Error::config(format!(
                    "{ROPE_FREQS} and rope scaling {:?} together are not supported",
                    config.rope_scaling
                )));
            }
            let t = tensors.tensor(ROPE_FREQS)?.expect_shape(&[config.head_dim() / 2])?;
            config.rope_scaling = RopeScaling::Factors(t.data);
            config.rope_scaling.validate(config.head_dim())?;
        }
        // llama.cpp's converter stores Phi-3's LongRoPE as two tensors and an attention factor.
        match (file.tensor_info(ROPE_FACTORS_SHORT).is_some(), file.tensor_info(ROPE_FACTORS_LONG).is_some()) {
            (false, false) => {}
            (true, true) if file.tensor_info(ROPE_FREQS).is_none() && config.rope_scaling == RopeScaling::None => {
                let pairs = [config.head_dim() / 2];
                let arch = file.get("general.architecture").and_then(Value::as_str).unwrap_or("");
                let key = |k: &str| file.get(&format!("{arch}.rope.scaling.{k}"));
                let original = key("original_context_length").and_then(Value::as_u64);
                config.rope_scaling = RopeScaling::LongRope {
                    short: tensors.tensor(ROPE_FACTORS_SHORT)?.expect_shape(&pairs)?.data,
                    long: tensors.tensor(ROPE_FACTORS_LONG)?.expect_shape(&pairs)?.data,
                    original_context: original.map_or(config.context_length, |o| o as usize),
                    attn_factor: key("attn_factor").and_then(Value::as_f64).unwrap_or(1.0) as f32,
                };
                config.rope_scaling.validate(config.head_dim())?;
            }
            _ => {
                return Err(Error::config(format!(
                    "{ROPE_FACTORS_SHORT} and {ROPE_FACTORS_LONG} come together, without other rope scaling"
                )));
            }
        }
        let tokenizer = Tokenizer::from_gguf(&file.metadata)?;
        check_vocab(&config, &tokenizer)?;
        let text = |key: &str| file.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            config,
            tokenizer,
            chat_template: text("tokenizer.chat_template"),
            name: text("general.name").unwrap_or_else(|| "gguf model".into()),
        })
    }
}

/// The tokenizer may not produce ids past the embedding table.
fn check_vocab(config: &ModelConfig, tokenizer: &Tokenizer) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab {
        return Err(Error::config(format!(
            "tokenizer has {} tokens but the model's vocabulary is {}",
            tokenizer.vocab_size(),
            config.vocab
        )));
    }
    Ok(())
}

/// A matrix as exact F32 codes: as stored if it is F32, else its values in f32.
pub(crate) fn f32_codes(source: &dyn TensorSource, name: &str, rows: usize, cols: usize) -> Result<PackedMatrix> {
    if source.stored_format(name)? == Some((QuantFormat::F32, Scales::Block))
        && let Some(p) = source.packed(name)?
        && (p.rows, p.cols) == (rows, cols)
    {
        return Ok(p);
    }
    let t = source.tensor(name)?.expect_shape(&[rows, cols])?;
    Ok(PackedMatrix::from_f32(&t.data, rows, cols))
}

/// A matrix as stored: packed if the file has it in a block format, else quantized from its
/// floats as `quantizer` says.
pub(crate) fn packed_or_quantized(
    source: &dyn TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
    quantizer: FloatQuant,
    keep_floats: bool,
) -> Result<PackedMatrix> {
    match source.packed(name)? {
        // Float codes not kept are quantized from their values, as f32 matrices are.
        Some(p) if p.format.is_float() && !keep_floats && (p.rows, p.cols) == (rows, cols) => {
            PackedMatrix::quantize_as(quantizer, &p.dequantize(), rows, cols)
        }
        Some(p) if (p.rows, p.cols) == (rows, cols) => Ok(p),
        Some(p) => {
            Err(Error::TensorShape { tensor: name.into(), expected: vec![rows, cols], found: vec![p.rows, p.cols] })
        }
        None => {
            let t = source.tensor(name)?.expect_shape(&[rows, cols])?;
            PackedMatrix::quantize_as(quantizer, &t.data, rows, cols)
        }
    }
}

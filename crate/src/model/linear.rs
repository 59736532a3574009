//! The model's matrices in the chosen format: dense f32 (burn's matmul) or packed int4/int8
//! (our fused kernels), with projections that read the same input fused into one matrix.

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu};

use crate::config::{Activation, GELU_K, ModelConfig};
use crate::error::{Error, Result};
use crate::kernels::qgather::qgather;
use crate::kernels::qmatmul::{Epilogue, QuantMatrix, qmatmul, qmatmul_with};
use crate::load::{HostTensor, TensorSource, packed_or_quantized};
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

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int4 => "int4",
        }
    }
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

/// How the rows of a fused matrix are put together from its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fuse {
    /// One part after another (`[Q | K | V]`).
    Concat,
    /// Alternating rows of two parts (`gate_0, up_0, gate_1, ...`) for the gated epilogue.
    Interleave,
}

pub(crate) fn upload<const D: usize>(t: HostTensor, device: &Device) -> Tensor<D> {
    let HostTensor { shape, data, .. } = t;
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// A projection `y = x Wᵀ`, possibly of several matrices fused.
#[allow(clippy::large_enum_variant)] // one per weight matrix
pub enum Linear {
    /// `[d_in, d_out]`, so that the product is a plain row-major matmul.
    Dense(Tensor<2>),
    /// `[d_out, d_in]` packed.
    Quant(QuantMatrix),
}

impl Linear {
    /// Loads the GGUF-layout weights `names` (each `[rows, d_in]`) fused as `fuse` says.
    pub fn load(
        source: &dyn TensorSource,
        names: &[(&str, usize)],
        d_in: usize,
        fuse: Fuse,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        Ok(match format {
            WeightFormat::F32 => {
                let parts = names
                    .iter()
                    .map(|&(name, rows)| source.tensor(name)?.expect_shape(&[rows, d_in]))
                    .collect::<Result<Vec<_>>>()?;
                let rows: usize = names.iter().map(|n| n.1).sum();
                let data = match fuse {
                    Fuse::Concat => parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
                    Fuse::Interleave => (0..parts[0].shape[0])
                        .flat_map(|r| parts.iter().flat_map(move |p| p.data[r * d_in..(r + 1) * d_in].iter().copied()))
                        .collect(),
                };
                let t = HostTensor { name: names[0].0.to_string(), shape: vec![rows, d_in], data };
                Self::Dense(upload::<2>(t, device).transpose())
            }
            WeightFormat::Int4 => {
                let parts = names
                    .iter()
                    .map(|&(name, rows)| packed_or_quantized(source, name, rows, d_in, QuantFormat::Q4))
                    .collect::<Result<Vec<_>>>()?;
                let fused = match (fuse, &parts[..]) {
                    (_, [one]) => one.clone(),
                    (Fuse::Interleave, [a, b]) => PackedMatrix::interleave_rows(a, b),
                    _ => PackedMatrix::concat_rows(&parts.iter().collect::<Vec<_>>()),
                };
                Self::Quant(QuantMatrix::upload(&fused, device))
            }
        })
    }

    /// `x: [seq, d_in]` → `[seq, d_out]`, then `epilogue`.
    pub fn forward(&self, x: Tensor<2>, epilogue: Epilogue) -> Tensor<2> {
        match self {
            Self::Quant(w) => qmatmul_with(x, w, epilogue),
            Self::Dense(w) => {
                let y = x.matmul(w.clone());
                match epilogue {
                    Epilogue::None => y,
                    Epilogue::Residual(r) => r.add(y),
                    Epilogue::Glu(act) => {
                        let [seq, rows] = y.dims();
                        let pairs = y.reshape([seq, rows / 2, 2]);
                        let gate = pairs.clone().slice([0..seq, 0..rows / 2, 0..1]);
                        let up = pairs.slice([0..seq, 0..rows / 2, 1..2]);
                        let gate = match act {
                            Activation::Silu => silu(gate),
                            // g sigmoid(2z), as `Activation::apply` writes it.
                            Activation::GeluTanh => {
                                let z = gate.clone().powi_scalar(3).mul_scalar(0.044_715).add(gate.clone());
                                gate.clone().mul(sigmoid(z.mul_scalar(2.0 * GELU_K)))
                            }
                        };
                        gate.mul(up).reshape([seq, rows / 2])
                    }
                }
            }
        }
    }

    pub fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(w) => w.shape().num_elements() * 4,
            Self::Quant(w) => w.device_bytes(),
        }
    }
}

/// The token embedding `[vocab, d_model]`, which is also the output head of tied models.
#[allow(clippy::large_enum_variant)] // one per model
pub enum Embedding {
    Dense(Tensor<2>),
    /// Packed as stored, or quantized to 8 bits: the table the logits are read from deserves
    /// more precision than the blocks.
    Quant(QuantMatrix),
}

impl Embedding {
    pub fn load(source: &dyn TensorSource, c: &ModelConfig, format: WeightFormat, device: &Device) -> Result<Self> {
        let name = "token_embd.weight";
        Ok(match format {
            WeightFormat::F32 => Self::Dense(upload(source.tensor(name)?.expect_shape(&[c.vocab, c.d_model])?, device)),
            WeightFormat::Int4 => Self::Quant(QuantMatrix::upload(
                &packed_or_quantized(source, name, c.vocab, c.d_model, QuantFormat::Q8)?,
                device,
            )),
        })
    }

    /// Rows of `tokens`: `[seq, d_model]`.
    pub fn lookup(&self, tokens: &[u32], device: &Device) -> Tensor<2> {
        match self {
            Self::Dense(table) => {
                let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                table.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), device))
            }
            Self::Quant(table) => qgather(tokens, table, device),
        }
    }

    /// Logits of `x: [seq, d_model]` against every row: `[seq, vocab]`.
    pub fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Dense(table) => x.matmul(table.clone().transpose()),
            Self::Quant(table) => qmatmul(x, table),
        }
    }

    pub fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.shape().num_elements() * 4,
            Self::Quant(t) => t.device_bytes(),
        }
    }
}

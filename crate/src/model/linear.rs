//! The model's matrices in the chosen format: dense f32 (burn's matmul, on the CPU) or packed
//! codes (our fused kernels), with projections that read the same input fused into one matrix.

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu};

use crate::backend::kernels::qgather::qgather;
use crate::backend::kernels::qmatmul::{Epilogue, QuantMatrix, qmatmul, qmatmul_with};
use crate::config::{Activation, GELU_K, ModelConfig};
use crate::error::Result;
use crate::load::WeightFormat;
use crate::load::{HostTensor, TensorSource};
use crate::quant::packed::{PackedMatrix, QuantFormat};

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
    /// Matrices read by one projection whose blocks have no exact common form (a legacy matrix
    /// with a K-quant one, float codes with quantized ones: no fused copy could keep both as
    /// stored), each packed and multiplied on its own, the outputs put together as `Fuse` says.
    Parts(Vec<QuantMatrix>, Fuse),
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
            WeightFormat::F32 if format.dense_on(device) => {
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
            packed => {
                let mut parts = names
                    .iter()
                    .map(|&(name, rows)| packed.pack(source, name, rows, d_in, QuantFormat::Q4))
                    .collect::<Result<Vec<_>>>()?;
                // What the source held of them is not needed past here (a streamed load frees it).
                for &(name, _) in names {
                    source.release(name);
                }
                if !PackedMatrix::fusable(&parts.iter().collect::<Vec<_>>()) {
                    return Ok(Self::Parts(parts.iter().map(|p| QuantMatrix::upload(p, device)).collect(), fuse));
                }
                let fused = match (fuse, parts.len()) {
                    (_, 1) => parts.pop().expect("one part"),
                    (Fuse::Interleave, 2) => PackedMatrix::interleave_rows(&parts[0], &parts[1]),
                    _ => PackedMatrix::concat_rows(&parts.iter().collect::<Vec<_>>()),
                };
                // The parts are in `fused` now: one copy of the matrix, not two, while it uploads.
                drop(parts);
                Self::Quant(QuantMatrix::upload(&fused, device))
            }
        })
    }

    /// `x: [seq, d_in]` → `[seq, d_out]`, then `epilogue`.
    pub fn forward(&self, x: Tensor<2>, epilogue: Epilogue) -> Tensor<2> {
        match self {
            Self::Quant(w) => qmatmul_with(x, w, epilogue),
            Self::Dense(w) => dense_epilogue(x.matmul(w.clone()), epilogue),
            Self::Parts(parts, fuse) => {
                let mut outs: Vec<Tensor<2>> = parts.iter().map(|p| qmatmul(x.clone(), p)).collect();
                match (fuse, epilogue) {
                    (Fuse::Interleave, Epilogue::Glu(act)) if outs.len() == 2 => {
                        let up = outs.pop().expect("two parts");
                        glu(outs.pop().expect("two parts"), up, act)
                    }
                    (Fuse::Interleave, epilogue) => {
                        let [seq, rows] = outs[0].dims();
                        let n = outs.len();
                        dense_epilogue(Tensor::stack::<3>(outs, 2).reshape([seq, rows * n]), epilogue)
                    }
                    (Fuse::Concat, epilogue) => dense_epilogue(Tensor::cat(outs, 1), epilogue),
                }
            }
        }
    }

    /// Its packed matrices (none when dense).
    pub(crate) fn packed_mut(&mut self) -> Vec<&mut QuantMatrix> {
        match self {
            Self::Dense(_) => Vec::new(),
            Self::Quant(w) => vec![w],
            Self::Parts(parts, _) => parts.iter_mut().collect(),
        }
    }

    pub fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(w) => w.shape().num_elements() * 4,
            Self::Quant(w) => w.device_bytes(),
            Self::Parts(parts, _) => parts.iter().map(QuantMatrix::device_bytes).sum(),
        }
    }
}

/// `epilogue` applied to a product `y` computed without it.
fn dense_epilogue(y: Tensor<2>, epilogue: Epilogue) -> Tensor<2> {
    match epilogue {
        Epilogue::None => y,
        Epilogue::Residual(r) => r.add(y),
        Epilogue::Glu(act) => {
            let [seq, rows] = y.dims();
            let pairs = y.reshape([seq, rows / 2, 2]);
            let gate = pairs.clone().slice([0..seq, 0..rows / 2, 0..1]).reshape([seq, rows / 2]);
            let up = pairs.slice([0..seq, 0..rows / 2, 1..2]).reshape([seq, rows / 2]);
            glu(gate, up, act)
        }
    }
}

/// `act(gate) * up`: the gated feed-forward's product outside the fused kernel.
fn glu(gate: Tensor<2>, up: Tensor<2>, act: Activation) -> Tensor<2> {
    let gate = match act {
        Activation::Silu => silu(gate),
        // g sigmoid(2z), as `Activation::apply` writes it.
        Activation::GeluTanh => {
            let z = gate.clone().powi_scalar(3).mul_scalar(0.044_715).add(gate.clone());
            gate.clone().mul(sigmoid(z.mul_scalar(2.0 * GELU_K)))
        }
    };
    gate.mul(up)
}

/// A `[vocab, d_model]` table: the token embedding (also the output head of tied models), or
/// an untied output head. Its rows may be split over several device buffers: a large vocabulary
/// (Gemma's 262,144 rows) outgrows the largest buffer many adapters bind (128 MiB).
pub struct Embedding {
    /// Consecutive row ranges, in order.
    parts: Vec<Table>,
}

/// Rows of an [`Embedding`] in one device buffer.
#[allow(clippy::large_enum_variant)] // a few per model
enum Table {
    Dense(Tensor<2>),
    /// Packed as stored, or quantized from floats.
    Quant(QuantMatrix),
}

impl Table {
    fn rows(&self) -> usize {
        match self {
            Self::Dense(t) => t.dims()[0],
            Self::Quant(q) => q.rows,
        }
    }

    fn lookup(&self, tokens: &[u32], device: &Device) -> Tensor<2> {
        match self {
            Self::Dense(table) => {
                let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
                table.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), device))
            }
            Self::Quant(table) => qgather(tokens, table, device),
        }
    }

    fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Dense(table) => x.matmul(table.clone().transpose()),
            Self::Quant(table) => qmatmul(x, table),
        }
    }

    fn device_bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.shape().num_elements() * 4,
            Self::Quant(q) => q.device_bytes(),
        }
    }
}

impl Embedding {
    /// Loads `name` (`[vocab, d_model]`): as stored when the file keeps it in a packed block
    /// format, quantized to `fallback` from floats, f32 with f32 weights (dense on the CPU);
    /// in as many buffers as `limits` ask.
    pub fn load(
        source: &dyn TensorSource,
        name: &str,
        c: &ModelConfig,
        fallback: QuantFormat,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        let (rows, cols) = (c.vocab, c.d_model);
        let limits = crate::backend::device::Limits::of(device);
        let parts = match format.dense_on(device) {
            true => {
                let t = source.tensor(name)?.expect_shape(&[rows, cols])?;
                let per_part = limits.rows_per_buffer(cols as u64 * 4);
                t.data
                    .chunks(per_part * cols)
                    .map(|chunk| {
                        let n = chunk.len() / cols;
                        Table::Dense(Tensor::from_data(TensorData::new(chunk.to_vec(), [n, cols]), device))
                    })
                    .collect()
            }
            false => {
                let p = format.pack(source, name, rows, cols, fallback)?;
                source.release(name);
                let per_part = limits.rows_per_buffer((p.blocks_per_row() * p.format.words_per_block() * 4) as u64);
                if per_part >= rows {
                    // One buffer: no copy of the rows first (a 152k-token table is 136 MB).
                    vec![Table::Quant(QuantMatrix::upload(&p, device))]
                } else {
                    (0..rows)
                        .step_by(per_part)
                        .map(|r| Table::Quant(QuantMatrix::upload(&p.row_range(r..(r + per_part).min(rows)), device)))
                        .collect()
                }
            }
        };
        Ok(Self { parts })
    }

    /// Rows of `tokens`: `[seq, d_model]`.
    pub fn lookup(&self, tokens: &[u32], device: &Device) -> Tensor<2> {
        if let [one] = &self.parts[..] {
            return one.lookup(tokens, device);
        }
        // Each part gathers the tokens it holds (row 0 for the others, masked out).
        let mut out: Option<Tensor<2>> = None;
        let mut start = 0u32;
        for part in &self.parts {
            let end = start + part.rows() as u32;
            let mine = |t: u32| (start..end).contains(&t);
            if tokens.iter().any(|&t| mine(t)) {
                let local: Vec<u32> = tokens.iter().map(|&t| if mine(t) { t - start } else { 0 }).collect();
                let mask: Vec<f32> = tokens.iter().map(|&t| mine(t) as u8 as f32).collect();
                let mask = Tensor::<2>::from_data(TensorData::new(mask, [tokens.len(), 1]), device);
                let rows = part.lookup(&local, device) * mask;
                out = Some(match out {
                    Some(sum) => sum + rows,
                    None => rows,
                });
            }
            start = end;
        }
        out.expect("every token id is below the vocabulary size, checked by the caller")
    }

    /// Logits of `x: [seq, d_model]` against every row: `[seq, vocab]`.
    pub fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.parts[..] {
            [one] => one.logits(x),
            parts => Tensor::cat(parts.iter().map(|p| p.logits(x.clone())).collect(), 1),
        }
    }

    /// Bytes the table takes on the device.
    pub fn device_bytes(&self) -> usize {
        self.parts.iter().map(Table::device_bytes).sum()
    }

    /// Its packed parts (none when dense).
    pub(crate) fn packed_mut(&mut self) -> impl Iterator<Item = &mut QuantMatrix> {
        self.parts.iter_mut().filter_map(|p| match p {
            Table::Quant(q) => Some(q),
            Table::Dense(_) => None,
        })
    }
}

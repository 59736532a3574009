//! Kernel benchmark: for every linear shape of a model and every packed format asked for, the
//! packed GEMV against the f32 GEMV the dense path uses, and a plain copy of as many bytes as the
//! packed matrix holds (the bandwidth yardstick: a format's kernel is as good as the fraction of
//! it that it reaches).

use burn::prelude::*;
use serde::Serialize;
use web_time::Instant;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kernels::copy::copy_words;
use crate::kernels::qmatmul::{QuantMatrix, qmatmul};
use crate::quant::packed::{FloatQuant, PackedMatrix, QuantFormat};

/// Timings of one matrix shape (batch 1), medians over repeated runs.
#[derive(Clone, Debug, Serialize)]
pub struct KernelTiming {
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
    pub format: &'static str,
    pub quant_us: f64,
    pub f32_us: f64,
    pub copy_us: f64,
    pub quant_bytes: usize,
    pub f32_bytes: usize,
    /// Weight bytes read per second by the quantized GEMV.
    pub quant_gb_per_s: f64,
    /// Bytes read and written per second by the copy.
    pub copy_gb_per_s: f64,
    pub fraction_of_copy_bandwidth: f64,
    pub speedup_over_f32: f64,
}

/// The linear shapes of one block and the output head: `(name, rows, cols)`.
fn shapes(c: &ModelConfig) -> [(&'static str, usize, usize); 7] {
    [
        ("attn_q", c.q_dim(), c.d_model),
        ("attn_output", c.d_model, c.q_dim()),
        ("attn_k, attn_v", c.kv_dim(), c.d_model),
        ("ffn_gate, ffn_up", c.d_ff, c.d_model),
        ("ffn_down", c.d_model, c.d_ff),
        ("output (tied embedding)", c.vocab, c.d_model),
        ("qkv fused", c.q_dim() + 2 * c.kv_dim(), c.d_model),
    ]
}

/// Time of one run of `op` in microseconds: `iters` runs are queued back to back and waited for
/// once (as a decode step queues its kernels), five times over; the median batch counts.
fn time<T>(device: &Device, iters: usize, mut op: impl FnMut() -> T) -> Result<f64> {
    let sync = |device: &Device| device.sync().map_err(|e| Error::Device(format!("{e:?}")));
    let _warm = op();
    sync(device)?;
    let mut batches = Vec::with_capacity(5);
    for _ in 0..5 {
        let start = Instant::now();
        let outputs: Vec<T> = (0..iters).map(|_| op()).collect();
        sync(device)?;
        batches.push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
        drop(outputs);
    }
    batches.sort_by(f64::total_cmp);
    Ok(batches[batches.len() / 2])
}

/// A format the kernel bench packs its random matrices in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Floats quantized as [`PackedMatrix::quantize_as`] does.
    Quantized(FloatQuant),
    /// Float codes: rounded to 16 bits ([`QuantFormat::F16`] or [`QuantFormat::Bf16`]) or as
    /// they are ([`QuantFormat::F32`], against which the bench's dense f32 matmul is burn's).
    Float(QuantFormat),
}

impl KernelFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Quantized(q) => q.name(),
            Self::Float(QuantFormat::Bf16) => "bf16",
            Self::Float(QuantFormat::F32) => "f32",
            Self::Float(_) => "f16",
        }
    }

    fn pack(self, data: &[f32], rows: usize, cols: usize) -> Result<PackedMatrix> {
        match self {
            Self::Quantized(q) => PackedMatrix::quantize_as(q, data, rows, cols),
            Self::Float(QuantFormat::F32) => Ok(PackedMatrix::from_f32(data, rows, cols)),
            Self::Float(format) => {
                let bits: Vec<u16> = match format {
                    QuantFormat::Bf16 => data.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect(),
                    _ => data.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect(),
                };
                Ok(PackedMatrix::from_halves(format, &bits, rows, cols))
            }
        }
    }
}

/// Benchmarks every linear shape of `config` on `device` in each of `formats`.
pub fn kernel_bench(
    config: &ModelConfig,
    device: &Device,
    iters: usize,
    formats: &[KernelFormat],
) -> Result<Vec<KernelTiming>> {
    let mut out = Vec::new();
    for (name, rows, cols) in shapes(config) {
        let data: Vec<f32> =
            (0..rows * cols).map(|i| ((i as u64 * 2_654_435_761) % 2001) as f32 / 1000.0 - 1.0).collect();
        let x = Tensor::<2>::from_data(
            TensorData::new((0..cols).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), [1, cols]),
            device,
        );
        let f32_us = {
            let dense = Tensor::<2>::from_data(TensorData::new(data.clone(), [rows, cols]), device).transpose();
            time(device, iters, || x.clone().matmul(dense.clone()))?
        };
        for &format in formats {
            let packed = format.pack(&data, rows, cols)?;
            let quant = QuantMatrix::upload(&packed, device);
            let words = Tensor::<1, Int>::from_data(
                TensorData::new(vec![0i32; packed.device_bytes() / 4], [packed.device_bytes() / 4]),
                device,
            );
            let quant_us = time(device, iters, || qmatmul(x.clone(), &quant))?;
            let copy_us = time(device, iters, || copy_words(&words))?;
            let quant_bytes = packed.device_bytes();
            let quant_gb_per_s = quant_bytes as f64 / quant_us / 1e3;
            let copy_gb_per_s = 2.0 * quant_bytes as f64 / copy_us / 1e3;
            out.push(KernelTiming {
                name,
                rows,
                cols,
                format: format.name(),
                quant_us,
                f32_us,
                copy_us,
                quant_bytes,
                f32_bytes: rows * cols * 4,
                quant_gb_per_s,
                copy_gb_per_s,
                fraction_of_copy_bandwidth: quant_gb_per_s / copy_gb_per_s,
                speedup_over_f32: f32_us / quant_us,
            });
        }
    }
    Ok(out)
}

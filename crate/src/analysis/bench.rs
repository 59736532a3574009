//! Kernel benchmark: for every linear shape of a model and every packed format asked for, the
//! packed GEMV against the f32 GEMV the dense path uses, and a plain copy of as many bytes as the
//! packed matrix holds (the bandwidth yardstick: a format's kernel is as good as the fraction of
//! it that it reaches).

use burn::prelude::*;
use serde::Serialize;
use web_time::Instant;

use crate::backend::kernels::copy::copy_words;
use crate::backend::kernels::qmatmul::{QuantMatrix, qmatmul};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
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
    /// Weight bytes a second against the legacy format of the same code width in this run
    /// (Q4_0 for 4-bit codes, Q8_0 for 8-bit: timed in the same rounds, so steadier than each
    /// one's own copy yardstick); absent when that format was not asked for.
    pub gb_per_s_vs_legacy: Option<f64>,
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

/// Rounds each shape is timed in: every operation of the shape (the f32 GEMV, each format's
/// packed GEMV and its copy) runs one batch a round, in turn, so that a machine whose speed
/// drifts over seconds (other tenants, clocks) slows them alike instead of whichever ran then.
const ROUNDS: usize = 9;

/// The time of one run in microseconds of each of `ops`: per round, each op runs `iters` times
/// back to back and is waited for once (as a decode step queues its kernels); the median round
/// counts.
fn time_interleaved(device: &Device, iters: usize, ops: &mut [&mut dyn FnMut()]) -> Result<Vec<f64>> {
    let sync = |device: &Device| device.sync().map_err(|e| Error::Device(format!("{e:?}")));
    for op in ops.iter_mut() {
        op();
    }
    sync(device)?;
    let mut rounds = vec![Vec::with_capacity(ROUNDS); ops.len()];
    for _ in 0..ROUNDS {
        for (op, times) in ops.iter_mut().zip(&mut rounds) {
            let start = Instant::now();
            for _ in 0..iters {
                op();
            }
            sync(device)?;
            times.push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
        }
    }
    Ok(rounds
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
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
    let limits = crate::backend::device::Limits::of(device);
    for (name, rows, cols) in shapes(config) {
        // A matrix past the device's largest buffer (a big vocabulary's head on many
        // adapters, whose dispatch would fail) is timed on the rows one buffer holds as f32,
        // as the engine splits such a table; `rows` says how many.
        let rows = rows.min(limits.rows_per_buffer(cols as u64 * 4));
        let data: Vec<f32> =
            (0..rows * cols).map(|i| ((i as u64 * 2_654_435_761) % 2001) as f32 / 1000.0 - 1.0).collect();
        let x = Tensor::<2>::from_data(
            TensorData::new((0..cols).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), [1, cols]),
            device,
        );
        let dense = Tensor::<2>::from_data(TensorData::new(data.clone(), [rows, cols]), device).transpose();
        let packed = formats.iter().map(|f| f.pack(&data, rows, cols)).collect::<Result<Vec<_>>>()?;
        let quant: Vec<QuantMatrix> = packed.iter().map(|p| QuantMatrix::upload(p, device)).collect();
        let words: Vec<Tensor<1, Int>> = packed
            .iter()
            .map(|p| {
                Tensor::from_data(TensorData::new(vec![0i32; p.device_bytes() / 4], [p.device_bytes() / 4]), device)
            })
            .collect();
        // The outputs are dropped as they come: each op's batch waits on its own work only.
        let mut f32_op = || drop(x.clone().matmul(dense.clone()));
        let x = &x;
        let mut quant_ops: Vec<_> = quant.iter().map(|q| move || drop(qmatmul(x.clone(), q))).collect();
        let mut copy_ops: Vec<_> = words.iter().map(|w| move || drop(copy_words(w))).collect();
        let mut ops: Vec<&mut dyn FnMut()> = vec![&mut f32_op];
        for (q, c) in quant_ops.iter_mut().zip(&mut copy_ops) {
            ops.push(q);
            ops.push(c);
        }
        let us = time_interleaved(device, iters, &mut ops)?;
        let f32_us = us[0];
        for (i, (&format, p)) in formats.iter().zip(&packed).enumerate() {
            let (quant_us, copy_us) = (us[1 + 2 * i], us[2 + 2 * i]);
            let quant_bytes = p.device_bytes();
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
                gb_per_s_vs_legacy: None,
            });
        }
        // Each block format against its legacy peer of the same code width.
        let shape = out.len() - formats.len();
        let peer = |name: &str| out[shape..].iter().find(|t| t.format == name).map(|t| t.quant_gb_per_s);
        let (q4, q8) = (peer("q4_0"), peer("q8_0"));
        for (t, p) in out[shape..].iter_mut().zip(&packed) {
            let legacy = match p.format {
                QuantFormat::Q4 => q4,
                QuantFormat::Q8 => q8,
                _ => None,
            };
            t.gb_per_s_vs_legacy = legacy.map(|l| t.quant_gb_per_s / l);
        }
    }
    Ok(out)
}

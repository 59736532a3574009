//! Trust, then use: a GPU runs a few known computations before a model is put on it.
//!
//! Some adapters report features and limits they do not deliver and compute garbage (users of
//! wllama and yzma met it on ANGLE on Linux and on some Vulkan drivers): a model on such an
//! adapter writes nonsense with no error anywhere. So before a browser settles on WebGPU, each
//! kind of packed matrix product our kernels have (every weight format: 4-bit and 8-bit codes
//! with block and super-block scales, f16, bf16, f32) and an attention step run on it and on
//! the CPU path, on the same deterministic inputs; where they disagree the adapter is refused
//! with [`Error::DeviceUnusable`] and the caller falls back to the CPU.
//!
//! The check costs a compile of each kernel (the model compiles most of them anyway) and a few
//! kilobytes of uploads; it runs once per device.

use burn::prelude::*;

use crate::backend::kernels::attention::attention;
use crate::backend::kernels::qmatmul::{QuantMatrix, qmatmul};
use crate::backend::readback::read_f32;
use crate::config::Heads;
use crate::error::{Error, Result};
use crate::quant::packed::{FloatQuant, PackedMatrix, QuantFormat};

/// Rows and columns of each checked matrix: whole K-quant super-blocks (256) along a row.
const ROWS: usize = 32;
const COLS: usize = 512;

/// What a correct device may differ from the CPU by: both sum the same products in f32, in
/// another order, so their results agree to a few units in the last place of the largest sum.
const TOLERANCE: f32 = 1e-3;

/// A fault to inject into the device's results (tests of the check itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The device's results are read back with one element changed, as a wrong kernel would.
    WrongResult,
}

/// Runs the known computations on `device` and on the CPU; fails with
/// [`Error::DeviceUnusable`] naming the first that disagrees.
pub async fn check(device: &Device) -> Result<()> {
    check_with(device, Fault::None).await
}

/// [`check`] with `fault` injected into what `device` computes.
pub async fn check_with(device: &Device, fault: Fault) -> Result<()> {
    let cpu = Device::flex();
    let data = numbers(ROWS * COLS, 1);
    let x = numbers(COLS, 2);
    for (name, packed) in matrices(&data)? {
        let on = |d: &Device| {
            let w = QuantMatrix::upload(&packed, d);
            qmatmul(Tensor::from_data(TensorData::new(x.clone(), [1, COLS]), d), &w)
        };
        compare(&format!("a {name} matrix product"), on(device), on(&cpu), fault).await?;
    }
    let heads = Heads { n_heads: 4, n_kv_heads: 2, head_dim: 64 };
    let (capacity, slot) = (16, 9);
    let q = numbers(heads.n_heads * heads.head_dim, 3);
    let k = numbers(heads.n_kv_heads * capacity * heads.head_dim, 4);
    let v = numbers(heads.n_kv_heads * capacity * heads.head_dim, 5);
    let step = |d: &Device| {
        let kv = |data: &[f32]| {
            Tensor::<3>::from_data(TensorData::new(data.to_vec(), [heads.n_kv_heads, capacity, heads.head_dim]), d)
        };
        let q = Tensor::<2>::from_data(TensorData::new(q.clone(), [1, heads.n_heads * heads.head_dim]), d);
        attention(q, &kv(&k), &kv(&v), heads, slot, None)
    };
    compare("an attention step", step(device), step(&cpu), fault).await
}

/// One matrix of each kind the kernels have, from the same numbers.
fn matrices(data: &[f32]) -> Result<Vec<(&'static str, PackedMatrix)>> {
    let halves = |f: fn(f32) -> u16| data.iter().map(|&v| f(v)).collect::<Vec<_>>();
    Ok(vec![
        ("Q4_1 (4-bit, block scales)", PackedMatrix::quantize(QuantFormat::Q4, data, ROWS, COLS)),
        ("Q8_0 (8-bit, block scales)", PackedMatrix::quantize(QuantFormat::Q8, data, ROWS, COLS)),
        ("Q4_K (4-bit, super-block scales)", PackedMatrix::quantize_as(FloatQuant::Q4_K, data, ROWS, COLS)?),
        ("Q6_K (8-bit codes, super-block scales)", PackedMatrix::quantize_as(FloatQuant::Q6_K, data, ROWS, COLS)?),
        ("F16", PackedMatrix::from_halves(QuantFormat::F16, &halves(|v| half::f16::from_f32(v).to_bits()), ROWS, COLS)),
        (
            "BF16",
            PackedMatrix::from_halves(QuantFormat::Bf16, &halves(|v| half::bf16::from_f32(v).to_bits()), ROWS, COLS),
        ),
        ("F32", PackedMatrix::from_f32(data, ROWS, COLS)),
    ])
}

/// Reads both results back and fails unless they agree.
async fn compare(what: &str, on_device: Tensor<2>, on_cpu: Tensor<2>, fault: Fault) -> Result<()> {
    let mut got = read_f32(on_device).await?;
    let want = read_f32(on_cpu).await?;
    if fault == Fault::WrongResult {
        got[0] += 1.0;
    }
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) });
    if got.len() != want.len() || worst > TOLERANCE * scale {
        return Err(Error::DeviceUnusable(format!(
            "{what} on the GPU differs from the CPU's by {worst} (allowed {}): the adapter computes wrong results",
            TOLERANCE * scale
        )));
    }
    Ok(())
}

/// `n` deterministic numbers in [-1, 1) (a linear congruential generator, seeded).
fn numbers(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

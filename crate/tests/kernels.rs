//! Our kernels against a plain CPU dequantize-then-compute reference, on random shapes,
//! including ragged ones (rows not a multiple of a thread's rows, columns not a multiple of the
//! block or of the vector width) and every batch size from 1 to past one cube's tokens.

mod common;

use burn::prelude::*;
use common::Rng;
use hearth::DeviceKind;
use hearth::kernels::qgather::qgather;
use hearth::kernels::qmatmul::{QuantMatrix, qmatmul};
use hearth::quant::packed::{PackedMatrix, QuantFormat};

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(1.0)).collect()
}

fn read(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// `(rows, cols)`: small, ragged in every way, and model-sized.
const SHAPES: [(usize, usize); 7] = [(1, 32), (7, 40), (13, 70), (33, 33), (64, 576), (130, 1000), (576, 1536)];

fn qmatmul_matches_reference(device: DeviceKind) {
    let device = device.device().unwrap();
    let mut rng = Rng::new(17);
    for format in [QuantFormat::Q4, QuantFormat::Q8] {
        for (rows, cols) in SHAPES {
            let packed = PackedMatrix::quantize(format, &random(&mut rng, rows * cols), rows, cols);
            let w = packed.dequantize();
            let matrix = QuantMatrix::upload(&packed, &device);
            for m in (1..=9).chain([13, 17]) {
                let x = random(&mut rng, m * cols);
                let got = read(qmatmul(Tensor::from_data(TensorData::new(x.clone(), [m, cols]), &device), &matrix));
                for t in 0..m {
                    for r in 0..rows {
                        let want: f32 = (0..cols).map(|c| x[t * cols + c] * w[r * cols + c]).sum();
                        let g = got[t * rows + r];
                        let scale = (0..cols).map(|c| (x[t * cols + c] * w[r * cols + c]).abs()).sum::<f32>() + 1.0;
                        assert!((g - want).abs() <= 1e-5 * scale, "{format:?} {rows}x{cols} m={m} t={t} r={r}: {g} vs {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn qmatmul_matches_dequantize_then_multiply_on_cpu() {
    qmatmul_matches_reference(DeviceKind::Cpu);
}

#[test]
fn qmatmul_matches_dequantize_then_multiply_on_wgpu() {
    qmatmul_matches_reference(DeviceKind::Wgpu);
}

fn qgather_matches_reference(device: DeviceKind) {
    let device = device.device().unwrap();
    let mut rng = Rng::new(23);
    for format in [QuantFormat::Q4, QuantFormat::Q8] {
        for (rows, cols) in SHAPES {
            let packed = PackedMatrix::quantize(format, &random(&mut rng, rows * cols), rows, cols);
            let w = packed.dequantize();
            let ids: Vec<u32> = (0..5).map(|_| rng.below(rows as u64) as u32).collect();
            let got = read(qgather(&ids, &QuantMatrix::upload(&packed, &device), &device));
            let want: Vec<f32> = ids.iter().flat_map(|&i| w[i as usize * cols..(i as usize + 1) * cols].to_vec()).collect();
            assert_eq!(got, want, "{format:?} {rows}x{cols}");
        }
    }
}

#[test]
fn qgather_matches_dequantized_rows_on_cpu() {
    qgather_matches_reference(DeviceKind::Cpu);
}

#[test]
fn qgather_matches_dequantized_rows_on_wgpu() {
    qgather_matches_reference(DeviceKind::Wgpu);
}

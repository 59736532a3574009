//! RMSNorm in one dispatch: `y = x / sqrt(mean(x²) + eps) * g`, row by row.

use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_flex::FlexTensor;
#[cfg(feature = "gpu")]
use cubecl::prelude::{CubeCount, CubeDim};

#[cfg(feature = "gpu")]
use super::cube_float;
use super::{Prim, flex_f32, flex_float};
use crate::backend::cpu::scratch;

#[cfg(feature = "gpu")]
/// Threads that share one row.
const THREADS: u32 = 64;

/// `x: [m, d]`, `g: [d]` → `[m, d]`.
pub fn rms_norm(x: Tensor<2>, g: &Tensor<1>, eps: f32) -> Tensor<2> {
    let [m, d] = x.dims();
    match (super::float(x), super::float(g.clone())) {
        #[cfg(feature = "gpu")]
        (Prim::Cube(x), Prim::Cube(g)) => {
            let x = burn_cubecl::kernel::into_contiguous(x);
            let client = x.client.clone();
            let out = empty_device_contiguous_dtype(client.clone(), x.device.clone(), [m, d].into(), x.dtype);
            cube::rms_norm_kernel::launch(
                &client,
                CubeCount::Static(m as u32, 1, 1),
                CubeDim::new_1d(THREADS),
                x.into_tensor_arg(),
                g.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                d as u32,
                eps,
            );
            cube_float(out)
        }
        (Prim::Flex(x), Prim::Flex(g)) => {
            let mut y = scratch::take(m * d);
            {
                let (xs, g) = (flex_f32(&x), flex_f32(&g));
                for (row, out) in xs.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
                    let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
                    for ((o, v), g) in out.iter_mut().zip(row).zip(g.iter()) {
                        *o = v * inv * g;
                    }
                }
            }
            scratch::give(x);
            flex_float(FlexTensor::from_data(TensorData::new(y, [m, d])))
        }
        #[cfg(feature = "gpu")]
        _ => panic!("rms_norm: input and weight on different devices"),
    }
}

#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    use super::THREADS;

    #[cube(launch)]
    pub(super) fn rms_norm_kernel(x: &Tensor<f32>, g: &Tensor<f32>, out: &mut Tensor<f32>, d: u32, eps: f32) {
        let row = CUBE_POS_X as usize;
        let lane = UNIT_POS_X as usize;
        let d = d as usize;
        let base = row * d;
        let mut sum = 0.0f32;
        let mut i = lane;
        while i < d {
            let v = x[base + i];
            sum += v * v;
            i += THREADS as usize;
        }
        let mut partial = Shared::<[f32]>::new_slice(comptime!(THREADS as usize));
        partial[lane] = sum;
        sync_cube();
        #[unroll]
        for s in 0..6u32 {
            let stride = comptime!(32usize >> s);
            if lane < stride {
                partial[lane] += partial[lane + stride];
            }
            sync_cube();
        }
        let inv = 1.0f32 / f32::sqrt(partial[0] / f32::cast_from(d) + eps);
        let mut i = lane;
        while i < d {
            out[base + i] = x[base + i] * inv * g[i];
            i += THREADS as usize;
        }
    }
}

//! A plain copy of 32-bit words: the bandwidth yardstick for the matmul kernels.

use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_flex::FlexTensor;
#[cfg(feature = "gpu")]
use cubecl::prelude::CubeDim;

use super::{Prim, flex_words};

#[cfg(feature = "gpu")]
/// Threads per cube; each copies [`WORDS_PER_THREAD`] consecutive words.
const THREADS: u32 = 256;
#[cfg(feature = "gpu")]
const WORDS_PER_THREAD: u32 = 4;

/// A copy of `words`, through a kernel on cubecl devices and `memcpy` on the CPU.
pub fn copy_words(words: &Tensor<1, Int>) -> Tensor<1, Int> {
    let n = words.dims()[0];
    match super::int(words.clone()) {
        #[cfg(feature = "gpu")]
        Prim::Cube(src) => {
            let client = src.client.clone();
            let out = empty_device_contiguous_dtype(client.clone(), src.device.clone(), [n].into(), src.dtype);
            let per_cube = THREADS * WORDS_PER_THREAD;
            cube::copy_kernel::launch(
                &client,
                super::grid((n as u32).div_ceil(per_cube)),
                CubeDim::new_1d(THREADS),
                src.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                n as u32,
            );
            Tensor::from_primitive::<burn_cubecl::CubeBackend>(out)
        }
        Prim::Flex(src) => {
            let copy: Vec<i32> = bytemuck::cast_slice(flex_words(&src)).to_vec();
            Tensor::from_primitive::<burn::backend::Flex>(FlexTensor::from_data(TensorData::new(copy, [n])))
        }
    }
}

#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    use super::{THREADS, WORDS_PER_THREAD};

    #[cube(launch)]
    pub(super) fn copy_kernel(src: &Tensor<i32>, dst: &mut Tensor<i32>, n: u32) {
        // Consecutive threads take consecutive words, WORDS_PER_THREAD times over the cube.
        let base = CUBE_POS * (THREADS * WORDS_PER_THREAD) as usize + UNIT_POS_X as usize;
        #[unroll]
        for i in 0..WORDS_PER_THREAD as usize {
            let at = base + i * THREADS as usize;
            if at < n as usize {
                dst[at] = src[at];
            }
        }
    }
}

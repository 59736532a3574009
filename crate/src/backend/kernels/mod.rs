//! Our own compute kernels: cubecl for every cubecl runtime (WebGPU, Vulkan, Metal, CUDA) and
//! plain Rust for burn's Flex CPU backend. Each op takes and returns burn tensors and picks its
//! implementation from the device the tensors live on; each has a scalar reference test.

pub mod attention;
pub mod compact;
pub mod copy;
pub mod norm;
pub mod qgather;
pub mod qmatmul;
pub mod rope;

use burn::backend::Flex;
use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::{CubeBackend, tensor::CubeTensor};
use burn_flex::FlexTensor;

pub(crate) use super::device::{Prim, float, int};

#[cfg(feature = "gpu")]
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension` (what SwiftShader and most mobile
/// adapters offer).
pub(crate) const MAX_WORKGROUPS: u32 = 65_535;

/// `cubes` workgroups of a kernel that indexes by `ABSOLUTE_POS` (and bounds-checks it), laid
/// out over x and y so that neither dimension passes [`MAX_WORKGROUPS`].
#[cfg(feature = "gpu")]
pub(crate) fn grid(cubes: u32) -> cubecl::prelude::CubeCount {
    let y = cubes.div_ceil(MAX_WORKGROUPS).max(1);
    cubecl::prelude::CubeCount::Static(cubes.div_ceil(y), y, 1)
}

#[cfg(feature = "gpu")]
pub(crate) fn cube_float<const D: usize>(t: CubeTensor) -> Tensor<D> {
    Tensor::from_primitive::<CubeBackend>(t)
}

pub(crate) fn flex_float<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

/// A contiguous f32 copy of a Flex tensor's elements.
pub(crate) fn flex_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("f32 data").to_vec()),
    }
}

/// The u32 words of a Flex int tensor holding packed data (stored as i32 or u32).
pub(crate) fn flex_words(t: &FlexTensor) -> &[u32] {
    let bytes = t.bytes();
    bytemuck::cast_slice(&bytes[..bytes.len() / 4 * 4])
}

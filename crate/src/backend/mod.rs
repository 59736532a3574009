//! Where the math runs: the device and its limits, readbacks, the cubecl kernels every GPU runs,
//! and the CPU path (native SIMD and wasm simd128) the same kernels dispatch to on burn's flex
//! backend.

pub mod cpu;
pub mod device;
pub mod host;
pub mod host_memory;
pub mod kernels;
pub(crate) mod mask;
pub(crate) mod readback;
pub mod selfcheck;

//! Choosing the compute device: burn's pure-Rust CPU backend or wgpu (Vulkan, Metal, DX12,
//! or WebGPU in a browser).

use std::str::FromStr;

use burn::backend::Flex;
use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::{CubeBackend, tensor::CubeTensor};
use burn_flex::FlexTensor;

use crate::error::{Error, Result};

/// Kernels queued before a submission to the GPU: a whole decode step (about 250 dispatches for
/// SmolLM2-135M) goes in one submission, which measured 40% faster on lavapipe than 32.
pub const WGPU_TASKS_PER_SUBMIT: usize = 512;

/// Which backend runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's Flex backend on the CPU.
    Cpu,
    /// burn's wgpu backend on the default adapter.
    Wgpu,
}

impl FromStr for DeviceKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(Error::BadOptions(format!("unknown device {other:?} (cpu or wgpu)"))),
        }
    }
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        }
    }

    /// The device of this kind. wgpu is initialized once per process; later calls return the
    /// same device.
    #[cfg(not(target_family = "wasm"))]
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "gpu")]
            Self::Wgpu => wgpu_device(),
            #[cfg(not(feature = "gpu"))]
            Self::Wgpu => {
                Err(Error::Device("this build of hearth has no GPU path (built without the `gpu` feature)".into()))
            }
        }
    }
}

#[cfg(all(not(target_family = "wasm"), feature = "gpu"))]
fn wgpu_device() -> Result<Device> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        Device::wgpu_options().tasks_max(WGPU_TASKS_PER_SUBMIT).init().map_err(|e| format!("no wgpu adapter: {e}"))
    })
    .clone()
    .map_err(Error::Device)
}

/// What one allocation may be on a device, and how much host memory loading may still take.
/// Sizes that come from a file or an option are checked against these before anything is
/// allocated, so a model or a cache that cannot fit is refused with [`Error::ResourceLimit`]
/// instead of failing inside the GPU driver or trapping the wasm instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest buffer a kernel can bind: WebGPU's `maxStorageBufferBindingSize` and
    /// `maxBufferSize`, whichever is smaller, as the device was created with. Unbounded on the CPU.
    pub max_buffer_bytes: u64,
    /// Workgroups a dispatch may have along one dimension (`maxComputeWorkgroupsPerDimension`).
    pub max_workgroups: u32,
    /// Host memory that loading may still allocate: what wasm32's 4 GiB address space has
    /// left, or natively what the operating system reports as available.
    pub host_bytes_left: u64,
    /// Whether the model's weights live in host memory (the CPU path), so that loading needs
    /// room for all of them there, not only for one matrix in passing.
    pub weights_on_host: bool,
}

/// The name the limits of a GPU buffer go by in errors.
pub const BUFFER_LIMIT: &str = "the device's largest storage buffer (maxStorageBufferBindingSize / maxBufferSize)";
/// The name of the host memory limit in errors.
#[cfg(target_arch = "wasm32")]
pub const HOST_MEMORY_LIMIT: &str = "wasm32 memory (4 GiB)";
#[cfg(not(target_arch = "wasm32"))]
pub const HOST_MEMORY_LIMIT: &str = "the host's available memory";

impl Limits {
    /// The limits of `device`: read from its cubecl client for GPUs, none for the CPU.
    pub fn of(device: &Device) -> Self {
        let host_bytes_left = host_bytes_left();
        match float(burn::tensor::Tensor::<1>::zeros([1], device)) {
            #[cfg(feature = "gpu")]
            Prim::Cube(t) => {
                let p = t.client.properties();
                Self {
                    max_buffer_bytes: p.memory.max_page_size,
                    max_workgroups: p.hardware.max_cube_count.0,
                    host_bytes_left,
                    weights_on_host: false,
                }
            }
            Prim::Flex(_) => {
                Self { max_buffer_bytes: u64::MAX, max_workgroups: u32::MAX, host_bytes_left, weights_on_host: true }
            }
        }
    }

    /// These limits once `bytes` more of host memory are free (the model loaded now, which a
    /// load replaces: so that B loads in place of A whenever B fits alone).
    pub fn freeing(self, bytes: u64) -> Self {
        Self { host_bytes_left: self.host_bytes_left.saturating_add(bytes), ..self }
    }

    /// Fails unless one device buffer of `bytes` fits.
    pub fn check_buffer(&self, what: impl FnOnce() -> String, bytes: u64) -> Result<()> {
        if bytes > self.max_buffer_bytes {
            return Err(Error::ResourceLimit {
                what: what(),
                needed: bytes,
                limit: BUFFER_LIMIT,
                allowed: self.max_buffer_bytes,
            });
        }
        Ok(())
    }

    /// Rows of `bytes_per_row` that one buffer holds (at least one, and a multiple of four when
    /// more: the kernels' row groups), for tables split over several buffers.
    pub fn rows_per_buffer(&self, bytes_per_row: u64) -> usize {
        let rows = (self.max_buffer_bytes / bytes_per_row.max(1)).min(usize::MAX as u64) as usize;
        if rows >= 4 { rows / 4 * 4 } else { rows.max(1) }
    }

    /// Fails unless `bytes` more of host memory fit.
    pub fn check_host(&self, what: impl FnOnce() -> String, bytes: u64) -> Result<()> {
        if bytes > self.host_bytes_left {
            return Err(Error::ResourceLimit {
                what: what(),
                needed: bytes,
                limit: HOST_MEMORY_LIMIT,
                allowed: self.host_bytes_left,
            });
        }
        Ok(())
    }
}

/// wasm32 addresses 4 GiB: what the allocator can still give of it, free blocks of memory
/// already grown included ([`super::host_memory::bytes_left`]), so that a model unloaded
/// leaves room for the next.
#[cfg(target_arch = "wasm32")]
fn host_bytes_left() -> u64 {
    super::host_memory::bytes_left()
}

/// Natively, what the kernel says is available (Linux `MemAvailable`), so that an absurd
/// cache on the CPU is refused instead of ending in the out-of-memory killer; unbounded where
/// that is unknown.
#[cfg(not(target_arch = "wasm32"))]
fn host_bytes_left() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    available.map_or(u64::MAX, |kib| kib.saturating_mul(1024))
}

/// Where a tensor's data lives, with its backend primitive.
#[allow(clippy::large_enum_variant)] // short-lived, or one per weight matrix
pub(crate) enum Prim {
    #[cfg(feature = "gpu")]
    Cube(CubeTensor),
    Flex(FlexTensor),
}

/// Whether `device` runs cubecl kernels (a GPU), as opposed to the CPU path.
pub(crate) fn is_cube(device: &Device) -> bool {
    #[cfg(feature = "gpu")]
    return matches!(device.as_dispatch(), burn::backend::DispatchDevice::Cube(_));
    #[cfg(not(feature = "gpu"))]
    {
        let _ = device;
        false
    }
}

/// The primitive behind a float tensor.
pub(crate) fn float<const D: usize>(t: Tensor<D>) -> Prim {
    #[cfg(feature = "gpu")]
    if is_cube(&t.device()) {
        return Prim::Cube(t.try_into_primitive::<CubeBackend>().expect("a tensor on a cubecl device"));
    }
    Prim::Flex(t.try_into_primitive::<Flex>().expect("a tensor on the Flex device"))
}

/// The primitive behind an int tensor.
pub(crate) fn int<const D: usize>(t: Tensor<D, Int>) -> Prim {
    #[cfg(feature = "gpu")]
    if is_cube(&t.device()) {
        return Prim::Cube(t.try_into_primitive::<CubeBackend>().expect("a tensor on a cubecl device"));
    }
    Prim::Flex(t.try_into_primitive::<Flex>().expect("a tensor on the Flex device"))
}

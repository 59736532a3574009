//! The CPU compute path's own machinery: which SIMD instructions this CPU has (detected once),
//! and the persistent thread pool (`pool.rs`) the kernels split their rows over.
//!
//! Kernels take an [`Isa`] argument instead of detecting features themselves, so that tests can
//! run every level the machine has against the scalar reference of the same arithmetic.

pub mod attention;
#[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
pub(crate) mod pool;
pub mod profile;
pub mod qgemm;
pub(crate) mod scratch;

use std::sync::OnceLock;

/// A level of SIMD support the CPU kernels have code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust: the reference every other level is tested against, and the fallback.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C (Haswell and later, Zen).
    Avx2,
    /// x86-64 AVX-512 F and BW (with AVX2/FMA/F16C): 16 lanes; 8-bit products with
    /// `vpmaddubsw` (Skylake-X, the first AVX-512 CPUs).
    Avx512,
    /// [`Self::Avx512`] with VNNI: 8-bit products summed four at a time by `vpdpbusd`
    /// (Ice Lake, Sapphire Rapids, Zen 4 and later). Its f32 kernels are [`Self::Avx512`]'s.
    Avx512Vnni,
    /// wasm32 simd128, when the module was built with it.
    Simd128,
    /// aarch64 Advanced SIMD (every aarch64 CPU has it): 8-bit products with `smull`.
    Neon,
    /// [`Self::Neon`] with the dotprod extension: 8-bit products summed four at a time by
    /// `sdot` (Armv8.2 and later: Apple M1, Cortex-A55/A76, Neoverse N1 and later). Its i16 and
    /// f32 kernels are [`Self::Neon`]'s.
    NeonDot,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Avx512Vnni => "avx512vnni",
            Self::Simd128 => "simd128",
            Self::Neon => "neon",
            Self::NeonDot => "neondot",
        }
    }

    /// Whether the level has kernels for 5- and 6-bit codes at their own width
    /// ([`crate::quant::packed::QuantFormat::is_narrow`]) in both activation modes; matrices
    /// are widened to 8-bit codes for the others.
    pub fn has_narrow_kernels(self) -> bool {
        matches!(self, Isa::Scalar | Isa::Avx512 | Isa::Avx512Vnni)
    }

    /// Every level this CPU (or this wasm build) can run, slowest first; the last is the best.
    pub fn available() -> Vec<Isa> {
        let mut levels = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2 {
                levels.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                    levels.push(Isa::Avx512);
                    if is_x86_feature_detected!("avx512vnni") {
                        levels.push(Isa::Avx512Vnni);
                    }
                }
            }
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        levels.push(Isa::Simd128);
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            levels.push(Isa::Neon);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                levels.push(Isa::NeonDot);
            }
        }
        levels
    }

    /// The best level, detected once per process. `HEARTH_CPU_ISA` (a level's [`Self::name`])
    /// caps it natively, so that one machine can run and time the levels below its best.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let levels = Isa::available();
            #[cfg(not(target_family = "wasm"))]
            if let Ok(cap) = std::env::var("HEARTH_CPU_ISA")
                && let Some(at) = levels.iter().position(|l| l.name() == cap)
            {
                return levels[at];
            }
            *levels.last().expect("scalar is always available")
        })
    }
}

/// Threads the CPU kernels use: the persistent pool's and the caller's (one in the default
/// wasm artifact, which has no threads).
pub fn threads() -> usize {
    #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
    return pool::threads();
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    1
}

/// Runs `task(i)` for every `i` in `0..n`, over the pool's threads when there are several.
pub(crate) fn for_each(n: usize, task: impl Fn(usize) + Sync) {
    #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
    pool::run(n, &task);
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    (0..n).for_each(task);
}

/// An output buffer that tasks on several threads write disjoint parts of.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);

// Safety: every user writes only the part of the buffer its task owns.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The element at `offset` (a method, so that closures capture the whole `Sync` wrapper
    /// rather than its field).
    ///
    /// # Safety
    /// `offset` is inside the buffer, and no other task writes that element.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

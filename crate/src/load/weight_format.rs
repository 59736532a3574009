//! How the matrices of a model are kept on the device, chosen at load: the one switch between
//! packed blocks as stored and the f32 reference path.

use burn::prelude::Device;

use super::{TensorSource, f32_codes, packed_or_quantized};
use crate::error::{Error, Result};
use crate::quant::packed::{FloatQuant, PackedMatrix, QuantFormat, Scales};

/// How the matrices of the model are kept on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dequantized to f32: the reference path. Dense tensors through burn's matmul on the CPU;
    /// on a cubecl device (wgpu, WebGPU) F32 codes through our kernels, since burn's f32 matmul
    /// shader is refused by Chromium's WebGPU on SwiftShader ("Invalid ShaderModule"), which
    /// killed the engine.
    F32,
    /// Every matrix in its stored block format (packed, multiplied by our fused kernels; where
    /// a fusion's blocks have no common form, legacy with K-quant or float with quantized, each
    /// part multiplied on its own). In a file that holds quantized matrices, F32, F16 and BF16
    /// ones stay as stored too; a float checkpoint's matrices are quantized to 4 bits min-max, a
    /// float token embedding to 8.
    #[default]
    Int4,
    /// As [`Self::Int4`], with every float matrix (the embedding too) quantized as ggml's
    /// reference quantizer of that format would.
    Quantize(FloatQuant),
}

impl WeightFormat {
    pub const NAMES: &str = "int4, f32, q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k or q6_k";

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int4 => "int4",
            Self::Quantize(q) => q.name(),
        }
    }

    /// How a float matrix whose role asks for `fallback` (Q4 or Q8) is quantized.
    pub(crate) fn quantizer(self, fallback: QuantFormat) -> FloatQuant {
        match (self, fallback) {
            (Self::Quantize(q), _) => q,
            (_, QuantFormat::Q8) => FloatQuant::Q8_0,
            _ => FloatQuant::Q4_1,
        }
    }

    /// Whether `source`'s float matrices (F32, F16, BF16) stay as stored ([`Self::Int4`] on a
    /// file that holds quantized matrices) rather than being quantized.
    pub(crate) fn keeps_floats(self, source: &dyn TensorSource) -> bool {
        self == Self::Int4 && source.holds_quantized()
    }

    /// Whether matrices on `device` are dense f32 tensors for burn's matmul: f32 weights on the
    /// CPU (on a cubecl device they are F32 codes, see [`Self::F32`]).
    pub(crate) fn dense_on(self, device: &Device) -> bool {
        self == Self::F32 && !crate::backend::device::is_cube(device)
    }

    /// How matrix `name` (`[rows, cols]`, its role's quantized format `fallback`) is packed.
    pub(crate) fn pack(
        self,
        source: &dyn TensorSource,
        name: &str,
        rows: usize,
        cols: usize,
        fallback: QuantFormat,
    ) -> Result<PackedMatrix> {
        match self {
            Self::F32 => f32_codes(source, name, rows, cols),
            _ => packed_or_quantized(source, name, rows, cols, self.quantizer(fallback), self.keeps_floats(source)),
        }
    }

    /// The packed format `name` is kept in, as stored or as its floats are quantized
    /// (`fallback`: the role's); `None` for a tensor this format does not pack.
    pub(crate) fn packed_as(
        self,
        source: &dyn TensorSource,
        name: &str,
        fallback: QuantFormat,
    ) -> Result<(QuantFormat, Scales)> {
        let quantized = || {
            let q = self.quantizer(fallback);
            (q.format(), q.scales())
        };
        Ok(match source.stored_format(name)? {
            Some((f, _)) if f.is_float() && !self.keeps_floats(source) => quantized(),
            Some(stored) => stored,
            None => quantized(),
        })
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "int4" => Ok(Self::Int4),
            k if ["q5_0", "q5_1"].contains(&k) => Err(Error::BadOptions(format!(
                "weight format {k}: hearth does not quantize floats to it (files already in it load packed, \
                 as stored); expected {}",
                Self::NAMES
            ))),
            name => {
                FloatQuant::ALL.iter().find(|(_, n)| *n == name).map(|&(q, _)| Self::Quantize(q)).ok_or_else(|| {
                    Error::BadOptions(format!("unknown weight format {name:?}: expected {}", Self::NAMES))
                })
            }
        }
    }
}

//! GGML block formats as plain data, each with the scalar dequantizer every faster path is tested
//! against (and which is itself checked against the `gguf` Python package's on committed
//! fixtures): one file per family, [`legacy`] (blocks of 32: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and
//! [`kquants`] (super-blocks of 256: Q2_K to Q6_K). Layouts follow ggml's `ggml-common.h`
//! (<https://github.com/ggml-org/ggml/blob/master/src/ggml-common.h>).

pub mod kquantize;
pub mod kquants;
pub mod legacy;
pub mod packed;

use half::{bf16, f16};

use crate::format::gguf::GgmlType;

pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};

/// Elements per block of the legacy formats, and of the packed device formats.
pub const BLOCK: usize = 32;

/// One block of a GGUF format, as stored.
pub trait Block: Sized {
    /// Elements it holds.
    const ELEMENTS: usize;
    /// Its size in the file.
    const BYTES: usize;

    /// Reads one block from its little-endian file bytes (`bytes.len() >= Self::BYTES`).
    fn from_bytes(bytes: &[u8]) -> Self;

    /// Its `Self::ELEMENTS` values into `out`, in f32 arithmetic in ggml's order: the values the
    /// file means.
    fn dequantize(&self, out: &mut [f32]);
}

fn f16_at(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// The values of `bytes` (whole blocks of GGUF type `ty`) into `out`, as the file means them.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => dequantize_row::<BlockQ4_0>(bytes, out),
        GgmlType::Q4_1 => dequantize_row::<BlockQ4_1>(bytes, out),
        GgmlType::Q5_0 => dequantize_row::<BlockQ5_0>(bytes, out),
        GgmlType::Q5_1 => dequantize_row::<BlockQ5_1>(bytes, out),
        GgmlType::Q8_0 => dequantize_row::<BlockQ8_0>(bytes, out),
        GgmlType::Q2_K => dequantize_row::<BlockQ2K>(bytes, out),
        GgmlType::Q3_K => dequantize_row::<BlockQ3K>(bytes, out),
        GgmlType::Q4_K => dequantize_row::<BlockQ4K>(bytes, out),
        GgmlType::Q5_K => dequantize_row::<BlockQ5K>(bytes, out),
        GgmlType::Q6_K => dequantize_row::<BlockQ6K>(bytes, out),
    }
}

/// Dequantizes a run of blocks of `B` into `out` (`out.len() == blocks * B::ELEMENTS`).
pub fn dequantize_row<B: Block>(bytes: &[u8], out: &mut [f32]) {
    for (block, out) in bytes.chunks_exact(B::BYTES).zip(out.chunks_exact_mut(B::ELEMENTS)) {
        B::from_bytes(block).dequantize(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (elements, bytes) of one block of `ty` as this module's structs hold it; the GGUF reader's
    /// own table must agree ([`GgmlType::block`]).
    fn block_size(ty: GgmlType) -> (usize, usize) {
        fn of<B: Block>() -> (usize, usize) {
            (B::ELEMENTS, B::BYTES)
        }
        match ty {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => of::<BlockQ4_0>(),
            GgmlType::Q4_1 => of::<BlockQ4_1>(),
            GgmlType::Q5_0 => of::<BlockQ5_0>(),
            GgmlType::Q5_1 => of::<BlockQ5_1>(),
            GgmlType::Q8_0 => of::<BlockQ8_0>(),
            GgmlType::Q2_K => of::<BlockQ2K>(),
            GgmlType::Q3_K => of::<BlockQ3K>(),
            GgmlType::Q4_K => of::<BlockQ4K>(),
            GgmlType::Q5_K => of::<BlockQ5K>(),
            GgmlType::Q6_K => of::<BlockQ6K>(),
        }
    }

    #[test]
    fn block_structs_agree_with_the_gguf_table() {
        for ty in GgmlType::all() {
            let (elements, bytes) = block_size(ty);
            assert_eq!(ty.block(), (elements as u64, bytes as u64), "{}", ty.name());
        }
    }

    /// Random blocks of every format and their values by `gguf.quants.dequantize`
    /// (`crate/tests/fixtures/make-quant-fixtures.py`, gguf 0.19.0).
    const FIXTURES: &str = include_str!("../../tests/fixtures/gguf_blocks.json");

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    /// The fixture blocks of `name` and the values the `gguf` package gives them.
    pub(crate) fn fixture(name: &str) -> (Vec<u8>, Vec<f32>) {
        let all: serde_json::Value = serde_json::from_str(FIXTURES).expect("the fixture parses");
        let entry = &all["types"][name];
        let blocks = hex(entry["blocks"].as_str().expect("blocks"));
        let values = hex(entry["values_f32_le"].as_str().expect("values"));
        (blocks, values.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    fn check<B: Block>(name: &str) {
        let (blocks, expected) = fixture(name);
        assert_eq!(blocks.len() % B::BYTES, 0, "{name}: whole blocks");
        assert_eq!(expected.len(), blocks.len() / B::BYTES * B::ELEMENTS, "{name}: one value per element");
        let mut got = vec![f32::NAN; expected.len()];
        dequantize_row::<B>(&blocks, &mut got);
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{name} element {i}: {g} vs gguf's {e}");
        }
    }

    #[test]
    fn every_format_dequantizes_bit_for_bit_as_the_gguf_package_does() {
        check::<BlockQ4_0>("Q4_0");
        check::<BlockQ4_1>("Q4_1");
        check::<BlockQ5_0>("Q5_0");
        check::<BlockQ5_1>("Q5_1");
        check::<BlockQ8_0>("Q8_0");
        check::<BlockQ2K>("Q2_K");
        check::<BlockQ3K>("Q3_K");
        check::<BlockQ4K>("Q4_K");
        check::<BlockQ5K>("Q5_K");
        check::<BlockQ6K>("Q6_K");
    }
}

//! Rows of a packed matrix, dequantized: the token embedding lookup without an f32 table.

use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_flex::FlexTensor;
#[cfg(feature = "gpu")]
use cubecl::prelude::CubeDim;

#[cfg(feature = "gpu")]
use super::cube_float;
use super::qmatmul::QuantMatrix;
use super::{Prim, flex_float, flex_words};
use crate::backend::cpu::qgemm::{GROUP, block_index};
use crate::quant::BLOCK;
#[cfg(feature = "gpu")]
use crate::quant::packed::QuantFormat;
use crate::quant::packed::{SUPER, Scales};

/// `ids: [seq]` (each `< w.rows`) → `[seq, w.cols]`.
pub fn qgather(ids: &[u32], w: &QuantMatrix, device: &Device) -> Tensor<2> {
    let seq = ids.len();
    let ids_tensor =
        Tensor::<1, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), [seq]), device);
    let k = w.scales == Scales::Super;
    match (
        super::int(ids_tensor),
        super::int(w.codes().clone()),
        super::int(w.params().clone()),
        super::int(w.supers().clone()),
    ) {
        #[cfg(feature = "gpu")]
        (Prim::Cube(ids), Prim::Cube(codes), Prim::Cube(params), Prim::Cube(supers)) => {
            let client = ids.client.clone();
            let out = empty_device_contiguous_dtype(
                client.clone(),
                ids.device.clone(),
                [seq, w.cols].into(),
                burn::tensor::DType::F32,
            );
            let total = (seq * w.cols) as u32;
            let cube_dim = CubeDim::new_1d(256);
            cube::qgather_kernel::launch(
                &client,
                super::grid(total.div_ceil(256)),
                cube_dim,
                ids.into_tensor_arg(),
                codes.into_tensor_arg(),
                params.into_tensor_arg(),
                supers.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                total,
                w.rows as u32,
                w.cols as u32,
                w.format == QuantFormat::Q8,
                super::qmatmul::float_kind(w.format),
                k,
            );
            cube_float(out)
        }
        (Prim::Flex(_), Prim::Flex(codes), Prim::Flex(params), Prim::Flex(supers)) => {
            let (codes, params, supers) = (flex_words(&codes), flex_words(&params), flex_words(&supers));
            let rows = w.rows_view(codes, params, supers);
            let blocks = w.cols.div_ceil(BLOCK);
            let wpb = w.format.words_per_block();
            let mut out = Vec::with_capacity(seq * w.cols);
            for &id in ids {
                let (group, r) = (id as usize / GROUP, id as usize % GROUP);
                for c in 0..w.cols {
                    let block = block_index(id as usize, c / BLOCK, blocks);
                    let e = c % BLOCK;
                    if w.format.is_float() {
                        out.push(w.format.float_code(&codes[block * wpb..(block + 1) * wpb], e));
                        continue;
                    }
                    let (d, m) = match k {
                        true => {
                            let sp = supers[block_index(id as usize, c / BLOCK / SUPER, blocks.div_ceil(SUPER))];
                            super_params(sp, params[block], e)
                        }
                        false => block_params(params[block]),
                    };
                    out.push(d * rows.code::<false>(group, c / BLOCK, r, e) as f32 + m);
                }
            }
            flex_float(FlexTensor::from_data(TensorData::new(out, [seq, w.cols])))
        }
        #[cfg(feature = "gpu")]
        _ => panic!("qgather: ids and matrix on different devices"),
    }
}

/// A legacy block's `(d, m)`.
fn block_params(param: u32) -> (f32, f32) {
    (half::f16::from_bits(param as u16).to_f32(), half::f16::from_bits((param >> 16) as u16).to_f32())
}

/// The `(d, m)` of element `e`'s half of a K-quant block.
fn super_params(sp: u32, param: u32, e: usize) -> (f32, f32) {
    let (d, dmin) = block_params(sp);
    let shift = 16 * (e / 16);
    (d * (param >> shift) as u8 as i8 as f32, dmin * (param >> (shift + 8)) as u8 as i8 as f32)
}

/// The cubecl kernels, apart from burn's names (both have `Tensor`).
#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    use crate::backend::kernels::qmatmul::{f16_to_f32, float_code};

    #[cube(launch)]
    pub(super) fn qgather_kernel(
        ids: &Tensor<i32>,
        codes: &Tensor<i32>,
        params: &Tensor<i32>,
        supers: &Tensor<i32>,
        out: &mut Tensor<f32>,
        total: u32,
        rows: u32,
        cols: u32,
        #[comptime] q8: bool,
        #[comptime] float: u32,
        #[comptime] k: bool,
    ) {
        let i = ABSOLUTE_POS;
        if i >= total as usize {
            terminate!();
        }
        let cols = cols as usize;
        let (t, c) = (i / cols, i % cols);
        // Block-interleaved: block b of row r is entry b * rows + r.
        let block = (c / 32) * rows as usize + usize::cast_from(ids[t]);
        let e = c % 32;
        if comptime!(float == 3) {
            out[i] = f32::reinterpret(codes[block * 32 + e]);
        } else if comptime!(float > 0) {
            let word = u32::reinterpret(codes[block * 16 + e / 2]);
            out[i] = float_code(word >> u32::cast_from(16 * (e % 2)), false, float);
        } else {
            gather_quantized(codes, params, supers, out, i, block, e, c, usize::cast_from(ids[t]), rows, q8, k);
        }
    }

    /// [`qgather_kernel`]'s element `i` of a block of integer codes.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn gather_quantized(
        codes: &Tensor<i32>,
        params: &Tensor<i32>,
        supers: &Tensor<i32>,
        out: &mut Tensor<f32>,
        i: usize,
        block: usize,
        e: usize,
        c: usize,
        id: usize,
        rows: u32,
        #[comptime] q8: bool,
        #[comptime] k: bool,
    ) {
        let q = if q8 {
            let word = codes[block * 8 + e / 4];
            let shift = i32::cast_from(24 - 8 * (e % 4));
            f32::cast_from((word << shift) >> 24)
        } else {
            let word = u32::reinterpret(codes[block * 4 + (e % 16) / 4]);
            let byte = (word >> u32::cast_from(8 * (e % 4))) & 255;
            f32::cast_from(select(e < 16, byte & 15, byte >> 4))
        };
        if k {
            // The half's (d · s, dmin · n), as `qmatmul` forms them.
            let sp = u32::reinterpret(supers[(c / 256) * rows as usize + id]);
            let p = params[block];
            let shift = i32::cast_from(16 * (e / 16));
            let s = f32::cast_from((p << (24 - shift)) >> 24);
            let n = f32::cast_from((p << (16 - shift)) >> 24);
            out[i] = (f16_to_f32(sp & 65535) * s) * q + f16_to_f32(sp >> 16) * n;
        } else {
            let p = u32::reinterpret(params[block]);
            out[i] = f16_to_f32(p & 65535) * q + f16_to_f32(p >> 16);
        }
    }
}

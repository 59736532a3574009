//! Rotary embedding and the KV cache write in one dispatch: from the fused projection
//! `[Q | K | V]` of each token, rotate Q and K on adjacent pairs (GGUF's layout) by the token's
//! position, write K and V into the token's cache row, and return Q. A token's position is its
//! slot: the cache keeps its tokens at contiguous slots from 0 (see [`crate::KvCache`]); a
//! sliding-window layer keeps only its latest slots, from row 0 of its buffer.

use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_flex::FlexTensor;
#[cfg(feature = "gpu")]
use cubecl::prelude::CubeDim;

#[cfg(feature = "gpu")]
use super::cube_float;
use super::{Prim, flex_f32, flex_float};
use crate::config::Heads;

/// Where the first token of a chunk goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Its row in the layer's buffer.
    pub row: usize,
    /// Its RoPE position.
    pub position: usize,
}

impl Slot {
    /// Row and position `p` (a layer that keeps every slot).
    pub fn at(p: usize) -> Self {
        Self { row: p, position: p }
    }
}

/// `qkv: [m, (n_heads + 2 n_kv_heads) head_dim]`; `cos, sin: [positions, head_dim]` (see
/// [`crate::KvCache`]); caches `[n_kv_heads, rows, head_dim]`, written in place: token `t`
/// goes to row `at.row + t`, rotated to position `at.position + t`. Returns the rotated queries
/// `[m, n_heads head_dim]`.
pub fn rope_store(
    qkv: Tensor<2>,
    heads: Heads,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    at: Slot,
    k_cache: &mut Tensor<3>,
    v_cache: &mut Tensor<3>,
) -> Tensor<2> {
    let (slot, position) = (at.row, at.position);
    let [m, width] = qkv.dims();
    let Heads { n_heads, n_kv_heads, head_dim } = heads;
    let d = n_heads * head_dim;
    let kv = n_kv_heads * head_dim;
    assert_eq!(width, d + 2 * kv, "rope_store: projection width");
    let capacity = k_cache.dims()[1];
    assert!(slot + m <= capacity && position + m <= cos.dims()[0], "rope_store: past the cache");

    let mut q_out = None;
    let qkv = super::float(qkv);
    let (cos, sin) = (super::float(cos.clone()), super::float(sin.clone()));
    k_cache.inplace(|k| {
        let mut k_out = None;
        v_cache.inplace(|v| match (&qkv, &cos, &sin, super::float(k), super::float(v)) {
            #[cfg(feature = "gpu")]
            (Prim::Cube(qkv), Prim::Cube(cos), Prim::Cube(sin), Prim::Cube(k), Prim::Cube(v)) => {
                let qkv = burn_cubecl::kernel::into_contiguous(qkv.clone());
                let client = qkv.client.clone();
                let q = empty_device_contiguous_dtype(client.clone(), qkv.device.clone(), [m, d].into(), qkv.dtype);
                let total = (m * width) as u32;
                cube::rope_store_kernel::launch(
                    &client,
                    super::grid(total.div_ceil(256)),
                    CubeDim::new_1d(256),
                    qkv.into_tensor_arg(),
                    cos.clone().into_tensor_arg(),
                    sin.clone().into_tensor_arg(),
                    q.clone().into_tensor_arg(),
                    k.clone().into_tensor_arg(),
                    v.clone().into_tensor_arg(),
                    total,
                    width as u32,
                    d as u32,
                    kv as u32,
                    head_dim as u32,
                    capacity as u32,
                    slot as u32,
                    position as u32,
                );
                q_out = Some(cube_float(q));
                k_out = Some(cube_float(k));
                cube_float(v)
            }
            (Prim::Flex(qkv), Prim::Flex(cos), Prim::Flex(sin), Prim::Flex(mut k), Prim::Flex(mut v)) => {
                let (x, cos, sin) = (flex_f32(qkv), flex_f32(cos), flex_f32(sin));
                let mut q = crate::backend::cpu::scratch::take(m * d);
                let (ks, vs) = (k.storage_mut::<f32>(), v.storage_mut::<f32>());
                for t in 0..m {
                    let row = &x[t * width..(t + 1) * width];
                    let p = (position + t) * head_dim;
                    let rotate = |c: usize, i: usize| row[c] * cos[p + i] + row[c ^ 1] * sin[p + i];
                    for c in 0..d {
                        q[t * d + c] = rotate(c, c % head_dim);
                    }
                    for c in 0..kv {
                        let (h, i) = (c / head_dim, c % head_dim);
                        let dst = (h * capacity + slot + t) * head_dim + i;
                        ks[dst] = rotate(d + c, i);
                        vs[dst] = row[d + kv + c];
                    }
                }
                q_out = Some(flex_float(FlexTensor::from_data(TensorData::new(q, [m, d]))));
                k_out = Some(flex_float(k));
                flex_float(v)
            }
            #[cfg(feature = "gpu")]
            _ => panic!("rope_store: tensors on different devices"),
        });
        k_out.expect("the value cache was written")
    });
    #[allow(irrefutable_let_patterns)] // without the `gpu` feature, Flex is all there is
    if let Prim::Flex(qkv) = qkv {
        crate::backend::cpu::scratch::give(qkv);
    }
    q_out.expect("the queries were written")
}

#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    /// One thread per element of `[Q | K | V]`.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_store_kernel(
        qkv: &Tensor<f32>,
        cos: &Tensor<f32>,
        sin: &Tensor<f32>,
        q: &mut Tensor<f32>,
        k_cache: &mut Tensor<f32>,
        v_cache: &mut Tensor<f32>,
        total: u32,
        width: u32,
        d: u32,
        kv: u32,
        head_dim: u32,
        capacity: u32,
        slot: u32,
        position: u32,
    ) {
        let i = ABSOLUTE_POS;
        if i >= total as usize {
            terminate!();
        }
        let (width, d, kv, hd) = (width as usize, d as usize, kv as usize, head_dim as usize);
        let t = i / width;
        let c = i % width;
        let row = t * width;
        let p = (position as usize + t) * hd;
        if c < d + kv {
            // Partner of element 2j is 2j + 1 and back; the sin table carries the sign.
            let j = c % hd;
            let rotated = qkv[row + c] * cos[p + j] + qkv[row + (c ^ 1)] * sin[p + j];
            if c < d {
                q[t * d + c] = rotated;
            } else {
                let h = (c - d) / hd;
                k_cache[(h * capacity as usize + slot as usize + t) * hd + j] = rotated;
            }
        } else {
            let c = c - d - kv;
            let (h, j) = (c / hd, c % hd);
            v_cache[(h * capacity as usize + slot as usize + t) * hd + j] = qkv[row + d + kv + c];
        }
    }
}

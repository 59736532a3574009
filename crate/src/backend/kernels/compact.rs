//! KV cache eviction in one dispatch per layer: the kept slots move down to `0..kept`, in
//! place, and each moved key is rotated back by the distance it moved (`R(-d) R(p) k =
//! R(p - d) k`), so the kept tokens sit at contiguous RoPE positions.

use burn::prelude::*;
#[cfg(feature = "gpu")]
use cubecl::prelude::{CubeCount, CubeDim};

#[cfg(feature = "gpu")]
use super::cube_float;
use super::{Prim, flex_f32, flex_float, flex_words};

/// `keep: [kept]` ascending rows: row `keep[i]` moves to row `i`; `cos, sin: [positions,
/// head_dim]` (see [`crate::KvCache`]); caches `[n_kv_heads, rows, head_dim]`, rewritten in
/// place. Each key is rotated back by `keep[i] - i + shift` positions: `shift` is how far the
/// buffer's first slot moves down, for sliding-window layers that keep only their latest slots
/// (0 for the others). Every `keep[i] >= i`.
pub fn compact_kv(
    keep: &Tensor<1, Int>,
    shift: usize,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    k_cache: &mut Tensor<3>,
    v_cache: &mut Tensor<3>,
) {
    #[cfg(feature = "gpu")]
    let kept = keep.dims()[0];
    let [heads, capacity, head_dim] = k_cache.dims();
    let (keep, cos, sin) = (super::int(keep.clone()), super::float(cos.clone()), super::float(sin.clone()));
    k_cache.inplace(|k| {
        let mut k_out = None;
        v_cache.inplace(|v| match (&keep, &cos, &sin, super::float(k), super::float(v)) {
            #[cfg(feature = "gpu")]
            (Prim::Cube(keep), Prim::Cube(cos), Prim::Cube(sin), Prim::Cube(k), Prim::Cube(v)) => {
                // One thread per (head, rotation pair), walking the slots upwards: a slot is
                // read before any thread writes it, since every source is at or above its target.
                let columns = (heads * head_dim / 2) as u32;
                cube::compact_kernel::launch(
                    &k.client,
                    CubeCount::Static(columns.div_ceil(64), 1, 1),
                    CubeDim::new_1d(64),
                    keep.clone().into_tensor_arg(),
                    cos.clone().into_tensor_arg(),
                    sin.clone().into_tensor_arg(),
                    k.clone().into_tensor_arg(),
                    v.clone().into_tensor_arg(),
                    columns,
                    kept as u32,
                    capacity as u32,
                    head_dim as u32,
                    shift as u32,
                );
                k_out = Some(cube_float(k));
                cube_float(v)
            }
            (Prim::Flex(keep), Prim::Flex(cos), Prim::Flex(sin), Prim::Flex(mut k), Prim::Flex(mut v)) => {
                let (keep, cos, sin) = (flex_words(keep), flex_f32(cos), flex_f32(sin));
                let (ks, vs) = (k.storage_mut::<f32>(), v.storage_mut::<f32>());
                for h in 0..heads {
                    for (to, &from) in keep.iter().enumerate() {
                        let (from, distance) = (from as usize, from as usize - to + shift);
                        if distance == 0 {
                            continue;
                        }
                        let (src, dst) = ((h * capacity + from) * head_dim, (h * capacity + to) * head_dim);
                        for i in (0..head_dim).step_by(2) {
                            let (c, s) = (cos[distance * head_dim + i], sin[distance * head_dim + i + 1]);
                            let (x0, x1) = (ks[src + i], ks[src + i + 1]);
                            ks[dst + i] = x0 * c + x1 * s;
                            ks[dst + i + 1] = x1 * c - x0 * s;
                        }
                        vs.copy_within(src..src + head_dim, dst);
                    }
                }
                k_out = Some(flex_float(k));
                flex_float(v)
            }
            #[cfg(feature = "gpu")]
            _ => panic!("compact_kv: tensors on different devices"),
        });
        k_out.expect("the value cache was written")
    });
}

#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compact_kernel(
        keep: &Tensor<i32>,
        cos: &Tensor<f32>,
        sin: &Tensor<f32>,
        k_cache: &mut Tensor<f32>,
        v_cache: &mut Tensor<f32>,
        columns: u32,
        kept: u32,
        capacity: u32,
        head_dim: u32,
        shift: u32,
    ) {
        let column = ABSOLUTE_POS;
        if column >= columns as usize {
            terminate!();
        }
        let hd = head_dim as usize;
        let pairs = hd / 2;
        let (h, i) = (column / pairs, (column % pairs) * 2);
        let base = h * capacity as usize;
        for to in 0..kept as usize {
            let from = usize::cast_from(keep[to]);
            let distance = from - to + shift as usize;
            if distance != 0 {
                let (c, s) = (cos[distance * hd + i], sin[distance * hd + i + 1]);
                let (src, dst) = ((base + from) * hd + i, (base + to) * hd + i);
                let (x0, x1) = (k_cache[src], k_cache[src + 1]);
                k_cache[dst] = x0 * c + x1 * s;
                k_cache[dst + 1] = x1 * c - x0 * s;
                v_cache[dst] = v_cache[src];
                v_cache[dst + 1] = v_cache[src + 1];
            }
        }
    }
}

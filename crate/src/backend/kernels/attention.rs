//! Causal grouped-query attention over the KV cache in one dispatch.
//!
//! Token `t` of a chunk sits in cache slot `slot + t` and attends to slots `0..=slot + t` (in a
//! sliding-window layer only the last `window` of them), so prefill and decode are the same
//! kernel and no mask is materialized. On cubecl devices one
//! cube serves one (query head, token) pair: its threads score keys in chunks of `CHUNK`,
//! keep a running maximum and sum (online softmax), and each thread accumulates some of the
//! head's output dimensions.

use burn::prelude::*;
#[cfg(feature = "gpu")]
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_flex::FlexTensor;
#[cfg(feature = "gpu")]
use cubecl::prelude::{CubeCount, CubeDim};

#[cfg(feature = "gpu")]
use super::cube_float;
use super::{Prim, flex_f32, flex_float};
use crate::config::Heads;

#[cfg(feature = "gpu")]
/// Threads per cube.
const THREADS: u32 = 64;
#[cfg(feature = "gpu")]
/// Keys scored per pass; their scores live in shared memory.
const CHUNK: u32 = 256;

/// `q: [m, n_heads head_dim]`, caches `[n_kv_heads, capacity, head_dim]` → `[m, n_heads head_dim]`.
/// `window`: the most recent slots each token sees (itself included); `None`: all before it.
pub fn attention(
    q: Tensor<2>,
    k_cache: &Tensor<3>,
    v_cache: &Tensor<3>,
    heads: Heads,
    slot: usize,
    window: Option<usize>,
) -> Tensor<2> {
    let [m, d] = q.dims();
    let Heads { n_heads, head_dim, .. } = heads;
    assert_eq!(d, n_heads * head_dim, "attention: query width");
    let capacity = k_cache.dims()[1];
    assert!(slot + m <= capacity, "attention: past the cache");
    // No token sees more than the whole cache: a window at least that long is no window.
    let window = window.filter(|&w| w < capacity);
    match (super::float(q), super::float(k_cache.clone()), super::float(v_cache.clone())) {
        #[cfg(feature = "gpu")]
        (Prim::Cube(q), Prim::Cube(k), Prim::Cube(v)) => {
            let n_kv_heads = heads.n_kv_heads;
            let scale = 1.0 / (head_dim as f32).sqrt();
            let q = burn_cubecl::kernel::into_contiguous(q);
            let client = q.client.clone();
            let out = empty_device_contiguous_dtype(client.clone(), q.device.clone(), [m, d].into(), q.dtype);
            cube::attention_kernel::launch(
                &client,
                CubeCount::Static(n_heads as u32, m as u32, 1),
                CubeDim::new_1d(THREADS),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                (n_heads / n_kv_heads) as u32,
                capacity as u32,
                slot as u32,
                window.unwrap_or(0) as u32,
                scale,
                head_dim as u32,
            );
            cube_float(out)
        }
        (Prim::Flex(q), Prim::Flex(k), Prim::Flex(v)) => {
            let mut out = crate::backend::cpu::scratch::take(m * d);
            let isa = crate::backend::cpu::Isa::best();
            crate::backend::cpu::attention::attention(
                isa,
                &flex_f32(&q),
                &flex_f32(&k),
                &flex_f32(&v),
                m,
                heads,
                capacity,
                slot,
                window,
                &mut out,
            );
            flex_float(FlexTensor::from_data(TensorData::new(out, [m, d])))
        }
        #[cfg(feature = "gpu")]
        _ => panic!("attention: tensors on different devices"),
    }
}

/// Elements above which [`scores_qk`] uses a matmul (natively) or works in row blocks (wasm).
const QK_ELEMENTS: usize = 1 << 22;

/// `q: [h, rows, d]` times `k: [h, seen, d]` transposed: the attention logits before scaling,
/// for the uses of them outside the fused kernel (heavy-hitter scores). Small products (every
/// decode step) are a broadcast multiply and a sum; burn's f32 matmul kernel fails to compile
/// on some WebGPU adapters (SwiftShader), so in the browser large ones go through the same path
/// in row blocks.
pub fn scores_qk(q: Tensor<3>, k: Tensor<3>) -> Tensor<3> {
    let [h, rows, d] = q.dims();
    let seen = k.dims()[1];
    let product = |q: Tensor<3>| {
        let r = q.dims()[1];
        (q.unsqueeze_dim::<4>(2) * k.clone().unsqueeze_dim::<4>(1)).sum_dim(3).reshape([h, r, seen])
    };
    if h * rows * seen * d <= QK_ELEMENTS {
        return product(q);
    }
    if cfg!(not(target_arch = "wasm32")) {
        return q.matmul(k.swap_dims(1, 2));
    }
    let block = (QK_ELEMENTS / (h * seen * d)).max(1);
    let parts: Vec<Tensor<3>> =
        (0..rows).step_by(block).map(|r| product(q.clone().slice([0..h, r..(r + block).min(rows), 0..d]))).collect();
    Tensor::cat(parts, 1)
}

#[cfg(feature = "gpu")]
mod cube {
    use cubecl::prelude::*;

    use super::{CHUNK, THREADS};

    /// Sum (`max == false`) or maximum over `THREADS` values in shared memory; all threads get it.
    #[cube]
    fn reduce(values: &mut Shared<[f32]>, lane: usize, #[comptime] max: bool) -> f32 {
        sync_cube();
        #[unroll]
        for s in 0..6u32 {
            let stride = comptime!(32usize >> s);
            if lane < stride {
                if max {
                    let (a, b) = (values[lane], values[lane + stride]);
                    values[lane] = select(a > b, a, b);
                } else {
                    values[lane] += values[lane + stride];
                }
            }
            sync_cube();
        }
        let result = values[0];
        sync_cube();
        result
    }

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_kernel(
        q: &Tensor<f32>,
        k: &Tensor<f32>,
        v: &Tensor<f32>,
        out: &mut Tensor<f32>,
        group: u32,
        capacity: u32,
        slot: u32,
        window: u32,
        scale: f32,
        #[comptime] head_dim: u32,
    ) {
        let h = CUBE_POS_X as usize;
        let t = CUBE_POS_Y as usize;
        let lane = UNIT_POS_X as usize;
        let hd = comptime!(head_dim as usize);
        let dims_per_thread = comptime!((head_dim as usize).div_ceil(THREADS as usize));
        let threads = comptime!(THREADS as usize);
        let d = CUBE_COUNT_X as usize * hd;
        let kv_base = (h / group as usize) * capacity as usize * hd;
        let len = slot as usize + t + 1;

        let mut q_s = Shared::<[f32]>::new_slice(hd);
        let mut scores = Shared::<[f32]>::new_slice(comptime!(CHUNK as usize));
        let mut red = Shared::<[f32]>::new_slice(threads);
        let mut i = lane;
        while i < hd {
            q_s[i] = q[t * d + h * hd + i];
            i += threads;
        }
        sync_cube();

        let mut acc = Array::<f32>::new(dims_per_thread);
        #[unroll]
        for j in 0..dims_per_thread {
            acc[j] = 0.0;
        }
        // A large finite floor: WGSL has no infinity literal.
        let mut running_max = f32::new(-1.0e30);
        let mut running_sum = f32::new(0.0);
        // The first slot this token sees: 0, or the start of its window.
        let mut start = 0usize;
        if window > 0 && len > window as usize {
            start = len - window as usize;
        }
        while start < len {
            let n = select(len - start < CHUNK as usize, len - start, CHUNK as usize);
            let mut local_max = f32::new(-1.0e30);
            let mut s = lane;
            while s < n {
                let row = kv_base + (start + s) * hd;
                let mut dot = 0.0f32;
                for i in 0..hd {
                    dot += q_s[i] * k[row + i];
                }
                let score = dot * scale;
                scores[s] = score;
                local_max = select(local_max > score, local_max, score);
                s += threads;
            }
            red[lane] = local_max;
            let chunk_max = reduce(&mut red, lane, true);
            let new_max = select(running_max > chunk_max, running_max, chunk_max);
            let correction = f32::exp(running_max - new_max);

            let mut local_sum = 0.0f32;
            let mut s = lane;
            while s < n {
                let e = f32::exp(scores[s] - new_max);
                scores[s] = e;
                local_sum += e;
                s += threads;
            }
            red[lane] = local_sum;
            let chunk_sum = reduce(&mut red, lane, false);
            running_sum = running_sum * correction + chunk_sum;

            #[unroll]
            for j in 0..dims_per_thread {
                let dim = lane + j * threads;
                if dim < hd {
                    let mut a = acc[j] * correction;
                    for s in 0..n {
                        a += scores[s] * v[kv_base + (start + s) * hd + dim];
                    }
                    acc[j] = a;
                }
            }
            running_max = new_max;
            start += CHUNK as usize;
            sync_cube();
        }
        #[unroll]
        for j in 0..dims_per_thread {
            let dim = lane + j * threads;
            if dim < hd {
                out[t * d + h * hd + dim] = acc[j] / running_sum;
            }
        }
    }
}

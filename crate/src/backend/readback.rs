//! Reading results back from the device: the one place where burn's execution errors become
//! ours, and the log-probability helpers that read a few numbers instead of whole rows.
//!
//! A leaf: session, eval, prune and the KV cache use it; it uses none of them.

use burn::prelude::*;
use burn::tensor::ExecutionError;
use burn::tensor::activation::log_softmax;

use crate::error::{Error, Result};

/// A failed read: a lost (poisoned) device is [`Error::DeviceLost`], so that callers can tell
/// "load again on a new device" from a bug. A read whose staging buffer cannot be mapped is a
/// lost device too: cubecl owns every buffer, so nothing else fails a map, and on the web the
/// map can fail before the device-lost callback has marked the device poisoned.
pub(crate) fn execution_error(e: ExecutionError) -> Error {
    match e {
        ExecutionError::DevicePoisoned { reason } => Error::DeviceLost(reason),
        other => {
            let text = other.to_string();
            if text.contains("could not be mapped") || text.contains("map never completed") {
                Error::DeviceLost(text)
            } else {
                Error::Device(text)
            }
        }
    }
}

/// Reads token ids (an argmax) back to the host.
pub(crate) async fn read_ids<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<u32>> {
    let data = t.into_data_async().await.map_err(execution_error)?;
    let ids = data.try_into_vec_as::<i64>().map_err(|e| Error::Device(format!("{e:?}")))?;
    Ok(ids.into_iter().map(|id| id as u32).collect())
}

/// Reads a float tensor back to the host.
pub(crate) async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(execution_error)?;
    data.try_into_vec_as::<f32>().map_err(|e| Error::Device(format!("{e:?}")))
}

/// Waits until the device has finished everything queued before `t` was computed, by reading
/// one of its numbers. Between prefill chunks this bounds the queued work and, in a browser,
/// lets the event loop run (an abort from the page is delivered only while wasm waits).
pub(crate) async fn settle(t: &Tensor<2>) -> Result<()> {
    read_f32(t.clone().slice([0..1, 0..1])).await.map(|_| ())
}

/// `ln p(targets[i])` under row `i` of `logits: [n, vocab]`, computed on the device so that
/// only `n` numbers are read back.
pub(crate) async fn token_logprobs(logits: Tensor<2>, targets: &[u32]) -> Result<Vec<f32>> {
    let n = targets.len();
    let device = logits.device();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(targets.iter().map(|&t| t as i32).collect(), [n]), &device);
    read_f32(log_softmax(logits.slice(0..n), 1).gather(1, ids.reshape([n, 1]))).await
}

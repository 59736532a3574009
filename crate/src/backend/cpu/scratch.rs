//! The CPU forward's activation buffers, reused from one op and one token to the next: what
//! llama2.c's `RunState` allocates once per session. burn holds every tensor between ops, so a
//! buffer comes back when a kernel consumes a tensor nothing else holds ([`give`]), and the next
//! output of at most its size takes it ([`take`]) instead of a fresh allocation, zeroed for
//! nothing before the kernel overwrites it. After the first token a decode step allocates no
//! activation buffer.

use std::cell::RefCell;

use burn_flex::FlexTensor;

/// Buffers kept per thread: more than the outputs alive at once in a block.
const KEEP: usize = 16;

/// Larger buffers (a long prefill's, or every position's logits) go back to the allocator.
const LARGEST: usize = 4 << 20;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` elements for a kernel that writes every one of them: its contents are a
/// previous output's (initialized, but stale), or zeros.
pub(crate) fn take(len: usize) -> Vec<f32> {
    let reused = FREE.with_borrow_mut(|free| {
        let best = (0..free.len()).filter(|&i| free[i].capacity() >= len).min_by_key(|&i| free[i].capacity())?;
        Some(free.swap_remove(best))
    });
    let mut v = reused.unwrap_or_default();
    v.truncate(len);
    v.resize(len, 0.0);
    v
}

/// Keeps `t`'s buffer for a later [`take`] when nothing else holds it; drops it otherwise.
pub(crate) fn give(t: FlexTensor) {
    let bytes = t.layout().num_elements() * 4;
    if !t.is_unique() || !t.is_contiguous() || t.dtype() != burn::tensor::DType::F32 || bytes > LARGEST {
        return;
    }
    let Ok(v) = t.into_data().try_into_vec::<f32>() else { return };
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    #[test]
    fn a_consumed_buffer_comes_back_without_a_copy() {
        let v = take(1000);
        let at = v.as_ptr();
        give(FlexTensor::from_data(TensorData::new(v, [10, 100])));
        let again = take(900);
        assert_eq!(again.as_ptr(), at, "the same allocation");
        assert_eq!(again.len(), 900);
    }

    #[test]
    fn a_shared_or_large_buffer_is_not_kept() {
        let kept = || FREE.with_borrow(|f| f.len());
        let t = FlexTensor::from_data(TensorData::new(vec![1.0f32; 64], [64]));
        let other = t.clone();
        give(t);
        assert_eq!(kept(), 0, "another tensor still reads it");
        give(other);
        assert_eq!(kept(), 1, "the last holder gives it back");
        give(FlexTensor::from_data(TensorData::new(vec![0.0f32; LARGEST / 4 + 1], [LARGEST / 4 + 1])));
        assert_eq!(kept(), 1, "too large to keep");
        assert_eq!(take(64), vec![1.0; 64], "the kept buffer, contents and all");
        assert_eq!(kept(), 0);
    }
}

//! A grammar's allowed set applied on the device. The set goes up as a bitmask (one bit per
//! token, 32 to a word: 19 KB for Qwen's 151,936 tokens) and the masked logits never come
//! down, so a constrained greedy step on a GPU reads back one id instead of a row of logits
//! (600 KB for Qwen).
//!
//! A leaf beside readback: the session's choice of a token uses it.

use burn::prelude::*;

/// `logits: [rows, vocab]` with every token whose bit in `words` is clear set to -inf (bit
/// `i % 32` of word `i / 32`; tokens past the words are banned).
pub(crate) fn apply_bitmask(logits: Tensor<2>, words: &[u32]) -> Tensor<2> {
    let device = logits.device();
    let [rows, vocab] = logits.dims();
    let n = vocab.div_ceil(32);
    // Bit patterns as i32 (the device's integers): an arithmetic shift still leaves the
    // wanted bit lowest.
    let mut data: Vec<i32> = words.iter().take(n).map(|&w| w as i32).collect();
    data.resize(n, 0);
    let words = Tensor::<2, Int>::from_data(TensorData::new(data, [n, 1]), &device).expand([n, 32]);
    let shifts = Tensor::<1, Int>::arange(0..32, &device).reshape([1, 32]).expand([n, 32]);
    let banned = words.bitwise_right_shift(shifts).bitwise_and_scalar(1).equal_elem(0);
    let banned = banned.reshape([1, n * 32]).slice([0..1, 0..vocab]).expand([rows, vocab]);
    logits.mask_fill(banned, f32::NEG_INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::device::DeviceKind;

    /// The same tokens survive as the host's reading of the bits, on each device.
    #[test]
    fn bits_select_the_tokens_they_name() {
        let vocab = 77;
        let words = [0x8000_0001u32, 0x0000_0100, 0xFFFF_FFFF];
        let allowed = |i: usize| words[i / 32] >> (i % 32) & 1 == 1;
        let logits: Vec<f32> = (0..2 * vocab).map(|i| i as f32 * 0.5 - 3.0).collect();
        for kind in [DeviceKind::Cpu, DeviceKind::Wgpu] {
            let device = kind.device().unwrap();
            let t = Tensor::<2>::from_data(TensorData::new(logits.clone(), [2, vocab]), &device);
            let got = apply_bitmask(t, &words).into_data().try_to_vec::<f32>().unwrap();
            for (i, (&g, &l)) in got.iter().zip(&logits).enumerate() {
                let want = if allowed(i % vocab) { l } else { f32::NEG_INFINITY };
                assert_eq!(g, want, "{kind:?} row {} token {}", i / vocab, i % vocab);
            }
            // Too few words: the tokens past them are banned.
            let t = Tensor::<2>::from_data(TensorData::new(logits.clone(), [2, vocab]), &device);
            let got = apply_bitmask(t, &words[..1]).into_data().try_to_vec::<f32>().unwrap();
            assert!(got[32..vocab].iter().all(|&g| g == f32::NEG_INFINITY), "{kind:?}");
            assert_eq!(got[31], logits[31], "{kind:?}");
        }
    }
}

//! What the decoding-parity tests share: tiny GGUF models in every stored type, and logits
//! compared with the plain f32 reference.

use hearth::WeightFormat;

use super::*;

pub const WEIGHTS: WeightFormat = WeightFormat::F32;

/// f32 sums in a different order differ by rounding; logits here are O(1..10).
pub const TOLERANCE: f32 = 2e-4;

/// Every GGUF tensor type the loader reads, spread over the tensors.
pub fn mixed_types(name: &str) -> Ty {
    match name {
        n if n.starts_with("token_embd") => Ty::Q8_0,
        n if n.ends_with("attn_q.weight") => Ty::Q4_1,
        n if n.ends_with("attn_k.weight") => Ty::Q4_0,
        n if n.ends_with("attn_v.weight") => Ty::F16,
        n if n.ends_with("attn_output.weight") => Ty::BF16,
        n if n.ends_with("ffn_gate.weight") => Ty::Q4_1,
        n if n.ends_with("ffn_up.weight") => Ty::Q8_0,
        n if n.ends_with("ffn_down.weight") => Ty::Q4_0,
        _ => Ty::F32,
    }
}

/// Only the block formats the int4 path keeps packed, so it runs on exactly these values.
pub fn block_types(name: &str) -> Ty {
    match name {
        n if n.starts_with("token_embd") || n.ends_with("ffn_up.weight") => Ty::Q8_0,
        n if n.ends_with("attn_k.weight") || n.ends_with("ffn_down.weight") => Ty::Q4_0,
        _ => Ty::Q4_1,
    }
}

pub fn gguf_model(seed: u64, tied: bool) -> (Vec<u8>, Reference) {
    gguf_model_of(seed, tied, &mixed_types)
}

pub fn gguf_model_of(seed: u64, tied: bool, types: &dyn Fn(&str) -> Ty) -> (Vec<u8>, Reference) {
    let c = TinyConfig::new();
    let tensors = tiny_weights(&c, seed, tied, types);
    (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent))
}

pub fn assert_logits_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: positions");
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = max_rel_diff(g, w);
        assert!(diff < TOLERANCE, "{what}: position {pos} differs by {diff} (relative)");
    }
}

pub fn read(t: burn::prelude::Tensor<2>) -> Vec<Vec<f32>> {
    let vocab = t.dims()[1];
    let v = t.into_data().try_into_vec_as::<f32>().unwrap();
    v.chunks(vocab).map(<[f32]>::to_vec).collect()
}

//! Tiny random models: their config, weights in every stored encoding, and the GGUF files
//! (Llama and Gemma 3) that hold them.

use super::*;

/// Hyper-parameters of the tiny model.
#[derive(Clone, Debug)]
pub struct TinyConfig {
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// `None`: `d_model / n_heads`.
    pub head_dim: Option<usize>,
    pub d_ff: usize,
    pub context: usize,
    pub rope_theta: f32,
    pub eps: f32,
    /// llama.cpp's `rope_freqs.weight`: the frequency of pair `i` is divided by entry `i`.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// LongRoPE's attention factor: every rotation (of global layers) scaled by it.
    pub rope_attn_factor: f32,
    /// Gemma 3: the embedding scaled by `sqrt(d_model)`, GELU (tanh form) gating, and every
    /// layer but each sixth attending to the last `window` tokens with RoPE base
    /// `rope_theta_local`. (Post-norms and head norms are used where their weights exist.)
    pub gemma3_window: Option<usize>,
    pub rope_theta_local: f32,
}

impl TinyConfig {
    pub fn new() -> Self {
        Self {
            vocab: tiny_vocab().len(),
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: None,
            d_ff: 96,
            context: 64,
            rope_theta: 10000.0,
            eps: 1e-5,
            rope_freq_factors: None,
            rope_attn_factor: 1.0,
            gemma3_window: None,
            rope_theta_local: 10000.0,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.d_model / self.n_heads)
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim()
    }
}

/// How stored weights are encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    /// The formats below are only named here (their ggml ids): tests that use them write their
    /// blocks themselves (`formats.rs`).
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl Ty {
    pub fn ggml_id(self) -> u32 {
        match self {
            Ty::F32 => 0,
            Ty::F16 => 1,
            Ty::Q4_0 => 2,
            Ty::Q4_1 => 3,
            Ty::Q5_0 => 6,
            Ty::Q5_1 => 7,
            Ty::Q8_0 => 8,
            Ty::Q2K => 10,
            Ty::Q3K => 11,
            Ty::Q4K => 12,
            Ty::Q5K => 13,
            Ty::Q6K => 14,
            Ty::BF16 => 30,
        }
    }
}

/// Random values of `n` elements that `ty` represents exactly, and their stored bytes.
pub fn random_encoded(rng: &mut Rng, n: usize, scale: f32, offset: f32, ty: Ty) -> (Vec<f32>, Vec<u8>) {
    let mut values = Vec::with_capacity(n);
    let mut bytes = Vec::new();
    match ty {
        Ty::F32 => {
            for _ in 0..n {
                let v = offset + rng.uniform(scale);
                values.push(v);
                bytes.extend(v.to_le_bytes());
            }
        }
        Ty::F16 => {
            for _ in 0..n {
                let h = f16::from_f32(offset + rng.uniform(scale));
                values.push(h.to_f32());
                bytes.extend(h.to_le_bytes());
            }
        }
        Ty::BF16 => {
            for _ in 0..n {
                let h = bf16::from_f32(offset + rng.uniform(scale));
                values.push(h.to_f32());
                bytes.extend(h.to_le_bytes());
            }
        }
        Ty::Q8_0 => {
            assert_eq!(n % 32, 0);
            for _ in 0..n / 32 {
                let d = f16::from_f32(scale / 127.0 * (0.5 + rng.uniform(0.5).abs()));
                bytes.extend(d.to_le_bytes());
                for _ in 0..32 {
                    let q = rng.below(255) as i32 - 127;
                    values.push(q as f32 * d.to_f32());
                    bytes.push(q as i8 as u8);
                }
            }
        }
        Ty::Q4_0 | Ty::Q4_1 => {
            assert_eq!(n % 32, 0);
            for _ in 0..n / 32 {
                let d = f16::from_f32(scale / 8.0 * (0.5 + rng.uniform(0.5).abs()));
                let m = f16::from_f32(offset - 8.0 * d.to_f32() + rng.uniform(scale * 0.1));
                bytes.extend(d.to_le_bytes());
                if ty == Ty::Q4_1 {
                    bytes.extend(m.to_le_bytes());
                }
                let q: Vec<u8> = (0..32).map(|_| rng.below(16) as u8).collect();
                // Byte j: element j in the low nibble, element j + 16 in the high one.
                for j in 0..16 {
                    bytes.push(q[j] | (q[j + 16] << 4));
                }
                for &q in &q {
                    values.push(match ty {
                        Ty::Q4_0 => (q as i32 - 8) as f32 * d.to_f32(),
                        _ => q as f32 * d.to_f32() + m.to_f32(),
                    });
                }
            }
        }
        other => panic!("{other:?} tensors are written by the tests that use them"),
    }
    (values, bytes)
}

/// One stored tensor: row-major shape, exact values, encoding and bytes.
#[derive(Clone)]
pub struct StoredTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: Ty,
    pub values: Vec<f32>,
    pub bytes: Vec<u8>,
}

/// Random weights of the tiny model under GGUF names, GGUF layout (`[d_out, d_in]`).
/// `types` picks the encoding by name; norms are always F32.
pub fn tiny_weights(c: &TinyConfig, seed: u64, tied: bool, types: &dyn Fn(&str) -> Ty) -> Vec<StoredTensor> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut add = |rng: &mut Rng, name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let ty = if name.contains("norm") { Ty::F32 } else { types(&name) };
        let (values, bytes) = random_encoded(rng, shape.iter().product(), scale, offset, ty);
        out.push(StoredTensor { name, shape, ty, values, bytes });
    };
    let (d, q, kv, ff) = (c.d_model, c.q_dim(), c.n_kv_heads * c.head_dim(), c.d_ff);
    let lin = |fan_in: usize| 1.7 / (fan_in as f32).sqrt();
    add(&mut rng, "token_embd.weight".into(), vec![c.vocab, d], 1.0, 0.0);
    for i in 0..c.n_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        add(&mut rng, n("attn_norm.weight"), vec![d], 0.2, 1.0);
        add(&mut rng, n("attn_q.weight"), vec![q, d], lin(d), 0.0);
        add(&mut rng, n("attn_k.weight"), vec![kv, d], lin(d), 0.0);
        add(&mut rng, n("attn_v.weight"), vec![kv, d], lin(d), 0.0);
        add(&mut rng, n("attn_output.weight"), vec![d, q], lin(q), 0.0);
        add(&mut rng, n("ffn_norm.weight"), vec![d], 0.2, 1.0);
        add(&mut rng, n("ffn_gate.weight"), vec![ff, d], lin(d), 0.0);
        add(&mut rng, n("ffn_up.weight"), vec![ff, d], lin(d), 0.0);
        add(&mut rng, n("ffn_down.weight"), vec![d, ff], lin(ff), 0.0);
    }
    add(&mut rng, "output_norm.weight".into(), vec![d], 0.2, 1.0);
    if !tied {
        add(&mut rng, "output.weight".into(), vec![c.vocab, d], lin(d), 0.0);
    }
    out
}

/// A complete tiny GGUF model (llama architecture, byte-level BPE tokenizer, chat template).
pub fn tiny_gguf(c: &TinyConfig, tensors: &[StoredTensor]) -> Vec<u8> {
    write_gguf(&tiny_metadata(c), tensors)
}

/// The metadata of [`tiny_gguf`], for tests that change or add keys.
pub fn tiny_metadata(c: &TinyConfig) -> Vec<(&'static str, Kv)> {
    let vocab = tiny_vocab();
    let types: Vec<i32> = (0..vocab.len()).map(|i| if i < SPECIALS.len() { 3 } else { 1 }).collect();
    let merges: Vec<String> = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let metadata = [
        ("general.architecture", Kv::Str("llama".into())),
        ("general.name", Kv::Str("tiny".into())),
        ("llama.block_count", Kv::U32(c.n_layers as u32)),
        ("llama.context_length", Kv::U32(c.context as u32)),
        ("llama.embedding_length", Kv::U32(c.d_model as u32)),
        ("llama.feed_forward_length", Kv::U32(c.d_ff as u32)),
        ("llama.attention.head_count", Kv::U32(c.n_heads as u32)),
        ("llama.attention.head_count_kv", Kv::U32(c.n_kv_heads as u32)),
        ("llama.rope.freq_base", Kv::F32(c.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(c.eps)),
        ("llama.rope.dimension_count", Kv::U32(c.head_dim() as u32)),
        ("llama.attention.key_length", Kv::U32(c.head_dim() as u32)),
        ("llama.attention.value_length", Kv::U32(c.head_dim() as u32)),
        ("tokenizer.ggml.model", Kv::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Kv::Str("smollm".into())),
        ("tokenizer.ggml.tokens", Kv::StrArray(vocab)),
        ("tokenizer.ggml.token_type", Kv::I32Array(types)),
        ("tokenizer.ggml.merges", Kv::StrArray(merges)),
        ("tokenizer.ggml.bos_token_id", Kv::U32(1)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(2)),
        ("tokenizer.ggml.add_bos_token", Kv::Bool(false)),
        ("tokenizer.chat_template", Kv::Str(CHAT_TEMPLATE.into())),
    ];
    metadata.into()
}

/// An f32 tensor with the given values.
pub fn f32_tensor(name: &str, shape: Vec<usize>, values: Vec<f32>) -> StoredTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    StoredTensor { name: name.into(), shape, ty: Ty::F32, values, bytes }
}

/// The values `x` (blocks of 32) takes when quantized by ggml's reference quantizers
/// (`quantize_row_q4_0_ref`, `_q4_1_ref`, `_q8_0_ref` in ggml-quants.c) and read back: the
/// scale (and minimum) rounded to f16, the codes from the unrounded scale.
pub fn ggml_round_trip(kind: &str, x: &[f32]) -> Vec<f32> {
    let f16 = |v: f32| half::f16::from_f32(v).to_f32();
    let inv = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
    x.chunks(32)
        .flat_map(|b| -> Vec<f32> {
            match kind {
                "q8_0" => {
                    let d = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                    b.iter().map(|v| (v * inv(d)).round() * f16(d)).collect()
                }
                "q4_0" => {
                    let (mut amax, mut max) = (0.0f32, 0.0f32);
                    for &v in b {
                        if amax < v.abs() {
                            amax = v.abs();
                            max = v;
                        }
                    }
                    let d = max / -8.0;
                    b.iter().map(|v| (((v * inv(d) + 8.5) as i8).min(15) as f32 - 8.0) * f16(d)).collect()
                }
                "q4_1" => {
                    let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (max - min) / 15.0;
                    b.iter().map(|v| (((v - min) * inv(d) + 0.5) as i8).min(15) as f32 * f16(d) + f16(min)).collect()
                }
                other => panic!("{other}"),
            }
        })
        .collect()
}

/// An f32 vector of `len` values, `offset` plus noise of `scale` (a norm weight or a bias).
pub fn random_vector(rng: &mut Rng, name: &str, len: usize, scale: f32, offset: f32) -> StoredTensor {
    let (values, bytes) = random_encoded(rng, len, scale, offset, Ty::F32);
    StoredTensor { name: name.to_string(), shape: vec![len], ty: Ty::F32, values, bytes }
}

/// The tiny model's weights with what Gemma 3 adds: an RMSNorm over each query and key head,
/// and norms after attention and after the feed-forward block (tied embeddings, f32).
pub fn gemma3_weights(c: &TinyConfig, seed: u64) -> Vec<StoredTensor> {
    let mut tensors = tiny_weights(c, seed, true, &|_| Ty::F32);
    let mut rng = Rng::new(seed + 1);
    for l in 0..c.n_layers {
        let extras = [
            ("attn_q_norm.weight", c.head_dim(), 0.5),
            ("attn_k_norm.weight", c.head_dim(), 0.5),
            ("post_attention_norm.weight", c.d_model, 0.2),
            ("post_ffw_norm.weight", c.d_model, 0.2),
        ];
        for (suffix, len, scale) in extras {
            tensors.push(random_vector(&mut rng, &format!("blk.{l}.{suffix}"), len, scale, 1.0));
        }
    }
    tensors
}

/// A tiny Gemma 3 GGUF: the tiny model's metadata under `gemma3.`, with its sliding window.
pub fn gemma3_gguf(c: &TinyConfig, tensors: &[StoredTensor]) -> Vec<u8> {
    let window = c.gemma3_window.expect("a Gemma 3 config has a window");
    let mut metadata: Vec<(String, Kv)> = tiny_metadata(c)
        .into_iter()
        .map(|(k, v)| match (k, v) {
            ("general.architecture", _) => (k.to_string(), Kv::Str("gemma3".into())),
            (k, v) => (k.replacen("llama.", "gemma3.", 1), v),
        })
        .collect();
    metadata.push(("gemma3.attention.sliding_window".into(), Kv::U32(window as u32)));
    let metadata: Vec<(&str, Kv)> = metadata.into_iter().map(|(k, v)| (&*k.leak(), v)).collect();
    write_gguf(&metadata, tensors)
}

/// `blocks` random GGUF `dtype` K-quant super-blocks: random codes and sub-block scales, the
/// f16 super-scales (ggml-common.h's offsets) of a weight's usual size, so that the values
/// stay finite.
pub fn random_k_blocks(rng: &mut Rng, dtype: hearth::format::gguf::GgmlType, blocks: usize) -> Vec<u8> {
    use hearth::format::gguf::GgmlType;
    let (bytes, d_at, has_min) = match dtype {
        GgmlType::Q2_K => (84, 80, true),
        GgmlType::Q3_K => (110, 108, false),
        GgmlType::Q4_K => (144, 0, true),
        GgmlType::Q5_K => (176, 0, true),
        GgmlType::Q6_K => (210, 208, false),
        other => panic!("{other:?} is not a K-quant"),
    };
    let mut data = Vec::with_capacity(blocks * bytes);
    for _ in 0..blocks {
        let mut block: Vec<u8> = (0..bytes).map(|_| rng.below(256) as u8).collect();
        for at in [d_at].into_iter().chain(has_min.then_some(d_at + 2)) {
            let scale = f16::from_f32(1e-3 + rng.below(1000) as f32 * 2e-5);
            block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
        }
        data.extend(block);
    }
    data
}

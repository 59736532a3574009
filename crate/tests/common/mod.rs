//! Test helpers: a tiny random Llama written as GGUF or as a Hugging Face directory, and a
//! plain f32 reference forward pass to compare the engine with. Everything here is written
//! from the formats' specifications, independently of the code under test.

#![allow(dead_code)]

use std::collections::HashMap;

use half::{bf16, f16};

/// Deterministic xorshift64* so tests need no RNG crate and repeat exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-a, a).
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// GPT-2's byte-to-character table used by byte-level BPE.
pub fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const MERGES: [(&str, &str); 3] = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")];
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Vocabulary of the tiny tokenizer: 3 specials, the 256 byte characters, 3 merged tokens.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend(byte_chars().iter().map(|c| c.to_string()));
    v.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    v
}

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
    /// blocks themselves (`tiny_model.rs`).
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

/// A GGUF value for the writer.
pub enum Kv {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Writes a GGUF v3 file (spec: ggml/docs/gguf.md) with alignment 32.
pub fn write_gguf(metadata: &[(&str, Kv)], tensors: &[StoredTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        match value {
            Kv::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(*v as u8);
            }
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Kv::StrArray(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            Kv::I32Array(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    out.extend(v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.ty.ggml_id().to_le_bytes());
        out.extend(offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.bytes.len() as u64).div_ceil(32) * 32;
    }
    let data_start = out.len().div_ceil(32) * 32;
    out.resize(data_start, 0);
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off as usize, 0);
        out.extend(&t.bytes);
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

/// How the reference rotates query/key pairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeStyle {
    /// GGUF: pairs `(2i, 2i + 1)`.
    Adjacent,
    /// Hugging Face: pairs `(i, i + head_dim / 2)`.
    Half,
}

/// A plain f32 Llama forward pass, written from the architecture's definition.
pub struct Reference {
    pub c: TinyConfig,
    pub w: HashMap<String, Vec<f32>>,
    pub style: RopeStyle,
}

fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len()).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

impl Reference {
    pub fn new(c: &TinyConfig, tensors: &[StoredTensor], style: RopeStyle) -> Self {
        let w = tensors.iter().map(|t| (t.name.clone(), t.values.clone())).collect();
        Self { c: c.clone(), w, style }
    }

    /// Whether layer `l` is a Gemma 3 sliding-window layer.
    fn local(&self, l: usize) -> bool {
        self.c.gemma3_window.is_some() && !(l + 1).is_multiple_of(6)
    }

    fn rope(&self, x: &mut [f32], pos: usize, local: bool) {
        let hd = self.c.head_dim();
        let base = if local { self.c.rope_theta_local } else { self.c.rope_theta } as f64;
        let scale = if local { 1.0 } else { self.c.rope_attn_factor as f64 };
        for head in x.chunks_exact_mut(hd) {
            for i in 0..hd / 2 {
                let factor = self.c.rope_freq_factors.as_ref().filter(|_| !local).map_or(1.0, |f| f[i] as f64);
                let theta = base.powf(-2.0 * i as f64 / hd as f64) / factor * pos as f64;
                let (s, co) = ((theta.sin() * scale) as f32, (theta.cos() * scale) as f32);
                let (a, b) = match self.style {
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                    RopeStyle::Half => (i, i + hd / 2),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * co - x1 * s;
                head[b] = x0 * s + x1 * co;
            }
        }
    }

    /// Logits at every position of `tokens`.
    pub fn logits(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut stream = RefStream::new(self);
        tokens.iter().map(|&t| stream.step(t)).collect()
    }

    /// Greedy continuation of `prompt` by `n` tokens (first maximum on ties).
    pub fn greedy(&self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut tokens = prompt.to_vec();
        for _ in 0..n {
            let logits = self.logits(&tokens);
            tokens.push(argmax(logits.last().unwrap()));
        }
        tokens[prompt.len()..].to_vec()
    }
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Largest absolute difference, scaled by the largest reference magnitude.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Hugging Face layout of a GGUF-layout query/key weight: the inverse of the engine's
/// permutation, written from `convert_hf_to_gguf.py`'s `permute` (reshape to
/// `[heads, 2, hd/2, d]`, swap axes 1 and 2).
pub fn gguf_to_hf_rows(w: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / n_heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                // GGUF row h*hd + 2i + j came from HF row h*hd + j*hd/2 + i.
                let src = (h * hd + 2 * i + j) * cols;
                let dst = (h * hd + j * hd / 2 + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// Writes a safetensors file (8-byte header length, JSON header, data) by hand.
pub fn write_safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()] }),
        );
        offset += bytes.len();
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
    }
    out
}

/// A `tokenizer.json` for the tiny vocabulary (byte-level BPE, specials as added tokens).
pub fn tiny_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        tiny_vocab().into_iter().enumerate().map(|(i, t)| (t, serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    })
    .to_string()
}

/// The reference run one token at a time over an explicit cache of keys (before rotation)
/// and values. Entries can be dropped; every key is rotated by its index in the cache at each
/// step, so the kept tokens always sit at the contiguous positions `0..len`.
pub struct RefStream<'a> {
    r: &'a Reference,
    /// `[layer][entry]`.
    k: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
    /// Attention each entry has received, summed over layers, heads and queries (H2O's score).
    pub scores: Vec<f32>,
}

impl<'a> RefStream<'a> {
    pub fn new(r: &'a Reference) -> Self {
        let n = r.c.n_layers;
        Self { r, k: vec![Vec::new(); n], v: vec![Vec::new(); n], scores: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.k[0].len()
    }

    /// Keeps only the entries `keep` (ascending), in order.
    pub fn keep(&mut self, keep: &[usize]) {
        for l in 0..self.k.len() {
            self.k[l] = keep.iter().map(|&i| self.k[l][i].clone()).collect();
            self.v[l] = keep.iter().map(|&i| self.v[l][i].clone()).collect();
        }
        self.scores = keep.iter().map(|&i| self.scores[i]).collect();
    }

    /// Appends `token` and returns its logits.
    pub fn step(&mut self, token: u32) -> Vec<f32> {
        self.step_until(token, self.r.c.n_layers)
    }

    /// Appends `token` running only its first `layers` layers, and returns the logits of the
    /// hidden state there (an early exit): each later layer gets only the token's key and
    /// value, projected from that hidden state.
    pub fn step_until(&mut self, token: u32, layers: usize) -> Vec<f32> {
        let (r, c) = (self.r, &self.r.c);
        let (d, hd) = (c.d_model, c.head_dim());
        let w = |n: &str| &r.w[n][..];
        let mut x = w("token_embd.weight")[token as usize * d..(token as usize + 1) * d].to_vec();
        if c.gemma3_window.is_some() {
            x.iter_mut().for_each(|v| *v *= (d as f32).sqrt());
        }
        let pos = self.len();
        self.scores.push(0.0);
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let h = rms_norm(&x, w(&n("attn_norm.weight")), c.eps);
            // Projections, with their biases where the model has them (Qwen2).
            let project = |name: &str| {
                let mut y = matvec(w(&n(&format!("{name}.weight"))), &h);
                if let Some(b) = r.w.get(&n(&format!("{name}.bias"))) {
                    y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                }
                y
            };
            // Qwen3: an RMSNorm over each query and key head, before RoPE.
            let head_norm = |mut y: Vec<f32>, name: &str| {
                if let Some(g) = r.w.get(&n(&format!("{name}_norm.weight"))) {
                    for head in y.chunks_exact_mut(hd) {
                        head.copy_from_slice(&rms_norm(head, g, c.eps));
                    }
                }
                y
            };
            let local = r.local(l);
            // A sliding-window layer sees the last `window` entries, this one included.
            let first = match c.gemma3_window {
                Some(window) if local => (pos + 1).saturating_sub(window),
                _ => 0,
            };
            let mut q = head_norm(project("attn_q"), "attn_q");
            r.rope(&mut q, pos, local);
            self.k[l].push(head_norm(project("attn_k"), "attn_k"));
            self.v[l].push(project("attn_v"));
            if l >= layers {
                continue;
            }
            let keys: Vec<Vec<f32>> = self.k[l]
                .iter()
                .enumerate()
                .map(|(p, k)| {
                    let mut k = k.clone();
                    r.rope(&mut k, p, local);
                    k
                })
                .collect();
            let mut attn = vec![0.0f32; c.q_dim()];
            for head in 0..c.n_heads {
                let kvh = head / (c.n_heads / c.n_kv_heads);
                let q = &q[head * hd..(head + 1) * hd];
                let scores: Vec<f32> = keys[first..]
                    .iter()
                    .map(|k| {
                        q.iter().zip(&k[kvh * hd..(kvh + 1) * hd]).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    let s = first + j;
                    self.scores[s] += p / sum;
                    for i in 0..hd {
                        attn[head * hd + i] += p / sum * self.v[l][s][kvh * hd + i];
                    }
                }
            }
            // Gemma: an RMSNorm on each sub-block's output before its residual add.
            let post_norm = |y: Vec<f32>, name: &str| match r.w.get(&n(name)) {
                Some(g) => rms_norm(&y, g, c.eps),
                None => y,
            };
            let o = post_norm(matvec(w(&n("attn_output.weight")), &attn), "post_attention_norm.weight");
            for (x, o) in x.iter_mut().zip(o) {
                *x += o;
            }
            let h = rms_norm(&x, w(&n("ffn_norm.weight")), c.eps);
            let g = matvec(w(&n("ffn_gate.weight")), &h);
            let u = matvec(w(&n("ffn_up.weight")), &h);
            let act = |g: f32| match c.gemma3_window {
                // GELU's tanh form, as its paper writes it.
                Some(_) => 0.5 * g * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (g + 0.044715 * g * g * g)).tanh()),
                None => g / (1.0 + (-g).exp()),
            };
            let a: Vec<f32> = g.iter().zip(&u).map(|(g, u)| act(*g) * u).collect();
            let down = post_norm(matvec(w(&n("ffn_down.weight")), &a), "post_ffw_norm.weight");
            for (x, o) in x.iter_mut().zip(down) {
                *x += o;
            }
        }
        let head = r.w.get("output.weight").unwrap_or(&r.w["token_embd.weight"]);
        matvec(head, &rms_norm(&x, w("output_norm.weight"), c.eps))
    }
}

/// Greedy continuation of `prompt` by `n` tokens through a cache of `capacity` entries that
/// keeps the first `sinks` and the most recent ones (StreamingLLM), one eviction per token.
pub fn greedy_sinks_window(r: &Reference, prompt: &[u32], n: usize, capacity: usize, sinks: usize) -> Vec<u32> {
    let mut stream = RefStream::new(r);
    let step = |stream: &mut RefStream, t: u32| {
        if stream.len() == capacity {
            let keep: Vec<usize> = (0..sinks).chain(sinks + 1..capacity).collect();
            stream.keep(&keep);
        }
        stream.step(t)
    };
    let mut logits = Vec::new();
    for &t in prompt {
        logits = step(&mut stream, t);
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        if out.len() < n {
            logits = step(&mut stream, t);
        }
    }
    out
}

/// An f32 tensor with the given values.
pub fn f32_tensor(name: &str, shape: Vec<usize>, values: Vec<f32>) -> StoredTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    StoredTensor { name: name.into(), shape, ty: Ty::F32, values, bytes }
}

/// SmolLM2-135M-Instruct's chat template (from its GGUF), which adds a default system prompt.
pub const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

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
            let (values, bytes) = random_encoded(&mut rng, len, scale, 1.0, Ty::F32);
            tensors.push(StoredTensor {
                name: format!("blk.{l}.{suffix}"),
                shape: vec![len],
                ty: Ty::F32,
                values,
                bytes,
            });
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

/// Checks one position's logits against a reference's top five (`want_ids`, `want`): each of
/// those logits within `tolerance`, and the same ranking up to reference logits within the
/// tolerance of each other. Returns the largest difference.
pub fn assert_top5_close(row: &[f32], want_ids: &[u32], want: &[f32], tolerance: f32, what: &str) -> f32 {
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    order.select_nth_unstable_by(5, |&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    order.truncate(5);
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    let mut worst = 0.0f32;
    for k in 0..5 {
        let diff = (row[want_ids[k] as usize] - want[k]).abs();
        worst = worst.max(diff);
        assert!(diff < tolerance, "{what}: logit of {} is {} vs {}", want_ids[k], row[want_ids[k] as usize], want[k]);
        if order[k] != want_ids[k] {
            let j = want_ids.iter().position(|&id| id == order[k]);
            assert!(
                j.is_some_and(|j| (want[j] - want[k]).abs() < tolerance),
                "{what}: rank {k} is {} not {}",
                order[k],
                want_ids[k]
            );
        }
    }
    worst
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

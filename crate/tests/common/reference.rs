//! The plain f32 forward pass every engine result is compared with, written from the
//! architecture's definition, one token at a time over an explicit cache, and the comparisons.

use super::*;

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

//! The one decoder of every family: token embedding, blocks of RMSNorm → grouped-query
//! attention with rotary embeddings → RMSNorm → gated MLP, final norm, tied or separate output
//! head. What a family changes (biases, per-head Q/K norms, norms after the sub-blocks, the
//! activation, the embedding scale, sliding-window layers) it states in its
//! [`Architecture`](crate::config::Architecture); the block reads that, not a model file per
//! family.
//!
//! Weights are read-only after loading and hold no per-conversation state; the
//! [`KvCache`] is passed in, so several sessions can share one model. A Llama block is eight
//! dispatches on a GPU: norm, the fused QKV projection, RoPE with the cache write, attention,
//! the output projection with its residual, norm, the fused gate/up projection with its
//! activation, and the down projection with its residual. Post-norms (Gemma) take the residual
//! out of the projections: two norms and two adds more.

pub mod checks;
mod linear;
pub mod passes;
mod stages;

use burn::prelude::*;

pub use linear::{Embedding, Fuse, Linear};
pub use stages::{Stage, Stages};

use crate::backend::cpu::profile::{self, Part};
use crate::backend::cpu::qgemm::Activations;
use crate::backend::device::Limits;
use crate::backend::kernels::attention::attention;
use crate::backend::kernels::norm::rms_norm;
use crate::backend::kernels::qmatmul::{Epilogue, QuantMatrix};
use crate::backend::kernels::rope::{Slot, rope_store};
use crate::config::{Heads, ModelConfig};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::load::TensorSource;
use crate::load::WeightFormat;
use linear::upload;
use passes::MAX_PASS_TOKENS;

/// An RMSNorm scale `[d_model]`.
fn load_norm(source: &dyn TensorSource, name: &str, d_model: usize, device: &Device) -> Result<Tensor<1>> {
    Ok(upload(source.tensor(name)?.expect_shape(&[d_model])?, device))
}

struct Block {
    attn_norm: Tensor<1>,
    /// `[Q | K | V]` rows.
    qkv: Linear,
    /// `[Q | K | V]` biases, where the architecture has them.
    qkv_bias: Option<Tensor<1>>,
    /// Per-head RMSNorm scales of the queries and keys `[head_dim]`, where the architecture
    /// has them.
    qk_norm: Option<(Tensor<1>, Tensor<1>)>,
    wo: Linear,
    /// RMSNorms of the attention output and of the feed-forward output, where the
    /// architecture has them.
    post_norms: Option<(Tensor<1>, Tensor<1>)>,
    ffn_norm: Tensor<1>,
    /// Gate and up rows interleaved.
    gate_up: Linear,
    w_down: Linear,
}

impl Block {
    fn load(
        source: &dyn TensorSource,
        c: &ModelConfig,
        i: usize,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        let (d, q_dim, kv, ff) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
        let (q, k, v) = (name("attn_q.weight"), name("attn_k.weight"), name("attn_v.weight"));
        let (gate, up) = (name("ffn_gate.weight"), name("ffn_up.weight"));
        let qkv_bias = match c.arch.qkv_bias {
            false => None,
            true => {
                let mut data = Vec::with_capacity(q_dim + 2 * kv);
                for (suffix, len) in [("attn_q.bias", q_dim), ("attn_k.bias", kv), ("attn_v.bias", kv)] {
                    data.extend(source.tensor(&name(suffix))?.expect_shape(&[len])?.data);
                }
                let t = crate::load::HostTensor { name: name("attn_qkv.bias"), shape: vec![q_dim + 2 * kv], data };
                Some(upload(t, device))
            }
        };
        let qk_norm = match c.arch.qk_norm {
            false => None,
            true => Some((
                load_norm(source, &name("attn_q_norm.weight"), c.head_dim(), device)?,
                load_norm(source, &name("attn_k_norm.weight"), c.head_dim(), device)?,
            )),
        };
        let post_norms = match c.arch.post_norms {
            false => None,
            true => Some((
                load_norm(source, &name("post_attention_norm.weight"), d, device)?,
                load_norm(source, &name("post_ffw_norm.weight"), d, device)?,
            )),
        };
        Ok(Self {
            attn_norm: load_norm(source, &name("attn_norm.weight"), d, device)?,
            qkv: Linear::load(source, &[(&q, q_dim), (&k, kv), (&v, kv)], d, Fuse::Concat, format, device)?,
            qkv_bias,
            qk_norm,
            wo: Linear::load(source, &[(&name("attn_output.weight"), d)], q_dim, Fuse::Concat, format, device)?,
            post_norms,
            ffn_norm: load_norm(source, &name("ffn_norm.weight"), d, device)?,
            gate_up: Linear::load(source, &[(&gate, ff), (&up, ff)], d, Fuse::Interleave, format, device)?,
            w_down: Linear::load(source, &[(&name("ffn_down.weight"), d)], ff, Fuse::Concat, format, device)?,
        })
    }

    /// Its packed matrices.
    fn packed_mut(&mut self) -> impl Iterator<Item = &mut QuantMatrix> {
        [&mut self.qkv, &mut self.wo, &mut self.gate_up, &mut self.w_down].into_iter().flat_map(Linear::packed_mut)
    }

    fn device_bytes(&self) -> usize {
        [&self.qkv, &self.wo, &self.gate_up, &self.w_down].iter().map(|l| l.device_bytes()).sum::<usize>()
            + 4 * (self.attn_norm.dims()[0] + self.ffn_norm.dims()[0])
            + self.qkv_bias.as_ref().map_or(0, |b| 4 * b.dims()[0])
            + self.qk_norm.as_ref().map_or(0, |(q, k)| 4 * (q.dims()[0] + k.dims()[0]))
            + self.post_norms.as_ref().map_or(0, |(a, f)| 4 * (a.dims()[0] + f.dims()[0]))
    }

    /// The attention input's queries, keys and values `[seq, q_dim + 2 kv_dim]` (biases and
    /// per-head norms applied, RoPE not yet).
    fn project_qkv(&self, x: Tensor<2>, c: &ModelConfig) -> Tensor<2> {
        let h = rms_norm(x, &self.attn_norm, c.rms_eps);
        let qkv = profile::time(Part::Matmul, || self.qkv.forward(h, Epilogue::None));
        let qkv = match &self.qkv_bias {
            Some(b) => qkv + b.clone().unsqueeze_dim::<2>(0),
            None => qkv,
        };
        match &self.qk_norm {
            Some((q_norm, k_norm)) => {
                // Each head of Q and of K normed on its own, as rows of head_dim.
                let [m, _] = qkv.dims();
                let (q, kv, hd) = (c.q_dim(), c.kv_dim(), c.head_dim());
                let per_head = |t: Tensor<2>, g: &Tensor<1>, width: usize| {
                    rms_norm(t.reshape([m * width / hd, hd]), g, c.rms_eps).reshape([m, width])
                };
                let q_part = per_head(qkv.clone().slice([0..m, 0..q]), q_norm, q);
                let k_part = per_head(qkv.clone().slice([0..m, q..q + kv]), k_norm, kv);
                Tensor::cat(vec![q_part, k_part, qkv.slice([0..m, q + kv..q + 2 * kv])], 1)
            }
            None => qkv,
        }
    }

    /// Only this layer's key and value of one token, from `x: [1, d_model]` as if it were the
    /// layer's input, into `cache` at `slot`: an early exit's skipped layers (the exited state
    /// copied up, as CALM does), so that later tokens find the cache complete.
    fn store_kv(&self, x: Tensor<2>, c: &ModelConfig, cache: &mut KvCache, layer: usize, slot: usize) {
        let qkv = self.project_qkv(x, c);
        let l = cache.layer_mut(layer);
        rope_store(qkv, heads(c), l.cos, l.sin, Slot { row: slot - l.base, position: slot }, l.k, l.v);
    }

    /// `x: [seq, d_model]` → same shape; writes this layer's keys and values into the caches:
    /// with one cache every row goes to it from slot `slots[0]`; with several, row `i` (one
    /// token) goes to `caches[i]` at `slots[i]` (conversations decoded together: their
    /// projections share one pass over the weights, each attends to its own cache).
    fn forward(
        &self,
        x: Tensor<2>,
        c: &ModelConfig,
        caches: &mut [&mut KvCache],
        layer: usize,
        slots: &[usize],
        mut probe: Option<&mut Probe>,
    ) -> Tensor<2> {
        let heads = heads(c);
        let qkv = self.project_qkv(x.clone(), c);
        let window = c.layer_attention(layer).window;
        let attend = |qkv: Tensor<2>, cache: &mut KvCache, slot: usize| {
            let l = cache.layer_mut(layer);
            let row = slot - l.base;
            let q = rope_store(qkv, heads, l.cos, l.sin, Slot { row, position: slot }, l.k, l.v);
            let attn = attention(q.clone(), l.k, l.v, heads, row, window);
            if cache.tracks_attention() {
                cache.observe_attention(layer, &q, heads, slot);
            }
            attn
        };
        let attn = profile::time(Part::Attention, || match caches {
            [cache] => attend(qkv, cache, slots[0]),
            _ => {
                let width = qkv.dims()[1];
                let rows = caches
                    .iter_mut()
                    .zip(slots)
                    .enumerate()
                    .map(|(i, (cache, &slot))| attend(qkv.clone().slice([i..i + 1, 0..width]), cache, slot))
                    .collect();
                Tensor::cat(rows, 0)
            }
        });
        let glu = Epilogue::Glu(c.arch.activation);
        if let Some(p) = probe.as_deref_mut() {
            p.attention.push(attn.clone());
        }
        // Called once, in one of the two arms below: the probe moves in.
        let gated = |h: Tensor<2>| {
            let ff = self.gate_up.forward(h, glu);
            if let Some(p) = probe {
                p.gated.push(ff.clone());
            }
            ff
        };
        match &self.post_norms {
            None => {
                let x = profile::time(Part::Matmul, || self.wo.forward(attn, Epilogue::Residual(x)));
                let h = rms_norm(x.clone(), &self.ffn_norm, c.rms_eps);
                profile::time(Part::Matmul, || self.w_down.forward(gated(h), Epilogue::Residual(x)))
            }
            Some((post_attn, post_ffn)) => {
                let o = profile::time(Part::Matmul, || self.wo.forward(attn, Epilogue::None));
                let x = x + rms_norm(o, post_attn, c.rms_eps);
                let h = rms_norm(x.clone(), &self.ffn_norm, c.rms_eps);
                let ff = profile::time(Part::Matmul, || self.w_down.forward(gated(h), Epilogue::None));
                x + rms_norm(ff, post_ffn, c.rms_eps)
            }
        }
    }
}

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: `[1, vocab]`.
    Last,
    /// Every position: `[seq, vocab]`.
    All,
}

/// The attention kernels' view of the model's heads.
fn heads(c: &ModelConfig) -> Heads {
    Heads { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim() }
}

/// What a calibration pass ([`Decoder::probe`]) keeps of every layer, for choosing what to
/// prune: how much each layer turns the state, and how large the inputs of its output and
/// down projections run (the activations of Wanda's scores).
#[derive(Default)]
pub struct Probe {
    /// The hidden state before the first layer and after each: `n_layers + 1` of `[seq, d_model]`.
    pub states: Vec<Tensor<2>>,
    /// Each layer's attention output, the output projection's input: `[seq, q_dim]`.
    pub attention: Vec<Tensor<2>>,
    /// Each layer's gated activation, the down projection's input: `[seq, d_ff]`.
    pub gated: Vec<Tensor<2>>,
}

/// A one-token decode step in progress ([`Decoder::begin_step`]): the hidden state after the
/// layers run so far. It must end with [`Decoder::finish_step`] or [`Decoder::exit_step`]
/// before the cache is used again.
pub struct Step {
    x: Tensor<2>,
    /// The token's cache slot.
    slot: usize,
    /// Layers run so far.
    layer: usize,
}

impl Step {
    pub fn layers_run(&self) -> usize {
        self.layer
    }
}

/// A loaded model on one device.
pub struct Decoder {
    config: ModelConfig,
    /// Also the output head when the model ties them.
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: Tensor<1>,
    /// The output head, when the model does not tie it to the embedding.
    output: Option<Embedding>,
    format: WeightFormat,
    activations: Activations,
    device: Device,
    limits: Limits,
}

impl Decoder {
    /// Reads every weight from `source`, checking each shape against `config`.
    pub fn load(
        config: &ModelConfig,
        source: &dyn TensorSource,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        let mut stages = Stages::new(config, format, device);
        for stage in Stage::all(config) {
            stages.load(stage, source)?;
        }
        stages.finish()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn weight_format(&self) -> WeightFormat {
        self.format
    }

    /// How activations meet the packed matrices on the CPU ([`Activations::F32`] until set).
    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// Sets how activations meet every packed matrix on the CPU: the weights stay as they
    /// are, so the mode can change between passes (a cubecl device ignores it).
    pub fn set_activations(&mut self, mode: Activations) {
        self.activations = mode;
        let blocks = self.blocks.iter_mut().flat_map(Block::packed_mut);
        let tables = self.embedding.packed_mut().chain(self.output.iter_mut().flat_map(Embedding::packed_mut));
        for m in blocks.chain(tables) {
            m.activations = mode;
        }
    }

    /// Bytes the weights take on the device.
    pub fn weight_bytes(&self) -> usize {
        self.embedding.device_bytes()
            + self.blocks.iter().map(Block::device_bytes).sum::<usize>()
            + 4 * self.norm.dims()[0]
            + self.output.as_ref().map_or(0, Embedding::device_bytes)
    }

    /// Runs `tokens` through the model after what `cache` holds, appending them to it, and
    /// returns logits `[1 or seq, vocab]` as `logits` asks.
    ///
    /// Long inputs run as several passes of at most [`MAX_PASS_TOKENS`], so that no dispatch
    /// passes the device's workgroup limits whatever the caller sends; every size is checked
    /// before the cache is touched.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor<2>> {
        let c = &self.config;
        let seq = tokens.len();
        if seq == 0 {
            return Err(Error::InvalidPrompt("no tokens to run".into()));
        }
        self.check_ids(tokens)?;
        cache.reserve(seq)?;
        if logits == Logits::All {
            let bytes = seq as u64 * c.vocab as u64 * 4;
            self.limits.check_buffer(|| format!("the logits of {seq} tokens"), bytes)?;
        }
        let passes = tokens.chunks(MAX_PASS_TOKENS.min(cache.max_pass()));
        let n = passes.len();
        let mut out = Vec::with_capacity(if logits == Logits::All { n } else { 1 });
        for (i, pass) in passes.enumerate() {
            let x = self.pass(pass, cache);
            match logits {
                Logits::All => out.push(self.head(x)),
                Logits::Last if i + 1 == n => out.push(self.head(x.slice(pass.len() - 1..pass.len()))),
                Logits::Last => {}
            }
        }
        Ok(if out.len() == 1 { out.pop().expect("one pass") } else { Tensor::cat(out, 0) })
    }

    /// Refuses a token id outside the vocabulary before anything runs.
    fn check_ids(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&bad) => Err(Error::InvalidPrompt(format!("token id {bad} is outside the vocabulary of {vocab}"))),
            None => Ok(()),
        }
    }

    /// One decode step for several conversations at once: `tokens[i]` runs after what
    /// `caches[i]` holds and is appended to it; returns the logits `[n, vocab]`, row `i` for
    /// conversation `i`. The projections and the head read each weight once for all of them;
    /// each attends to its own cache. Each row equals what [`Self::forward`] gives that token
    /// alone, bit for bit where the kernels give a token the same bits in any tile (the CPU
    /// levels, tested), so conversations decoded together say what each would alone.
    pub fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor<2>> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            return Err(Error::InvalidPrompt(format!(
                "a batched step takes one token per cache: {} tokens, {} caches",
                tokens.len(),
                caches.len()
            )));
        }
        if tokens.len() > MAX_PASS_TOKENS {
            return Err(Error::BadOptions(format!("at most {MAX_PASS_TOKENS} conversations decode together")));
        }
        self.check_ids(tokens)?;
        for cache in caches.iter() {
            cache.reserve(1)?;
        }
        let x = self.pass_with(tokens, caches, None);
        Ok(self.head(x))
    }

    /// One pass of `tokens` (at most [`MAX_PASS_TOKENS`]) through the blocks; returns the
    /// hidden states `[seq, d_model]` before the final norm.
    fn pass(&self, tokens: &[u32], cache: &mut KvCache) -> Tensor<2> {
        self.pass_with(tokens, &mut [cache], None)
    }

    /// [`Self::pass`] into one cache, or one token into each of several; with a `probe`, what
    /// it keeps goes there.
    fn pass_with(&self, tokens: &[u32], caches: &mut [&mut KvCache], mut probe: Option<&mut Probe>) -> Tensor<2> {
        let c = &self.config;
        let per_cache = if caches.len() == 1 { tokens.len() } else { 1 };
        let slots: Vec<usize> = caches.iter().map(|cache| cache.len()).collect();
        for cache in caches.iter_mut() {
            cache.fit_pass(per_cache);
        }
        let mut x = self.embed(tokens);
        for (i, block) in self.blocks.iter().enumerate() {
            if let Some(p) = probe.as_deref_mut() {
                p.states.push(x.clone());
            }
            x = block.forward(x, c, caches, i, &slots, probe.as_deref_mut());
        }
        if let Some(p) = probe {
            p.states.push(x.clone());
        }
        for cache in caches.iter_mut() {
            cache.advance(per_cache);
        }
        x
    }

    /// One pass of `tokens` after what `cache` holds, appended to it, keeping what a [`Probe`]
    /// keeps (for choosing what to prune).
    pub fn probe(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Probe> {
        let most = MAX_PASS_TOKENS.min(cache.max_pass());
        if tokens.is_empty() || tokens.len() > most {
            return Err(Error::InvalidPrompt(format!("a pass of {} tokens: 1..={most} fit", tokens.len())));
        }
        self.check_ids(tokens)?;
        cache.reserve(tokens.len())?;
        let mut probe = Probe::default();
        self.pass_with(tokens, &mut [cache], Some(&mut probe));
        Ok(probe)
    }

    /// The embedding rows of `tokens`, scaled where the architecture scales them.
    fn embed(&self, tokens: &[u32]) -> Tensor<2> {
        let x = self.embedding.lookup(tokens, &self.device);
        match self.config.arch.embed_scale {
            true => x.mul_scalar((self.config.d_model as f32).sqrt()),
            false => x,
        }
    }

    /// Starts a one-token decode step that runs a few layers at a time (early exit): see
    /// [`Step`]. Checks as [`Self::forward`] does; nothing is written before the first layer.
    pub fn begin_step(&self, token: u32, cache: &mut KvCache) -> Result<Step> {
        self.check_ids(&[token])?;
        cache.reserve(1)?;
        let slot = cache.len();
        cache.fit_pass(1);
        Ok(Step { x: self.embed(&[token]), slot, layer: 0 })
    }

    /// Runs the step's layers up to `layer` (layers already run are not run again).
    pub fn run_to(&self, step: &mut Step, layer: usize, cache: &mut KvCache) {
        let end = layer.min(self.blocks.len());
        for i in step.layer..end {
            step.x = self.blocks[i].forward(step.x.clone(), &self.config, &mut [&mut *cache], i, &[step.slot], None);
        }
        step.layer = step.layer.max(end);
    }

    /// The output head's rows of `ids`, transposed: `[d_model, ids.len()]`, for
    /// [`Self::step_logits`] against a shortlist (gathered once per shortlist, not per look).
    pub fn head_rows(&self, ids: &[u32]) -> Result<Tensor<2>> {
        self.check_ids(ids)?;
        Ok(self.output.as_ref().unwrap_or(&self.embedding).lookup(ids, &self.device).transpose())
    }

    /// The logits of the step's hidden state now, through the final norm: against the whole
    /// head `[1, vocab]`, or against the rows [`Self::head_rows`] gathered `[1, ids.len()]`.
    pub fn step_logits(&self, step: &Step, rows: Option<&Tensor<2>>) -> Tensor<2> {
        match rows {
            None => self.head(step.x.clone()),
            Some(rows) => rms_norm(step.x.clone(), &self.norm, self.config.rms_eps).matmul(rows.clone()),
        }
    }

    /// Runs the step's remaining layers and the head: the logits `[1, vocab]`, the same as
    /// [`Self::forward`] gives the token.
    pub fn finish_step(&self, mut step: Step, cache: &mut KvCache) -> Tensor<2> {
        self.run_to(&mut step, self.blocks.len(), cache);
        cache.advance(1);
        self.head(step.x)
    }

    /// Ends the step where it is, leaving the layers not run without this token's entries: for
    /// a caller that takes the slot back (a self-speculative guess).
    pub fn drop_step(&self, step: Step, cache: &mut KvCache) {
        let _ = step;
        cache.advance(1);
    }

    /// Ends the step where it is: the layers not run get only the token's keys and values,
    /// from the hidden state as it is now.
    pub fn exit_step(&self, step: Step, cache: &mut KvCache) {
        for i in step.layer..self.blocks.len() {
            self.blocks[i].store_kv(step.x.clone(), &self.config, cache, i, step.slot);
        }
        cache.advance(1);
    }

    /// Final norm and output head: `x: [seq, d_model]` → `[seq, vocab]`.
    fn head(&self, x: Tensor<2>) -> Tensor<2> {
        let x = rms_norm(x, &self.norm, self.config.rms_eps);
        profile::time(Part::Head, || match &self.output {
            Some(head) => head.logits(x),
            None => self.embedding.logits(x),
        })
    }
}

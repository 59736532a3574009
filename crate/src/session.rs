//! One conversation: its KV cache, prefix reuse, prefill, the decode loop, stop conditions
//! and timings.

use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::Logits;
use crate::sampler::{Sampler, SamplerOptions};
use crate::tokenizer::TextStream;

/// What to generate and when to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    #[serde(flatten)]
    pub sampler: SamplerOptions,
    /// Generation ends before the first occurrence of any of these; they are not returned.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (for benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 256, sampler: SamplerOptions::default(), stop: Vec::new(), ignore_eos: false }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The KV cache has no room for another token.
    ContextFull,
    /// The caller's callback asked to stop.
    Aborted,
}

/// Timings and counts of one generation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens already in the cache from the previous turn, not prefilled again.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    /// From the end of prefill to the last token.
    pub decode_ms: f64,
    /// From the call to the first generated token.
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// KV slots in use after generation.
    pub kv_len: usize,
    pub kv_capacity: usize,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub stats: GenerationStats,
}

/// What the streaming callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// A conversation with a model: owns its KV cache and remembers which tokens it holds.
pub struct Session {
    engine: Arc<Engine>,
    cache: KvCache,
    /// The tokens whose keys and values are in `cache`, in order.
    cached: Vec<u32>,
}

impl Session {
    pub fn new(engine: Arc<Engine>, kv_capacity: usize) -> Result<Self> {
        let cache = KvCache::new(engine.config(), kv_capacity, engine.device())?;
        Ok(Self { engine, cache, cached: Vec::new() })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.cache
    }

    pub(crate) fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    /// Forgets the conversation; the cache memory stays allocated.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.cached.clear();
    }

    /// Logits `[seq, vocab]` for every position of `tokens`, run from an empty cache.
    /// For tests and evaluation.
    pub async fn logits_all(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.reset();
        self.check_prompt(tokens)?;
        let logits = self.engine.model().forward(tokens, &mut self.cache, Logits::All)?;
        self.cached = tokens.to_vec();
        let vocab = logits.dims()[1];
        let data = read_f32(logits).await?;
        Ok(data.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::InvalidPrompt("the prompt is empty".into()));
        }
        if prompt.len() > self.cache.capacity() {
            return Err(Error::PromptTooLong { tokens: prompt.len(), capacity: self.cache.capacity() });
        }
        Ok(())
    }

    /// Continues `prompt` (the whole conversation so far, as token ids). Tokens the cache
    /// already holds as a prefix of `prompt` are reused. `on_text` receives each new piece of
    /// text with the token that completed it, and can stop generation.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str, u32) -> Control,
    ) -> Result<Generation> {
        let start = Instant::now();
        self.check_prompt(prompt)?;
        if options.max_tokens == 0 {
            return Err(Error::BadOptions("max_tokens must be at least 1".into()));
        }
        if options.stop.iter().any(String::is_empty) {
            return Err(Error::BadOptions("stop strings must not be empty".into()));
        }
        let mut sampler = Sampler::new(options.sampler.clone())?;
        let engine = Arc::clone(&self.engine);
        let (model, tokenizer) = (engine.model(), engine.tokenizer());

        // Reuse the cached prefix; at least one token must run to produce logits.
        let common = self.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let reused = common.min(prompt.len() - 1);
        self.cache.truncate(reused);
        self.cached.truncate(reused);

        let mut logits = match model.forward(&prompt[reused..], &mut self.cache, Logits::Last) {
            Ok(l) => l,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        self.cached.extend_from_slice(&prompt[reused..]);

        let mut history = prompt.to_vec();
        let mut generated = Vec::new();
        let mut stream = TextStream::new();
        let mut stops = StopScan::new(&options.stop);
        let mut prefill_ms = 0.0;
        let mut first_token_ms = 0.0;
        let finish_reason = loop {
            let token = pick(logits, &mut sampler, &history).await?;
            if generated.is_empty() {
                first_token_ms = ms_since(start);
                // The first readback waits for the prefill to finish on the device.
                prefill_ms = first_token_ms;
            }
            if !options.ignore_eos && tokenizer.is_end_of_generation(token) {
                break FinishReason::Stop;
            }
            generated.push(token);
            history.push(token);
            let piece = stream.push(tokenizer, token)?;
            let (emit, stopped) = stops.push(&piece);
            if !emit.is_empty() && on_text(emit, token) == Control::Stop {
                break FinishReason::Aborted;
            }
            if stopped {
                break FinishReason::Stop;
            }
            if generated.len() >= options.max_tokens {
                break FinishReason::Length;
            }
            if self.cache.remaining() == 0 {
                break FinishReason::ContextFull;
            }
            logits = model.forward(&[token], &mut self.cache, Logits::Last)?;
            self.cached.push(token);
        };
        if !matches!(finish_reason, FinishReason::Stop | FinishReason::Aborted) {
            let rest = stream.finish(tokenizer)?;
            let (emit, _) = stops.push(&rest);
            let emit = emit.to_string() + stops.flush();
            if !emit.is_empty() {
                on_text(&emit, *generated.last().unwrap_or(&0));
            }
        }

        let total_ms = ms_since(start);
        let decode_ms = total_ms - prefill_ms;
        let prefilled = prompt.len() - reused;
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated.len(),
            prefill_ms,
            decode_ms,
            time_to_first_token_ms: first_token_ms,
            prefill_tokens_per_s: per_second(prefilled, prefill_ms),
            // The first token comes out of the prefill; the rest each took a decode step.
            decode_tokens_per_s: per_second(generated.len().saturating_sub(1), decode_ms),
            kv_len: self.cache.len(),
            kv_capacity: self.cache.capacity(),
        };
        Ok(Generation { tokens: generated, text: stops.into_text(), finish_reason, stats })
    }
}

/// The next token from `logits: [1, vocab]`: argmax on the device when sampling is greedy (one
/// integer read back), otherwise the logits are read and sampled on the host.
async fn pick(logits: Tensor<2>, sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
    if sampler.options().is_greedy() {
        let data = logits.argmax(1).into_data_async().await.map_err(|e| Error::Device(format!("{e:?}")))?;
        let ids = data.try_into_vec_as::<i64>().map_err(|e| Error::Device(format!("{e:?}")))?;
        return Ok(ids[0] as u32);
    }
    let mut logits = read_f32(logits).await?;
    Ok(sampler.sample(&mut logits, history))
}

/// Reads a float tensor back to the host.
pub(crate) async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Device(format!("{e:?}")))?;
    data.try_into_vec_as::<f32>().map_err(|e| Error::Device(format!("{e:?}")))
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}

/// Finds stop strings in streamed text, holding back any tail that could begin one.
struct StopScan<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
}

impl<'a> StopScan<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self { stops, text: String::new(), emitted: 0 }
    }

    /// Adds `piece`; returns the text now safe to emit and whether a stop string was found.
    fn push(&mut self, piece: &str) -> (&str, bool) {
        let from = self.emitted;
        self.text.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min() {
            self.text.truncate(at);
            self.emitted = at;
            return (&self.text[from..at], true);
        }
        let held = self.stops.iter().map(|s| longest_prefix_suffix(&self.text[from..], s)).max().unwrap_or(0);
        self.emitted = self.text.len() - held;
        (&self.text[from..self.emitted], false)
    }

    /// Emits what was held back (generation ended without completing a stop string).
    fn flush(&mut self) -> &str {
        let from = self.emitted;
        self.emitted = self.text.len();
        &self.text[from..]
    }

    fn into_text(self) -> String {
        let mut text = self.text;
        text.truncate(self.emitted);
        text
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len()).rev().filter(|&n| stop.is_char_boundary(n)).find(|&n| text.ends_with(&stop[..n])).unwrap_or(0)
}

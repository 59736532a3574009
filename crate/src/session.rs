//! One conversation: its KV cache, prefix reuse, prefill, the decode loop, stop conditions
//! and timings.

use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::eval::token_logprobs;
use crate::kv_cache::{EvictionPolicy, KvCache, KvOptions};
use crate::model::Logits;
use crate::prune::{PruneMethod, PruneOptions, PruneReport};
use crate::sampler::{Sampler, SamplerOptions};
use crate::template::Message;
use crate::tokenizer::TextStream;

/// Tokens scored per forward pass by [`Session::surprisal`].
const SCORE_CHUNK: usize = 128;

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
    /// Tokens the cache evicted during this generation.
    pub evicted_tokens: usize,
    /// Prompt tokens dropped by input pruning.
    pub pruned_tokens: usize,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub stats: GenerationStats,
    /// What input pruning dropped, when the prompt did not fit its budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PruneReport>,
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
    /// Every token run through the cache since the last reset, in order (evicted ones too).
    history: Vec<u32>,
}

impl Session {
    pub fn new(engine: Arc<Engine>, kv: &KvOptions) -> Result<Self> {
        let cache = KvCache::new(engine.config(), kv, engine.device())?;
        Ok(Self { engine, cache, history: Vec::new() })
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
        self.history.clear();
    }

    /// Logits `[seq, vocab]` for every position of `tokens`, run from an empty cache.
    /// For tests and evaluation.
    pub async fn logits_all(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.reset();
        self.check_prompt(tokens)?;
        // Unlike generation, every position's logits must come from one pass.
        if tokens.len() > self.cache.capacity() {
            return Err(Error::PromptTooLong { tokens: tokens.len(), capacity: self.cache.capacity() });
        }
        let logits = self.engine.model().forward(tokens, &mut self.cache, Logits::All)?;
        self.history = tokens.to_vec();
        let vocab = logits.dims()[1];
        let data = read_f32(logits).await?;
        Ok(data.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Runs `tokens` after what the cache holds, in chunks the cache can take, evicting as its
    /// policy says; returns the logits `[1, vocab]` of the last token.
    pub async fn feed(&mut self, tokens: &[u32]) -> Result<Tensor<2>> {
        let engine = Arc::clone(&self.engine);
        let mut last = None;
        for chunk in tokens.chunks(self.cache.max_append()) {
            self.cache.make_room(chunk.len()).await?;
            last = Some(engine.model().forward(chunk, &mut self.cache, Logits::Last)?);
            self.history.extend_from_slice(chunk);
        }
        last.ok_or_else(|| Error::InvalidPrompt("no tokens to run".into()))
    }

    /// How many tokens of `prompt` the cache already holds in the state they would have if
    /// `prompt` were run from the start: a common prefix while nothing was evicted; after an
    /// eviction, everything run so far when `prompt` continues it, else nothing.
    pub fn reusable(&self, prompt: &[u32]) -> usize {
        let common = self.history.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        if self.cache.evicted() == 0 || common == self.history.len() { common } else { 0 }
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::InvalidPrompt("the prompt is empty".into()));
        }
        if self.cache.policy() == EvictionPolicy::None && prompt.len() > self.cache.capacity() {
            return Err(Error::PromptTooLong { tokens: prompt.len(), capacity: self.cache.capacity() });
        }
        Ok(())
    }

    /// Renders `messages` with the model's chat template, prunes the prompt to fit `prune`'s
    /// budget unless the cache can continue from what it holds, and generates the reply.
    pub async fn chat(
        &mut self,
        messages: &[Message],
        options: &GenerateOptions,
        prune: &PruneOptions,
        on_text: impl FnMut(&str, u32) -> Control,
    ) -> Result<Generation> {
        let prompt = self.engine.chat_prompt(messages)?;
        let budget = prune.budget_for(self.cache.capacity(), options.max_tokens)?;
        let continues = self.cache.evicted() > 0 && self.reusable(&prompt.tokens) > 0;
        let report = if prompt.tokens.len() > budget && prune.method != PruneMethod::None && !continues {
            let scores = match prune.method {
                PruneMethod::SelfInformation => self.surprisal(&prompt.tokens).await?,
                _ => Vec::new(),
            };
            Some(prompt.prune(self.engine.tokenizer(), budget, prune.method, &scores)?)
        } else {
            None
        };
        let tokens = report.as_ref().map_or(&prompt.tokens, |r| &r.tokens);
        let mut generation = self.generate(tokens, options, on_text).await?;
        generation.stats.pruned_tokens = report.as_ref().map_or(0, |r| r.pruned_tokens);
        generation.pruned = report;
        Ok(generation)
    }

    /// The self-information `-ln p(token_i | tokens_<i)` of every token under this model (0 for
    /// the first), run through this session's cache in chunks, sliding past its capacity.
    /// Leaves the session reset.
    pub async fn surprisal(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        let engine = Arc::clone(&self.engine);
        let chunk = self.cache.slide_chunk().min(SCORE_CHUNK);
        let mut out = vec![0.0f32; tokens.len()];
        let result = async {
            for (c, piece) in tokens.chunks(chunk).enumerate() {
                let start = c * chunk;
                self.cache.slide(piece.len()).await?;
                let logits = engine.model().forward(piece, &mut self.cache, Logits::All)?;
                let targets = &tokens[start + 1..(start + piece.len() + 1).min(tokens.len())];
                if targets.is_empty() {
                    break;
                }
                for (i, lp) in token_logprobs(logits, targets).await?.into_iter().enumerate() {
                    out[start + 1 + i] = -lp;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        self.reset();
        result.map(|_| out)
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
        let tokenizer = engine.tokenizer();

        // Reuse what the cache holds; at least one token must run to produce logits.
        let reused = self.reusable(prompt).min(prompt.len() - 1);
        if reused < self.history.len() {
            if self.cache.evicted() > 0 {
                self.reset();
            } else {
                self.cache.truncate(reused);
                self.history.truncate(reused);
            }
        }
        let evicted_before = self.cache.evicted();

        let mut logits = match self.feed(&prompt[reused..]).await {
            Ok(l) => l,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };

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
            match self.cache.make_room(1).await {
                Ok(_) => {}
                Err(Error::KvCacheFull { .. }) => break FinishReason::ContextFull,
                Err(e) => return Err(e),
            }
            logits = engine.model().forward(&[token], &mut self.cache, Logits::Last)?;
            self.history.push(token);
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
            evicted_tokens: self.cache.evicted() - evicted_before,
            pruned_tokens: 0,
        };
        Ok(Generation { tokens: generated, text: stops.into_text(), finish_reason, stats, pruned: None })
    }
}

/// The next token from `logits: [1, vocab]`: argmax on the device when sampling is greedy (one
/// integer read back), otherwise the logits are read and sampled on the host.
async fn pick(logits: Tensor<2>, sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
    if sampler.options().is_greedy() {
        return Ok(read_ids(logits.argmax(1)).await?[0]);
    }
    let mut logits = read_f32(logits).await?;
    Ok(sampler.sample(&mut logits, history))
}

/// Reads token ids (an argmax) back to the host.
pub(crate) async fn read_ids<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<u32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Device(format!("{e:?}")))?;
    let ids = data.try_into_vec_as::<i64>().map_err(|e| Error::Device(format!("{e:?}")))?;
    Ok(ids.into_iter().map(|id| id as u32).collect())
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

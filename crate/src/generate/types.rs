//! The types a generation is asked and answers with, shared by a session's own loop, a batch of
//! conversations and the text emitter: options, the result and its stats, the listener.

use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::generate::early_exit::EarlyExitOptions;
use crate::generate::logprobs::{MAX_TOP_LOGPROBS, TokenLogprob};
use crate::generate::sampler::{Sampler, SamplerOptions};
use crate::generate::speculative::SpeculativeOptions;
use crate::kv_cache::KvCache;
use crate::text::grammar::Grammar;
use crate::text::prompt_pruning::PromptPruneReport;
use crate::text::tools::{Tool, ToolCall, ToolChoice, ToolSet};

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
    /// Draft tokens and check them in one pass ([`crate::generate::speculative`]); `None`: one token a step.
    pub speculative: Option<SpeculativeOptions>,
    /// Decode steps may end before the last layer ([`crate::generate::early_exit`]); `None`: every layer.
    pub early_exit: Option<EarlyExitOptions>,
    /// What the reply must match (a JSON schema, any JSON object, a Lark grammar, a regular
    /// expression); `None`: free text.
    pub grammar: Option<Grammar>,
    /// Record each chosen token's log-probability and this many likeliest alternatives
    /// (0..=20); `None`: none.
    pub logprobs: Option<usize>,
    /// Functions the reply may call ([`crate::text::tools`]): a chat shows them to the model;
    /// the reply's calls come back in [`Generation::tool_calls`].
    pub tools: Vec<Tool>,
    /// Whether the reply may, must or must not call them (default `auto`).
    pub tool_choice: ToolChoice,
    /// More than one call in a reply (default true).
    pub parallel_tool_calls: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampler: SamplerOptions::default(),
            stop: Vec::new(),
            ignore_eos: false,
            speculative: None,
            early_exit: None,
            grammar: None,
            logprobs: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
        }
    }
}

impl GenerateOptions {
    /// Checked before any work is done, so that bad options never cost a prefill.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(Error::BadOptions("max_tokens must be at least 1".into()));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::BadOptions("stop strings must not be empty".into()));
        }
        self.tool_set()?;
        if let Some(speculative) = &self.speculative {
            speculative.validate()?;
            // Speculation checks drafts against the model's own choices, before any grammar,
            // bias or record: refused rather than half applied.
            let what = [
                (self.grammar.is_some(), "a grammar"),
                (self.tool_set()?.active(), "tools"),
                (self.logprobs.is_some(), "logprobs"),
                (!self.sampler.logit_bias.is_empty(), "logit_bias"),
            ];
            if let Some((_, what)) = what.iter().find(|(on, _)| *on) {
                return Err(Error::BadOptions(format!("speculative decoding is not combined with {what}")));
            }
        }
        if self.grammar.is_some() && self.tool_set()?.active() {
            return Err(Error::BadOptions(
                "a grammar (response_format) is not combined with tools unless tool_choice is \"none\"".into(),
            ));
        }
        if let Some(top) = self.logprobs.filter(|&top| top > MAX_TOP_LOGPROBS) {
            return Err(Error::BadOptions(format!("top_logprobs {top} must be at most {MAX_TOP_LOGPROBS}")));
        }
        if let Some(early_exit) = &self.early_exit {
            early_exit.validate()?;
            if self.speculative.is_some() {
                return Err(Error::BadOptions("early exit is not combined with speculative decoding".into()));
            }
        }
        self.sampler.validate()
    }

    /// The sampler these options ask for on `engine`: its grammar compiled against the model's
    /// vocabulary (`bad_options` when it does not compile), its log-probabilities.
    pub fn sampler(&self, engine: &Engine) -> Result<Sampler> {
        let vocab = engine.config().vocab;
        if let Some(&id) = self.sampler.logit_bias.keys().find(|&&id| id as usize >= vocab) {
            return Err(Error::BadOptions(format!("logit_bias names token {id}, outside the vocabulary of {vocab}")));
        }
        let mut sampler = Sampler::new(self.sampler.clone())?.with_logprobs(self.logprobs);
        if let Some(grammar) = self.grammar.clone().or_else(|| self.tool_set().ok()?.grammar()) {
            sampler = sampler.with_constraint(engine.grammars()?.compile(&grammar)?);
        }
        Ok(sampler)
    }

    /// The tools, checked.
    pub fn tool_set(&self) -> Result<ToolSet<'_>> {
        ToolSet::new(&self.tools, &self.tool_choice, self.parallel_tool_calls)
    }

    /// The tools a chat shows the model: none under `tool_choice: "none"`.
    pub fn offered_tools(&self) -> &[Tool] {
        if self.tool_choice == ToolChoice::None { &[] } else { &self.tools }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The KV cache has no room for another token.
    ContextFull,
    /// The caller asked to stop (the callback returned [`Control::Stop`] or the listener
    /// reported an abort).
    Aborted,
    /// The reply called tools ([`Generation::tool_calls`]) and ended.
    ToolCalls,
}

/// Timings and counts of one generation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
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
    /// Speculative decoding: tokens drafted, and how many of them the model accepted.
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
    /// `accepted_tokens / draft_tokens` (0 without drafts).
    pub acceptance_rate: f64,
    /// Layers run per decode step on average: fewer than the model's with early exit.
    pub mean_layers: f64,
    /// Time the grammar took (its masks and advancing it by each token), within the
    /// prefill and decode times; 0 without one.
    pub grammar_ms: f64,
    /// Generated tokens the grammar forced, fed to the model in one pass with the token
    /// before them instead of a step each.
    pub forced_tokens: usize,
}

/// What a generation's loop measured (a session's own or a batch's): [`GenerationStats`] is
/// built from it in one place.
pub(crate) struct Measured<'a> {
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub first_token_ms: f64,
    /// The cache after generation, and its eviction count before it.
    pub cache: &'a KvCache,
    pub evicted_before: usize,
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
    pub mean_layers: f64,
    pub grammar_ms: f64,
    pub forced_tokens: usize,
}

impl GenerationStats {
    pub(crate) fn measured(m: Measured) -> Self {
        let Measured { prompt_tokens, reused_tokens, generated_tokens, prefill_ms, decode_ms, .. } = m;
        let (drafted, accepted) = (m.draft_tokens, m.accepted_tokens);
        Self {
            prompt_tokens,
            reused_tokens,
            generated_tokens,
            prefill_ms,
            decode_ms,
            time_to_first_token_ms: m.first_token_ms,
            prefill_tokens_per_s: per_second(prompt_tokens - reused_tokens, prefill_ms),
            // The first token comes out of the prefill; the rest each took a decode step.
            decode_tokens_per_s: per_second(generated_tokens.saturating_sub(1), decode_ms),
            kv_len: m.cache.len(),
            kv_capacity: m.cache.capacity(),
            evicted_tokens: m.cache.evicted() - m.evicted_before,
            pruned_tokens: 0,
            draft_tokens: drafted,
            accepted_tokens: accepted,
            acceptance_rate: if drafted > 0 { accepted as f64 / drafted as f64 } else { 0.0 },
            mean_layers: m.mean_layers,
            grammar_ms: m.grammar_ms,
            forced_tokens: m.forced_tokens,
        }
    }
}

/// The result of [`Session::generate`](crate::Session::generate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub stats: GenerationStats,
    /// What input pruning dropped, when the prompt did not fit its budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PromptPruneReport>,
    /// Each token's log-probability, when asked for ([`GenerateOptions::logprobs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The calls the reply made, when tools were offered; `text` then holds only what the
    /// model wrote before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Why text that began a tool call is not one (cut by `max_tokens`, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_error: Option<String>,
}

/// What the streaming callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// The caller's side of a generation: where text goes, and whether to stop.
///
/// [`Session::generate`](crate::Session::generate) and [`Session::chat`](crate::Session::chat) take a plain closure (a listener that never
/// aborts by itself); their `_with` forms take a listener. The browser bindings implement one
/// over an `AbortSignal`, so that an abort is seen between prefill chunks, between pruning's
/// scoring chunks and after every decoded token, even while text is held back (an unfinished
/// UTF-8 character, a possible stop string).
pub trait Listener {
    /// A new piece of text and the token that completed it. `Err` ends the generation with
    /// that error (a callback that threw is a failure, not a request to stop).
    fn on_text(&mut self, text: &str, token: u32) -> Result<Control>;

    /// A tool call the reply made, whole, once its closing tag is written (its text never
    /// reaches [`Self::on_text`]). The default drops it: it is in the result as well.
    fn on_tool_call(&mut self, call: &ToolCall) -> Result<Control> {
        let _ = call;
        Ok(Control::Continue)
    }

    /// Whether the caller wants the generation to end now.
    fn aborted(&self) -> bool {
        false
    }

    /// A wait before each time [`Self::aborted`] is asked. A browser running the model on the
    /// CPU finishes every step without awaiting anything, so its event loop (and with it an
    /// abort: a click, a worker message) would never run during a generation: its listener
    /// yields to the event loop here. `None`, the default: no wait.
    fn pause(&self) -> Option<Pause> {
        None
    }
}

/// What [`Listener::pause`] returns.
pub type Pause = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// The listener's pause, then its answer to whether to stop.
pub(crate) async fn should_stop(listener: &dyn Listener) -> bool {
    if let Some(pause) = listener.pause() {
        pause.await;
    }
    listener.aborted()
}

/// A listener that hears nothing and never stops (feeding and scoring for the caller's own use).
pub(crate) struct Quiet;

impl Listener for Quiet {
    fn on_text(&mut self, _: &str, _: u32) -> Result<Control> {
        Ok(Control::Continue)
    }
}

/// A borrowed listener, for callers that keep theirs (conversations decoded together).
impl<L: Listener + ?Sized> Listener for &mut L {
    fn on_text(&mut self, text: &str, token: u32) -> Result<Control> {
        (**self).on_text(text, token)
    }

    fn on_tool_call(&mut self, call: &ToolCall) -> Result<Control> {
        (**self).on_tool_call(call)
    }

    fn aborted(&self) -> bool {
        (**self).aborted()
    }

    fn pause(&self) -> Option<Pause> {
        (**self).pause()
    }
}

/// A closure as a listener.
pub(crate) struct OnText<F>(pub(crate) F);

impl<F: FnMut(&str, u32) -> Control> Listener for OnText<F> {
    fn on_text(&mut self, text: &str, token: u32) -> Result<Control> {
        Ok((self.0)(text, token))
    }
}

impl Generation {
    /// A generation stopped before its first token (during pruning's scoring or the prefill).
    pub(crate) fn aborted(prompt_tokens: usize, cache: &KvCache, start: Instant) -> Self {
        let stats = GenerationStats {
            prompt_tokens,
            prefill_ms: ms_since(start),
            kv_len: cache.len(),
            kv_capacity: cache.capacity(),
            ..GenerationStats::default()
        };
        Self {
            tokens: Vec::new(),
            text: String::new(),
            finish_reason: FinishReason::Aborted,
            stats,
            pruned: None,
            logprobs: None,
            tool_calls: None,
            tool_call_error: None,
        }
    }
}

pub(crate) fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}

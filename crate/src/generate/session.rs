//! One conversation: its KV cache, prefix reuse, prefill, the decode loop, stop conditions
//! and timings.

use std::collections::VecDeque;
use std::sync::Arc;

use burn::prelude::*;
use web_time::Instant;

use crate::backend::device::is_cube;
use crate::backend::host::{self, top_k};
use crate::backend::mask::apply_bitmask;
use crate::backend::readback::{execution_error, read_f32, read_ids, settle, token_logprobs};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::generate::early_exit::{EarlyExitOptions, Exits, confidence};
use crate::generate::emit::Emitter;
use crate::generate::sampler::Sampler;
use crate::generate::speculative::{DraftModel, Proposal, SpeculativeMethod, Speculator};
use crate::generate::types::{
    Control, FinishReason, GenerateOptions, Generation, GenerationStats, Listener, Measured, OnText, Quiet, ms_since,
    should_stop,
};
use crate::kv_cache::{EvictionPolicy, KvCache, KvOptions};
use crate::model::Logits;
use crate::model::passes::{PREFILL_CHUNK, SCORE_CHUNK};
use crate::text::prompt_pruning::{PromptPruneMethod, PromptPruneOptions, PromptPruneReport};
use crate::text::template::Message;

/// The logits an early-exit step ends with, over the whole vocabulary: read to the host (an
/// exit's, `-inf` outside a shortlist; a full step's when a shortlist needed them anyway), or
/// the whole model's still on the device.
enum StepLogits {
    Host(Vec<f32>),
    Device(Box<Tensor<2>>),
}

/// What a chat runs: its prompt, or the end of a chat aborted while pruning scored it.
pub(crate) enum ChatStart {
    /// The prompt's tokens, and what pruning dropped when it had to.
    Ready {
        tokens: Vec<u32>,
        report: Option<PromptPruneReport>,
    },
    Aborted(Box<Generation>),
}

impl Engine {
    /// A new conversation with a KV cache as `kv` asks.
    pub fn session(self: &Arc<Self>, kv: &KvOptions) -> Result<Session> {
        Session::new(Arc::clone(self), kv)
    }
}

/// A conversation with a model: owns its KV cache and remembers which tokens it holds.
///
/// Invariant: `history` is exactly what the cache was fed since the last reset, so every
/// error leaves a session that the next call can continue from or truncate.
pub struct Session {
    engine: Arc<Engine>,
    cache: KvCache,
    /// Every token run through the cache since the last reset, in order (evicted ones too).
    history: Vec<u32>,
    /// Drafts for `speculative: { method: "draft" }`.
    draft: Option<DraftModel>,
}

impl Session {
    /// Gives the session a draft model for speculative decoding's `draft` method (`None`
    /// removes it). Refused, leaving the session as it was, when the draft's vocabulary is not
    /// this model's token for token.
    pub fn set_draft(&mut self, draft: Option<Arc<Engine>>) -> Result<()> {
        self.draft = match draft {
            None => None,
            Some(engine) => Some(DraftModel::new(engine, &self.engine, self.cache.capacity(), self.cache.sinks())?),
        };
        Ok(())
    }

    pub fn new(engine: Arc<Engine>, kv: &KvOptions) -> Result<Self> {
        let cache = KvCache::new(engine.config(), kv, engine.device())?;
        Ok(Self { engine, cache, history: Vec::new(), draft: None })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.cache
    }

    /// Every token the cache was fed since the last reset (evicted ones too).
    pub fn history(&self) -> &[u32] {
        &self.history
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
        self.check_prompt(tokens)?;
        // Unlike generation, every position's logits must come from one pass.
        if tokens.len() > self.cache.capacity() {
            return Err(Error::PromptTooLong { tokens: tokens.len(), capacity: self.cache.capacity() });
        }
        self.reset();
        let logits = match self.engine.model().forward(tokens, &mut self.cache, Logits::All) {
            Ok(logits) => logits,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        self.history = tokens.to_vec();
        let vocab = logits.dims()[1];
        let data = read_f32(logits).await?;
        Ok(data.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Runs `tokens` after what the cache holds, in chunks of at most [`PREFILL_CHUNK`],
    /// evicting as its policy says; returns the logits `[1, vocab]` of the last token.
    pub async fn feed(&mut self, tokens: &[u32]) -> Result<Tensor<2>> {
        self.run(tokens, &Quiet).await?.ok_or(Error::Aborted)
    }

    /// [`Self::feed`], asking `aborted` between chunks (after the device finished the previous
    /// one); `None` when it said stop. `history` grows chunk by chunk, so an abort or an error
    /// leaves the session holding exactly the chunks that ran.
    async fn run(&mut self, tokens: &[u32], listener: &dyn Listener) -> Result<Option<Tensor<2>>> {
        if tokens.is_empty() {
            return Err(Error::InvalidPrompt("no tokens to run".into()));
        }
        let mut last: Option<Tensor<2>> = None;
        for chunk in tokens.chunks(self.prefill_chunk()) {
            if let Some(previous) = &last {
                settle(previous).await?;
            }
            if should_stop(listener).await {
                return Ok(None);
            }
            last = Some(self.prefill_pass(chunk).await?);
        }
        Ok(last)
    }

    /// How many tokens of `prompt` the cache already holds in the state they would have if
    /// `prompt` were run from the start: a common prefix while nothing was evicted; after an
    /// eviction, everything run so far when `prompt` continues it, else nothing.
    pub fn reusable(&self, prompt: &[u32]) -> usize {
        let common = self.history.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        if self.cache.evicted() == 0 || common == self.history.len() { common } else { 0 }
    }

    pub(crate) fn check_prompt(&self, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::InvalidPrompt("the prompt is empty".into()));
        }
        if self.cache.policy() == EvictionPolicy::None && prompt.len() > self.cache.capacity() {
            return Err(Error::PromptTooLong { tokens: prompt.len(), capacity: self.cache.capacity() });
        }
        let vocab = self.engine.config().vocab;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidPrompt(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        Ok(())
    }

    /// Renders `messages` with the model's chat template, prunes the prompt to fit `prune`'s
    /// budget unless the cache can continue from what it holds, and generates the reply.
    /// `on_text` receives each new piece of text with the token that completed it.
    pub async fn chat(
        &mut self,
        messages: &[Message],
        options: &GenerateOptions,
        prune: &PromptPruneOptions,
        on_text: impl FnMut(&str, u32) -> Control,
    ) -> Result<Generation> {
        self.chat_with(messages, options, prune, OnText(on_text)).await
    }

    /// [`Self::chat`] with a [`Listener`], which can also abort it.
    ///
    /// Pruning scores the prompt in a cache of its own: whatever happens there (an abort, an
    /// error, a budget too small), this session's conversation is left as it was.
    pub async fn chat_with(
        &mut self,
        messages: &[Message],
        options: &GenerateOptions,
        prune: &PromptPruneOptions,
        listener: impl Listener,
    ) -> Result<Generation> {
        let (tokens, report) = match self.chat_prompt(messages, options, prune, &listener).await? {
            ChatStart::Ready { tokens, report } => (tokens, report),
            ChatStart::Aborted(generation) => return Ok(*generation),
        };
        let mut generation = self.generate_with(&tokens, options, listener).await?;
        generation.stats.pruned_tokens = report.as_ref().map_or(0, |r| r.pruned_tokens);
        generation.pruned = report;
        Ok(generation)
    }

    /// The prompt of a chat: `messages` rendered with the model's chat template, pruned to
    /// `prune`'s budget unless the cache can continue from what it holds. Pruning's scoring
    /// runs in a cache of its own and can be aborted by `listener`.
    pub(crate) async fn chat_prompt(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
        prune: &PromptPruneOptions,
        listener: &dyn Listener,
    ) -> Result<ChatStart> {
        let start = Instant::now();
        options.validate()?;
        let prompt = self.engine.chat_prompt(messages, options.offered_tools())?;
        let budget = prune.budget_for(self.cache.capacity(), options.max_tokens)?;
        let continues = self.cache.evicted() > 0 && self.reusable(&prompt.tokens) > 0;
        if prompt.tokens.len() <= budget || prune.method == PromptPruneMethod::None || continues {
            return Ok(ChatStart::Ready { tokens: prompt.tokens, report: None });
        }
        prompt.check_budget(budget)?;
        let scores = match prune.method {
            PromptPruneMethod::SelfInformation => match self.score(&prompt.tokens, listener).await? {
                Some(scores) => scores,
                None => {
                    return Ok(ChatStart::Aborted(Box::new(Generation::aborted(
                        prompt.tokens.len(),
                        &self.cache,
                        start,
                    ))));
                }
            },
            _ => Vec::new(),
        };
        let report = prompt.prune(self.engine.tokenizer(), budget, prune.method, &scores)?;
        Ok(ChatStart::Ready { tokens: report.tokens.clone(), report: Some(report) })
    }

    /// The self-information `-ln p(token_i | tokens_<i)` of every token under this model (0 for
    /// the first). Runs in a scratch cache (as many slots as the prompt needs, at most this
    /// session's capacity), sliding past its capacity; this session's cache is not touched.
    pub async fn surprisal(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.surprisal_with(tokens, &Quiet).await
    }

    /// [`Self::surprisal`] that `listener` can abort between passes ([`Error::Aborted`]).
    pub async fn surprisal_with(&self, tokens: &[u32], listener: &dyn Listener) -> Result<Vec<f32>> {
        self.score(tokens, listener).await?.ok_or(Error::Aborted)
    }

    async fn score(&self, tokens: &[u32], listener: &dyn Listener) -> Result<Option<Vec<f32>>> {
        self.check_prompt(tokens).or_else(|e| match e {
            // Scoring slides through any length.
            Error::PromptTooLong { .. } => Ok(()),
            e => Err(e),
        })?;
        let capacity = tokens.len().min(self.cache.capacity());
        let scratch = KvOptions {
            capacity: Some(capacity),
            policy: EvictionPolicy::SinksWindow,
            sinks: self.cache.sinks().min(capacity / 4),
            ..KvOptions::default()
        };
        let mut cache = KvCache::new(self.engine.config(), &scratch, self.engine.device())?;
        let model = self.engine.model();
        let chunk = cache.slide_chunk().min(SCORE_CHUNK);
        let mut out = vec![0.0f32; tokens.len()];
        for (c, piece) in tokens.chunks(chunk).enumerate() {
            let start = c * chunk;
            let targets = &tokens[start + 1..(start + piece.len() + 1).min(tokens.len())];
            if targets.is_empty() {
                break;
            }
            if should_stop(listener).await {
                return Ok(None);
            }
            cache.slide(piece.len()).await?;
            let logits = model.forward(piece, &mut cache, Logits::All)?;
            // Reading the scores waits for the device, which also lets a browser deliver an abort.
            for (i, lp) in token_logprobs(logits, targets).await?.into_iter().enumerate() {
                out[start + 1 + i] = -lp;
            }
        }
        Ok(Some(out))
    }

    /// Self-speculative decoding's draft: up to `k` greedy guesses after `token` from the
    /// model's first `layers` layers alone, each fed back for the next. Their entries leave
    /// the cache again (a tentative span rolled back), since the verification pass writes
    /// every layer's for the tokens it keeps; the layers above `layers` are not run.
    async fn shallow_guesses(&mut self, token: u32, k: usize, layers: usize) -> Result<Vec<u32>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let engine = Arc::clone(&self.engine);
        let model = engine.model();
        self.cache.tentative();
        let (mut guesses, mut fed) = (Vec::with_capacity(k), 0);
        let mut last = token;
        let guessed = async {
            while guesses.len() < k {
                let mut step = model.begin_step(last, &mut self.cache)?;
                model.run_to(&mut step, layers, &mut self.cache);
                let logits = model.step_logits(&step, None);
                model.drop_step(step, &mut self.cache);
                fed += 1;
                last = read_ids(logits.argmax(1)).await?[0];
                guesses.push(last);
            }
            Ok(())
        }
        .await;
        if let Err(e) = guessed.and_then(|()| self.cache.rollback(fed)) {
            self.reset();
            return Err(e);
        }
        Ok(guesses)
    }

    /// One decode step of `token` that may exit early (see [`crate::generate::early_exit`]): the next
    /// token, from the logits of the layer it exited at or of the whole model.
    async fn exit_step(
        &mut self,
        token: u32,
        exits: &mut Exits,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        match self.exit_logits(token, exits).await? {
            StepLogits::Host(mut logits) => sampler.sample(&mut logits, history),
            StepLogits::Device(logits) => pick(*logits, sampler, history).await,
        }
    }

    /// Runs `token` as a decode step that may exit early: the logits it ends with. After a
    /// step that ran every layer, a shortlist takes that step's likeliest tokens (the logits
    /// are then read once, for both). A readback that fails part-way leaves a cache without
    /// some layers' keys: the conversation is reset.
    async fn exit_logits(&mut self, token: u32, exits: &mut Exits) -> Result<StepLogits> {
        let engine = Arc::clone(&self.engine);
        let model = engine.model();
        let mut step = model.begin_step(token, &mut self.cache)?;
        self.history.push(token);
        let EarlyExitOptions { measure, threshold, shortlist, .. } = exits.options;
        for i in 0..exits.options.layers.len() {
            model.run_to(&mut step, exits.options.layers[i], &mut self.cache);
            let rows = exits.shortlist.as_ref().map(|(_, rows)| rows);
            let logits = match read_f32(model.step_logits(&step, rows)).await {
                Ok(logits) => logits,
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            };
            if confidence(&logits, measure) > threshold {
                exits.record(step.layers_run());
                model.exit_step(step, &mut self.cache);
                return Ok(StepLogits::Host(match &exits.shortlist {
                    None => logits,
                    Some((ids, _)) => {
                        let mut all = vec![f32::NEG_INFINITY; engine.config().vocab];
                        ids.iter().zip(logits).for_each(|(&id, l)| all[id as usize] = l);
                        all
                    }
                }));
            }
        }
        let logits = model.finish_step(step, &mut self.cache);
        exits.record(engine.config().n_layers);
        if shortlist == 0 {
            return Ok(StepLogits::Device(Box::new(logits)));
        }
        let logits = read_f32(logits).await?;
        let ids = top_k(&logits, shortlist);
        exits.shortlist = Some((ids.clone(), model.head_rows(&ids)?));
        Ok(StepLogits::Host(logits))
    }

    /// The natural-log probability of each token of `tokens` after the first, given those
    /// before it, teacher-forced one decode step at a time with early exit: each from the
    /// logits of the layer its step exited at (a token outside a shortlist gets `-inf`).
    /// Runs in this session's cache (reset first; `tokens` must fit it); returns the log
    /// probabilities and the mean layers run per step.
    pub async fn early_exit_logprobs(&mut self, tokens: &[u32], options: &EarlyExitOptions) -> Result<(Vec<f32>, f64)> {
        options.validate()?;
        options.check_layers(self.engine.config().n_layers)?;
        self.check_prompt(tokens)?;
        if tokens.len() < 2 || tokens.len() > self.cache.capacity() {
            return Err(Error::InvalidPrompt(format!(
                "early-exit scoring takes 2..={} tokens, got {}",
                self.cache.capacity(),
                tokens.len()
            )));
        }
        self.reset();
        let mut exits = Exits::new(options.clone());
        let mut out = Vec::with_capacity(tokens.len() - 1);
        for pair in tokens.windows(2) {
            let logits = match self.exit_logits(pair[0], &mut exits).await? {
                StepLogits::Host(logits) => logits,
                StepLogits::Device(logits) => read_f32(*logits).await?,
            };
            out.push(host::log_softmax_at(&logits, pair[1] as usize));
        }
        Ok((out, exits.mean_layers().unwrap_or(0.0)))
    }

    /// Keeps what the cache holds of `prompt` (at least one token must still run, to produce
    /// logits); returns how many tokens that is and the evictions so far. After an eviction
    /// the cache cannot be cut back, so a prompt that only repeats what it holds is run again
    /// from the start.
    pub(crate) fn reuse(&mut self, prompt: &[u32]) -> (usize, usize) {
        let mut reused = self.reusable(prompt).min(prompt.len() - 1);
        if reused < self.history.len() {
            if self.cache.evicted() > 0 || !self.cache.can_truncate(reused) {
                self.reset();
                reused = 0;
            } else {
                self.cache.truncate(reused);
                self.history.truncate(reused);
            }
        }
        (reused, self.cache.evicted())
    }

    /// Most prompt tokens one prefill pass of this session runs.
    pub(crate) fn prefill_chunk(&self) -> usize {
        self.cache.max_append().min(PREFILL_CHUNK)
    }

    /// One prefill pass of `chunk` (at most [`Self::prefill_chunk`]), evicting as the policy
    /// says: the logits of its last token. `history` grows only when the pass ran.
    pub(crate) async fn prefill_pass(&mut self, chunk: &[u32]) -> Result<Tensor<2>> {
        self.cache.make_room(chunk.len()).await?;
        let logits = self.engine.model().forward(chunk, &mut self.cache, Logits::Last)?;
        self.history.extend_from_slice(chunk);
        Ok(logits)
    }

    /// Feeds `token` and the tokens the grammar forced after it (`forced`, already taken by
    /// `sampler`) in one pass, in a tentative span as a speculative pass is, so that a stop
    /// among them takes the rest back: returns the token chosen after the last. `history` is
    /// every token up to `token`. When log-probabilities are recorded, each forced token's
    /// comes from its own row, as a step would have given it.
    async fn forced_pass(&mut self, token: u32, forced: &[u32], sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
        let mut run = Vec::with_capacity(forced.len() + 1);
        run.push(token);
        run.extend_from_slice(forced);
        let rows = if sampler.records() { Logits::All } else { Logits::Last };
        self.cache.tentative();
        let logits = match self.engine.model().forward(&run, &mut self.cache, rows) {
            Ok(logits) => logits,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        self.history.extend_from_slice(&run);
        let seen = [history, forced].concat();
        if !sampler.records() {
            return pick(logits, sampler, &seen).await;
        }
        let vocab = logits.dims()[1];
        let mut rows = read_f32(logits).await?;
        let (forced_rows, last) = rows.split_at_mut(forced.len() * vocab);
        for (row, &t) in forced_rows.chunks_exact(vocab).zip(forced) {
            sampler.record(row, t);
        }
        sampler.sample(last, &seen)
    }

    /// Records that the batched step ([`crate::generate::batch`]) fed `token` to this session's cache.
    pub(crate) fn fed(&mut self, token: u32) {
        self.history.push(token);
    }

    /// Continues `prompt` (the whole conversation so far, as token ids). Tokens the cache
    /// already holds as a prefix of `prompt` are reused. `on_text` receives each new piece of
    /// text with the token that completed it, and can stop generation.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str, u32) -> Control,
    ) -> Result<Generation> {
        self.generate_with(prompt, options, OnText(on_text)).await
    }

    /// [`Self::generate`] with a [`Listener`], which can also abort it: between prefill
    /// chunks and after every token.
    pub async fn generate_with(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut listener: impl Listener,
    ) -> Result<Generation> {
        let start = Instant::now();
        self.check_prompt(prompt)?;
        options.validate()?;
        if options.speculative.as_ref().is_some_and(|o| o.method == SpeculativeMethod::Draft) && self.draft.is_none() {
            return Err(Error::BadOptions("speculative method \"draft\" needs a draft model (set_draft)".into()));
        }
        if let Some(early_exit) = &options.early_exit {
            early_exit.check_layers(self.engine.config().n_layers)?;
        }
        let self_layers = match &options.speculative {
            Some(o) if o.method == SpeculativeMethod::SelfDraft => o.self_layers(self.engine.config().n_layers)?,
            _ => 0,
        };
        let mut sampler = options.sampler(&self.engine)?;
        let engine = Arc::clone(&self.engine);
        let tokenizer = engine.tokenizer();
        if listener.aborted() {
            return Ok(Generation::aborted(prompt.len(), &self.cache, start));
        }

        let (reused, evicted_before) = self.reuse(prompt);
        let logits = match self.run(&prompt[reused..], &listener).await {
            Ok(Some(logits)) => logits,
            Ok(None) => return Ok(Generation::aborted(prompt.len(), &self.cache, start)),
            Err(e) => {
                // A failed chunk may have written part of its keys; the conversation must be
                // run again.
                self.reset();
                return Err(e);
            }
        };

        let mut out = Emitter::new(prompt, options);
        let mut prefill_ms = 0.0;
        let mut first_token_ms = 0.0;
        let mut speculator = options.speculative.as_ref().map(Speculator::new);
        let (mut drafted, mut accepted, mut forced_tokens) = (0, 0, 0);
        let mut exits = options.early_exit.clone().map(Exits::new);
        // Tokens chosen and not yet taken, in order. After a verification pass every one but
        // the last is already in the cache, in a tentative span whose rejected tail is still
        // there too (`rejected`): both leave the cache before the next pass, or at the end, so
        // that the cache ends as one-token steps would leave it.
        let mut ahead = VecDeque::from([pick(logits, &mut sampler, &out.history).await?]);
        let mut rejected: Option<usize> = None;
        let outcome = async {
            Ok(loop {
                let token = ahead.pop_front().expect("a chosen token");
                if out.generated.is_empty() {
                    first_token_ms = ms_since(start);
                    // The first readback waits for the prefill to finish on the device.
                    prefill_ms = first_token_ms;
                }
                // Asked after every token, so an abort lands within one token even while no
                // text comes out.
                if should_stop(&listener).await {
                    break FinishReason::Aborted;
                }
                if let Some(reason) = out.take(tokenizer, token, &mut listener)? {
                    break reason;
                }
                if !ahead.is_empty() {
                    continue;
                }
                if let Some(n) = rejected.take() {
                    self.cache.rollback(n)?;
                }
                // Guesses only where the cache has room for them without evicting, so that
                // eviction happens when and as one-token steps would make it happen.
                let room = self.cache.remaining().saturating_sub(1).min(options.max_tokens - out.generated.len() - 1);
                let proposal = match speculator.as_mut() {
                    Some(s) if s.method() == SpeculativeMethod::SelfDraft => {
                        let k = s.self_guesses(room);
                        let began = Instant::now();
                        let guesses = self.shallow_guesses(token, k, self_layers).await?;
                        s.self_guessed(guesses, ms_since(began))
                    }
                    Some(s) => s.propose(&out.history, room, self.draft.as_mut()).await?,
                    None => Proposal::none(),
                };
                let draft = &proposal.tokens;
                if draft.is_empty() && exits.is_none() {
                    // What the grammar forces after `token` goes in with it, in one pass.
                    let forced = sampler.forced(room.min(self.prefill_chunk().saturating_sub(1)))?;
                    if !forced.is_empty() {
                        let next = self.forced_pass(token, &forced, &mut sampler, &out.history).await?;
                        forced_tokens += forced.len();
                        rejected = Some(0);
                        ahead.extend(&forced);
                        ahead.push_back(next);
                        continue;
                    }
                }
                // The pass alone: a draft model's guesses are timed on their own.
                let step_start = Instant::now();
                if draft.is_empty() {
                    match self.cache.make_room(1).await {
                        Ok(_) => {}
                        Err(Error::KvCacheFull { .. }) => break FinishReason::ContextFull,
                        Err(e) => return Err(e),
                    }
                    let next = match exits.as_mut() {
                        Some(exits) => self.exit_step(token, exits, &mut sampler, &out.history).await?,
                        None => {
                            let logits = engine.model().forward(&[token], &mut self.cache, Logits::Last)?;
                            self.history.push(token);
                            pick(logits, &mut sampler, &out.history).await?
                        }
                    };
                    if let Some(s) = speculator.as_mut() {
                        s.plain(&proposal, ms_since(step_start), next);
                    }
                    ahead.push_back(next);
                    continue;
                }
                let mut run = Vec::with_capacity(draft.len() + 1);
                run.push(token);
                run.extend_from_slice(draft);
                self.cache.tentative();
                let logits = match engine.model().forward(&run, &mut self.cache, Logits::All) {
                    Ok(logits) => logits,
                    Err(e) => {
                        self.reset();
                        return Err(e);
                    }
                };
                self.history.extend_from_slice(&run);
                let (kept, next) = verify(logits, draft, &mut sampler, &out.history).await?;
                drafted += draft.len();
                accepted += kept;
                if let Some(s) = speculator.as_mut() {
                    s.checked(&proposal, ms_since(step_start), kept, self.draft.as_mut())?;
                }
                rejected = Some(draft.len() - kept);
                self.history.truncate(self.history.len() - (draft.len() - kept));
                ahead.extend(&draft[..kept]);
                ahead.push_back(next);
            })
        }
        .await;
        if let Some(n) = rejected {
            // Chosen tokens not taken leave the cache with the rejected ones.
            let unused = ahead.len();
            self.cache.rollback(n + unused)?;
            self.history.truncate(self.history.len() - unused);
        } else if self.cache.is_tentative() {
            // A verification failed halfway: what the cache holds is unknown.
            self.reset();
        }
        let generated = out.generated.clone();
        let emitted = out.finish(tokenizer, outcome?, &mut listener)?;

        let total_ms = ms_since(start);
        let stats = GenerationStats::measured(Measured {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated.len(),
            prefill_ms,
            decode_ms: total_ms - prefill_ms,
            first_token_ms,
            cache: &self.cache,
            evicted_before,
            draft_tokens: drafted,
            accepted_tokens: accepted,
            mean_layers: exits.as_ref().and_then(Exits::mean_layers).unwrap_or(engine.config().n_layers as f64),
            grammar_ms: sampler.constraint_ms(),
            forced_tokens,
        });
        let logprobs = sampler.take_logprobs(generated.len(), tokenizer);
        Ok(emitted.into_generation(generated, stats, logprobs))
    }
}

/// The next token from `logits: [1, vocab]`: argmax on the device when sampling is greedy (one
/// integer read back), otherwise the logits are read and sampled on the host.
pub(crate) async fn pick(logits: Tensor<2>, sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
    if sampler.on_device() {
        return Ok(read_ids(logits.argmax(1)).await?[0]);
    }
    if sampler.masks_on_device() && is_cube(&logits.device()) {
        // The pass queued so far goes to the GPU first, and the grammar's mask is computed
        // while it runs; then the mask goes up and one id comes down.
        logits.device().flush().map_err(execution_error)?;
        let allowed = sampler.allowed()?;
        let token = read_ids(apply_bitmask(logits, &allowed).argmax(1)).await?[0];
        sampler.take(token)?;
        return Ok(token);
    }
    let mut logits = read_f32(logits).await?;
    sampler.sample(&mut logits, history)
}

/// Checks `draft` against the logits of a verification pass `[1 + draft.len(), vocab]` (row
/// `i` predicts the token after the pass's `i`-th): returns how many draft tokens the sampler
/// keeps and the token chosen after the last kept one. Greedy: argmax on the device, one read
/// of the ids; otherwise each row is sampled in turn with speculative sampling's rule, with
/// `history` (every token up to the pass's first) grown by the kept ones for the penalties.
async fn verify(logits: Tensor<2>, draft: &[u32], sampler: &mut Sampler, history: &[u32]) -> Result<(usize, u32)> {
    if sampler.on_device() {
        let ids = read_ids(logits.argmax(1)).await?;
        let kept = draft.iter().zip(&ids).take_while(|(d, id)| d == id).count();
        return Ok((kept, ids[kept]));
    }
    let vocab = logits.dims()[1];
    let mut rows = read_f32(logits).await?;
    let mut rows = rows.chunks_exact_mut(vocab);
    let mut seen = history.to_vec();
    for (i, (&guess, row)) in draft.iter().zip(&mut rows).enumerate() {
        match sampler.verify(row, &seen, guess) {
            Ok(token) => seen.push(token),
            Err(token) => return Ok((i, token)),
        }
    }
    let last = rows.next().ok_or_else(|| Error::Device("a verification pass returned too few rows".into()))?;
    Ok((draft.len(), sampler.sample(last, &seen)?))
}

//! Speculative decoding's drafting side: guesses of the next tokens that one forward pass then
//! checks together (the session verifies them and rolls the cache back past the first miss).
//!
//! Decode reads every weight once per step whatever the number of tokens in the step, so a
//! pass over the current token and `k` guesses costs little more than a pass over one; each
//! guess the model agrees with is a step saved. Prompt lookup (as in llama.cpp's `lookup`
//! example and Hugging Face's `prompt_lookup_num_tokens`) guesses by copying: when the last
//! few tokens appeared before in the conversation, what followed them then is the draft. It
//! needs no second model and costs nothing when nothing matches (a plain step runs).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::readback::read_ids;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, KvOptions};
use crate::model::Logits;
use crate::names::named_enum;
use crate::text::tokenizer::Tokenizer;

/// Where drafts come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum SpeculativeMethod {
    /// Copy what followed the latest earlier occurrence of the last n-gram.
    #[default]
    PromptLookup,
    /// A second, smaller model with the same vocabulary guesses greedily
    /// ([`crate::Session::set_draft`]).
    Draft,
    /// The model's own first layers guess greedily (self-speculative decoding, from early
    /// exit): no second model and no second cache (the guesses' entries are taken back and
    /// the verification writes every layer's).
    #[serde(rename = "self")]
    SelfDraft,
}

named_enum!(SpeculativeMethod, "speculative method", {
    PromptLookup => "prompt-lookup",
    Draft => "draft",
    SelfDraft => "self",
});

/// Most tokens a draft may hold: with the current token, a verification pass carries up to 16
/// tokens (two of the CPU kernels' 8-token tiles).
pub const MAX_DRAFT_LIMIT: usize = 15;

/// How to speculate. Greedy output is the same token for token as without; sampled output
/// follows the same distribution (speculative sampling's acceptance rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct SpeculativeOptions {
    pub method: SpeculativeMethod,
    /// Most tokens one draft proposes (1..=15). Default 7: with the current token a pass of 8,
    /// one tile of the CPU kernels.
    pub max_draft: usize,
    /// Longest n-gram prompt lookup matches (it tries shorter ones down to 1).
    pub ngram: usize,
    /// `self`: the layers that guess (0: half the model's).
    pub draft_layers: usize,
}

impl Default for SpeculativeOptions {
    fn default() -> Self {
        Self { method: SpeculativeMethod::PromptLookup, max_draft: 7, ngram: 3, draft_layers: 0 }
    }
}

impl SpeculativeOptions {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_DRAFT_LIMIT).contains(&self.max_draft) {
            return Err(Error::BadOptions(format!(
                "max_draft {} must be between 1 and {MAX_DRAFT_LIMIT}",
                self.max_draft
            )));
        }
        if !(1..=16).contains(&self.ngram) {
            return Err(Error::BadOptions(format!("ngram {} must be between 1 and 16", self.ngram)));
        }
        Ok(())
    }

    /// The layers `self` drafts with in a model of `n_layers`: refused unless some are left to
    /// check with.
    pub fn self_layers(&self, n_layers: usize) -> Result<usize> {
        let layers = if self.draft_layers == 0 { n_layers / 2 } else { self.draft_layers };
        if layers == 0 || layers >= n_layers {
            return Err(Error::BadOptions(format!(
                "draft_layers {layers}: self-speculative decoding drafts with 1..{} of the model's {n_layers} layers",
                n_layers - 1
            )));
        }
        Ok(layers)
    }
}

/// A continuation prompt lookup found: what followed the latest earlier occurrence of the
/// last `ngram` tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub tokens: Vec<u32>,
    /// How long the matched n-gram was: longer matches are right more often.
    pub ngram: usize,
}

/// Prompt-lookup drafting whose draft length weighs what a draft is likely to save against
/// what checking it costs on this device.
///
/// A pass over `t` tokens costs `c(t)`: nearly `c(1)` where the weights' reading dominates
/// (a GPU, a large model), growing with `t` where arithmetic does (int4 on two CPU cores: a
/// pass of 8 took 4.6 times one of 1 on SmolLM2). With each draft token right with
/// probability `α`, a draft of `k` yields `1 + α + .. + α^k` tokens in expectation, so the
/// length chosen maximizes that over `c(k + 1)`, and is 0 (a plain step) unless it beats
/// `1 / c(1)`. `c` is measured as passes run (unmeasured lengths get a cautious prior); `α` is
/// counted per matched n-gram length, with decay, from every verification and also from
/// plain steps that skipped a candidate (its first token against the token chosen, which costs
/// nothing), so that a kind of match that stopped paying is tried again once it would.
pub struct PromptLookup {
    max_draft: usize,
    ngram: usize,
    /// Per matched n-gram length (index `n - 1`): decayed counts of right and wrong draft
    /// tokens.
    outcomes: Vec<[f64; 2]>,
    /// Per pass length (index `t - 1`): moving average of its milliseconds, once measured.
    pass_ms: Vec<Option<f64>>,
}

/// Weight of an outcome already counted, at each new one.
const DECAY: f64 = 0.95;
/// A pass's moving average moves this far towards each new measurement.
const PASS_SMOOTHING: f64 = 0.2;
/// Unmeasured pass lengths: each token past the first assumed to cost this much of a
/// one-token pass.
const PRIOR_TOKEN_COST: f64 = 0.25;

impl PromptLookup {
    pub fn new(options: &SpeculativeOptions) -> Self {
        Self {
            max_draft: options.max_draft,
            ngram: options.ngram,
            outcomes: vec![[0.0; 2]; options.ngram],
            pass_ms: vec![None; options.max_draft + 1],
        }
    }

    /// What followed the latest earlier occurrence of the longest suffix of `tokens` (up to
    /// `ngram` long) seen before, at most `max_draft` and `limit` tokens; `None` when no
    /// suffix recurs.
    pub fn candidate(&self, tokens: &[u32], limit: usize) -> Option<Candidate> {
        let k = self.max_draft.min(limit);
        if k == 0 {
            return None;
        }
        let len = tokens.len();
        for n in (1..=self.ngram.min(len.saturating_sub(1))).rev() {
            let pattern = &tokens[len - n..];
            // Latest start first; the occurrence must end before the suffix itself does.
            if let Some(start) = (0..len - n).rev().find(|&i| &tokens[i..i + n] == pattern) {
                let from = start + n;
                return Some(Candidate { tokens: tokens[from..(from + k).min(len)].to_vec(), ngram: n });
            }
        }
        None
    }

    /// The draft worth checking: the first tokens of `candidate`, as many as the cost model
    /// says (none: a plain step pays more).
    pub fn draft<'a>(&self, candidate: &'a Candidate) -> &'a [u32] {
        &candidate.tokens[..self.length(candidate.ngram, candidate.tokens.len(), 0.0)]
    }

    /// The draft length, up to `most`, that yields the most tokens a millisecond for guesses
    /// of kind `ngram` when making each guess costs `guess_ms` (a draft model's step; nothing
    /// for a lookup). 0: a plain step pays more.
    pub fn length(&self, ngram: usize, most: usize, guess_ms: f64) -> usize {
        let alpha = self.acceptance(ngram);
        let cost = |t: usize| self.pass_cost(t) + guess_ms * (t - 1) as f64;
        let (mut best, mut best_rate) = (0, 1.0 / cost(1));
        let mut expected = 1.0;
        let mut term = 1.0;
        for k in 1..=most.min(self.max_draft) {
            term *= alpha;
            expected += term;
            let rate = expected / cost(k + 1);
            if rate > best_rate {
                (best, best_rate) = (k, rate);
            }
        }
        best
    }

    /// The estimated probability that a draft token from an `ngram`-long match is right: the
    /// decayed counts with one right and one wrong added (0.5 before anything is known).
    pub fn acceptance(&self, ngram: usize) -> f64 {
        let [right, wrong] = self.outcomes[ngram - 1];
        (right + 1.0) / (right + wrong + 2.0)
    }

    /// A pass of `t` tokens relative to nothing in particular: measured milliseconds where
    /// known, else the one-token pass (or 1) times the prior.
    fn pass_cost(&self, t: usize) -> f64 {
        let prior = |t: usize| 1.0 + PRIOR_TOKEN_COST * (t - 1) as f64;
        self.pass_ms.get(t - 1).copied().flatten().unwrap_or_else(|| {
            // A one-token pass as measured, or as the prior makes it of any pass measured.
            let one = self.pass_ms.iter().enumerate().find_map(|(i, ms)| ms.map(|ms| ms / prior(i + 1)));
            one.unwrap_or(1.0) * prior(t)
        })
    }

    /// Counts a checked draft from an `ngram`-long match of which `accepted` of `drafted`
    /// tokens were right (the first wrong one ends the check: later ones are not counted).
    pub fn observe(&mut self, ngram: usize, drafted: usize, accepted: usize) {
        let counts = &mut self.outcomes[ngram - 1];
        for i in 0..drafted.min(accepted + 1) {
            *counts = counts.map(|c| c * DECAY);
            counts[(i == accepted) as usize] += 1.0;
        }
    }

    /// Records that a pass over `tokens` tokens took `ms`.
    pub fn observe_pass(&mut self, tokens: usize, ms: f64) {
        if let Some(slot) = self.pass_ms.get_mut(tokens - 1) {
            *slot = Some(slot.map_or(ms, |avg| avg + PASS_SMOOTHING * (ms - avg)));
        }
    }
}

/// One generation's speculation: where its drafts come from, how long they should be, and
/// what each step taught the cost model.
pub(crate) struct Speculator {
    method: SpeculativeMethod,
    /// The prompt lookup, and the cost model of every method.
    lookup: PromptLookup,
    /// Steps in a row on which the draft model guessed nothing.
    skipped: usize,
    /// `self`: moving average of one guess's milliseconds, once measured.
    guess_ms: Option<f64>,
}

/// What a step guesses, and the kind of guess for the cost model.
pub(crate) struct Proposal {
    /// The draft to check; empty: a plain step.
    pub tokens: Vec<u32>,
    /// The matched n-gram length of a lookup (1 for a draft model).
    kind: usize,
    /// A lookup's first candidate token when the cost model drafted nothing: a plain step
    /// shows for free whether it was right.
    skipped_guess: Option<u32>,
}

/// A draft model's steps without a guess after which it guesses once, so that acceptance is
/// learned again once guessing would pay.
const PROBE_EVERY: usize = 16;

impl Proposal {
    /// A plain step.
    pub fn none() -> Self {
        Self { tokens: Vec::new(), kind: 1, skipped_guess: None }
    }
}

impl Speculator {
    pub fn new(options: &SpeculativeOptions) -> Self {
        Self { method: options.method, lookup: PromptLookup::new(options), skipped: 0, guess_ms: None }
    }

    pub fn method(&self) -> SpeculativeMethod {
        self.method
    }

    /// How many guesses a guessing drafter (a draft model, the model's first layers) makes
    /// for the next step, at most `room`: as the cost model says, and one after
    /// [`PROBE_EVERY`] steps without, so that acceptance is learned again.
    fn guesses(&mut self, room: usize, guess_ms: f64) -> usize {
        let mut k = self.lookup.length(1, room, guess_ms);
        self.skipped = if k == 0 { self.skipped + 1 } else { 0 };
        if self.skipped >= PROBE_EVERY && room > 0 {
            (k, self.skipped) = (1, 0);
        }
        k
    }

    /// `self`: how many guesses the model's first layers make for the next step.
    pub fn self_guesses(&mut self, room: usize) -> usize {
        self.guesses(room, self.guess_ms.unwrap_or(0.0))
    }

    /// `self`: the first layers guessed `tokens` in `ms`.
    pub fn self_guessed(&mut self, tokens: Vec<u32>, ms: f64) -> Proposal {
        if !tokens.is_empty() {
            let ms = ms / tokens.len() as f64;
            self.guess_ms = Some(self.guess_ms.map_or(ms, |avg| avg + PASS_SMOOTHING * (ms - avg)));
        }
        Proposal { tokens, kind: 1, skipped_guess: None }
    }

    /// The draft for the step after `history`, at most `room` tokens.
    pub async fn propose(&mut self, history: &[u32], room: usize, draft: Option<&mut DraftModel>) -> Result<Proposal> {
        let l = &self.lookup;
        match self.method {
            SpeculativeMethod::PromptLookup => Ok(match l.candidate(history, room) {
                None => Proposal::none(),
                Some(c) => {
                    let tokens = l.draft(&c).to_vec();
                    let skipped_guess = tokens.is_empty().then_some(c.tokens[0]);
                    Proposal { tokens, kind: c.ngram, skipped_guess }
                }
            }),
            SpeculativeMethod::Draft => {
                let Some(model) = draft else {
                    return Err(Error::BadOptions(
                        "speculative method \"draft\" needs a draft model (set_draft)".into(),
                    ));
                };
                let k = self.guesses(room, model.guess_ms());
                let tokens = if k > 0 { model.guess(history, k).await? } else { Vec::new() };
                Ok(Proposal { tokens, kind: 1, skipped_guess: None })
            }
            SpeculativeMethod::SelfDraft => {
                Err(Error::BadOptions("speculative method \"self\" guesses inside the session".into()))
            }
        }
    }

    /// A plain step (no draft) took `ms` and chose `next`.
    pub fn plain(&mut self, proposal: &Proposal, ms: f64, next: u32) {
        self.lookup.observe_pass(1, ms);
        if let Some(guess) = proposal.skipped_guess {
            self.lookup.observe(proposal.kind, 1, (guess == next) as usize);
        }
    }

    /// The pass checking `proposal` took `ms` and kept its first `kept` guesses; a draft
    /// model takes back the rest.
    pub fn checked(&mut self, proposal: &Proposal, ms: f64, kept: usize, draft: Option<&mut DraftModel>) -> Result<()> {
        let guessed = proposal.tokens.len();
        self.lookup.observe_pass(guessed + 1, ms);
        self.lookup.observe(proposal.kind, guessed, kept);
        match (self.method, draft) {
            (SpeculativeMethod::Draft, Some(model)) => model.settle(guessed, kept),
            _ => Ok(()),
        }
    }
}

/// A second model that drafts greedily for a session ([`crate::Session::set_draft`]): its own
/// KV cache follows the conversation, catching up on what it missed in one pass before it
/// guesses, and takes back what the main model rejected.
pub struct DraftModel {
    engine: Arc<Engine>,
    cache: KvCache,
    /// What `cache` holds, in order.
    history: Vec<u32>,
    /// Moving average of one guess's milliseconds, once measured.
    guess_ms: Option<f64>,
}

/// Refuses a draft (of `vocab` embedding rows and `tokenizer`) whose vocabulary is not
/// `main`'s token for token: its guesses would be other tokens' ids.
pub(crate) fn check_vocabulary(vocab: usize, tokenizer: &Tokenizer, main: &Engine) -> Result<()> {
    let other = main.tokenizer();
    let same = vocab == main.config().vocab
        && tokenizer.vocab_size() == other.vocab_size()
        && (0..tokenizer.vocab_size() as u32).all(|id| tokenizer.token_text(id) == other.token_text(id));
    if !same {
        return Err(Error::BadOptions(format!(
            "the draft model's vocabulary ({vocab} tokens) differs from the model's ({} tokens): a draft must share it token for token",
            main.config().vocab
        )));
    }
    Ok(())
}

impl DraftModel {
    /// A draft for conversations of `main`: refused unless its vocabulary is `main`'s, token
    /// for token. Its cache has `capacity` slots and evicts as `sinks-window` does.
    pub fn new(engine: Arc<Engine>, main: &Engine, capacity: usize, sinks: usize) -> Result<Self> {
        check_vocabulary(engine.config().vocab, engine.tokenizer(), main)?;
        let capacity = capacity.min(engine.config().context_length);
        let kv = KvOptions { capacity: Some(capacity), sinks: sinks.min(capacity / 4), ..KvOptions::default() };
        let cache = KvCache::new(engine.config(), &kv, engine.device())?;
        Ok(Self { engine, cache, history: Vec::new(), guess_ms: None })
    }

    /// Milliseconds one guess has taken on average (0 before any).
    pub fn guess_ms(&self) -> f64 {
        self.guess_ms.unwrap_or(0.0)
    }

    /// Up to `k` greedy guesses of what follows `tokens` (the conversation so far, ending with
    /// the token the main model will run next). Fewer when its cache lacks room.
    pub async fn guess(&mut self, tokens: &[u32], k: usize) -> Result<Vec<u32>> {
        let start = web_time::Instant::now();
        if self.cache.is_tentative() {
            // A guess failed halfway: what the cache holds is unknown.
            self.cache.clear();
            self.history.clear();
        }
        // What the cache holds must be a prefix of the conversation; else start over.
        let common = self.history.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        if common < self.history.len() {
            if self.cache.evicted() == 0 && self.cache.can_truncate(common) {
                self.cache.truncate(common);
                self.history.truncate(common);
            } else {
                self.cache.clear();
                self.history.clear();
            }
        }
        // Catch up on all but the last token, in passes as a prefill runs.
        let behind = tokens.len() - 1;
        while self.history.len() < behind {
            let n = (behind - self.history.len()).min(self.cache.max_append()).min(crate::model::passes::PREFILL_CHUNK);
            let chunk = &tokens[self.history.len()..self.history.len() + n];
            self.cache.make_room(n).await?;
            self.engine.model().forward(chunk, &mut self.cache, Logits::Last)?;
            self.history.extend_from_slice(chunk);
        }
        let k = k.min(self.cache.max_append().saturating_sub(1));
        if k == 0 {
            return Ok(Vec::new());
        }
        self.cache.make_room(k).await?;
        self.cache.tentative();
        let mut guesses = Vec::with_capacity(k);
        let mut last = tokens[tokens.len() - 1];
        for _ in 0..k {
            let logits = self.engine.model().forward(&[last], &mut self.cache, Logits::Last)?;
            last = read_ids(logits.argmax(1)).await?[0];
            guesses.push(last);
        }
        self.history.push(tokens[tokens.len() - 1]);
        self.history.extend_from_slice(&guesses[..k - 1]);
        let ms = start.elapsed().as_secs_f64() * 1e3 / k as f64;
        self.guess_ms = Some(self.guess_ms.map_or(ms, |avg| avg + PASS_SMOOTHING * (ms - avg)));
        Ok(guesses)
    }

    /// After a check of the last guesses: the main model kept the first `kept`, so the cache
    /// keeps the conversation's token and those (the last guess was never fed to it).
    pub fn settle(&mut self, guessed: usize, kept: usize) -> Result<()> {
        let fed = guessed;
        let keep = (kept + 1).min(fed);
        self.cache.rollback(fed - keep)?;
        self.history.truncate(self.history.len() - (fed - keep));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(max_draft: usize, ngram: usize) -> PromptLookup {
        PromptLookup::new(&SpeculativeOptions { max_draft, ngram, ..SpeculativeOptions::default() })
    }

    fn continuation(l: &PromptLookup, tokens: &[u32], limit: usize) -> Vec<u32> {
        l.candidate(tokens, limit).map_or_else(Vec::new, |c| c.tokens)
    }

    #[test]
    fn the_latest_longest_match_is_continued() {
        let l = lookup(4, 3);
        // "1 2 3" occurs at 0 and at 5; the latest earlier one (5) is continued by 9, 1, 2.
        assert_eq!(l.candidate(&[1, 2, 3, 4, 5, 1, 2, 3, 9, 1, 2, 3], 8).unwrap().tokens, vec![9, 1, 2, 3]);
        // A 3-gram that never recurs falls back to the 2-gram "7 3", then to "3".
        assert_eq!(l.candidate(&[7, 3, 8, 6, 7, 3], 8), Some(Candidate { tokens: vec![8, 6, 7, 3], ngram: 2 }));
        assert_eq!(l.candidate(&[3, 8, 6, 7, 3], 8), Some(Candidate { tokens: vec![8, 6, 7, 3], ngram: 1 }));
        // The continuation stops at the end of the tokens, and at the limit.
        assert_eq!(continuation(&l, &[5, 6, 5], 8), vec![6, 5]);
        assert_eq!(continuation(&l, &[1, 2, 3, 4, 5, 1, 2, 3], 2), vec![4, 5]);
    }

    #[test]
    fn nothing_recurring_drafts_nothing() {
        let l = lookup(4, 3);
        assert!(l.candidate(&[1, 2, 3, 4], 8).is_none());
        assert!(l.candidate(&[1], 8).is_none());
        assert!(l.candidate(&[], 8).is_none());
        assert!(l.candidate(&[1, 2, 1], 0).is_none());
    }

    /// The draft length weighs acceptance against measured pass costs: long drafts where a
    /// pass costs the same whatever its length, short ones where each token adds, none once
    /// drafts keep failing, and drafting again when plain steps show the matches are right.
    #[test]
    fn the_draft_length_follows_acceptance_and_cost() {
        let candidate = Candidate { tokens: vec![1, 2, 3, 4, 5, 6, 7], ngram: 3 };
        let mut gpu = lookup(7, 3);
        let mut cpu = lookup(7, 3);
        for t in 1..=8 {
            gpu.observe_pass(t, 10.0);
            // SmolLM2 int4 on two Zen 3 cores: 10, 12, 20, 23, 32, 35, 40, 46 ms.
            cpu.observe_pass(t, [10.0, 12.0, 20.0, 23.0, 32.0, 35.0, 40.0, 46.0][t - 1]);
        }
        for l in [&mut gpu, &mut cpu] {
            l.observe(3, 7, 7);
            l.observe(3, 7, 7);
        }
        assert!(gpu.acceptance(3) > 0.9);
        assert_eq!(gpu.draft(&candidate).len(), 7);
        // α ≈ 0.94: 1 + α over 12 ms beats 1 over 10 and every longer draft over its cost.
        let k = cpu.draft(&candidate).len();
        assert!((1..=3).contains(&k), "{k}");
        // Misses make drafting stop.
        for _ in 0..30 {
            cpu.observe(3, 1, 0);
        }
        assert!(cpu.acceptance(3) < 0.2);
        assert!(cpu.draft(&candidate).is_empty());
        // Plain steps whose token the candidate had right bring it back.
        for _ in 0..30 {
            cpu.observe(3, 1, 1);
        }
        assert!(!cpu.draft(&candidate).is_empty());
        // Each n-gram length keeps its own counts.
        assert_eq!(cpu.acceptance(1), 0.5);
    }

    #[test]
    fn options_out_of_range_are_refused() {
        for o in [
            SpeculativeOptions { max_draft: 0, ..SpeculativeOptions::default() },
            SpeculativeOptions { max_draft: 16, ..SpeculativeOptions::default() },
            SpeculativeOptions { ngram: 0, ..SpeculativeOptions::default() },
        ] {
            assert!(matches!(o.validate(), Err(Error::BadOptions(_))));
        }
        assert!("drafts".parse::<SpeculativeMethod>().is_err());
        assert_eq!("draft".parse::<SpeculativeMethod>().unwrap(), SpeculativeMethod::Draft);
        assert_eq!("prompt-lookup".parse::<SpeculativeMethod>().unwrap(), SpeculativeMethod::PromptLookup);
    }
}

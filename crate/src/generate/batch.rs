//! Several conversations of one engine decoded together, joining and leaving as they come
//! (continuous batching). Each [`Batch::step`] runs one prefill pass of a conversation still
//! prefilling (so a long prompt holds the others up for a pass at a time, never for its whole
//! length) and then the decoding conversations' tokens as one batched forward pass
//! ([`Decoder::forward_batch`](crate::model::Decoder::forward_batch)): the weights are read
//! once for all of them, each attends to its own KV cache and samples with its own sampler.
//! A conversation gets the tokens it would get alone (the kernels give a row the same bits in
//! any batch; the tests check it), and one that finishes (a stop, its `max_tokens`, a full
//! cache, its listener's abort, an error of its own) leaves the batch without disturbing the
//! others. The browser engine keeps one batch running while requests come and go;
//! [`generate_batch`] runs a fixed set to the end.

use std::borrow::BorrowMut;
use std::sync::Arc;

use web_time::Instant;

use crate::backend::readback::{read_f32, read_ids};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::generate::emit::Emitter;
use crate::generate::sampler::Sampler;
use crate::generate::session::{Session, pick};
use crate::generate::types::{
    FinishReason, GenerateOptions, Generation, GenerationStats, Listener, Measured, ms_since,
};

/// One conversation's part in [`generate_batch`].
pub struct BatchRequest<'a> {
    pub session: &'a mut Session,
    /// The whole conversation so far; what the session's cache holds of it is reused.
    pub prompt: &'a [u32],
    pub options: &'a GenerateOptions,
    /// Hears this conversation's text, and can abort it alone.
    pub listener: &'a mut dyn Listener,
}

/// A conversation that left the batch, as [`Batch::step`] hands it back.
pub struct Finished<S> {
    /// What [`Batch::join`] returned for it.
    pub id: u64,
    pub session: S,
    /// Its generation, or the error that ended it. An error of its own (its prefill, its
    /// callback) fails it alone; one of the batched pass fails every conversation in that pass,
    /// and their sessions are reset (the pass may have written part of their keys).
    pub result: Result<Generation>,
}

/// A conversation while it is in the batch.
struct Entry<'a, S> {
    id: u64,
    session: S,
    prompt: Vec<u32>,
    listener: Box<dyn Listener + 'a>,
    sampler: Sampler,
    out: Emitter,
    /// Chosen, not yet taken.
    next: u32,
    /// Prompt tokens the cache holds: the prefill is done when it is the prompt's length.
    fed: usize,
    /// Why it ends, once it does.
    end: Option<Result<FinishReason>>,
    reused: usize,
    evicted_before: usize,
    joined: Instant,
    prefill_ms: f64,
    first_token_ms: f64,
    /// When its last token was taken.
    end_ms: f64,
}

impl<S: BorrowMut<Session>> Entry<'_, S> {
    fn prefilling(&self) -> bool {
        self.fed < self.prompt.len()
    }

    fn session(&mut self) -> &mut Session {
        self.session.borrow_mut()
    }

    /// One prefill pass; the first token is chosen after the last one.
    async fn prefill(&mut self) -> Result<()> {
        let began = ms_since(self.joined);
        let end = (self.fed + self.session().prefill_chunk()).min(self.prompt.len());
        let chunk = self.prompt[self.fed..end].to_vec();
        let logits = match self.session().prefill_pass(&chunk).await {
            Ok(logits) => logits,
            Err(e) => {
                // Part of the pass's keys may be written: its conversation runs again.
                self.session().reset();
                return Err(e);
            }
        };
        self.fed = end;
        if !self.prefilling() {
            self.next = pick(logits, &mut self.sampler, &self.out.history).await?;
            self.first_token_ms = ms_since(self.joined);
            self.end_ms = self.first_token_ms;
        }
        self.prefill_ms += ms_since(self.joined) - began;
        Ok(())
    }

    /// Takes its chosen token and makes room for the next: whether it goes on.
    async fn take(&mut self, engine: &Engine) -> bool {
        self.end_ms = ms_since(self.joined);
        if self.listener.aborted() {
            self.end = Some(Ok(FinishReason::Aborted));
            return false;
        }
        match self.out.take(engine.tokenizer(), self.next, &mut *self.listener) {
            Ok(None) => {}
            Ok(Some(reason)) => self.end = Some(Ok(reason)),
            Err(e) => self.end = Some(Err(e)),
        }
        if self.end.is_some() {
            return false;
        }
        match self.session().cache_mut().make_room(1).await {
            Ok(_) => true,
            Err(Error::KvCacheFull { .. }) => {
                self.end = Some(Ok(FinishReason::ContextFull));
                false
            }
            Err(e) => {
                self.end = Some(Err(e));
                false
            }
        }
    }

    /// Its generation, once it has ended.
    fn finish(mut self, engine: &Engine) -> Finished<S> {
        let result = match self.end.take().unwrap_or(Ok(FinishReason::Aborted)) {
            Err(e) => Err(e),
            Ok(finish_reason) => {
                let tokens = self.out.generated.clone();
                let listener = &mut *self.listener;
                self.out.finish(engine.tokenizer(), finish_reason, listener).map(|emitted| {
                    let decode_ms = (self.end_ms - self.first_token_ms).max(0.0);
                    let cache = self.session.borrow().kv_cache();
                    let stats = GenerationStats::measured(Measured {
                        prompt_tokens: self.prompt.len(),
                        reused_tokens: self.reused,
                        generated_tokens: tokens.len(),
                        prefill_ms: self.prefill_ms,
                        decode_ms,
                        first_token_ms: self.first_token_ms,
                        cache,
                        evicted_before: self.evicted_before,
                        draft_tokens: 0,
                        accepted_tokens: 0,
                        mean_layers: engine.config().n_layers as f64,
                        grammar_ms: self.sampler.constraint_ms(),
                        forced_tokens: 0,
                    });
                    let logprobs = self.sampler.take_logprobs(tokens.len(), engine.tokenizer());
                    emitted.into_generation(tokens, stats, logprobs)
                })
            }
        };
        Finished { id: self.id, session: self.session, result }
    }
}

/// Conversations of one engine decoded together (see the module). `S` is how the batch holds
/// a session: borrowed (`&mut Session`) or owned (anything that lends one).
pub struct Batch<'a, S> {
    engine: Arc<Engine>,
    entries: Vec<Entry<'a, S>>,
    next_id: u64,
}

impl<'a, S: BorrowMut<Session>> Batch<'a, S> {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine, entries: Vec::new(), next_id: 0 }
    }

    /// Conversations in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `session` may join with `prompt` and `options`.
    fn check(&self, session: &Session, prompt: &[u32], options: &GenerateOptions) -> Result<()> {
        if !Arc::ptr_eq(session.engine(), &self.engine) {
            return Err(Error::BadOptions("conversations decoded together must share one engine".into()));
        }
        if options.speculative.is_some() || options.early_exit.is_some() {
            return Err(Error::BadOptions(
                "speculative decoding and early exit are not combined with batched decoding".into(),
            ));
        }
        session.check_prompt(prompt)?;
        options.validate()
    }

    /// Adds a conversation: `prompt` is the whole conversation so far (what `session`'s cache
    /// holds of it is reused); it is prefilled a pass per step from the next step on. Returns
    /// its id, or the session back with the reason it cannot join.
    pub fn join(
        &mut self,
        mut session: S,
        prompt: Vec<u32>,
        options: &GenerateOptions,
        listener: Box<dyn Listener + 'a>,
    ) -> std::result::Result<u64, (S, Error)> {
        let sampler = match self.check(session.borrow(), &prompt, options).and_then(|_| options.sampler(&self.engine)) {
            Ok(sampler) => sampler,
            Err(e) => return Err((session, e)),
        };
        let (reused, evicted_before) = session.borrow_mut().reuse(&prompt);
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            out: Emitter::new(&prompt, options),
            session,
            prompt,
            listener,
            sampler,
            next: 0,
            fed: reused,
            end: None,
            reused,
            evicted_before,
            joined: Instant::now(),
            prefill_ms: 0.0,
            first_token_ms: 0.0,
            end_ms: 0.0,
        });
        Ok(id)
    }

    /// One step: each conversation's listener may pause first (a browser yields to its event
    /// loop there, so that requests can join and aborts arrive); then one prefill pass and one
    /// batched decode step. Returns the conversations that ended, in the order they joined.
    pub async fn step(&mut self) -> Vec<Finished<S>> {
        for e in &self.entries {
            if let Some(pause) = e.listener.pause() {
                pause.await;
            }
        }
        if let Some(e) = self.entries.iter_mut().find(|e| e.end.is_none() && e.prefilling()) {
            if e.listener.aborted() {
                e.end = Some(Ok(FinishReason::Aborted));
            } else if let Err(err) = e.prefill().await {
                e.end = Some(Err(err));
            }
        }

        // Each decoding conversation takes its chosen token; those that go on run the next.
        let mut step = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.end.is_none() && !e.prefilling() && e.take(&self.engine).await {
                step.push(i);
            }
        }
        if !step.is_empty()
            && let Err(err) = self.decode(&step).await
        {
            for &i in &step {
                let e = &mut self.entries[i];
                e.session().reset();
                e.end = Some(Err(err.clone()));
            }
        }

        let (ended, going): (Vec<_>, Vec<_>) = self.entries.drain(..).partition(|e| e.end.is_some());
        self.entries = going;
        ended.into_iter().map(|e| e.finish(&self.engine)).collect()
    }

    /// The batched pass of the conversations `step` (indices into the entries), each fed the
    /// token it took; chooses each one's next.
    async fn decode(&mut self, step: &[usize]) -> Result<()> {
        let tokens: Vec<u32> = step.iter().map(|&i| self.entries[i].next).collect();
        let mut caches: Vec<_> = self
            .entries
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| step.contains(i))
            .map(|(_, e)| e.session.borrow_mut().cache_mut())
            .collect();
        let logits = self.engine.model().forward_batch(&tokens, &mut caches)?;
        drop(caches);
        for (&i, &token) in step.iter().zip(&tokens) {
            self.entries[i].session().fed(token);
        }
        // Greedy rows are chosen on the device; a batch with a sampled one reads all rows.
        if step.iter().all(|&i| self.entries[i].sampler.on_device()) {
            let ids = read_ids(logits.argmax(1)).await?;
            for (&i, id) in step.iter().zip(ids) {
                self.entries[i].next = id;
            }
        } else {
            let vocab = logits.dims()[1];
            let rows = read_f32(logits).await?;
            for (&i, row) in step.iter().zip(rows.chunks_exact(vocab)) {
                let e = &mut self.entries[i];
                e.next = e.sampler.sample(&mut row.to_vec(), &e.out.history)?;
            }
        }
        Ok(())
    }
}

/// Generates for every request together, from start to end (see the module). The sessions
/// must share one engine; speculative decoding and early exit are refused here (a batch
/// already fills the pass, and each shapes its steps for one conversation). Returns one generation per request, in order, or the first error.
pub async fn generate_batch(requests: &mut [BatchRequest<'_>]) -> Result<Vec<Generation>> {
    let Some(first) = requests.first() else { return Ok(Vec::new()) };
    let n = requests.len();
    let mut batch = Batch::new(Arc::clone(first.session.engine()));
    // Every request is checked before any runs.
    for r in requests.iter() {
        batch.check(r.session, r.prompt, r.options)?;
    }
    for r in requests.iter_mut() {
        batch.join(&mut *r.session, r.prompt.to_vec(), r.options, Box::new(&mut *r.listener)).map_err(|(_, e)| e)?;
    }
    let mut generations: Vec<Option<Generation>> = (0..n).map(|_| None).collect();
    while !batch.is_empty() {
        for finished in batch.step().await {
            generations[finished.id as usize] = Some(finished.result?);
        }
    }
    generations
        .into_iter()
        .map(|g| g.ok_or_else(|| Error::Device("a conversation left the batch unfinished".into())))
        .collect()
}

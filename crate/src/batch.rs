//! Several conversations of one engine decoded together: between decode steps one prefill
//! pass of a conversation still prefilling runs (so a long prompt holds the others up for a
//! pass at a time, never for its whole length), and every step runs the decoding
//! conversations' tokens as one batched forward pass
//! ([`Decoder::forward_batch`](crate::model::Decoder::forward_batch)): the weights are read
//! once for all of them, each attends to its own KV cache and samples with its own sampler.
//! A conversation gets the tokens it would get alone (the kernels give a row the same bits in
//! any batch; the tests check it), and one that finishes (a stop, its `max_tokens`, a full
//! cache, its listener's abort) leaves the batch without disturbing the others.

use std::sync::Arc;

use web_time::Instant;

use crate::emit::Emitter;
use crate::error::{Error, Result};
use crate::readback::{read_f32, read_ids};
use crate::sampler::Sampler;
use crate::session::{
    FinishReason, GenerateOptions, Generation, GenerationStats, Listener, Session, ms_since, per_second, pick,
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

/// A conversation while the batch runs.
struct Live<'a> {
    sampler: Sampler,
    out: Emitter<'a>,
    /// Chosen, not yet taken.
    next: u32,
    /// Prompt tokens the cache holds: the prefill is done when it is the prompt's length.
    fed: usize,
    finish: Option<FinishReason>,
    reused: usize,
    evicted_before: usize,
    prefill_ms: f64,
    first_token_ms: f64,
    /// When its last token was taken.
    end_ms: f64,
}

/// Generates for every request together (see the module). The sessions must share one
/// engine; speculative decoding is refused here (a batch already fills the pass). Returns one
/// generation per request, in order.
pub async fn generate_batch(requests: &mut [BatchRequest<'_>]) -> Result<Vec<Generation>> {
    let start = Instant::now();
    let Some(first) = requests.first() else { return Ok(Vec::new()) };
    let engine = Arc::clone(first.session.engine());
    for r in requests.iter() {
        if !Arc::ptr_eq(r.session.engine(), &engine) {
            return Err(Error::BadOptions("conversations decoded together must share one engine".into()));
        }
        if r.options.speculative.is_some() {
            return Err(Error::BadOptions("speculative decoding is not combined with batched decoding".into()));
        }
        r.session.check_prompt(r.prompt)?;
        r.options.validate()?;
    }
    let tokenizer = engine.tokenizer();

    let mut live = Vec::with_capacity(requests.len());
    for r in requests.iter_mut() {
        let (reused, evicted_before) = r.session.reuse(r.prompt);
        live.push(Live {
            sampler: Sampler::new(r.options.sampler.clone())?,
            out: Emitter::new(r.prompt, r.options),
            next: 0,
            fed: reused,
            finish: None,
            reused,
            evicted_before,
            prefill_ms: 0.0,
            first_token_ms: 0.0,
            end_ms: 0.0,
        });
    }

    loop {
        // One prefill pass of the first conversation still prefilling, between decode steps,
        // so that a long prompt never holds up the others for more than a pass.
        if let Some(i) = (0..live.len()).find(|&i| live[i].finish.is_none() && live[i].fed < requests[i].prompt.len()) {
            let (r, l) = (&mut requests[i], &mut live[i]);
            let began = ms_since(start);
            if r.listener.aborted() {
                l.finish = Some(FinishReason::Aborted);
            } else {
                let end = (l.fed + r.session.prefill_chunk()).min(r.prompt.len());
                let logits = match r.session.prefill_pass(&r.prompt[l.fed..end]).await {
                    Ok(logits) => logits,
                    Err(e) => {
                        // Part of the pass's keys may be written: its conversation runs again.
                        r.session.reset();
                        return Err(e);
                    }
                };
                l.fed = end;
                if end == r.prompt.len() {
                    l.next = pick(logits, &mut l.sampler, &l.out.history).await?;
                    l.first_token_ms = ms_since(start);
                    l.end_ms = l.first_token_ms;
                }
            }
            l.prefill_ms += ms_since(start) - began;
        }

        // Each decoding conversation takes its chosen token; those that go on make room for
        // the next.
        let mut step = Vec::new();
        for (i, (r, l)) in requests.iter_mut().zip(live.iter_mut()).enumerate() {
            if l.finish.is_some() || l.fed < r.prompt.len() {
                continue;
            }
            l.end_ms = ms_since(start);
            if r.listener.aborted() {
                l.finish = Some(FinishReason::Aborted);
                continue;
            }
            if let Some(reason) = l.out.take(tokenizer, l.next, r.listener)? {
                l.finish = Some(reason);
                continue;
            }
            match r.session.cache_mut().make_room(1).await {
                Ok(_) => step.push(i),
                Err(Error::KvCacheFull { .. }) => l.finish = Some(FinishReason::ContextFull),
                Err(e) => return Err(e),
            }
        }
        if step.is_empty() {
            if live.iter().zip(requests.iter()).all(|(l, r)| l.finish.is_some() || l.fed >= r.prompt.len()) {
                break;
            }
            continue;
        }
        let tokens: Vec<u32> = step.iter().map(|&i| live[i].next).collect();
        let mut caches: Vec<_> = requests
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| step.contains(i))
            .map(|(_, r)| r.session.cache_mut())
            .collect();
        let logits = engine.model().forward_batch(&tokens, &mut caches)?;
        drop(caches);
        for (&i, &token) in step.iter().zip(&tokens) {
            requests[i].session.fed(token);
        }
        // Greedy rows are chosen on the device; a batch with a sampled one reads all rows.
        let greedy = step.iter().all(|&i| live[i].sampler.options().is_greedy());
        if greedy {
            let ids = read_ids(logits.argmax(1)).await?;
            for (&i, id) in step.iter().zip(ids) {
                live[i].next = id;
            }
        } else {
            let vocab = logits.dims()[1];
            let rows = read_f32(logits).await?;
            for (&i, row) in step.iter().zip(rows.chunks_exact(vocab)) {
                let l = &mut live[i];
                l.next = l.sampler.sample(&mut row.to_vec(), &l.out.history);
            }
        }
    }
    let mut generations = Vec::with_capacity(requests.len());
    for (r, l) in requests.iter_mut().zip(live) {
        let finish_reason = l.finish.unwrap_or(FinishReason::Aborted);
        let tokens = l.out.generated.clone();
        let text = l.out.finish(tokenizer, finish_reason, r.listener)?;
        let decode_ms = (l.end_ms - l.first_token_ms).max(0.0);
        let cache = r.session.kv_cache();
        let stats = GenerationStats {
            prompt_tokens: r.prompt.len(),
            reused_tokens: l.reused,
            generated_tokens: tokens.len(),
            prefill_ms: l.prefill_ms,
            decode_ms,
            time_to_first_token_ms: l.first_token_ms,
            prefill_tokens_per_s: per_second(r.prompt.len() - l.reused, l.prefill_ms),
            decode_tokens_per_s: per_second(tokens.len().saturating_sub(1), decode_ms),
            kv_len: cache.len(),
            kv_capacity: cache.capacity(),
            evicted_tokens: cache.evicted() - l.evicted_before,
            ..GenerationStats::default()
        };
        generations.push(Generation { tokens, text, finish_reason, stats, pruned: None });
    }
    Ok(generations)
}

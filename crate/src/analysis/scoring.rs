//! Perplexity of a text under a model, token by token through a session's KV cache.

use serde::Serialize;

use crate::backend::readback::{read_ids, token_logprobs};
use crate::error::{Error, Result};
use crate::generate::session::Session;
use crate::model::Logits;
use crate::model::passes::EVAL_CHUNK;

/// The result of [`perplexity`].
#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    /// Tokens predicted (all but the first).
    pub tokens: usize,
    pub perplexity: f64,
    /// The most likely next token at every position, for comparing two models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top1: Vec<u32>,
}

/// `exp(mean(-log p(token[i + 1] | token[..=i])))` over `tokens`. Runs in chunks while they fit
/// the cache, then one token at a time, evicting as the cache's policy says, so that every
/// prediction sees exactly what the policy kept. With `keep_top1` the argmax at every position
/// is returned too. The session is left reset, also when scoring fails part-way.
pub async fn perplexity(session: &mut Session, tokens: &[u32], keep_top1: bool) -> Result<Perplexity> {
    if tokens.len() < 2 {
        return Err(Error::InvalidPrompt("perplexity needs at least two tokens".into()));
    }
    session.reset();
    let result = score(session, tokens, keep_top1).await;
    session.reset();
    result
}

async fn score(session: &mut Session, tokens: &[u32], keep_top1: bool) -> Result<Perplexity> {
    let engine = std::sync::Arc::clone(session.engine());
    let model = engine.model();
    let mut nll = 0.0f64;
    let mut top1 = Vec::new();
    let inputs = &tokens[..tokens.len() - 1];
    let mut at = 0;
    while at < inputs.len() {
        let cache = session.cache_mut();
        let mut n = EVAL_CHUNK.min(cache.remaining()).min(inputs.len() - at);
        if n == 0 {
            cache.make_room(1).await?;
            n = 1;
        }
        let logits = model.forward(&inputs[at..at + n], session.cache_mut(), Logits::All)?;
        if keep_top1 {
            top1.extend(read_ids(logits.clone().argmax(1)).await?);
        }
        nll -= token_logprobs(logits, &tokens[at + 1..at + n + 1]).await?.iter().map(|&lp| lp as f64).sum::<f64>();
        at += n;
    }
    let n = inputs.len();
    Ok(Perplexity { tokens: n, perplexity: (nll / n as f64).exp(), top1 })
}

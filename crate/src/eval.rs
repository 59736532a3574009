//! Perplexity of a text under a model, token by token through a session's KV cache.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Logits;
use crate::session::{Session, read_f32};

/// Tokens run per forward pass while scoring; the cache keeps the earlier ones.
const CHUNK: usize = 128;

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
/// is returned too.
pub async fn perplexity(session: &mut Session, tokens: &[u32], keep_top1: bool) -> Result<Perplexity> {
    if tokens.len() < 2 {
        return Err(Error::InvalidPrompt("perplexity needs at least two tokens".into()));
    }
    session.reset();
    let engine = std::sync::Arc::clone(session.engine());
    let model = engine.model();
    let mut nll = 0.0f64;
    let mut top1 = Vec::new();
    let inputs = &tokens[..tokens.len() - 1];
    let mut at = 0;
    while at < inputs.len() {
        let cache = session.cache_mut();
        let mut n = CHUNK.min(cache.remaining()).min(inputs.len() - at);
        if n == 0 {
            cache.make_room(1).await?;
            n = 1;
        }
        let logits = model.forward(&inputs[at..at + n], session.cache_mut(), Logits::All)?;
        let vocab = logits.dims()[1];
        let logits = read_f32(logits).await?;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let target = tokens[at + i + 1] as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_sum = row.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln() + max as f64;
            nll += log_sum - row[target] as f64;
            if keep_top1 {
                top1.push(crate::sampler::argmax(row));
            }
        }
        at += n;
    }
    session.reset();
    let n = inputs.len();
    Ok(Perplexity { tokens: n, perplexity: (nll / n as f64).exp(), top1 })
}

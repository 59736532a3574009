//! Log-probabilities of the tokens a reply chose and of the likeliest alternatives, as OpenAI's
//! `logprobs` / `top_logprobs` report them. They are the model's own: the log-softmax of the
//! raw logits, before repetition penalty, logit bias, a grammar's mask or temperature, so that
//! they equal what teacher-forced scoring (`Session::surprisal`) measures for the same tokens.

use serde::{Deserialize, Serialize};

use crate::backend::host;
use crate::text::tokenizer::Tokenizer;

/// Most alternatives a token may report (OpenAI's bound).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One chosen token's log-probability and its likeliest alternatives, likeliest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct TokenLogprob {
    pub token: u32,
    /// The token's text (bytes that are part of a character show as U+FFFD).
    pub text: String,
    /// The token's bytes, whole (OpenAI's `bytes`).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token and its log-probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct TopLogprob {
    pub token: u32,
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// What a reply records: nothing, or each token's log-probability with `top` alternatives.
#[derive(Clone, Debug, Default)]
pub struct LogprobRecorder {
    top: Option<usize>,
    tokens: Vec<Record>,
}

/// A chosen token, its log-probability, and the alternatives with theirs.
type Record = (u32, f32, Vec<(u32, f32)>);

impl LogprobRecorder {
    /// Records when `top` is `Some` (0 records the chosen token alone).
    pub fn new(top: Option<usize>) -> Self {
        Self { top: top.map(|k| k.min(MAX_TOP_LOGPROBS)), tokens: Vec::new() }
    }

    pub fn is_on(&self) -> bool {
        self.top.is_some()
    }

    /// Records `chosen` from the raw `logits` of its step.
    pub fn record(&mut self, logits: &[f32], chosen: u32) {
        let Some(top) = self.top else { return };
        let max = host::max(logits);
        let log_sum = host::exp_sum(logits, max).ln();
        let lp = |id: u32| logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| l - max - log_sum);
        let top = host::top_k(logits, top).into_iter().map(|token| (token, lp(token))).collect();
        self.tokens.push((chosen, lp(chosen), top));
    }

    /// The records of the first `n` tokens (those the reply kept), with their text and bytes,
    /// or `None` when off.
    pub fn finish(self, n: usize, tokenizer: &Tokenizer) -> Option<Vec<TokenLogprob>> {
        self.top?;
        let bytes = |id: u32| tokenizer.token_bytes(id).unwrap_or_default();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let records = self.tokens.into_iter().take(n).map(|(token, logprob, top)| {
            let b = bytes(token);
            let top_logprobs = top
                .into_iter()
                .map(|(token, logprob)| {
                    let b = bytes(token);
                    TopLogprob { token, text: text(&b), bytes: b, logprob }
                })
                .collect();
            TokenLogprob { token, text: text(&b), bytes: b, logprob, top_logprobs }
        });
        Some(records.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_log_softmax_and_the_likeliest() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let mut r = LogprobRecorder::new(Some(2));
        r.record(&logits, 2);
        let z: f32 = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        let (token, logprob, top) = &r.tokens[0];
        assert_eq!(*token, 2);
        assert!((logprob - (2.0 - z)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((top[0].1 - (3.0 - z)).abs() < 1e-6);
        assert!(!LogprobRecorder::new(None).is_on());
    }
}

//! Log-probabilities of the tokens a reply chose and of the likeliest alternatives, as OpenAI's
//! `logprobs` / `top_logprobs` report them. They are the model's own: the log-softmax of the
//! raw logits, before repetition penalty, logit bias, a grammar's mask or temperature, so that
//! they equal what teacher-forced scoring (`Session::surprisal`) measures for the same tokens.

use serde::{Deserialize, Serialize};

use crate::backend::host;

/// Most alternatives a token may report (OpenAI's bound).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One chosen token's log-probability and its likeliest alternatives, likeliest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token and its log-probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct TopLogprob {
    pub token: u32,
    pub logprob: f32,
}

/// What a reply records: nothing, or each token's log-probability with `top` alternatives.
#[derive(Clone, Debug, Default)]
pub struct LogprobRecorder {
    top: Option<usize>,
    tokens: Vec<TokenLogprob>,
}

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
        let top_logprobs =
            host::top_k(logits, top).into_iter().map(|token| TopLogprob { token, logprob: lp(token) }).collect();
        self.tokens.push(TokenLogprob { token: chosen, logprob: lp(chosen), top_logprobs });
    }

    /// The records of the first `n` tokens (those the reply kept), or `None` when off.
    pub fn finish(self, n: usize) -> Option<Vec<TokenLogprob>> {
        self.top?;
        let mut tokens = self.tokens;
        tokens.truncate(n);
        Some(tokens)
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
        let got = r.finish(1).unwrap();
        assert_eq!(got[0].token, 2);
        assert!((got[0].logprob - (2.0 - z)).abs() < 1e-6);
        let top: Vec<u32> = got[0].top_logprobs.iter().map(|t| t.token).collect();
        assert_eq!(top, vec![1, 2]);
        assert!((got[0].top_logprobs[0].logprob - (3.0 - z)).abs() < 1e-6);
        assert!(LogprobRecorder::new(None).finish(3).is_none());
    }
}

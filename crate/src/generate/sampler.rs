//! Logits to a token: logit bias, a grammar's mask, repetition penalty, temperature, top-k,
//! top-p, min-p, seeded draw; and the chosen tokens' log-probabilities when asked.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::generate::logprobs::{LogprobRecorder, TokenLogprob};
use crate::text::grammar::TokenConstraint;
use crate::text::tokenizer::Tokenizer;

/// How to pick the next token. The defaults are greedy decoding.
///
/// Order of application: logit bias and the grammar's mask (masked tokens are -inf), then
/// repetition penalty, then temperature, then top-k, top-p and min-p on the tempered
/// distribution (as Hugging Face's `generate` does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerOptions {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recently seen tokens; 1 is off.
    pub repetition_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Same seed, same prompt, same options: same tokens. `None` draws a seed.
    pub seed: Option<u64>,
    /// Added to a token's logit before anything else, -100..=100 (OpenAI's `logit_bias`):
    /// -100 bans the token, 100 all but forces it.
    pub logit_bias: BTreeMap<u32, f32>,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            logit_bias: BTreeMap::new(),
        }
    }
}

impl SamplerOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::BadOptions(msg));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature {} must be a finite number >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!("repetition_penalty {} must be a finite number > 0", self.repetition_penalty));
        }
        if let Some((id, b)) = self.logit_bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(*b)) {
            return bad(format!("logit_bias of token {id} is {b}: it must be in [-100, 100]"));
        }
        Ok(())
    }

    /// True when the choice is the argmax of the raw logits, so it can be made on the device.
    pub fn is_greedy(&self) -> bool {
        (self.temperature == 0.0 || self.top_k == 1) && self.repetition_penalty == 1.0 && self.logit_bias.is_empty()
    }
}

/// Picks tokens; owns the random state so one generation is reproducible from its seed.
pub struct Sampler {
    options: SamplerOptions,
    rng: ChaCha8Rng,
    /// Scratch: (token, probability) candidates, reused across steps.
    candidates: Vec<(u32, f32)>,
    /// What the reply must match, advanced by every token chosen.
    constraint: Option<TokenConstraint>,
    /// Time spent in the grammar so far.
    constraint_ms: f64,
    /// Scratch: a step's raw logits, kept for the log-probabilities.
    raw: Vec<f32>,
    logprobs: LogprobRecorder,
}

impl Sampler {
    pub fn new(options: SamplerOptions) -> Result<Self> {
        options.validate()?;
        let seed = options.seed.unwrap_or_else(|| {
            let now = web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64
        });
        Ok(Self {
            options,
            rng: ChaCha8Rng::seed_from_u64(seed),
            candidates: Vec::new(),
            constraint: None,
            constraint_ms: 0.0,
            raw: Vec::new(),
            logprobs: LogprobRecorder::default(),
        })
    }

    /// Adds what the reply must match: a compiled grammar, advanced by every token chosen.
    pub fn with_constraint(mut self, constraint: TokenConstraint) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// Records each chosen token's log-probability with `top` alternatives (`None`: nothing).
    pub fn with_logprobs(mut self, top: Option<usize>) -> Self {
        self.logprobs = LogprobRecorder::new(top);
        self
    }

    /// Milliseconds spent in the grammar (masks and advancing it) so far.
    pub fn constraint_ms(&self) -> f64 {
        self.constraint_ms
    }

    /// Whether the choice can be made on the device (an argmax, nothing recorded): greedy
    /// options with no grammar and no log-probabilities.
    pub fn on_device(&self) -> bool {
        self.options.is_greedy() && self.constraint.is_none() && !self.logprobs.is_on()
    }

    /// The log-probabilities of the first `n` tokens chosen, when asked for.
    pub fn take_logprobs(&mut self, n: usize, tokenizer: &Tokenizer) -> Option<Vec<TokenLogprob>> {
        std::mem::take(&mut self.logprobs).finish(n, tokenizer)
    }

    pub fn options(&self) -> &SamplerOptions {
        &self.options
    }

    /// Chooses the next token from `logits: [vocab]`; `history` is every token so far.
    /// The logits are modified in place. Fails only when the grammar does (its step budget
    /// spent, or no token left).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        let recording = self.logprobs.is_on();
        if recording {
            // The raw logits, before bias, mask and penalty change them.
            self.raw.clear();
            self.raw.extend_from_slice(logits);
        }
        self.constrain(logits)?;
        let token = match self.distribution(logits, history) {
            Some(token) => token,
            None => {
                let c = &self.candidates;
                let total: f32 = c.iter().map(|x| x.1).sum();
                let r = uniform(&mut self.rng) * total;
                draw(c, r, None)
            }
        };
        if recording {
            self.logprobs.record(&self.raw, token);
        }
        if let Some(c) = &mut self.constraint {
            let began = web_time::Instant::now();
            c.consume(token)?;
            self.constraint_ms += began.elapsed().as_secs_f64() * 1e3;
        }
        Ok(token)
    }

    /// The tokens the grammar forces next, at most `limit`, taken as chosen (the caller
    /// feeds them to the model in one pass); empty without a grammar.
    pub fn forced(&mut self, limit: usize) -> Result<Vec<u32>> {
        let Some(c) = &mut self.constraint else { return Ok(Vec::new()) };
        let began = web_time::Instant::now();
        let forced = c.forced(limit);
        self.constraint_ms += began.elapsed().as_secs_f64() * 1e3;
        forced
    }

    /// Whether the grammar's mask can be applied on the device and the choice made there
    /// ([`Self::allowed`], then [`Self::take`]): greedy options with a grammar, nothing
    /// recorded, no bias.
    pub fn masks_on_device(&self) -> bool {
        self.options.is_greedy() && self.constraint.is_some() && !self.logprobs.is_on()
    }

    /// The grammar's allowed set for the next token, as a bitmask ([`TokenConstraint::allowed`]).
    pub fn allowed(&mut self) -> Result<Vec<u32>> {
        let Some(c) = &mut self.constraint else {
            return Err(Error::BadOptions("no grammar to mask with".into()));
        };
        let began = web_time::Instant::now();
        let words = c.allowed().map(<[u32]>::to_vec);
        self.constraint_ms += began.elapsed().as_secs_f64() * 1e3;
        words
    }

    /// Takes `token`, chosen on the device under [`Self::allowed`]'s mask: the grammar
    /// advances past it.
    pub fn take(&mut self, token: u32) -> Result<()> {
        let Some(c) = &mut self.constraint else { return Ok(()) };
        let began = web_time::Instant::now();
        let taken = c.consume(token);
        self.constraint_ms += began.elapsed().as_secs_f64() * 1e3;
        taken
    }

    /// Whether [`Self::record`] wants the logits of tokens chosen without sampling.
    pub fn records(&self) -> bool {
        self.logprobs.is_on()
    }

    /// Records the log-probability of `token`, taken without sampling (a forced token), from
    /// the raw `logits` of its step.
    pub fn record(&mut self, logits: &[f32], token: u32) {
        self.logprobs.record(logits, token);
    }

    /// Logit bias, then the grammar's mask.
    fn constrain(&mut self, logits: &mut [f32]) -> Result<()> {
        for (&id, &bias) in &self.options.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        let Some(c) = &mut self.constraint else { return Ok(()) };
        let began = web_time::Instant::now();
        let masked = c.mask(logits);
        self.constraint_ms += began.elapsed().as_secs_f64() * 1e3;
        masked
    }

    /// Speculative sampling (Leviathan et al., arXiv:2211.17192) of a token that a
    /// deterministic draft proposed: `draft` is kept with probability `p(draft)` under this
    /// sampler's distribution, else a token is drawn from that distribution without `draft`
    /// (the residual `max(0, p - q)` normalized, `q` the draft's point mass). Either way the
    /// token returned follows `p`, exactly as [`Self::sample`]'s; `Ok` is the draft kept,
    /// `Err` its replacement. Greedy options keep the draft exactly when it is the argmax.
    pub fn verify(&mut self, logits: &mut [f32], history: &[u32], draft: u32) -> std::result::Result<u32, u32> {
        if let Some(token) = self.distribution(logits, history) {
            return if token == draft { Ok(draft) } else { Err(token) };
        }
        let c = &self.candidates;
        let total: f32 = c.iter().map(|x| x.1).sum();
        let p_draft = c.iter().find(|x| x.0 == draft).map_or(0.0, |x| x.1);
        if uniform(&mut self.rng) * total < p_draft {
            return Ok(draft);
        }
        let rest = total - p_draft;
        if rest <= 0.0 {
            // Only the draft had mass (a rounding edge): it is the distribution.
            return Ok(draft);
        }
        let r = uniform(&mut self.rng) * rest;
        Err(draw(c, r, Some(draft)))
    }

    /// Applies the options to `logits`: the token itself when the choice is deterministic
    /// (greedy), else `None` with the candidates and their unnormalized probabilities in
    /// `self.candidates`, most likely first.
    fn distribution(&mut self, logits: &mut [f32], history: &[u32]) -> Option<u32> {
        let o = &self.options;
        if o.repetition_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(o.repeat_last_n)..];
            let mut seen = recent.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &id in &seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / o.repetition_penalty } else { *l * o.repetition_penalty };
                }
            }
        }
        if o.temperature == 0.0 || o.top_k == 1 {
            return Some(argmax(logits));
        }

        // Softmax of the tempered logits, most likely first.
        let max = crate::backend::host::max(logits);
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) / o.temperature).exp())));
        let by_prob_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if o.top_k > 0 && o.top_k < c.len() {
            c.select_nth_unstable_by(o.top_k - 1, by_prob_desc);
            c.truncate(o.top_k);
        }
        c.sort_unstable_by(by_prob_desc);
        let total: f32 = c.iter().map(|x| x.1).sum();
        for x in c.iter_mut() {
            x.1 /= total;
        }
        if o.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = c.iter().position(|x| {
                cum += x.1;
                cum >= o.top_p
            });
            c.truncate(keep.map_or(c.len(), |k| k + 1));
        }
        if o.min_p > 0.0 {
            let floor = c[0].1 * o.min_p;
            let keep = c.iter().take_while(|x| x.1 >= floor).count();
            c.truncate(keep.max(1));
        }
        None
    }
}

/// The candidate where the running sum of probabilities passes `r`, skipping `except`.
fn draw(candidates: &[(u32, f32)], r: f32, except: Option<u32>) -> u32 {
    let mut cum = 0.0;
    let mut last = 0;
    for &(id, p) in candidates.iter().filter(|x| Some(x.0) != except) {
        cum += p;
        last = id;
        if r < cum {
            return id;
        }
    }
    last
}

/// Index of the largest logit; the first one on ties, as llama.cpp's greedy sampler.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Uniform in [0, 1) from 24 random bits.
fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(temperature: f32) -> SamplerOptions {
        SamplerOptions { temperature, seed: Some(7), ..Default::default() }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(opts(0.0)).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(SamplerOptions { seed: Some(seed), ..opts(1.0) }).unwrap();
            (0..40).map(|_| s.sample(&mut logits.clone(), &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn draws_follow_the_softmax() {
        // logits ln(1), ln(2), ln(3), ln(4): probabilities 0.1, 0.2, 0.3, 0.4.
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(opts(1.0)).unwrap();
        let mut counts = [0usize; 4];
        let n = 40_000;
        for _ in 0..n {
            counts[s.sample(&mut logits.clone(), &[]).unwrap() as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = c as f64 / n as f64;
            assert!((p - (i + 1) as f64 / 10.0).abs() < 0.01, "token {i}: {p}");
        }
    }

    /// A draft kept with probability p(draft), else a draw from p without it: the token that
    /// comes out follows p, for a likely draft, an unlikely one and one top-k cut away.
    #[test]
    fn speculative_verification_keeps_the_distribution() {
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|p| p.ln()).collect();
        for (draft, top_k, want) in
            [(3, 0, [0.1, 0.2, 0.3, 0.4]), (0, 0, [0.1, 0.2, 0.3, 0.4]), (0, 2, [0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0])]
        {
            let mut s = Sampler::new(SamplerOptions { top_k, ..opts(1.0) }).unwrap();
            let mut counts = [0usize; 4];
            let mut kept = 0;
            let n = 40_000;
            for _ in 0..n {
                let token = match s.verify(&mut logits.clone(), &[], draft) {
                    Ok(t) => {
                        kept += 1;
                        t
                    }
                    Err(t) => {
                        assert_ne!(t, draft, "a replacement is never the draft");
                        t
                    }
                };
                counts[token as usize] += 1;
            }
            for (i, &c) in counts.iter().enumerate() {
                let p = c as f64 / n as f64;
                assert!((p - want[i]).abs() < 0.01, "draft {draft}, top_k {top_k}, token {i}: {p} vs {}", want[i]);
            }
            assert!((kept as f64 / n as f64 - want[draft as usize]).abs() < 0.01);
        }
        // Greedy keeps exactly the argmax.
        let mut greedy = Sampler::new(opts(0.0)).unwrap();
        assert_eq!(greedy.verify(&mut logits.clone(), &[], 3), Ok(3));
        assert_eq!(greedy.verify(&mut logits.clone(), &[], 1), Err(3));
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|p| p.ln()).collect();
        let seen = |o: SamplerOptions| {
            let mut s = Sampler::new(o).unwrap();
            let mut seen = [false; 4];
            for _ in 0..2000 {
                seen[s.sample(&mut logits.clone(), &[]).unwrap() as usize] = true;
            }
            seen
        };
        assert_eq!(seen(SamplerOptions { top_k: 2, ..opts(1.0) }), [false, false, true, true]);
        // 0.4 + 0.3 reaches 0.65.
        assert_eq!(seen(SamplerOptions { top_p: 0.65, ..opts(1.0) }), [false, false, true, true]);
        // 0.6 * 0.4 = 0.24: keeps 0.3 and 0.4.
        assert_eq!(seen(SamplerOptions { min_p: 0.6, ..opts(1.0) }), [false, false, true, true]);
    }

    #[test]
    fn repetition_penalty_turns_greedy_away_from_seen_tokens() {
        let mut s = Sampler::new(SamplerOptions { repetition_penalty: 2.0, ..opts(0.0) }).unwrap();
        assert_eq!(s.sample(&mut [1.0, 3.0, 2.0], &[1]).unwrap(), 2);
        let mut logits = [-1.0, -3.0];
        Sampler::new(SamplerOptions { repetition_penalty: 2.0, ..opts(0.0) })
            .unwrap()
            .sample(&mut logits, &[0])
            .unwrap();
        assert_eq!(logits, [-2.0, -3.0]);
    }

    #[test]
    fn bad_options_are_refused() {
        for o in [
            SamplerOptions { temperature: -1.0, ..Default::default() },
            SamplerOptions { temperature: f32::NAN, ..Default::default() },
            SamplerOptions { top_p: 0.0, ..Default::default() },
            SamplerOptions { min_p: 1.5, ..Default::default() },
            SamplerOptions { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(matches!(Sampler::new(o), Err(Error::BadOptions(_))));
        }
    }
}

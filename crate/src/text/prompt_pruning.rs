//! Input pruning: a chat prompt longer than its budget loses the tokens that carry the least
//! information, instead of failing or losing its beginning.
//!
//! Importance is the model's own self-information of each token (its surprisal given what
//! precedes it, as Selective Context and LLMLingua score it), averaged over sentence-sized
//! spans; the least surprising spans go first. The system prompt, the latest user message and
//! everything the template adds (role markers, special tokens) are never dropped. Two cheaper
//! methods are offered to compare against: whole turns, oldest first; and the earliest tokens.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::named_enum;
use crate::text::template::{Message, Rendered};
use crate::text::tokenizer::{ByteRange, Tokenizer};

/// Longest span scored and dropped as one unit, in tokens.
const MAX_SPAN: usize = 32;

/// How a prompt over budget is shortened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum PromptPruneMethod {
    /// Never prune (a prompt over budget streams through the cache's eviction, or is refused).
    None,
    /// Drop the spans with the lowest mean self-information.
    #[default]
    SelfInformation,
    /// Drop whole earlier messages, oldest first.
    OldestTurns,
    /// Drop the earliest droppable tokens.
    Front,
}

named_enum!(PromptPruneMethod, "pruning method", {
    None => "none",
    SelfInformation => "self-information",
    OldestTurns => "oldest-turns",
    Front => "front",
});

/// When and how a chat prompt is pruned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptPruneOptions {
    pub method: PromptPruneMethod,
    /// Most prompt tokens. Default: the KV capacity less the tokens kept for the answer
    /// (`max_tokens`, at most half the capacity).
    pub budget: Option<usize>,
}

impl PromptPruneOptions {
    /// The budget for a cache of `capacity` tokens and an answer of up to `max_tokens`.
    pub fn budget_for(&self, capacity: usize, max_tokens: usize) -> Result<usize> {
        match self.budget {
            Some(0) => Err(Error::BadOptions("the pruning budget must be at least 1 token".into())),
            Some(budget) => Ok(budget.min(capacity)),
            None => Ok(capacity - max_tokens.min(capacity / 2)),
        }
    }
}

/// One run of dropped tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct DroppedSpan {
    /// Index of the message it came from.
    pub message: usize,
    pub tokens: usize,
    pub text: String,
}

/// What pruning did to a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
pub struct PromptPruneReport {
    pub method: PromptPruneMethod,
    pub budget: usize,
    pub original_tokens: usize,
    pub kept_tokens: usize,
    pub pruned_tokens: usize,
    pub dropped: Vec<DroppedSpan>,
    /// The pruned prompt.
    #[serde(skip)]
    pub tokens: Vec<u32>,
}

/// A rendered chat prompt that knows which message each token came from.
#[derive(Clone, Debug)]
pub struct ChatPrompt {
    pub tokens: Vec<u32>,
    text: String,
    /// Byte range of each token in `text`.
    offsets: Vec<ByteRange>,
    /// The message whose content holds each token, where that message may lose tokens.
    droppable: Vec<Option<usize>>,
}

impl ChatPrompt {
    /// `rendered` is `messages` rendered by the chat template (with the span of each content)
    /// and `tokens`/`offsets` its encoding. Only tokens inside the span of a message other than
    /// a system prompt or the latest user message can be dropped; a content without a known
    /// span is kept whole.
    pub fn new(messages: &[Message], rendered: Rendered, tokens: Vec<u32>, offsets: Vec<ByteRange>) -> Self {
        let last_user = messages.iter().rposition(|m| m.role == "user");
        let mut ranges: Vec<(usize, usize, usize)> = messages
            .iter()
            .zip(&rendered.spans)
            .enumerate()
            .filter(|(i, (m, _))| m.role != "system" && Some(*i) != last_user)
            .filter_map(|(i, (_, span))| span.as_ref().map(|s| (i, s.start, s.end)))
            .filter(|&(_, a, b)| a < b)
            .collect();
        ranges.sort_by_key(|&(_, a, _)| a);
        let droppable = offsets
            .iter()
            .map(|&(s, e)| {
                let r = ranges.partition_point(|&(_, _, b)| b <= s);
                let &(m, a, b) = ranges.get(r)?;
                (s < e && a <= s && e <= b).then_some(m)
            })
            .collect();
        Self { tokens, text: rendered.text, offsets, droppable }
    }

    /// Fails when `budget` is smaller than what pruning may never drop: checked before the
    /// (costly) scoring, so that a hopeless budget costs nothing.
    pub fn check_budget(&self, budget: usize) -> Result<()> {
        let protected = self.protected_tokens();
        if protected > budget {
            return Err(Error::BadOptions(format!(
                "the pruning budget of {budget} tokens is smaller than the part of the prompt that is never \
                 dropped ({protected} tokens: system prompt, latest user message and template)"
            )));
        }
        Ok(())
    }

    /// Tokens pruning never drops.
    pub fn protected_tokens(&self) -> usize {
        self.droppable.iter().filter(|d| d.is_none()).count()
    }

    /// Drops tokens by `method` until at most `budget` remain. `surprisal` (one value per
    /// token) is needed by [`PromptPruneMethod::SelfInformation`].
    pub fn prune(
        &self,
        tokenizer: &Tokenizer,
        budget: usize,
        method: PromptPruneMethod,
        surprisal: &[f32],
    ) -> Result<PromptPruneReport> {
        let total = self.tokens.len();
        self.check_budget(budget)?;
        let need = total.saturating_sub(budget);
        let mut drop = vec![false; total];
        let droppable: Vec<usize> = (0..total).filter(|&i| self.droppable[i].is_some()).collect();
        match method {
            PromptPruneMethod::None => {}
            PromptPruneMethod::Front => droppable.iter().take(need).for_each(|&i| drop[i] = true),
            PromptPruneMethod::OldestTurns => {
                // Whole messages: stop only where a new one begins.
                for (dropped, &i) in droppable.iter().enumerate() {
                    if dropped >= need && (i == 0 || self.droppable[i] != self.droppable[i - 1]) {
                        break;
                    }
                    drop[i] = true;
                }
            }
            PromptPruneMethod::SelfInformation => {
                if surprisal.len() != total {
                    return Err(Error::BadOptions(format!(
                        "self-information pruning needs a score per token: {} for {total} tokens",
                        surprisal.len()
                    )));
                }
                let mut spans = self.spans();
                let mean = |s: &Vec<usize>| s.iter().map(|&i| surprisal[i] as f64).sum::<f64>() / s.len() as f64;
                spans.sort_by(|a, b| mean(a).total_cmp(&mean(b)).then(a[0].cmp(&b[0])));
                let mut dropped = 0;
                for span in spans {
                    if dropped >= need {
                        break;
                    }
                    dropped += span.len();
                    span.iter().for_each(|&i| drop[i] = true);
                }
            }
        }

        let mut dropped = Vec::<(usize, Vec<u32>)>::new();
        for i in (0..total).filter(|&i| drop[i]) {
            let message = self.droppable[i].expect("only droppable tokens are dropped");
            match dropped.last_mut() {
                Some((m, ids)) if *m == message && i > 0 && drop[i - 1] => ids.push(self.tokens[i]),
                _ => dropped.push((message, vec![self.tokens[i]])),
            }
        }
        let tokens: Vec<u32> = (0..total).filter(|&i| !drop[i]).map(|i| self.tokens[i]).collect();
        let pruned = total - tokens.len();
        Ok(PromptPruneReport {
            method,
            budget,
            original_tokens: total,
            kept_tokens: tokens.len(),
            pruned_tokens: pruned,
            dropped: dropped
                .into_iter()
                .map(|(message, ids)| {
                    Ok(DroppedSpan { message, tokens: ids.len(), text: tokenizer.decode(&ids, false)? })
                })
                .collect::<Result<_>>()?,
            tokens,
        })
    }

    /// Droppable tokens grouped into spans: a span ends with a sentence (a token holding `.`,
    /// `!`, `?` or a newline), at a message boundary, or at [`MAX_SPAN`] tokens.
    fn spans(&self) -> Vec<Vec<usize>> {
        let mut spans: Vec<Vec<usize>> = Vec::new();
        let mut open = false;
        for i in 0..self.tokens.len() {
            let Some(message) = self.droppable[i] else {
                open = false;
                continue;
            };
            let continues =
                open && matches!(spans.last(), Some(s) if s.len() < MAX_SPAN && self.droppable[s[0]] == Some(message));
            if continues {
                spans.last_mut().expect("open span").push(i);
            } else {
                spans.push(vec![i]);
            }
            let (s, e) = self.offsets[i];
            open = !self.text.get(s..e).unwrap_or("").contains(['.', '!', '?', '\n']);
        }
        spans
    }
}

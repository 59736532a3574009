//! Speculative decoding's drafting side: guesses of the next tokens that one forward pass then
//! checks together (the session verifies them and rolls the cache back past the first miss).
//!
//! Decode reads every weight once per step whatever the number of tokens in the step, so a
//! pass over the current token and `k` guesses costs little more than a pass over one; each
//! guess the model agrees with is a step saved. Prompt lookup (as in llama.cpp's `lookup`
//! example and Hugging Face's `prompt_lookup_num_tokens`) guesses by copying: when the last
//! few tokens appeared before in the conversation, what followed them then is the draft. It
//! needs no second model and costs nothing when nothing matches (a plain step runs).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where drafts come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpeculativeMethod {
    /// Copy what followed the latest earlier occurrence of the last n-gram.
    #[default]
    PromptLookup,
}

impl SpeculativeMethod {
    pub const NAMES: &str = "prompt-lookup";

    pub fn name(self) -> &'static str {
        match self {
            Self::PromptLookup => "prompt-lookup",
        }
    }
}

impl std::str::FromStr for SpeculativeMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prompt-lookup" => Ok(Self::PromptLookup),
            _ => Err(Error::BadOptions(format!("unknown speculative method {s:?}: expected {}", Self::NAMES))),
        }
    }
}

/// Most tokens a draft may hold: with the current token, a verification pass carries up to 16
/// tokens (two of the CPU kernels' 8-token tiles).
pub const MAX_DRAFT_LIMIT: usize = 15;

/// How to speculate. Greedy output is the same token for token as without; sampled output
/// follows the same distribution (speculative sampling's acceptance rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeculativeOptions {
    pub method: SpeculativeMethod,
    /// Most tokens one draft proposes (1..=15). Default 7: with the current token a pass of 8,
    /// one tile of the CPU kernels.
    pub max_draft: usize,
    /// Longest n-gram prompt lookup matches (it tries shorter ones down to 1).
    pub ngram: usize,
}

impl Default for SpeculativeOptions {
    fn default() -> Self {
        Self { method: SpeculativeMethod::PromptLookup, max_draft: 7, ngram: 3 }
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
}

/// Prompt-lookup drafting with a draft length that follows acceptance: it grows by two after a
/// fully accepted draft and shrinks by one after a miss (Hugging Face's assisted-generation
/// schedule), so that a conversation that stops copying wastes little.
pub struct PromptLookup {
    max_draft: usize,
    ngram: usize,
    /// The length the next draft may have, `1..=max_draft`.
    length: usize,
}

impl PromptLookup {
    pub fn new(options: &SpeculativeOptions) -> Self {
        Self { max_draft: options.max_draft, ngram: options.ngram, length: options.max_draft }
    }

    /// The tokens that followed the latest earlier occurrence of the longest suffix of `tokens`
    /// (up to `ngram` long) seen before, at most `limit` and the current draft length; empty
    /// when no suffix recurs.
    pub fn draft(&self, tokens: &[u32], limit: usize) -> Vec<u32> {
        let k = self.length.min(limit);
        if k == 0 {
            return Vec::new();
        }
        let len = tokens.len();
        for n in (1..=self.ngram.min(len.saturating_sub(1))).rev() {
            let pattern = &tokens[len - n..];
            // Latest start first; the occurrence must end before the suffix itself does.
            if let Some(start) = (0..len - n).rev().find(|&i| &tokens[i..i + n] == pattern) {
                let from = start + n;
                return tokens[from..(from + k).min(len)].to_vec();
            }
        }
        Vec::new()
    }

    /// Adapts the draft length to how many of `drafted` tokens the model accepted.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        self.length =
            if accepted == drafted { (self.length + 2).min(self.max_draft) } else { (self.length - 1).max(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(max_draft: usize, ngram: usize) -> PromptLookup {
        PromptLookup::new(&SpeculativeOptions { max_draft, ngram, ..SpeculativeOptions::default() })
    }

    #[test]
    fn the_latest_longest_match_is_continued() {
        let l = lookup(4, 3);
        // "1 2 3" occurs at 0 and at 5; the latest earlier one (5) is continued by 9, 1, 2.
        assert_eq!(l.draft(&[1, 2, 3, 4, 5, 1, 2, 3, 9, 1, 2, 3], 8), vec![9, 1, 2, 3]);
        // A 3-gram that never recurs falls back to the 2-gram "7 3", then to "3".
        assert_eq!(l.draft(&[7, 3, 8, 6, 7, 3], 8), vec![8, 6, 7, 3]);
        assert_eq!(l.draft(&[3, 8, 6, 7, 3], 8), vec![8, 6, 7, 3]);
        // The continuation stops at the end of the tokens, and at the limit.
        assert_eq!(l.draft(&[5, 6, 5], 8), vec![6, 5]);
        assert_eq!(l.draft(&[1, 2, 3, 4, 5, 1, 2, 3], 2), vec![4, 5]);
    }

    #[test]
    fn nothing_recurring_drafts_nothing() {
        let l = lookup(4, 3);
        assert!(l.draft(&[1, 2, 3, 4], 8).is_empty());
        assert!(l.draft(&[1], 8).is_empty());
        assert!(l.draft(&[], 8).is_empty());
        assert!(l.draft(&[1, 2, 1], 0).is_empty());
    }

    #[test]
    fn the_draft_length_follows_acceptance() {
        let mut l = lookup(5, 1);
        let tokens = [1, 2, 3, 4, 5, 6, 7, 1];
        assert_eq!(l.draft(&tokens, 9).len(), 5);
        l.update(5, 2);
        l.update(4, 0);
        assert_eq!(l.draft(&tokens, 9).len(), 3);
        for _ in 0..9 {
            l.update(3, 0);
        }
        assert_eq!(l.draft(&tokens, 9).len(), 1);
        l.update(1, 1);
        assert_eq!(l.draft(&tokens, 9).len(), 3);
        l.update(3, 3);
        l.update(5, 5);
        assert_eq!(l.draft(&tokens, 9).len(), 5);
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
        assert!("draft".parse::<SpeculativeMethod>().is_err());
        assert_eq!("prompt-lookup".parse::<SpeculativeMethod>().unwrap(), SpeculativeMethod::PromptLookup);
    }
}

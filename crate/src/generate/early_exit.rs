//! Early exit (adaptive computation; CALM, arXiv:2207.07061): a decode step looks at its hidden
//! state after chosen layers, through the final norm and the head, and when the model is
//! already sure of the next token there, emits it without running the remaining layers.
//!
//! The skipped layers still get this token's keys and values, computed from the exited hidden
//! state (CALM's "copy the state up"), so that later tokens attend to a complete cache. That
//! costs each skipped layer its key/value projection; what is saved is the rest of the layer
//! (attention, output projection, feed-forward: some 85% of a small model's block). Under the
//! heavy-hitter policy an exited step adds to the tokens' scores only the attention of the
//! layers it ran (the skipped layers' attention was never computed).
//!
//! The confidence is read from the whole head, or, with a shortlist, only from the head's rows
//! of the tokens the last full step found likeliest: the whole head of a small model costs as
//! much as a quarter of its blocks, a look at it at every exit would eat what an exit saves.
//! A shortlist's softmax sees only its own tokens, so it is surer than the whole head's.
//!
//! Models not trained for it (none of the ones we run is) predict poorly from middle layers:
//! `pkg-scripts/bench/adaptive.sh` measures what a threshold costs in agreement and perplexity.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::host;
use crate::error::{Error, Result};
use crate::names::named_enum;

/// How sure the model is at an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum ExitMeasure {
    /// The largest probability.
    #[default]
    MaxProb,
    /// The largest probability less the second largest.
    Margin,
}

named_enum!(ExitMeasure, "exit measure", {
    MaxProb => "max-prob",
    Margin => "margin",
});

/// `early_exit: { layers, threshold, measure, shortlist }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct EarlyExitOptions {
    /// Where a step may exit: after this many layers, ascending, each below the model's count.
    pub layers: Vec<usize>,
    /// A step exits where its confidence is strictly above this (0..=1: a max-prob threshold
    /// of 1 never exits).
    pub threshold: f32,
    pub measure: ExitMeasure,
    /// Rows of the head the confidence is read from: 0, the whole head; otherwise the tokens
    /// the last full step found likeliest, this many of them.
    pub shortlist: usize,
}

impl Default for EarlyExitOptions {
    fn default() -> Self {
        Self { layers: Vec::new(), threshold: 0.9, measure: ExitMeasure::MaxProb, shortlist: 0 }
    }
}

/// Most shortlisted tokens (the rows are gathered and multiplied on their own).
pub const MAX_SHORTLIST: usize = 1024;

impl EarlyExitOptions {
    /// Checked before any work (the layers against the model's count later, when it is known).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadOptions(format!("early_exit: {m}")));
        if self.layers.is_empty() {
            return bad("layers must name at least one exit layer".into());
        }
        if self.layers.windows(2).any(|w| w[0] >= w[1]) || self.layers[0] == 0 {
            return bad(format!("layers must be ascending and at least 1, got {:?}", self.layers));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return bad(format!("threshold must be within 0..=1, got {}", self.threshold));
        }
        if self.shortlist == 1 || self.shortlist > MAX_SHORTLIST {
            return bad(format!("shortlist must be 0 (the whole head) or 2..={MAX_SHORTLIST}, got {}", self.shortlist));
        }
        Ok(())
    }

    /// The exit layers must leave at least one layer to skip.
    pub fn check_layers(&self, n_layers: usize) -> Result<()> {
        match self.layers.last() {
            Some(&last) if last >= n_layers => Err(Error::BadOptions(format!(
                "early_exit: layer {last} leaves nothing to skip in a model of {n_layers} layers"
            ))),
            _ => Ok(()),
        }
    }
}

/// The confidence of `logits` (a distribution's logits, any subset of the vocabulary) under
/// `measure`, from a numerically stable softmax.
pub fn confidence(logits: &[f32], measure: ExitMeasure) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &l in logits {
        if l > first {
            (first, second) = (l, first);
        } else if l > second {
            second = l;
        }
    }
    if !first.is_finite() {
        return 0.0;
    }
    let sum = host::exp_sum(logits, first);
    let top = 1.0 / sum;
    match measure {
        ExitMeasure::MaxProb => top,
        ExitMeasure::Margin => top - (second - first).exp() / sum,
    }
}

/// One generation's early exits: where each decode step ended, and the shortlist.
pub(crate) struct Exits {
    pub options: EarlyExitOptions,
    /// The shortlisted tokens (from the last step that ran every layer) and the head's rows
    /// of them, gathered once for every look until the next such step.
    pub shortlist: Option<(Vec<u32>, Tensor<2>)>,
    layers_run: usize,
    steps: usize,
}

impl Exits {
    pub fn new(options: EarlyExitOptions) -> Self {
        Self { options, shortlist: None, layers_run: 0, steps: 0 }
    }

    /// A decode step ran `layers` layers.
    pub fn record(&mut self, layers: usize) {
        self.layers_run += layers;
        self.steps += 1;
    }

    /// Mean layers run per decode step (`None` before any).
    pub fn mean_layers(&self) -> Option<f64> {
        (self.steps > 0).then(|| self.layers_run as f64 / self.steps as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_the_softmax_max_or_margin() {
        let logits = [2.0f32.ln(), 1.0f32.ln(), 1.0f32.ln()];
        assert!((confidence(&logits, ExitMeasure::MaxProb) - 0.5).abs() < 1e-6);
        assert!((confidence(&logits, ExitMeasure::Margin) - 0.25).abs() < 1e-6);
        assert_eq!(confidence(&[1.0, 1.0], ExitMeasure::Margin), 0.0);
        assert_eq!(confidence(&[f32::NEG_INFINITY; 3], ExitMeasure::MaxProb), 0.0);
        // One certain token: max-prob 1, which a threshold of 1 does not pass.
        assert_eq!(confidence(&[0.0, -1e9], ExitMeasure::MaxProb), 1.0);
    }

    #[test]
    fn options_are_checked() {
        let ok = EarlyExitOptions { layers: vec![2, 4], ..EarlyExitOptions::default() };
        ok.validate().unwrap();
        ok.check_layers(5).unwrap();
        assert!(ok.check_layers(4).is_err());
        for bad in [
            EarlyExitOptions::default(),
            EarlyExitOptions { layers: vec![0], ..ok.clone() },
            EarlyExitOptions { layers: vec![3, 2], ..ok.clone() },
            EarlyExitOptions { threshold: 1.5, ..ok.clone() },
            EarlyExitOptions { threshold: f32::NAN, ..ok.clone() },
            EarlyExitOptions { shortlist: 1, ..ok.clone() },
            EarlyExitOptions { shortlist: MAX_SHORTLIST + 1, ..ok.clone() },
        ] {
            assert!(matches!(bad.validate(), Err(Error::BadOptions(_))), "{bad:?}");
        }
        assert_eq!("margin".parse::<ExitMeasure>().unwrap(), ExitMeasure::Margin);
        assert!("max".parse::<ExitMeasure>().is_err());
    }
}

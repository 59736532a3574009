//! Structured weight pruning: a smaller model from a bigger one, written as a new packed model
//! (`hearth prune-weights`) or built at load ([`crate::engine::Prepared::upload_pruned`]).
//!
//! Three cuts, each chosen on a calibration text in one pass ([`calibrate`]):
//! - whole layers, by ShortGPT's block influence (arXiv:2403.03853): one minus the mean cosine
//!   similarity between a layer's input and output hidden states; a layer that hardly turns
//!   the state is the cheapest to lose;
//! - query heads and FFN channels, by Wanda's activation-weighted magnitude (arXiv:2306.11695)
//!   summed over what the cut removes: a head's or channel's columns of the output (down)
//!   projection, each weight's magnitude times the norm of its input over the calibration
//!   tokens. Every layer loses as many (the config holds one head count and one FFN width),
//!   and every key/value group as many heads, so grouped-query attention keeps its shape.
//!
//! Only structure pays here. Unstructured magnitude pruning (zeroing the smallest weights) saves
//! nothing on these kernels: a zero in a packed int4 block still takes its 4 bits and its
//! multiply-add, and a block of 32 is read and unpacked whole; only removing whole layers, rows
//! and columns makes the model smaller and each step shorter.
//!
//! Dropped layers' matrices are left out and the rest renumbered; a cut head or channel takes
//! its rows out of the query (gate and up) projection, bit for bit, and its columns out of the
//! output (down) projection. Columns that make whole blocks pass through bit for bit (a head
//! of 64 or 256 is whole blocks); FFN channels are cut one by one, so the down projection's
//! kept values are quantized again into blocks of the same kind ([`PackedMatrix::select_cols`]).

use std::collections::BTreeSet;

use burn::prelude::*;
use serde::Deserialize;

use crate::backend::readback::read_f32;
use crate::config::ModelConfig;
use crate::engine::{Counted, Engine, Prepared};
use crate::error::{Error, Result};
use crate::kv_cache::{EvictionPolicy, KvCache, KvOptions};
use crate::load::fused::with_parts;
use crate::load::{HostTensor, ModelParts, TensorSource};
use crate::model::Decoder;
use crate::model::passes::CALIBRATION_TOKENS;
use crate::model::passes::PREFILL_CHUNK;
use crate::quant::BLOCK;
use crate::quant::packed::{PackedMatrix, QuantFormat, Scales};

/// A calibration text for pruning at load when none is given: plain prose on many subjects,
/// written for this crate (so free of anyone's licence), some 600 tokens.
pub const DEFAULT_CALIBRATION: &str = include_str!("calibration.txt");

/// What to cut from a model; every part is optional and 0 by default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightPruneOptions {
    /// Layers to drop: how many (the least influential), or which.
    #[serde(default)]
    pub layers: LayerChoice,
    /// Query heads to drop from every layer: a multiple of the key/value heads, each group
    /// losing as many.
    #[serde(default)]
    pub heads: usize,
    /// The share of every layer's FFN channels to drop, in `[0, 1)`, rounded to whole blocks
    /// of 32 channels.
    #[serde(default)]
    pub ffn: f64,
}

/// Which layers go.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(ts_rs::TS))]
#[serde(untagged)]
pub enum LayerChoice {
    /// The `n` of least block influence on the calibration text.
    Count(usize),
    /// These (any order).
    Ids(Vec<usize>),
}

impl Default for LayerChoice {
    fn default() -> Self {
        Self::Count(0)
    }
}

impl WeightPruneOptions {
    /// Whether choosing the cut needs a calibration pass (explicit layer ids do not).
    pub fn needs_calibration(&self) -> bool {
        self.heads > 0 || self.ffn > 0.0 || matches!(self.layers, LayerChoice::Count(n) if n > 0)
    }

    /// Refuses what cannot be cut from the model `c`, before anything is measured or loaded.
    pub fn check(&self, c: &ModelConfig) -> Result<()> {
        let drop = match &self.layers {
            LayerChoice::Count(n) => *n,
            LayerChoice::Ids(ids) => {
                if let Some(bad) = ids.iter().find(|&&l| l >= c.n_layers) {
                    return Err(Error::BadOptions(format!("layer {bad} to drop: the model has {}", c.n_layers)));
                }
                ids.iter().collect::<BTreeSet<_>>().len()
            }
        };
        if drop >= c.n_layers {
            return Err(Error::BadOptions(format!("dropping {drop} of {} layers leaves none", c.n_layers)));
        }
        if self.heads > 0 && (!self.heads.is_multiple_of(c.n_kv_heads) || self.heads >= c.n_heads) {
            return Err(Error::BadOptions(format!(
                "prune heads {}: a multiple of the {} key/value heads below the {} heads",
                self.heads, c.n_kv_heads, c.n_heads
            )));
        }
        self.ffn_drop(c.d_ff).map(|_| ())
    }

    /// FFN channels dropped from each layer of a model of width `d_ff`.
    fn ffn_drop(&self, d_ff: usize) -> Result<usize> {
        if !(self.ffn.is_finite() && (0.0..1.0).contains(&self.ffn)) {
            return Err(Error::BadOptions(format!("prune ffn {}: a share in [0, 1)", self.ffn)));
        }
        let drop = ((self.ffn * d_ff as f64 / BLOCK as f64).round() as usize) * BLOCK;
        if drop >= d_ff && self.ffn > 0.0 {
            return Err(Error::BadOptions(format!("pruning {} of {d_ff} FFN channels leaves none", self.ffn)));
        }
        Ok(drop)
    }
}

/// What [`calibrate`] measures on a calibration text.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Each layer's block influence: `1 - mean_t cos(x_in(t), x_out(t))` over the tokens
    /// after the first (whose state is an outlier in every model).
    pub influence: Vec<f64>,
    /// Per layer, the L2 norm over every token of each attention-output channel `[q_dim]`.
    pub attention: Vec<Vec<f64>>,
    /// Per layer, the L2 norm over every token of each gated FFN channel `[d_ff]`.
    pub gated: Vec<Vec<f64>>,
    /// Tokens measured.
    pub tokens: usize,
}

/// Runs `tokens` (the calibration text) through `model` in prefill passes through a cache of
/// its own, measuring what [`Calibration`] holds.
pub async fn calibrate(model: &Decoder, tokens: &[u32]) -> Result<Calibration> {
    let c = model.config();
    if tokens.len() < 2 {
        return Err(Error::InvalidPrompt(format!("a calibration text of {} tokens: at least 2 needed", tokens.len())));
    }
    let capacity = tokens.len().min(c.context_length);
    let kv = KvOptions { capacity: Some(capacity), policy: EvictionPolicy::SinksWindow, ..KvOptions::default() };
    let mut cache = KvCache::new(c, &kv, model.device())?;
    let (layers, q, ff) = (c.n_layers, c.q_dim(), c.d_ff);
    let mut similarity = vec![0.0f64; layers];
    let mut squares = vec![0.0f64; layers * (q + ff)];
    let mut counted = 0usize;
    let chunk = cache.slide_chunk().min(PREFILL_CHUNK);
    for (i, piece) in tokens.chunks(chunk).enumerate() {
        cache.slide(piece.len()).await?;
        let probe = model.probe(piece, &mut cache)?;
        let n = piece.len();
        // Block influence leaves out the first token, whose state is an outlier in every
        // model; the activation norms keep it: the channels that carry its massive
        // activations (the attention sink every later token leans on) are quiet on the rest.
        let skip = usize::from(i == 0);
        // Every layer's states in one readback `[(layers + 1) * seq, d_model]`, and every
        // layer's sums of squares per channel in another `[1, layers * (q + ff)]`.
        let states = read_f32(Tensor::cat(probe.states, 0)).await?;
        let sums = probe.attention.into_iter().chain(probe.gated).map(|t| (t.clone() * t).sum_dim(0)).collect();
        for (s, v) in squares.iter_mut().zip(read_f32(Tensor::cat(sums, 1)).await?) {
            *s += v as f64;
        }
        let per_layer = n * c.d_model;
        for t in skip..n {
            let at = |l: usize| &states[l * per_layer + t * c.d_model..l * per_layer + (t + 1) * c.d_model];
            for (l, s) in similarity.iter_mut().enumerate() {
                *s += cosine(at(l), at(l + 1));
            }
        }
        counted += n - skip;
    }
    let tokens = counted + 1;
    let norms = |from: usize, width: usize| -> Vec<Vec<f64>> {
        (0..layers)
            .map(|l| squares[from + l * width..from + (l + 1) * width].iter().map(|s| s.sqrt()).collect())
            .collect()
    };
    Ok(Calibration {
        influence: similarity.into_iter().map(|s| 1.0 - s / counted as f64).collect(),
        attention: norms(0, q),
        gated: norms(layers * q, ff),
        tokens,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() }
}

/// The `n` layers of least influence, ascending by index.
pub fn least_influential(influence: &[f64], n: usize) -> Vec<usize> {
    lowest(influence, n)
}

/// The indices of the `n` lowest `scores` (ties to the lower index), ascending.
fn lowest(scores: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut out = order[..n.min(order.len())].to_vec();
    out.sort_unstable();
    out
}

/// Wanda's scores of the input channels of matrix `name` (`[rows, cols]`): for each column,
/// the norm of its input times the sum of its weights' magnitudes.
fn wanda(source: &dyn TensorSource, name: &str, rows: usize, norms: &[f64]) -> Result<Vec<f64>> {
    let cols = norms.len();
    let w = source.tensor(name)?.expect_shape(&[rows, cols])?;
    let mut magnitude = vec![0.0f64; cols];
    for row in w.data.chunks_exact(cols) {
        for (m, &v) in magnitude.iter_mut().zip(row) {
            *m += v.abs() as f64;
        }
    }
    Ok(magnitude.iter().zip(norms).map(|(m, n)| m * n).collect())
}

/// A chosen cut, by the source model's indices. [`Self::choose`] makes it; one made by hand
/// must keep what the config can state: as many heads and channels in every kept layer, and
/// as many heads from each key/value group.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightCut {
    /// The source's layers kept, ascending, at least one.
    pub layers: Vec<usize>,
    /// Per source layer, the query heads kept, ascending (all of them where none is cut).
    pub heads: Vec<Vec<usize>>,
    /// Per source layer, the FFN channels kept, ascending.
    pub channels: Vec<Vec<usize>>,
}

impl WeightCut {
    /// Chooses what `options` asks of the model `c`, from `calibration` (needed unless only
    /// explicit layers go: [`WeightPruneOptions::needs_calibration`]) and the weights in `source`.
    pub fn choose(
        c: &ModelConfig,
        options: &WeightPruneOptions,
        calibration: Option<&Calibration>,
        source: &dyn TensorSource,
    ) -> Result<Self> {
        options.check(c)?;
        let needed =
            || calibration.ok_or_else(|| Error::BadOptions("choosing what to prune needs a calibration text".into()));
        let dropped = match &options.layers {
            LayerChoice::Count(0) => Vec::new(),
            LayerChoice::Count(n) => least_influential(&needed()?.influence, *n),
            LayerChoice::Ids(ids) => ids.iter().copied().collect::<BTreeSet<_>>().into_iter().collect(),
        };
        let layers: Vec<usize> = (0..c.n_layers).filter(|l| !dropped.contains(l)).collect();
        let (groups, size) = (c.n_kv_heads, c.group_size());
        let ffn_drop = options.ffn_drop(c.d_ff)?;
        let mut heads: Vec<Vec<usize>> = vec![(0..c.n_heads).collect(); c.n_layers];
        let mut channels: Vec<Vec<usize>> = vec![(0..c.d_ff).collect(); c.n_layers];
        for &l in &layers {
            if options.heads > 0 {
                let cal = needed()?;
                let name = format!("blk.{l}.attn_output.weight");
                let columns = wanda(source, &name, c.d_model, &cal.attention[l])?;
                let hd = c.head_dim;
                let score: Vec<f64> = columns.chunks(hd).map(|h| h.iter().sum()).collect();
                // Each key/value group loses as many of its own query heads.
                let per_group = options.heads / groups;
                heads[l] = (0..groups)
                    .flat_map(|g| {
                        let cut = lowest(&score[g * size..(g + 1) * size], per_group);
                        (0..size).filter(move |h| !cut.contains(h)).map(move |h| g * size + h)
                    })
                    .collect();
            }
            if ffn_drop > 0 {
                let cal = needed()?;
                let down = format!("blk.{l}.ffn_down.weight");
                let score = wanda(source, &down, c.d_model, &cal.gated[l])?;
                // Channel by channel, though the down projection's blocks must then be
                // quantized again: cutting whole blocks of 32 instead (bit for bit) measured far
                // worse past 2% on SmolLM2 (README), and requantizing costs little.
                let cut = lowest(&score, ffn_drop);
                channels[l] = (0..c.d_ff).filter(|j| cut.binary_search(j).is_err()).collect();
            }
        }
        Ok(Self { layers, heads, channels })
    }

    /// The source's layers this cut drops.
    pub fn dropped_layers(&self) -> Vec<usize> {
        (0..self.heads.len()).filter(|l| !self.layers.contains(l)).collect()
    }

    /// The pruned model's config: fewer layers (each keeping its kind of attention), heads and
    /// FFN channels.
    pub fn config(&self, c: &ModelConfig) -> ModelConfig {
        let first = self.layers[0];
        let mut out = c.clone();
        out.n_layers = self.layers.len();
        out.n_heads = self.heads[first].len();
        out.d_ff = self.channels[first].len();
        if c.sliding_window.is_some() {
            let global = self.layers.iter().enumerate().filter(|&(_, &l)| c.layer_attention(l).window.is_none());
            out.global_layers = Some(global.map(|(i, _)| i).collect());
        }
        out
    }

    /// `parts` with the pruned config, named for what was cut.
    pub fn parts(&self, mut parts: ModelParts) -> ModelParts {
        parts.name = self.name(&parts.config, &parts.name);
        parts.config = self.config(&parts.config);
        parts
    }

    /// The model `c` named `name`, named for what this cut takes from it.
    pub fn name(&self, c: &ModelConfig, name: &str) -> String {
        let first = self.layers[0];
        let cut: Vec<String> = [
            ("layers", self.layers.len(), c.n_layers),
            ("heads", self.heads[first].len(), c.n_heads),
            ("FFN channels", self.channels[first].len(), c.d_ff),
        ]
        .into_iter()
        .filter(|&(_, kept, all)| kept < all)
        .map(|(what, kept, all)| format!("{kept} of {all} {what}"))
        .collect();
        match cut.is_empty() {
            true => name.to_string(),
            false => format!("{name} ({})", cut.join(", ")),
        }
    }
}

/// What a cut takes out of one matrix (or bias): its kept rows, or its kept columns.
enum Cut {
    Rows(Vec<usize>),
    Cols(Vec<usize>),
}

/// A tensor source as a [`WeightCut`] leaves it: layer `i` is the source's layer `layers[i]`,
/// with the kept heads' and channels' rows and columns. Give it a source whose fused
/// projections are already served apart ([`crate::load::fused::with_parts`]).
pub struct PrunedWeights<'a> {
    source: &'a dyn TensorSource,
    config: ModelConfig,
    pruning: WeightCut,
}

impl<'a> PrunedWeights<'a> {
    /// `source` holds the model `config`.
    pub fn new(source: &'a dyn TensorSource, config: &ModelConfig, pruning: WeightCut) -> Self {
        Self { source, config: config.clone(), pruning }
    }

    /// The source's name of `name` and what is cut from it, or `None` for a tensor the pruned
    /// model does not have.
    fn resolve(&self, name: &str) -> Option<(String, Option<Cut>)> {
        let Some(rest) = name.strip_prefix("blk.") else { return Some((name.to_string(), None)) };
        let (layer, tail) = rest.split_once('.')?;
        let &l = self.pruning.layers.get(layer.parse::<usize>().ok()?)?;
        let c = &self.config;
        let (heads, channels) = (&self.pruning.heads[l], &self.pruning.channels[l]);
        let head_rows = || heads.iter().flat_map(|h| h * c.head_dim..(h + 1) * c.head_dim).collect();
        let cut = match tail {
            "attn_qkv.weight" | "attn_qkv.bias" => return None,
            "attn_q.weight" | "attn_q.bias" if heads.len() < c.n_heads => Some(Cut::Rows(head_rows())),
            "attn_output.weight" if heads.len() < c.n_heads => Some(Cut::Cols(head_rows())),
            "ffn_gate.weight" | "ffn_up.weight" if channels.len() < c.d_ff => Some(Cut::Rows(channels.clone())),
            "ffn_down.weight" if channels.len() < c.d_ff => Some(Cut::Cols(channels.clone())),
            _ => None,
        };
        Some((format!("blk.{l}.{tail}"), cut))
    }

    /// The pruned model's name of the source's `name`, `None` for a dropped layer's.
    fn pruned_name(&self, name: &str) -> Option<String> {
        let Some(rest) = name.strip_prefix("blk.") else { return Some(name.to_string()) };
        let (layer, tail) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        self.pruning.layers.iter().position(|&l| l == layer).map(|i| format!("blk.{i}.{tail}"))
    }

    fn source_name(&self, name: &str) -> Result<(String, Option<Cut>)> {
        self.resolve(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }
}

impl TensorSource for PrunedWeights<'_> {
    fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some_and(|(n, _)| self.source.contains(&n))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let (source_name, cut) = self.source_name(name)?;
        let Some(cut) = cut else { return self.source.tensor(&source_name) };
        // A packed matrix's values as the pruned model holds them (requantized columns too).
        if let Some(p) = self.packed(name)? {
            return Ok(HostTensor { name: name.to_string(), shape: vec![p.rows, p.cols], data: p.dequantize() });
        }
        let t = self.source.tensor(&source_name)?;
        let cols = t.shape.get(1).copied().unwrap_or(1);
        let (shape, data) = match cut {
            Cut::Rows(rows) => {
                let data = rows.iter().flat_map(|&r| t.data[r * cols..(r + 1) * cols].iter().copied()).collect();
                let mut shape = t.shape.clone();
                shape[0] = rows.len();
                (shape, data)
            }
            Cut::Cols(keep) => {
                let data = t.data.chunks_exact(cols).flat_map(|row| keep.iter().map(|&c| row[c])).collect();
                (vec![t.shape[0], keep.len()], data)
            }
        };
        Ok(HostTensor { name: name.to_string(), shape, data })
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let (source_name, cut) = self.source_name(name)?;
        let Some(p) = self.source.packed(&source_name)? else { return Ok(None) };
        Ok(Some(match cut {
            None => p,
            Some(Cut::Rows(rows)) => p.select_rows(&rows),
            Some(Cut::Cols(cols)) => p.select_cols(&cols)?,
        }))
    }

    fn tensor_count(&self) -> usize {
        self.names().len()
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        let Some((source_name, cut)) = self.resolve(name) else { return Ok(None) };
        Ok(self.source.shape(&source_name)?.map(|mut shape| {
            match cut {
                Some(Cut::Rows(rows)) => shape[0] = rows.len(),
                Some(Cut::Cols(cols)) if shape.len() == 2 => shape[1] = cols.len(),
                _ => {}
            }
            shape
        }))
    }

    fn stored_format(&self, name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        self.source.stored_format(&self.source_name(name)?.0)
    }

    fn holds_quantized(&self) -> bool {
        self.source.holds_quantized()
    }

    fn names(&self) -> Vec<String> {
        self.source.names().iter().filter_map(|n| self.pruned_name(n)).collect()
    }
}

impl Prepared<'_> {
    /// [`Self::upload`] with the structured cut `prune` asks for, chosen on `calibration`
    /// (its first [`CALIBRATION_TOKENS`] tokens; [`DEFAULT_CALIBRATION`] when `None`): the
    /// whole model is uploaded first and run over the text (unless only explicit layers go),
    /// then dropped, and the pruned one uploaded in its place, so the device briefly holds
    /// both. `progress` reports the pruned model's tensors. Resolves to the engine and the cut.
    pub async fn upload_pruned(
        self,
        device: &Device,
        prune: &WeightPruneOptions,
        calibration: Option<&str>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Engine, WeightCut)> {
        let (config, weights) = (&self.config, self.weights);
        prune.check(config)?;
        let measured = match prune.needs_calibration() {
            false => None,
            true => {
                let text = calibration.unwrap_or(DEFAULT_CALIBRATION);
                let mut tokens = self.tokenizer.encode(text, false)?;
                tokens.truncate(CALIBRATION_TOKENS);
                let whole = with_parts(self.source.tensors(), config, |t| Decoder::load(config, t, weights, device))?;
                Some(calibrate(&whole, &tokens).await?)
            }
        };
        let (model, pruning) = with_parts(self.source.tensors(), config, |tensors| -> Result<_> {
            let pruning = WeightCut::choose(config, prune, measured.as_ref(), tensors)?;
            let pruned = PrunedWeights::new(tensors, config, pruning.clone());
            let model =
                Decoder::load(&pruning.config(config), &Counted::new(&pruned, progress, device), weights, device)?;
            Ok((model, pruning))
        })?;
        let name = pruning.name(config, &self.name);
        Ok((self.into_engine(model, name), pruning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_scores_go_first() {
        assert_eq!(least_influential(&[0.3, 0.01, 0.2, 0.05], 2), vec![1, 3]);
        assert_eq!(least_influential(&[0.1, 0.1, 0.1], 1), vec![0]);
        assert_eq!(cosine(&[1.0, 0.0], &[2.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
    }

    #[test]
    fn ffn_shares_round_to_whole_blocks_and_bad_ones_are_refused() {
        let share = |ffn| WeightPruneOptions { ffn, ..WeightPruneOptions::default() };
        assert_eq!(share(0.1).ffn_drop(1536).unwrap(), 160);
        assert_eq!(share(0.3).ffn_drop(2048).unwrap(), 608);
        assert_eq!(share(0.0).ffn_drop(64).unwrap(), 0);
        for bad in [1.0, -0.1, f64::NAN, 0.99] {
            assert!(matches!(share(bad).ffn_drop(64), Err(Error::BadOptions(_))), "{bad}");
        }
        assert!(!WeightPruneOptions::default().needs_calibration());
        let ids = WeightPruneOptions { layers: LayerChoice::Ids(vec![3]), ..WeightPruneOptions::default() };
        assert!(!ids.needs_calibration() && WeightPruneOptions { heads: 3, ..ids }.needs_calibration());
        let parsed: WeightPruneOptions = serde_json::from_str(r#"{"layers": [2, 5], "heads": 3, "ffn": 0.2}"#).unwrap();
        assert_eq!(parsed.layers, LayerChoice::Ids(vec![2, 5]));
        let parsed: WeightPruneOptions = serde_json::from_str(r#"{"layers": 2}"#).unwrap();
        assert_eq!(parsed.layers, LayerChoice::Count(2));
    }
}

//! Structured weight pruning: a smaller model from a bigger one, written as a new packed model.
//! Whole layers are dropped, chosen on a calibration text by ShortGPT's block influence
//! (arXiv:2403.03853): one minus the mean cosine similarity between a layer's input and output
//! hidden states. A layer that hardly turns the state is the cheapest to lose.
//!
//! Only structure pays here. Unstructured magnitude pruning (zeroing the smallest weights) saves
//! nothing on these kernels: a zero in a packed int4 block still takes its 4 bits and its
//! multiply-add, and a block of 32 is read and unpacked whole; only removing whole layers (or
//! rows and columns) makes the model smaller and each step shorter.
//!
//! The dropped layers' matrices are left out and the rest renumbered; every kept tensor passes
//! through as stored (packed blocks bit for bit), so nothing is quantized again.

use std::sync::Arc;

use burn::prelude::*;

use crate::config::ModelConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kv_cache::{EvictionPolicy, KvCache, KvOptions};
use crate::load::{HostTensor, ModelParts, TensorSource};
use crate::quant::packed::{PackedMatrix, QuantFormat, Scales};
use crate::readback::read_f32;
use crate::session::PREFILL_CHUNK;

/// ShortGPT's block influence of every layer of `engine` on `tokens` (the calibration text):
/// `1 - mean_t cos(x_in(t), x_out(t))` over the tokens after the first (the first token's state
/// is an outlier in every model). Runs the text in prefill passes through a cache of its own.
pub async fn block_influence(engine: &Arc<Engine>, tokens: &[u32]) -> Result<Vec<f64>> {
    let c = engine.config();
    if tokens.len() < 2 {
        return Err(Error::InvalidPrompt(format!("a calibration text of {} tokens: at least 2 needed", tokens.len())));
    }
    let capacity = tokens.len().min(c.context_length);
    let kv = KvOptions { capacity: Some(capacity), policy: EvictionPolicy::SinksWindow, ..KvOptions::default() };
    let mut cache = KvCache::new(c, &kv, engine.device())?;
    let model = engine.model();
    let mut similarity = vec![0.0f64; c.n_layers];
    let mut counted = 0usize;
    let chunk = cache.slide_chunk().min(PREFILL_CHUNK);
    for (i, piece) in tokens.chunks(chunk).enumerate() {
        cache.slide(piece.len()).await?;
        // Every layer's states in one readback: `[(n_layers + 1) * seq, d_model]`.
        let states = read_f32(Tensor::cat(model.layer_states(piece, &mut cache)?, 0)).await?;
        let per_layer = piece.len() * c.d_model;
        let skip = usize::from(i == 0);
        for t in skip..piece.len() {
            let at = |l: usize| &states[l * per_layer + t * c.d_model..l * per_layer + (t + 1) * c.d_model];
            for (l, s) in similarity.iter_mut().enumerate() {
                *s += cosine(at(l), at(l + 1));
            }
        }
        counted += piece.len() - skip;
    }
    Ok(similarity.into_iter().map(|s| 1.0 - s / counted as f64).collect())
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
    let mut order: Vec<usize> = (0..influence.len()).collect();
    order.sort_by(|&a, &b| influence[a].total_cmp(&influence[b]).then(a.cmp(&b)));
    let mut drop = order[..n.min(order.len())].to_vec();
    drop.sort_unstable();
    drop
}

/// `parts` without the layers `drop` (ascending, distinct): the config's layer count less them.
/// Refused where a layer's index means something beyond its weights (Gemma 3's every sixth
/// layer attends globally, the others through a window: dropping one would move the pattern),
/// and where nothing, or not a layer, would be left.
pub fn parts_without_layers(mut parts: ModelParts, drop: &[usize]) -> Result<ModelParts> {
    check_drop(&parts.config, drop)?;
    let n = parts.config.n_layers;
    parts.config.n_layers = n - drop.len();
    parts.name = format!("{} ({} of {n} layers)", parts.name, parts.config.n_layers);
    Ok(parts)
}

fn check_drop(c: &ModelConfig, drop: &[usize]) -> Result<()> {
    if c.arch.global_every.is_some() && c.sliding_window.is_some() {
        return Err(Error::BadOptions(
            "dropping layers of a model whose layers alternate windowed and global attention by index is not supported"
                .into(),
        ));
    }
    if drop.windows(2).any(|w| w[0] >= w[1]) || drop.iter().any(|&l| l >= c.n_layers) {
        return Err(Error::BadOptions(format!("layers to drop {drop:?}: ascending, distinct, below {}", c.n_layers)));
    }
    if drop.len() >= c.n_layers {
        return Err(Error::BadOptions(format!("dropping {} of {} layers leaves none", drop.len(), c.n_layers)));
    }
    Ok(())
}

/// A tensor source without some layers: layer `i` of the pruned model is layer `kept[i]` of
/// the source; every other tensor is the source's.
pub struct WithoutLayers<'a> {
    source: &'a dyn TensorSource,
    kept: Vec<usize>,
    n_layers: usize,
}

impl<'a> WithoutLayers<'a> {
    pub fn new(source: &'a dyn TensorSource, config: &ModelConfig, drop: &[usize]) -> Result<Self> {
        check_drop(config, drop)?;
        let kept = (0..config.n_layers).filter(|l| !drop.contains(l)).collect();
        Ok(Self { source, kept, n_layers: config.n_layers })
    }

    /// The source's name of `name`, or `None` for a layer the pruned model does not have.
    fn source_name(&self, name: &str) -> Option<String> {
        let Some(rest) = name.strip_prefix("blk.") else { return Some(name.to_string()) };
        let (layer, tail) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        self.kept.get(layer).map(|&l| format!("blk.{l}.{tail}"))
    }

    /// The pruned model's name of the source's `name`, `None` for a dropped layer's.
    fn pruned_name(&self, name: &str) -> Option<String> {
        let Some(rest) = name.strip_prefix("blk.") else { return Some(name.to_string()) };
        let (layer, tail) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok().filter(|&l| l < self.n_layers)?;
        self.kept.iter().position(|&l| l == layer).map(|i| format!("blk.{i}.{tail}"))
    }

    fn name(&self, name: &str) -> Result<String> {
        self.source_name(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }
}

impl TensorSource for WithoutLayers<'_> {
    fn contains(&self, name: &str) -> bool {
        self.source_name(name).is_some_and(|n| self.source.contains(&n))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        self.source.tensor(&self.name(name)?)
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        self.source.packed(&self.name(name)?)
    }

    fn tensor_count(&self) -> usize {
        self.names().len()
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.source_name(name) {
            Some(n) => self.source.shape(&n),
            None => Ok(None),
        }
    }

    fn stored_format(&self, name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        self.source.stored_format(&self.name(name)?)
    }

    fn holds_quantized(&self) -> bool {
        self.source.holds_quantized()
    }

    fn names(&self) -> Vec<String> {
        self.source.names().iter().filter_map(|n| self.pruned_name(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_influential_layers_go_first() {
        assert_eq!(least_influential(&[0.3, 0.01, 0.2, 0.05], 2), vec![1, 3]);
        assert_eq!(least_influential(&[0.1, 0.1, 0.1], 1), vec![0]);
        assert_eq!(cosine(&[1.0, 0.0], &[2.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
    }
}

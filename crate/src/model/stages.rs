//! A decoder loaded a part at a time: the embedding, each block, then the final norm and
//! head. A streamed load reads from the file only the tensors of the part it loads next, so
//! it holds one part's bytes in memory, never the file's.

use burn::prelude::*;

use super::{Block, Decoder, Embedding, load_norm};
use crate::backend::cpu::qgemm::Activations;
use crate::backend::device::Limits;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::load::{TensorSource, WeightFormat};
use crate::quant::packed::QuantFormat;

/// A part of a model that loads on its own, in the order [`Stage::all`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    Embedding,
    Block(usize),
    /// The final norm, and the output head when it is not the embedding.
    Head,
}

impl Stage {
    /// Every stage of a model of `config`, in loading order.
    pub fn all(config: &ModelConfig) -> Vec<Stage> {
        std::iter::once(Stage::Embedding).chain((0..config.n_layers).map(Stage::Block)).chain([Stage::Head]).collect()
    }

    /// The stage that reads the stored tensor `name` (a file's tensors outside every block
    /// but the embedding go with the head).
    pub fn of(name: &str) -> Stage {
        if name.starts_with("token_embd.") {
            return Stage::Embedding;
        }
        let layer = name.strip_prefix("blk.").and_then(|rest| rest.split_once('.')).and_then(|(i, _)| i.parse().ok());
        layer.map_or(Stage::Head, Stage::Block)
    }
}

/// A decoder whose stages are loaded one by one, in order.
pub struct Stages {
    config: ModelConfig,
    format: WeightFormat,
    device: Device,
    embedding: Option<Embedding>,
    blocks: Vec<Block>,
    head: Option<(Tensor<1>, Option<Embedding>)>,
}

impl Stages {
    pub fn new(config: &ModelConfig, format: WeightFormat, device: &Device) -> Self {
        let blocks = Vec::with_capacity(config.n_layers);
        Self { config: config.clone(), format, device: device.clone(), embedding: None, blocks, head: None }
    }

    /// The stage [`Self::load`] takes next; `None` once every one is loaded.
    pub fn next(&self) -> Option<Stage> {
        match (&self.embedding, self.blocks.len(), &self.head) {
            (None, _, _) => Some(Stage::Embedding),
            (Some(_), i, None) if i < self.config.n_layers => Some(Stage::Block(i)),
            (Some(_), _, None) => Some(Stage::Head),
            (Some(_), _, Some(_)) => None,
        }
    }

    /// Loads `stage`, which must be [`Self::next`], reading its tensors from `source`.
    pub fn load(&mut self, stage: Stage, source: &dyn TensorSource) -> Result<()> {
        if self.next() != Some(stage) {
            return Err(Error::BadOptions(format!("stage {stage:?} loaded out of order (next: {:?})", self.next())));
        }
        let (c, format, device) = (&self.config, self.format, &self.device);
        match stage {
            // The embedding falls back to 8 bits (the table the logits are read from when tied
            // deserves more precision than the blocks), an untied head to 4.
            Stage::Embedding => {
                self.embedding = Some(Embedding::load(source, "token_embd.weight", c, QuantFormat::Q8, format, device)?)
            }
            Stage::Block(i) => self.blocks.push(Block::load(source, c, i, format, device)?),
            Stage::Head => {
                let norm = load_norm(source, "output_norm.weight", c.d_model, device)?;
                let output = match source.contains("output.weight") {
                    true => Some(Embedding::load(source, "output.weight", c, QuantFormat::Q4, format, device)?),
                    false => None,
                };
                self.head = Some((norm, output));
            }
        }
        Ok(())
    }

    /// The decoder, once every stage is loaded.
    pub fn finish(self) -> Result<Decoder> {
        let (Some(embedding), Some((norm, output))) = (self.embedding, self.head) else {
            return Err(Error::BadOptions("a model was finished before all its stages were loaded".into()));
        };
        Ok(Decoder {
            limits: Limits::of(&self.device),
            config: self.config,
            embedding,
            blocks: self.blocks,
            norm,
            output,
            format: self.format,
            activations: Activations::F32,
            device: self.device,
        })
    }
}

//! hearth: Llama-family language models on burn, natively (CPU, Vulkan, Metal) and in the
//! browser (WebGPU).
//!
//! The flow runs one way: a model file is parsed by [`load`] into a [`ModelConfig`], a
//! [`Tokenizer`], a chat template and weights on a device ([`Engine`]); a [`Session`] holds one
//! conversation's [`KvCache`], prefills the prompt and decodes tokens chosen by a [`Sampler`].

pub mod batch;
pub mod bench;
pub mod config;
pub mod cpu;
pub mod device;
pub mod early_exit;
mod emit;
pub mod engine;
pub mod error;
pub mod eval;
pub mod kernels;
pub mod kv_cache;
pub mod load;
pub mod model;
pub mod prune;
pub mod quant;
mod readback;
pub mod sampler;
pub mod session;
pub mod speculative;
pub mod template;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;
pub mod weight_pruning;

pub use batch::{Batch, BatchRequest, Finished, generate_batch};
pub use config::ModelConfig;
pub use device::DeviceKind;
pub use early_exit::{EarlyExitOptions, ExitMeasure};
pub use engine::Engine;
pub use error::{Error, Result};
pub use kv_cache::{EvictionPolicy, KvCache, KvOptions};
pub use model::WeightFormat;
pub use prune::{PruneMethod, PruneOptions, PruneReport};
pub use sampler::{Sampler, SamplerOptions};
pub use session::{Control, FinishReason, GenerateOptions, Generation, GenerationStats, Listener, Pause, Session};
pub use speculative::{SpeculativeMethod, SpeculativeOptions};
pub use template::Message;
pub use tokenizer::{TextStream, Tokenizer};

/// Re-exported so callers can name devices without depending on burn themselves.
pub use burn::prelude::Device;

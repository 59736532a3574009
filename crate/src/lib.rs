//! hearth: Llama-family language models on burn, natively (CPU, Vulkan, Metal) and in the
//! browser (WebGPU, or wasm SIMD on the CPU).
//!
//! The flow runs one way:
//!
//! ```text
//! model file ──► load ──► weights on the device (model) ─────────────┐
//!                  └──► Tokenizer + chat template (text)               │
//! messages ──► template ──► prompt pruning ──► ids ──► Session ──► prefill ──► decode ──► Sampler ──► text
//!                                                     (KvCache, position, stats)
//! ```
//!
//! The modules are tiers, each importing only the tiers below it (`pkg-scripts/check-imports.py`
//! checks this, with no circle between files either):
//!
//! | tier | modules | holds |
//! |------|---------|-------|
//! | containers | [`format`](mod@format) | GGUF parsing, bounds-checked, no model knowledge |
//! | data | [`quant`], [`config`], [`text`] | block formats and packing; the validated config; tokenizer, template, text stream, prompt pruning |
//! | loading | [`load`] | tensor sources per container, the tensor table, [`WeightFormat`] |
//! | compute | [`backend`] | device and limits, readback and host math, cubecl kernels, the CPU path |
//! | state | [`kv_cache`] | slots, eviction, rollback |
//! | model | [`model`] | the one decoder: blocks, linear layers, RoPE tables, pre-upload checks |
//! | engine | [`engine`] | a loaded model on a device ([`Engine`]) |
//! | generation | [`generate`] | session, decode loop, batch, sampler, speculation, early exit |
//! | tools | [`analysis`] | scoring, weight pruning, benchmarks |
//! | edges | [`wire`], `web` (wasm32), the `hearth` CLI | what crosses into JavaScript (the npm package's `wire.ts` is generated from it), the wasm-bindgen exports, the CLI |
//!
//! [`Error`] is the one error type, with a stable [`Error::kind`] for the JavaScript side.

pub mod error;
pub mod format;
mod names;

pub mod config;
pub mod quant;
pub mod text;

pub mod load;

pub mod backend;

pub mod kv_cache;

pub mod model;

pub mod engine;

pub mod streamed;

pub mod generate;

pub mod analysis;

pub mod wire;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use backend::cpu::qgemm::Activations;
pub use backend::device::DeviceKind;
pub use config::ModelConfig;
pub use engine::Engine;
pub use error::{Error, Result};
pub use generate::batch::{Batch, BatchRequest, Finished, generate_batch};
pub use generate::early_exit::{EarlyExitOptions, ExitMeasure};
pub use generate::logprobs::{TokenLogprob, TopLogprob};
pub use generate::sampler::{Sampler, SamplerOptions};
pub use generate::session::Session;
pub use generate::speculative::{SpeculativeMethod, SpeculativeOptions};
pub use generate::types::{Control, FinishReason, GenerateOptions, Generation, GenerationStats, Listener, Pause};
pub use kv_cache::{EvictionPolicy, KvCache, KvOptions};
pub use load::WeightFormat;
pub use text::grammar::Grammar;
pub use text::prompt_pruning::{PromptPruneMethod, PromptPruneOptions, PromptPruneReport};
pub use text::template::Message;
pub use text::tokenizer::{TextStream, Tokenizer};
pub use text::tools::{FunctionCall, FunctionDef, Tool, ToolCall, ToolChoice};

/// Re-exported so callers can name devices without depending on burn themselves.
pub use burn::prelude::Device;

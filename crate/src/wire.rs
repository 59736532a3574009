//! What crosses into JavaScript, defined once: the requests the TypeScript package sends (the
//! options of a generation, of weight pruning, of the KV cache) and what it gets back (a
//! generation, its stats, model info, engine stats, error kinds). The browser bindings
//! (`web/`) parse and produce these; `npm/src/wire.ts` is generated from them
//! (`tests/wire_types.rs` fails when it is stale), so the package keeps no hand copy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
#[cfg(not(target_arch = "wasm32"))]
use ts_rs::TS;

use crate::analysis::weight_pruning::LayerChoice;
use crate::backend::cpu::qgemm::Activations;
use crate::error::{Error, Result};
use crate::generate::early_exit::EarlyExitOptions;
use crate::generate::sampler::SamplerOptions;
use crate::generate::speculative::SpeculativeOptions;
use crate::generate::types::GenerateOptions;
use crate::kv_cache::EvictionPolicy;
use crate::text::grammar::Grammar;
use crate::text::prompt_pruning::{PromptPruneMethod, PromptPruneOptions};
use crate::text::tools::{Tool, ToolChoice};

/// Generations an engine serves together at most. Each holds a KV cache of its own, and a
/// batched pass of 4 tokens costs about 1.8 times a pass of one on a 2-core CPU (more gain
/// little there and cost a cache each).
pub const MAX_STREAMS: usize = 4;

/// Options of one generation, flat and snake_case, as the TypeScript layer sends them; every
/// field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(TS), ts(optional_fields))]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// A non-negative integer (JavaScript numbers are exact up to 2^53).
    pub seed: Option<f64>,
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional, as = "Option<Vec<String>>"))]
    pub stop: Vec<String>,
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional, as = "Option<bool>"))]
    pub ignore_eos: bool,
    /// Chat only: most prompt tokens before earlier messages are pruned.
    pub prune_budget: Option<usize>,
    pub prune_method: Option<PromptPruneMethod>,
    /// `{ method, max_draft, ngram, draft_layers }`, each optional.
    pub speculative: Option<SpeculativeOptions>,
    /// `{ layers, threshold, measure, shortlist }`, `layers` required.
    pub early_exit: Option<EarlyExitOptions>,
    /// What the reply must match: `{type: "json_object"}`, `{type: "json_schema", schema}`,
    /// `{type: "lark", grammar}` or `{type: "regex", regex}`.
    pub grammar: Option<Grammar>,
    /// Record each token's log-probability with this many alternatives (0..=20).
    pub logprobs: Option<usize>,
    /// `{ "token id": bias }`, each bias in -100..=100.
    #[cfg_attr(not(target_arch = "wasm32"), ts(as = "Option<std::collections::HashMap<String, f32>>"))]
    pub logit_bias: Option<BTreeMap<String, f32>>,
    /// Functions the reply may call (OpenAI's `{type: "function", function: {name,
    /// description, parameters}}`).
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional, as = "Option<Vec<Tool>>"))]
    pub tools: Vec<Tool>,
    /// `"none" | "auto" | "required" | {type: "function", function: {name}}` (default `auto`).
    pub tool_choice: Option<ToolChoice>,
    /// More than one call in a reply (default true).
    pub parallel_tool_calls: Option<bool>,
}

impl GenerateRequest {
    /// Every key, for the check of unknown keys (serde-wasm-bindgen reads only the fields it
    /// looks for, so `deny_unknown_fields` alone does not catch them there).
    pub const FIELDS: [&'static str; 19] = [
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "seed",
        "stop",
        "ignore_eos",
        "prune_budget",
        "prune_method",
        "speculative",
        "early_exit",
        "grammar",
        "logprobs",
        "logit_bias",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    ];
    pub const SPECULATIVE_FIELDS: [&'static str; 4] = ["method", "max_draft", "ngram", "draft_layers"];
    pub const EARLY_EXIT_FIELDS: [&'static str; 4] = ["layers", "threshold", "measure", "shortlist"];

    /// The logit bias with its keys read as token ids.
    fn logit_bias(&self) -> Result<BTreeMap<u32, f32>> {
        let Some(bias) = &self.logit_bias else { return Ok(BTreeMap::new()) };
        bias.iter()
            .map(|(id, &b)| match id.parse::<u32>() {
                Ok(id) => Ok((id, b)),
                Err(_) => Err(Error::BadOptions(format!("logit_bias key {id:?} is not a token id"))),
            })
            .collect()
    }

    /// The prompt pruning a chat asks for.
    pub fn prune(&self) -> PromptPruneOptions {
        PromptPruneOptions { method: self.prune_method.unwrap_or_default(), budget: self.prune_budget }
    }

    /// The core's options, with the defaults filled in (not yet validated: the session does).
    pub fn to_options(&self) -> Result<GenerateOptions> {
        let d = SamplerOptions::default();
        let seed = match self.seed {
            None => None,
            Some(s) if s >= 0.0 && s.fract() == 0.0 && s <= 9_007_199_254_740_991.0 => Some(s as u64),
            Some(s) => return Err(Error::BadOptions(format!("seed {s} must be a non-negative integer"))),
        };
        Ok(GenerateOptions {
            max_tokens: self.max_tokens.unwrap_or(GenerateOptions::default().max_tokens),
            sampler: SamplerOptions {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_k: self.top_k.unwrap_or(d.top_k),
                top_p: self.top_p.unwrap_or(d.top_p),
                min_p: self.min_p.unwrap_or(d.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
                seed,
                logit_bias: self.logit_bias()?,
                ..d
            },
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            speculative: self.speculative.clone(),
            early_exit: self.early_exit.clone(),
            grammar: self.grammar.clone(),
            logprobs: self.logprobs,
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone().unwrap_or_default(),
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
        })
    }
}

/// A pruned load's options: the cut ([`crate::analysis::weight_pruning::WeightPruneOptions`])
/// and the calibration text.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(TS), ts(optional_fields))]
pub struct PruneWeightsRequest {
    /// A count of the least influential layers, or their ids.
    #[serde(default)]
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional, as = "Option<LayerChoice>"))]
    pub layers: LayerChoice,
    /// Query heads to drop from every layer (a multiple of the key/value heads).
    #[serde(default)]
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional, as = "Option<usize>"))]
    pub heads: usize,
    /// The share of every layer's FFN channels to drop, in `[0, 1)`.
    #[serde(default)]
    #[cfg_attr(not(target_arch = "wasm32"), ts(optional, as = "Option<f64>"))]
    pub ffn: f64,
    /// The text the cut is measured on (a built-in one when missing).
    pub calibration: Option<String>,
}

impl PruneWeightsRequest {
    pub const FIELDS: [&'static str; 4] = ["layers", "heads", "ffn", "calibration"];

    /// The calibration text, if given: not empty, and not past what a prompt may be.
    pub fn calibration(&self) -> Result<Option<&str>> {
        match self.calibration.as_deref() {
            Some("") => Err(Error::BadOptions("the calibration text is empty".into())),
            Some(text) => crate::engine::check_prompt_bytes(text.len()).map(|()| Some(text)),
            None => Ok(None),
        }
    }
}

/// The keys of [`crate::KvOptions`], as a load takes them.
pub const KV_FIELDS: [&str; 5] = ["capacity", "capacity_bytes", "policy", "sinks", "recent"];

/// What a load reports about the model.
#[derive(Debug, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(TS))]
pub struct ModelInfo {
    pub name: String,
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub context_length: usize,
    pub kv_capacity: usize,
    pub kv_policy: EvictionPolicy,
    pub kv_sinks: usize,
    /// One of `WEIGHT_FORMATS`.
    #[cfg_attr(not(target_arch = "wasm32"), ts(type = "WeightFormat"))]
    pub weights: &'static str,
    pub weight_bytes: usize,
    pub has_chat_template: bool,
    #[cfg_attr(not(target_arch = "wasm32"), ts(type = "\"webgpu\" | \"cpu\""))]
    pub device: &'static str,
    /// The CPU kernels' SIMD level in this build (`"simd128"` or `"scalar"`).
    pub cpu_isa: &'static str,
    /// Threads the model computes on: the CPU path's pool (the threaded artifact's workers and
    /// the engine's own thread); 1 on WebGPU.
    pub threads: usize,
    /// How activations meet the weights (`activations` at load, as this build runs it: `"q8"`
    /// only where it has 8-bit kernels, `"f32"` on WebGPU).
    pub activations: Activations,
    /// Generations served together at most (more wait their turn).
    pub max_streams: usize,
}

/// The engine's state, as `stats()` reports it.
#[derive(Debug, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(TS))]
pub struct EngineStats {
    pub loaded: bool,
    pub generating: bool,
    /// Generations running together now.
    pub streams: usize,
    /// Requests waiting for their turn (the batch is full, or work that runs alone runs or
    /// waits before them, or a load is in progress).
    pub queued: usize,
    pub model: Option<String>,
    pub weight_bytes: Option<usize>,
    pub kv_len: Option<usize>,
    pub kv_capacity: Option<usize>,
    pub kv_policy: Option<EvictionPolicy>,
    /// Tokens evicted since the conversation began.
    pub kv_evicted: Option<usize>,
    pub device_memory_in_use_bytes: Option<u64>,
    pub device_memory_reserved_bytes: Option<u64>,
    /// The largest buffer the device binds, which caps the KV cache and every matrix.
    pub max_buffer_bytes: Option<u64>,
    pub device_lost: bool,
    /// Where the model runs.
    #[cfg_attr(not(target_arch = "wasm32"), ts(type = "\"webgpu\" | \"cpu\" | null"))]
    pub device: Option<&'static str>,
    pub cpu_isa: &'static str,
    /// Threads the loaded model computes on (as [`ModelInfo::threads`]).
    pub threads: Option<usize>,
    /// As [`ModelInfo::activations`].
    pub activations: Option<Activations>,
    /// The size wasm memory has grown to (it never shrinks), in bytes.
    pub wasm_memory_bytes: Option<u64>,
    /// Of that, what is allocated now: the model's host-side parts, the cache on the CPU
    /// path, and everything else; the rest is free blocks a next load reuses.
    pub host_allocated_bytes: Option<u64>,
    /// What a load may still allocate (the address space less what is allocated now): the
    /// figure loads are checked against.
    pub host_bytes_left: Option<u64>,
    /// The most host memory allocated at once during the last load that succeeded: the file's
    /// bytes it held (a part of the model at a time when streamed), the weights on the CPU
    /// path, and what converting them took.
    pub load_peak_bytes: Option<u64>,
}

/// What loading a draft model reports.
#[derive(Debug, Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(TS))]
pub struct DraftInfo {
    pub name: String,
    pub vocab: usize,
    pub n_layers: usize,
    pub weight_bytes: usize,
}

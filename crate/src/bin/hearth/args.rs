//! The flags several commands share: the model and device, sampling, the KV cache, prompt
//! pruning, early exit and speculation, each turned into the library's options.

use super::*;

#[derive(Args, Clone)]
pub(super) struct Common {
    /// A .gguf file, or a Hugging Face directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub(super) model: PathBuf,
    /// cpu (burn Flex) or wgpu (Vulkan, Metal, DX12).
    #[arg(long, default_value = "cpu")]
    pub(super) device: String,
    /// KV cache size in tokens.
    #[arg(long)]
    pub(super) kv_capacity: Option<usize>,
    /// What a full KV cache evicts: none, sinks-window or heavy-hitters.
    #[arg(long, default_value = "sinks-window")]
    pub(super) kv_policy: String,
    /// First tokens the cache never evicts.
    #[arg(long, default_value_t = 4)]
    pub(super) sinks: usize,
    /// heavy-hitters: most recent tokens never evicted (default: half of what the sinks leave).
    #[arg(long)]
    pub(super) kv_recent: Option<usize>,
    /// How matrices are kept on the device: int4 (every stored block format kept, floats
    /// quantized to 4 bits), f32, or q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k (float
    /// matrices quantized as ggml's reference quantizers would).
    #[arg(long, default_value = "int4")]
    pub(super) weights: String,
    /// How activations meet packed weights on the CPU: f32 (exact) or q8 (8-bit blocks and
    /// integer dot products, as llama.cpp).
    #[arg(long, default_value = "f32")]
    pub(super) activations: String,
}

impl Common {
    pub(super) fn kv(&self) -> Result<KvOptions> {
        Ok(KvOptions {
            capacity: self.kv_capacity,
            policy: self.kv_policy.parse()?,
            sinks: self.sinks,
            recent: self.kv_recent,
            ..KvOptions::default()
        })
    }
}

#[derive(Args)]
pub(super) struct Prune {
    /// Most prompt tokens before older messages are pruned (default: the KV capacity less
    /// the answer's tokens).
    #[arg(long)]
    pub(super) prune_budget: Option<usize>,
    /// none, self-information, oldest-turns or front.
    #[arg(long, default_value = "self-information")]
    pub(super) prune_method: String,
}

impl Prune {
    pub(super) fn options(&self) -> Result<PromptPruneOptions> {
        Ok(PromptPruneOptions { method: self.prune_method.parse()?, budget: self.prune_budget })
    }
}

#[derive(Args)]
pub(super) struct Sampling {
    #[arg(long, default_value_t = 256)]
    pub(super) max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub(super) temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub(super) top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub(super) top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub(super) min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub(super) repetition_penalty: f32,
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub(super) stop: Vec<String>,
    /// Keep generating past end-of-turn tokens (for measurements).
    #[arg(long)]
    pub(super) ignore_eos: bool,
    #[command(flatten)]
    pub(super) speculation: Speculation,
    #[command(flatten)]
    pub(super) early_exit: EarlyExit,
    #[command(flatten)]
    pub(super) constraint: Constraint,
}

/// What the reply must match, and what it records.
#[derive(Args)]
pub(super) struct Constraint {
    /// The reply is one JSON object.
    #[arg(long, conflicts_with_all = ["json_schema", "grammar", "regex"])]
    pub(super) json_object: bool,
    /// The reply is JSON valid under the JSON Schema in this file.
    #[arg(long, conflicts_with_all = ["grammar", "regex"])]
    pub(super) json_schema: Option<PathBuf>,
    /// The reply matches the Lark grammar (llguidance's syntax) in this file.
    #[arg(long, conflicts_with = "regex")]
    pub(super) grammar: Option<PathBuf>,
    /// The reply matches this regular expression.
    #[arg(long)]
    pub(super) regex: Option<String>,
    /// Record each token's log-probability and this many likeliest alternatives (0..20).
    #[arg(long)]
    pub(super) logprobs: Option<usize>,
    /// Add BIAS (-100..100) to token ID's logit: ID=BIAS (repeatable).
    #[arg(long, value_parser = parse_bias)]
    pub(super) logit_bias: Vec<(u32, f32)>,
    /// Functions the reply may call: a JSON file holding an OpenAI tools array. With a chat
    /// prompt the model sees them; the calls are printed (`tool_calls` with --json).
    #[arg(long)]
    pub(super) tools: Option<PathBuf>,
    /// With --tools: auto (text or calls), none, required (at least one call) or a function's
    /// name (calls of it only).
    #[arg(long, default_value = "auto", requires = "tools")]
    pub(super) tool_choice: String,
}

fn parse_bias(s: &str) -> std::result::Result<(u32, f32), String> {
    let (id, bias) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ID=BIAS"))?;
    let id = id.trim().parse().map_err(|e| format!("token id {id:?}: {e}"))?;
    let bias = bias.trim().parse().map_err(|e| format!("bias {bias:?}: {e}"))?;
    Ok((id, bias))
}

impl Constraint {
    pub(super) fn grammar(&self) -> Result<Option<Grammar>> {
        let text = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| Error::BadOptions(format!("cannot read {}: {e}", path.display())))
        };
        Ok(if self.json_object {
            Some(Grammar::JsonObject)
        } else if let Some(path) = &self.json_schema {
            let schema = serde_json::from_str(&text(path)?)
                .map_err(|e| Error::BadOptions(format!("{} is not JSON: {e}", path.display())))?;
            Some(Grammar::JsonSchema { schema })
        } else if let Some(path) = &self.grammar {
            Some(Grammar::Lark { grammar: text(path)? })
        } else {
            self.regex.as_ref().map(|regex| Grammar::Regex { regex: regex.clone() })
        })
    }

    /// The tools of `--tools`, none without it.
    pub(super) fn tools(&self) -> Result<Vec<Tool>> {
        let Some(path) = &self.tools else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::BadOptions(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::BadOptions(format!("{} is not an OpenAI tools array: {e}", path.display())))
    }
}

#[derive(Args)]
pub(super) struct EarlyExit {
    /// Decode steps may end after these layers (ascending, e.g. 10,20) when the model is sure
    /// enough of the next token there; the skipped layers still get its keys and values.
    #[arg(long, value_delimiter = ',')]
    pub(super) early_exit: Vec<usize>,
    /// With --early-exit: exit where the confidence is strictly above this (0..=1).
    #[arg(long, default_value_t = EarlyExitOptions::default().threshold)]
    pub(super) exit_threshold: f32,
    /// With --early-exit: max-prob (the largest probability) or margin (largest less second).
    #[arg(long, default_value = "max-prob")]
    pub(super) exit_measure: String,
    /// With --early-exit: read the confidence from the head's rows of the last full step's
    /// likeliest N tokens only (0: the whole head).
    #[arg(long, default_value_t = 0)]
    pub(super) exit_shortlist: usize,
}

impl EarlyExit {
    pub(super) fn options(&self) -> Result<Option<EarlyExitOptions>> {
        if self.early_exit.is_empty() {
            return Ok(None);
        }
        let options = EarlyExitOptions {
            layers: self.early_exit.clone(),
            threshold: self.exit_threshold,
            measure: self.exit_measure.parse()?,
            shortlist: self.exit_shortlist,
        };
        options.validate()?;
        Ok(Some(options))
    }
}

#[derive(Args)]
pub(super) struct Speculation {
    /// Draft tokens and check them in one pass: prompt-lookup (copies what followed the last
    /// n-gram earlier in the conversation), draft (a smaller model, --draft-model) or self (the
    /// model's first --draft-layers layers). Same greedy output, same sampling distribution.
    #[arg(long)]
    pub(super) speculative: Option<String>,
    /// Most tokens a draft proposes (1..=15).
    #[arg(long, default_value_t = SpeculativeOptions::default().max_draft)]
    pub(super) max_draft: usize,
    /// prompt-lookup: the longest n-gram matched.
    #[arg(long, default_value_t = SpeculativeOptions::default().ngram)]
    pub(super) ngram: usize,
    /// With --speculative draft: a smaller model with the same vocabulary (loaded on the same
    /// device).
    #[arg(long)]
    pub(super) draft_model: Option<PathBuf>,
    /// How the draft model's matrices are kept (default: as --weights says).
    #[arg(long)]
    pub(super) draft_weights: Option<String>,
    /// With --speculative self: the layers that guess (default: half the model's).
    #[arg(long)]
    pub(super) draft_layers: Option<usize>,
}

impl Speculation {
    /// Loads `--draft-model` into `session`; refused where it is given without `--speculative
    /// draft` or missing with it.
    pub(super) fn attach(&self, common: &Common, session: &mut hearth::Session) -> Result<()> {
        let draft = self.options()?.is_some_and(|o| o.method == hearth::SpeculativeMethod::Draft);
        match (&self.draft_model, draft) {
            (None, false) => Ok(()),
            (None, true) => Err(Error::BadOptions("--speculative draft needs --draft-model".into())),
            (Some(_), false) => Err(Error::BadOptions("--draft-model is for --speculative draft".into())),
            (Some(path), true) => {
                let weights = self.draft_weights.clone().unwrap_or_else(|| common.weights.clone());
                let (engine, _) = load(&Common { model: path.clone(), weights, ..common.clone() })?;
                session.set_draft(Some(engine))
            }
        }
    }

    pub(super) fn options(&self) -> Result<Option<SpeculativeOptions>> {
        let Some(method) = &self.speculative else { return Ok(None) };
        let method: hearth::SpeculativeMethod = method.parse()?;
        if self.draft_layers.is_some() && method != hearth::SpeculativeMethod::SelfDraft {
            return Err(Error::BadOptions("--draft-layers is for --speculative self".into()));
        }
        let options = SpeculativeOptions {
            method,
            max_draft: self.max_draft,
            ngram: self.ngram,
            draft_layers: self.draft_layers.unwrap_or(0),
        };
        options.validate()?;
        Ok(Some(options))
    }
}

impl Sampling {
    pub(super) fn options(&self) -> Result<GenerateOptions> {
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            sampler: SamplerOptions {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                logit_bias: self.constraint.logit_bias.iter().copied().collect(),
                ..Default::default()
            },
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            speculative: self.speculation.options()?,
            early_exit: self.early_exit.options()?,
            grammar: self.constraint.grammar()?,
            logprobs: self.constraint.logprobs,
            tools: self.constraint.tools()?,
            tool_choice: ToolChoice::parse(&self.constraint.tool_choice),
            parallel_tool_calls: true,
        })
    }
}

//! The native command-line tool: generate, chat and bench.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use hearth::analysis::bench::KernelFormat;
use hearth::load::hf::HfFiles;
use hearth::quant::packed::QuantFormat;
use hearth::{
    Control, DeviceKind, EarlyExitOptions, Engine, Error, GenerateOptions, KvOptions, Message, PruneMethod,
    PruneOptions, Result, SamplerOptions, SpeculativeOptions, WeightFormat,
};
use serde_json::json;
use web_time::Instant;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Run Llama, Qwen and Gemma 3 models (GGUF or safetensors) on the CPU or wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt and print the text.
    Generate {
        #[command(flatten)]
        common: Common,
        /// The text to continue.
        #[arg(long, required_unless_present = "prompt_file", conflicts_with = "prompt_file")]
        prompt: Option<String>,
        /// Read the text to continue from a file.
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        #[command(flatten)]
        sampling: Sampling,
        /// Print token ids, text and timings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Talk with the model, one line per turn, using its chat template.
    Chat {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sampling: Sampling,
        /// System prompt; the template's default when absent.
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        prune: Prune,
    },
    /// Question answering over long contexts pruned to a fraction of their length by each
    /// pruning method; prints the exact-match accuracy of greedy answers as JSON.
    PruneBench {
        #[command(flatten)]
        common: Common,
        /// A JSON file of items: `{"notes": [...], "question": "...", "answer": "..."}`.
        #[arg(long)]
        items: PathBuf,
        /// Fractions of the notes' tokens to keep.
        #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.25])]
        keep: Vec<f64>,
        /// Only the first N items.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Greedy chat answers to each item with and without speculative decoding (prompt lookup
    /// unless --speculative says otherwise), one after the other in the same run; prints JSON
    /// with each item's decode speed both ways, whether the answers are identical, and totals
    /// for copying tasks and for open-ended chat (`kind` "chat").
    SpeculativeBench {
        #[command(flatten)]
        common: Common,
        /// A JSON file of items: `{"kind": "rewrite", "prompt": "..."}`.
        #[arg(long)]
        items: PathBuf,
        #[arg(long, default_value_t = 160)]
        max_tokens: usize,
        /// Only the first N items of each kind.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        speculation: Speculation,
    },
    /// Early exit measured (see `pkg-scripts/bench/adaptive.sh`): for the whole model and each
    /// threshold (and shortlist) at the given exit layers, greedy continuations of prompts cut
    /// from a text file (their agreement with the whole model's, decode speed, mean layers per
    /// token) and the perplexity of a held-out text, teacher-forced a step at a time; prints
    /// JSON.
    AdaptiveBench {
        #[command(flatten)]
        common: Common,
        /// Plain text the prompts are cut from: `--prompts` windows of `--prompt-tokens` tokens.
        #[arg(long)]
        prompts_file: PathBuf,
        #[arg(long, default_value_t = 50)]
        prompts: usize,
        #[arg(long, default_value_t = 32)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 32)]
        gen_tokens: usize,
        /// The held-out text whose first `--text-tokens` tokens are scored.
        #[arg(long)]
        text: PathBuf,
        #[arg(long, default_value_t = 512)]
        text_tokens: usize,
        /// Exit layers (ascending).
        #[arg(long, value_delimiter = ',', required = true)]
        exit_layers: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.8, 0.9, 0.95, 0.99])]
        thresholds: Vec<f32>,
        #[arg(long, default_value = "max-prob")]
        exit_measure: String,
        /// Shortlist sizes to measure each threshold with (0: the whole head).
        #[arg(long, value_delimiter = ',', default_values_t = [0])]
        shortlists: Vec<usize>,
    },
    /// A smaller model: drops the `--layers` layers that turn the hidden state least on a
    /// calibration text (ShortGPT's block influence), and the `--heads` query heads and `--ffn`
    /// share of FFN channels of least activation-weighted magnitude (Wanda's scores) from every
    /// layer, and writes the rest as a burnpack record (kept rows as stored; a down projection
    /// cut channel by channel is quantized again into its own kind of blocks); prints JSON with
    /// every layer's influence, what was dropped and the sizes.
    PruneWeights {
        /// A GGUF file or a `.bpk` record.
        #[arg(long)]
        model: PathBuf,
        /// Plain text the layers, heads and channels are scored on.
        #[arg(long)]
        calibration: PathBuf,
        /// Score on the calibration text's first N tokens.
        #[arg(long, default_value_t = 512)]
        calibration_tokens: usize,
        #[arg(long)]
        output: PathBuf,
        /// How many layers to drop (those of least block influence).
        #[arg(long, default_value_t = 0)]
        layers: usize,
        /// Which layers to drop instead, by index (e.g. `3,7`).
        #[arg(long, value_delimiter = ',', conflicts_with = "layers")]
        layer_ids: Vec<usize>,
        /// Query heads to drop from every layer (a multiple of the key/value heads).
        #[arg(long, default_value_t = 0)]
        heads: usize,
        /// The share of every layer's FFN channels to drop (0 to 1; the count rounded to a
        /// multiple of 32).
        #[arg(long, default_value_t = 0.0)]
        ffn: f64,
        /// How float matrices are kept in the output (int4, q4_0, q4_1, q8_0); packed ones stay.
        #[arg(long, default_value = "int4")]
        weights: String,
    },
    /// Perplexity of a text file, token by token through the KV cache; prints JSON.
    Perplexity {
        #[command(flatten)]
        common: Common,
        /// The text to score.
        #[arg(long)]
        file: PathBuf,
        /// Also print the most likely token at every position.
        #[arg(long)]
        top1: bool,
        /// Score only the first N tokens of the text.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Write the model as a Hugging Face directory (config.json, model.safetensors in f32,
    /// tokenizer.json, tokenizer_config.json). `--noise R` adds Gaussian noise of R times each
    /// matrix's RMS, making a float model whose weights are off any quantization grid.
    ExportSafetensors {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0.0)]
        noise: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write the model pre-quantized (packed int4 blocks, 8-bit embedding) as a burnpack
    /// record that loads with no quantization work.
    Convert {
        /// A .gguf file, or a Hugging Face directory.
        #[arg(long)]
        model: PathBuf,
        /// Where to write the .bpk file.
        #[arg(long)]
        output: PathBuf,
        /// How float matrices are quantized: int4 (4-bit min-max, 8-bit embedding), q4_0, q4_1,
        /// q8_0, q2_k, q3_k, q4_k, q5_k or q6_k (ggml's reference quantizers, every float
        /// matrix); stored block formats stay as they are.
        #[arg(long, default_value = "int4")]
        weights: String,
    },
    /// Measure load time, time to first token, prefill and decode speed and memory; prints JSON.
    Bench {
        #[command(flatten)]
        common: Common,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens to decode after the prompt.
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Timed repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Instead: time the packed GEMV of each of `--formats`, the f32 GEMV and a copy for
        /// every linear shape.
        #[arg(long)]
        kernels: bool,
        /// With --kernels: the formats, comma-separated (f16, bf16 and f32 codes too).
        #[arg(long, default_value = "q4_0,q4_1,q8_0,q2_k,q3_k,q4_k,q5_k,q6_k")]
        formats: String,
        #[command(flatten)]
        speculation: Speculation,
        /// Instead: decode that many conversations together, for each count given
        /// (comma-separated, e.g. 1,2,4,8); prints the aggregate and per-stream decode speed.
        #[arg(long, value_delimiter = ',')]
        streams: Vec<usize>,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// A .gguf file, or a Hugging Face directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// cpu (burn Flex) or wgpu (Vulkan, Metal, DX12).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// KV cache size in tokens.
    #[arg(long)]
    kv_capacity: Option<usize>,
    /// What a full KV cache evicts: none, sinks-window or heavy-hitters.
    #[arg(long, default_value = "sinks-window")]
    kv_policy: String,
    /// First tokens the cache never evicts.
    #[arg(long, default_value_t = 4)]
    sinks: usize,
    /// heavy-hitters: most recent tokens never evicted (default: half of what the sinks leave).
    #[arg(long)]
    kv_recent: Option<usize>,
    /// How matrices are kept on the device: int4 (every stored block format kept, floats
    /// quantized to 4 bits), f32, or q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k (float
    /// matrices quantized as ggml's reference quantizers would).
    #[arg(long, default_value = "int4")]
    weights: String,
}

impl Common {
    fn kv(&self) -> Result<KvOptions> {
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
struct Prune {
    /// Most prompt tokens before older messages are pruned (default: the KV capacity less
    /// the answer's tokens).
    #[arg(long)]
    prune_budget: Option<usize>,
    /// none, self-information, oldest-turns or front.
    #[arg(long, default_value = "self-information")]
    prune_method: String,
}

impl Prune {
    fn options(&self) -> Result<PruneOptions> {
        Ok(PruneOptions { method: self.prune_method.parse()?, budget: self.prune_budget })
    }
}

#[derive(Args)]
struct Sampling {
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-turn tokens (for measurements).
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    speculation: Speculation,
    #[command(flatten)]
    early_exit: EarlyExit,
}

#[derive(Args)]
struct EarlyExit {
    /// Decode steps may end after these layers (ascending, e.g. 10,20) when the model is sure
    /// enough of the next token there; the skipped layers still get its keys and values.
    #[arg(long, value_delimiter = ',')]
    early_exit: Vec<usize>,
    /// With --early-exit: exit where the confidence is strictly above this (0..=1).
    #[arg(long, default_value_t = EarlyExitOptions::default().threshold)]
    exit_threshold: f32,
    /// With --early-exit: max-prob (the largest probability) or margin (largest less second).
    #[arg(long, default_value = "max-prob")]
    exit_measure: String,
    /// With --early-exit: read the confidence from the head's rows of the last full step's
    /// likeliest N tokens only (0: the whole head).
    #[arg(long, default_value_t = 0)]
    exit_shortlist: usize,
}

impl EarlyExit {
    fn options(&self) -> Result<Option<EarlyExitOptions>> {
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
struct Speculation {
    /// Draft tokens and check them in one pass: prompt-lookup (copies what followed the last
    /// n-gram earlier in the conversation), draft (a smaller model, --draft-model) or self (the
    /// model's first --draft-layers layers). Same greedy output, same sampling distribution.
    #[arg(long)]
    speculative: Option<String>,
    /// Most tokens a draft proposes (1..=15).
    #[arg(long, default_value_t = SpeculativeOptions::default().max_draft)]
    max_draft: usize,
    /// prompt-lookup: the longest n-gram matched.
    #[arg(long, default_value_t = SpeculativeOptions::default().ngram)]
    ngram: usize,
    /// With --speculative draft: a smaller model with the same vocabulary (loaded on the same
    /// device).
    #[arg(long)]
    draft_model: Option<PathBuf>,
    /// How the draft model's matrices are kept (default: as --weights says).
    #[arg(long)]
    draft_weights: Option<String>,
    /// With --speculative self: the layers that guess (default: half the model's).
    #[arg(long)]
    draft_layers: Option<usize>,
}

impl Speculation {
    /// Loads `--draft-model` into `session`; refused where it is given without `--speculative
    /// draft` or missing with it.
    fn attach(&self, common: &Common, session: &mut hearth::Session) -> Result<()> {
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

    fn options(&self) -> Result<Option<SpeculativeOptions>> {
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
    fn options(&self) -> Result<GenerateOptions> {
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            sampler: SamplerOptions {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..Default::default()
            },
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            speculative: self.speculation.options()?,
            early_exit: self.early_exit.options()?,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match pollster::block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate { common, prompt, prompt_file, sampling, json } => {
            let prompt = match (prompt, prompt_file) {
                (Some(p), _) => p,
                (None, Some(path)) => hearth::engine::prompt_from_bytes(&read(&path)?)?.to_string(),
                (None, None) => return Err(Error::InvalidPrompt("give --prompt or --prompt-file".into())),
            };
            let kv = common.kv()?;
            let (engine, _) = load(&common)?;
            let mut session = engine.session(&kv)?;
            sampling.speculation.attach(&common, &mut session)?;
            let ids = engine.encode_prompt(&prompt)?;
            let mut stdout = std::io::stdout();
            let generation = session
                .generate(&ids, &sampling.options()?, |text, _| {
                    if !json {
                        let _ = stdout.write_all(text.as_bytes());
                        let _ = stdout.flush();
                    }
                    Control::Continue
                })
                .await?;
            if json {
                let out = json!({
                    "prompt_ids": ids,
                    "ids": generation.tokens,
                    "text": generation.text,
                    "finish_reason": generation.finish_reason,
                    "timings": generation.stats,
                });
                println!("{out}");
            } else {
                println!();
            }
            Ok(())
        }
        Command::Chat { common, sampling, system, prune } => chat(&common, &sampling, system, &prune).await,
        Command::PruneBench { common, items, keep, limit } => prune_bench(&common, &items, &keep, limit).await,
        Command::SpeculativeBench { common, items, max_tokens, limit, speculation } => {
            speculative_bench(&common, &items, max_tokens, limit, &speculation).await
        }
        Command::AdaptiveBench {
            common,
            prompts_file,
            prompts,
            prompt_tokens,
            gen_tokens,
            text,
            text_tokens,
            exit_layers,
            thresholds,
            exit_measure,
            shortlists,
        } => {
            let plan = AdaptivePlan {
                prompts: (prompts, prompt_tokens, gen_tokens),
                text_tokens,
                settings: shortlists
                    .iter()
                    .flat_map(|&shortlist| thresholds.iter().map(move |&threshold| (threshold, shortlist)))
                    .map(|(threshold, shortlist)| {
                        Ok(EarlyExitOptions {
                            layers: exit_layers.clone(),
                            threshold,
                            measure: exit_measure.parse()?,
                            shortlist,
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            adaptive_bench(&common, &prompts_file, &text, &plan).await
        }
        Command::PruneWeights {
            model,
            calibration,
            calibration_tokens,
            output,
            layers,
            layer_ids,
            heads,
            ffn,
            weights,
        } => {
            use hearth::analysis::weight_pruning::{LayerChoice, PruneWeights};
            let layers = if layer_ids.is_empty() { LayerChoice::Count(layers) } else { LayerChoice::Ids(layer_ids) };
            let prune = PruneWeights { layers, heads, ffn };
            prune_weights(&model, &calibration, calibration_tokens, &output, &prune, weights.parse()?).await
        }
        Command::Convert { model, output, weights } => convert(&model, &output, weights.parse()?),
        Command::Perplexity { common, file, top1, limit } => {
            let text = read(&file)?;
            let text = hearth::engine::prompt_from_bytes(&text)?;
            let mut kv = common.kv()?;
            let (engine, _) = load(&common)?;
            let mut tokens = engine.encode_prompt(text)?;
            tokens.truncate(limit.unwrap_or(tokens.len()));
            kv.capacity = Some(common.kv_capacity.unwrap_or(tokens.len().min(engine.config().context_length)));
            let mut session = engine.session(&kv)?;
            let report = hearth::analysis::scoring::perplexity(&mut session, &tokens, top1).await?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(())
        }
        Command::ExportSafetensors { model, output, noise, seed } => {
            let bytes = read(&model)?;
            let file = hearth::format::gguf::GgufFile::parse(&bytes)?;
            let parts = hearth::load::ModelParts::from_gguf(&file)?;
            std::fs::create_dir_all(&output)
                .map_err(|source| Error::Io { path: output.display().to_string(), source: source.into() })?;
            for (name, contents) in hearth::load::hf::export(&parts, &file, noise, seed)? {
                let path = output.join(name);
                std::fs::write(&path, contents)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source: source.into() })?;
            }
            Ok(())
        }
        Command::Bench { common, kernels: true, runs, formats, .. } => bench_kernels(&common, runs, &formats),
        Command::Bench { common, prompt_tokens, gen_tokens, runs, streams, .. } if !streams.is_empty() => {
            bench_streams(&common, prompt_tokens, gen_tokens, runs, &streams).await
        }
        Command::Bench { common, prompt_tokens, gen_tokens, runs, speculation, .. } => {
            bench(&common, prompt_tokens, gen_tokens, runs, &speculation).await
        }
    }
}

/// Reads the model at `common.model` onto the chosen device; returns it and the load time.
fn load(common: &Common) -> Result<(Arc<Engine>, f64)> {
    let device = common.device.parse::<DeviceKind>()?.device()?;
    let weights = common.weights.parse::<WeightFormat>()?;
    let start = Instant::now();
    let engine = if common.model.is_dir() {
        let dir = HfDir::read(&common.model)?;
        Engine::from_hf(dir.files(), &device, weights)?
    } else {
        Engine::from_file_bytes(&read(&common.model)?, &device, weights)?
    };
    Ok((Arc::new(engine), start.elapsed().as_secs_f64() * 1e3))
}

/// The files of a Hugging Face model directory, read.
struct HfDir {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    tokenizer_config: Option<Vec<u8>>,
    shards: Vec<Vec<u8>>,
}

impl HfDir {
    fn read(dir: &Path) -> Result<Self> {
        let mut shard_paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| Error::Io { path: dir.display().to_string(), source: source.into() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        shard_paths.sort();
        Ok(Self {
            config: read(&dir.join("config.json"))?,
            tokenizer: read(&dir.join("tokenizer.json"))?,
            tokenizer_config: read(&dir.join("tokenizer_config.json")).ok(),
            shards: shard_paths.iter().map(|p| read(p)).collect::<Result<_>>()?,
        })
    }

    fn files(&self) -> HfFiles<'_> {
        HfFiles {
            config_json: &self.config,
            tokenizer_json: &self.tokenizer,
            tokenizer_config_json: self.tokenizer_config.as_deref(),
            safetensors: self.shards.iter().map(Vec::as_slice).collect(),
        }
    }
}

fn convert(model: &Path, output: &Path, weights: WeightFormat) -> Result<()> {
    use hearth::format::gguf::GgufFile;
    use hearth::load::{ModelParts, burnpack, hf};
    let start = Instant::now();
    let pack = if model.is_dir() {
        let dir = HfDir::read(model)?;
        let (parts, tensors) = hf::parse(dir.files())?;
        burnpack::write_as(&parts, &tensors, weights)?
    } else {
        let bytes = read(model)?;
        let file = GgufFile::parse(&bytes)?;
        burnpack::write_as(&ModelParts::from_gguf(&file)?, &file, weights)?
    };
    std::fs::write(output, &pack)
        .map_err(|source| Error::Io { path: output.display().to_string(), source: source.into() })?;
    eprintln!("wrote {} ({} bytes) in {:.1} s", output.display(), pack.len(), start.elapsed().as_secs_f64());
    Ok(())
}

async fn prune_weights(
    model: &Path,
    calibration: &Path,
    calibration_tokens: usize,
    output: &Path,
    prune: &hearth::analysis::weight_pruning::PruneWeights,
    weights: WeightFormat,
) -> Result<()> {
    use hearth::analysis::weight_pruning::{Pruned, Pruning, calibrate};
    use hearth::format::gguf::GgufFile;
    use hearth::load::{ModelParts, TensorSource, burnpack, fused::with_parts};
    if model.is_dir() {
        return Err(Error::BadOptions(format!("{}: convert the directory to .bpk first", model.display())));
    }
    let start = Instant::now();
    let bytes = read(model)?;
    // Scored on the int4 CPU path, whatever the output's float matrices become.
    let engine = Engine::from_file_bytes(&bytes, &DeviceKind::Cpu.device()?, WeightFormat::Int4)?;
    let mut tokens = engine.encode_prompt(hearth::engine::prompt_from_bytes(&read(calibration)?)?)?;
    tokens.truncate(calibration_tokens);
    let measured = calibrate(engine.model(), &tokens).await?;
    let config = engine.config().clone();
    drop(engine);
    let write = |parts: ModelParts, source: &dyn TensorSource| -> Result<(Vec<u8>, Pruning)> {
        with_parts(source, &config, |source| {
            let pruning = Pruning::choose(&config, prune, Some(&measured), source)?;
            let pack =
                burnpack::write_as(&pruning.parts(parts), &Pruned::new(source, &config, pruning.clone()), weights)?;
            Ok((pack, pruning))
        })
    };
    let (pack, pruning) = if burnpack::is_burnpack(&bytes) {
        let (parts, tensors) = burnpack::parse(&bytes)?;
        write(parts, &tensors)?
    } else {
        let file = GgufFile::parse(&bytes)?;
        write(ModelParts::from_gguf(&file)?, &file)?
    };
    std::fs::write(output, &pack)
        .map_err(|source| Error::Io { path: output.display().to_string(), source: source.into() })?;
    let pruned = pruning.config(&config);
    let out = json!({
        "model": model.display().to_string(),
        "output": output.display().to_string(),
        "calibration_tokens": measured.tokens,
        "influence": measured.influence,
        "dropped_layers": pruning.dropped_layers(),
        "n_layers": [config.n_layers, pruned.n_layers],
        "n_heads": [config.n_heads, pruned.n_heads],
        "d_ff": [config.d_ff, pruned.d_ff],
        "bytes": [bytes.len(), pack.len()],
        "seconds": start.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source: source.into() })
}

async fn chat(common: &Common, sampling: &Sampling, system: Option<String>, prune: &Prune) -> Result<()> {
    let (kv, prune) = (common.kv()?, prune.options()?);
    let (engine, _) = load(common)?;
    let mut session = engine.session(&kv)?;
    sampling.speculation.attach(common, &mut session)?;
    let mut messages: Vec<Message> = system.into_iter().map(|s| Message::new("system", s)).collect();
    let options = sampling.options()?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("{} — type a message, an empty line or Ctrl-D ends the chat.", engine.name());
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|source| Error::Io { path: "stdin".into(), source: source.into() })?
            == 0
        {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        messages.push(Message::new("user", line));
        let reply = session
            .chat(&messages, &options, &prune, |text, _| {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
                Control::Continue
            })
            .await;
        println!();
        match reply {
            Ok(reply) => {
                if let Some(pruned) = &reply.pruned {
                    eprintln!(
                        "[pruned {} of {} prompt tokens in {} spans ({})]",
                        pruned.pruned_tokens,
                        pruned.original_tokens,
                        pruned.dropped.len(),
                        pruned.method.name()
                    );
                }
                if reply.stats.evicted_tokens > 0 {
                    eprintln!("[the KV cache evicted {} tokens]", reply.stats.evicted_tokens);
                }
                messages.push(Message::new("assistant", reply.text));
            }
            Err(e) => {
                // The turn failed (for example the context is full); drop it and carry on.
                eprintln!("error: {e}");
                messages.pop();
            }
        }
    }
    Ok(())
}

async fn bench(
    common: &Common,
    prompt_tokens: usize,
    gen_tokens: usize,
    runs: usize,
    speculation: &Speculation,
) -> Result<()> {
    let speculative = speculation.options()?;
    if runs == 0 || prompt_tokens == 0 || gen_tokens == 0 {
        return Err(Error::BadOptions("--runs, --prompt-tokens and --gen-tokens must be at least 1".into()));
    }
    let kv = KvOptions { capacity: Some(common.kv_capacity.unwrap_or(prompt_tokens + gen_tokens)), ..common.kv()? };
    let (engine, load_ms) = load(common)?;
    let mut session = engine.session(&kv)?;
    speculation.attach(common, &mut session)?;
    // A prompt of natural text, repeated to the requested length.
    let prompt = bench_prompt(&engine, prompt_tokens)?;
    let options = GenerateOptions { max_tokens: gen_tokens, ignore_eos: true, speculative, ..Default::default() };

    // One untimed run compiles kernels and fills allocator pools.
    session.generate(&prompt, &options, |_, _| Control::Continue).await?;
    let mut results = Vec::new();
    for _ in 0..runs {
        session.reset();
        results.push(session.generate(&prompt, &options, |_, _| Control::Continue).await?.stats);
    }
    // One more run, timed by part on the CPU (from the first token on, so decode only).
    let split = match common.device.as_str() {
        "cpu" => {
            session.reset();
            hearth::backend::cpu::profile::enable(true);
            let mut first = true;
            let stats = session
                .generate(&prompt, &options, |_, _| {
                    if std::mem::take(&mut first) {
                        hearth::backend::cpu::profile::reset();
                    }
                    Control::Continue
                })
                .await?
                .stats;
            let [matmul, head, attention] = hearth::backend::cpu::profile::totals_ms();
            hearth::backend::cpu::profile::enable(false);
            let steps = stats.generated_tokens.saturating_sub(1).max(1) as f64;
            let total = stats.decode_ms;
            Some(json!({
                "total": total / steps,
                "matmul": matmul / steps,
                "head": head / steps,
                "attention": attention / steps,
                "rest": (total - matmul - head - attention) / steps,
            }))
        }
        _ => None,
    };
    let median = |f: &dyn Fn(&hearth::GenerationStats) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let device_memory = engine.device().memory_pool_usage();
    let out = json!({
        "model": engine.name(),
        "device": common.device,
        "weights": common.weights,
        "weight_bytes": engine.model().weight_bytes(),
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "runs": runs,
        "load_ms": load_ms,
        "time_to_first_token_ms": median(&|s| s.time_to_first_token_ms),
        "prefill_tokens_per_s": median(&|s| s.prefill_tokens_per_s),
        "decode_tokens_per_s": median(&|s| s.decode_tokens_per_s),
        "speculative": options.speculative.as_ref().map(|o| o.method.name()),
        "draft_tokens": median(&|s| s.draft_tokens as f64),
        "accepted_tokens": median(&|s| s.accepted_tokens as f64),
        "early_exit": options.early_exit,
        "mean_layers": median(&|s| s.mean_layers),
        "decode_split_ms_per_token": split,
        "cpu_isa": (common.device == "cpu").then(|| hearth::backend::cpu::Isa::best().name()),
        "cpu_threads": (common.device == "cpu").then(hearth::backend::cpu::threads),
        "peak_host_memory_bytes": peak_rss_bytes(),
        "device_memory_in_use_bytes": device_memory.as_ref().map(|m| m.bytes_in_use),
        "device_memory_reserved_bytes": device_memory.as_ref().map(|m| m.bytes_reserved),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// Decode speed of `streams` conversations decoded together ([`hearth::generate_batch`]),
/// each with the bench prompt: the median of `runs`.
async fn bench_streams(
    common: &Common,
    prompt_tokens: usize,
    gen_tokens: usize,
    runs: usize,
    streams: &[usize],
) -> Result<()> {
    if runs == 0 || prompt_tokens < 2 || gen_tokens < 2 || streams.contains(&0) {
        return Err(Error::BadOptions(
            "--runs and --streams must be at least 1, --prompt-tokens and --gen-tokens at least 2".into(),
        ));
    }
    let kv = KvOptions { capacity: Some(common.kv_capacity.unwrap_or(prompt_tokens + gen_tokens)), ..common.kv()? };
    let (engine, _) = load(common)?;
    let prompt = bench_prompt(&engine, prompt_tokens)?;
    let options = GenerateOptions { max_tokens: gen_tokens, ignore_eos: true, ..Default::default() };
    let mut rows = Vec::new();
    for &n in streams {
        let mut sessions = (0..n).map(|_| engine.session(&kv)).collect::<Result<Vec<_>>>()?;
        let mut rates = Vec::new();
        // The first run compiles kernels and fills allocator pools.
        for run in 0..=runs {
            // The prompts go in first, untimed, so that the batch times decoding alone (it
            // would otherwise run their prefill passes between its steps).
            for session in &mut sessions {
                session.reset();
                session.feed(&prompt[..prompt.len() - 1]).await?;
            }
            let mut listeners: Vec<Quiet> = (0..n).map(|_| Quiet).collect();
            let mut requests: Vec<hearth::BatchRequest> = sessions
                .iter_mut()
                .zip(&mut listeners)
                .map(|(session, listener)| hearth::BatchRequest {
                    session,
                    prompt: &prompt,
                    options: &options,
                    listener,
                })
                .collect();
            let generations = hearth::generate_batch(&mut requests).await?;
            let decode_ms = generations.iter().map(|g| g.stats.decode_ms).fold(0.0, f64::max);
            let steps: usize = generations.iter().map(|g| g.tokens.len().saturating_sub(1)).sum();
            if run > 0 {
                rates.push(steps as f64 * 1e3 / decode_ms);
            }
        }
        rates.sort_by(f64::total_cmp);
        let aggregate = rates[rates.len() / 2];
        rows.push(json!({
            "streams": n,
            "aggregate_decode_tokens_per_s": aggregate,
            "per_stream_decode_tokens_per_s": aggregate / n as f64,
        }));
    }
    let base = rows[0]["aggregate_decode_tokens_per_s"].as_f64().unwrap_or(0.0);
    for row in &mut rows {
        let aggregate = row["aggregate_decode_tokens_per_s"].as_f64().unwrap_or(0.0);
        row["aggregate_vs_first"] = json!(if base > 0.0 { aggregate / base } else { 0.0 });
    }
    let out = json!({
        "model": engine.name(),
        "device": common.device,
        "weights": common.weights,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "runs": runs,
        "cpu_threads": (common.device == "cpu").then(hearth::backend::cpu::threads),
        "streams": rows,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// A listener that hears nothing.
struct Quiet;

impl hearth::Listener for Quiet {
    fn on_text(&mut self, _: &str, _: u32) -> Result<Control> {
        Ok(Control::Continue)
    }
}

/// Natural text repeated to `tokens` tokens, the benchmarks' prompt.
fn bench_prompt(engine: &Engine, tokens: usize) -> Result<Vec<u32>> {
    let text = "The history of the city begins with a small settlement on the river, where traders \
                exchanged grain, salt and cloth. Over the centuries it grew into a market town. ";
    let mut prompt = Vec::new();
    while prompt.len() < tokens {
        prompt.extend(engine.encode_prompt(text)?);
    }
    prompt.truncate(tokens);
    Ok(prompt)
}

/// One chat turn, for [`speculative_bench`].
/// What `adaptive-bench` runs: `(count, tokens, generated)` prompts, the held-out text's
/// length in tokens, and the early-exit settings.
struct AdaptivePlan {
    prompts: (usize, usize, usize),
    text_tokens: usize,
    settings: Vec<EarlyExitOptions>,
}

/// Greedy continuations of every prompt, each from an empty cache: their tokens, and summed
/// over them the decode milliseconds, decode steps, and layers run in those steps.
async fn continuations(
    session: &mut hearth::Session,
    prompts: &[&[u32]],
    options: &GenerateOptions,
) -> Result<(Vec<Vec<u32>>, f64, f64, f64)> {
    let mut out = (Vec::new(), 0.0, 0.0, 0.0);
    for prompt in prompts {
        session.reset();
        let g = session.generate(prompt, options, |_, _| Control::Continue).await?;
        let steps = g.stats.generated_tokens.saturating_sub(1) as f64;
        out.1 += g.stats.decode_ms;
        out.2 += steps;
        out.3 += g.stats.mean_layers * steps;
        out.0.push(g.tokens);
    }
    Ok(out)
}

async fn adaptive_bench(common: &Common, prompts_file: &Path, text: &Path, plan: &AdaptivePlan) -> Result<()> {
    let (engine, _) = load(common)?;
    let encode =
        |path: &Path| -> Result<Vec<u32>> { engine.encode_prompt(hearth::engine::prompt_from_bytes(&read(path)?)?) };
    let (count, prompt_tokens, gen_tokens) = plan.prompts;
    let source = encode(prompts_file)?;
    let prompts: Vec<&[u32]> = source.chunks_exact(prompt_tokens).take(count).collect();
    if prompts.len() < count {
        return Err(Error::BadOptions(format!(
            "{} holds {} tokens: fewer than {count} prompts of {prompt_tokens}",
            prompts_file.display(),
            source.len()
        )));
    }
    let mut held_out = encode(text)?;
    held_out.truncate(plan.text_tokens);
    let kv = KvOptions { capacity: Some(plan.text_tokens.max(prompt_tokens + gen_tokens)), ..common.kv()? };
    let mut session = engine.session(&kv)?;
    let whole = GenerateOptions { max_tokens: gen_tokens, ignore_eos: true, ..Default::default() };
    // One untimed continuation compiles kernels and fills allocator pools.
    session.generate(prompts[0], &whole, |_, _| Control::Continue).await?;

    let perplexity =
        |logprobs: &[f32]| (-logprobs.iter().map(|&l| l as f64).sum::<f64>() / logprobs.len() as f64).exp();
    let (reference, ms, steps, _) = continuations(&mut session, &prompts, &whole).await?;
    let surprisal = session.surprisal(&held_out).await?;
    let whole_logprobs: Vec<f32> = surprisal[1..].iter().map(|s| -s).collect();
    let mut rows = vec![json!({
        "setting": "whole model",
        "decode_tokens_per_s": steps * 1e3 / ms,
        "mean_layers": engine.config().n_layers,
        "perplexity": perplexity(&whole_logprobs),
        "exact_agreement": 1.0,
        "token_agreement": 1.0,
    })];
    for options in &plan.settings {
        let fast = GenerateOptions { early_exit: Some(options.clone()), ..whole.clone() };
        let (tokens, ms, steps, layers) = continuations(&mut session, &prompts, &fast).await?;
        let prefix = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let exact = tokens.iter().zip(&reference).filter(|(a, b)| a == b).count() as f64 / tokens.len() as f64;
        let agreement =
            tokens.iter().zip(&reference).map(|(a, b)| prefix(a, b) as f64 / b.len().max(1) as f64).sum::<f64>()
                / tokens.len() as f64;
        let (logprobs, text_layers) = session.early_exit_logprobs(&held_out, options).await?;
        rows.push(json!({
            "setting": options,
            "decode_tokens_per_s": steps * 1e3 / ms,
            "mean_layers": layers / steps,
            "perplexity": perplexity(&logprobs),
            "text_mean_layers": text_layers,
            "exact_agreement": exact,
            "token_agreement": agreement,
        }));
        eprintln!("{}", rows.last().map(|r| r.to_string()).unwrap_or_default());
    }
    let out = json!({
        "model": engine.name(),
        "device": common.device,
        "weights": common.weights,
        "n_layers": engine.config().n_layers,
        "prompts": count,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "text_tokens": held_out.len(),
        "cpu_threads": (common.device == "cpu").then(hearth::backend::cpu::threads),
        "rows": rows,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeculativeItem {
    kind: String,
    prompt: String,
}

async fn speculative_bench(
    common: &Common,
    items: &Path,
    max_tokens: usize,
    limit: Option<usize>,
    speculation: &Speculation,
) -> Result<()> {
    let speculative = speculation.options()?.unwrap_or_default();
    let items: Vec<SpeculativeItem> =
        serde_json::from_slice(&read(items)?).map_err(|e| Error::BadOptions(format!("{}: {e}", items.display())))?;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let items: Vec<SpeculativeItem> = items
        .into_iter()
        .filter(|item| {
            let n = seen.entry(item.kind.clone()).or_default();
            *n += 1;
            limit.is_none_or(|limit| *n <= limit)
        })
        .collect();
    let (engine, _) = load(common)?;
    let mut session = engine.session(&common.kv()?)?;
    speculation.attach(common, &mut session)?;
    let plain = GenerateOptions { max_tokens, ..Default::default() };
    let fast = GenerateOptions { speculative: Some(speculative.clone()), ..plain.clone() };
    let prune = PruneOptions { method: PruneMethod::None, budget: None };
    // One untimed answer compiles kernels and fills allocator pools.
    if let Some(first) = items.first() {
        let messages = [Message::new("user", first.prompt.clone())];
        session.chat(&messages, &plain, &prune, |_, _| Control::Continue).await?;
        session.reset();
        session.chat(&messages, &fast, &prune, |_, _| Control::Continue).await?;
    }
    // Per group: decode ms and decoded tokens, plain and speculative.
    let mut totals = std::collections::BTreeMap::<&str, [f64; 4]>::new();
    let mut rows = Vec::new();
    for item in &items {
        let messages = [Message::new("user", item.prompt.clone())];
        session.reset();
        let a = session.chat(&messages, &plain, &prune, |_, _| Control::Continue).await?;
        session.reset();
        let b = session.chat(&messages, &fast, &prune, |_, _| Control::Continue).await?;
        let group = if item.kind == "chat" { "open_ended" } else { "copying" };
        let steps = |g: &hearth::Generation| g.stats.generated_tokens.saturating_sub(1) as f64;
        let t = totals.entry(group).or_default();
        *t = [t[0] + a.stats.decode_ms, t[1] + steps(&a), t[2] + b.stats.decode_ms, t[3] + steps(&b)];
        rows.push(json!({
            "kind": item.kind,
            "tokens": a.tokens.len(),
            "identical": a.tokens == b.tokens,
            "plain_decode_tokens_per_s": a.stats.decode_tokens_per_s,
            "speculative_decode_tokens_per_s": b.stats.decode_tokens_per_s,
            "draft_tokens": b.stats.draft_tokens,
            "accepted_tokens": b.stats.accepted_tokens,
        }));
    }
    let groups: serde_json::Map<String, serde_json::Value> = totals
        .iter()
        .map(|(group, [plain_ms, plain_n, fast_ms, fast_n])| {
            let (plain, fast) = (plain_n * 1e3 / plain_ms, fast_n * 1e3 / fast_ms);
            let value = json!({
                "plain_decode_tokens_per_s": plain,
                "speculative_decode_tokens_per_s": fast,
                "speedup": fast / plain,
            });
            (group.to_string(), value)
        })
        .collect();
    let out = json!({
        "model": engine.name(),
        "device": common.device,
        "weights": common.weights,
        "speculative": speculative,
        "max_tokens": max_tokens,
        "items": rows.len(),
        "all_identical": rows.iter().all(|r| r["identical"] == true),
        "groups": groups,
        "per_item": rows,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// One question over long notes, for [`prune_bench`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QaItem {
    notes: Vec<String>,
    question: String,
    answer: String,
}

/// The conversation of a [`QaItem`]: the notes in two user turns (so that dropping whole
/// turns has something to choose), each acknowledged, then the question.
fn qa_messages(item: &QaItem) -> Vec<Message> {
    let half = item.notes.len().div_ceil(2);
    let (first, second) = item.notes.split_at(half);
    vec![
        Message::new("system", "Answer the question from the notes with a short phrase."),
        Message::new("user", format!("Here is the first part of my notes.\n\n{}", first.join("\n\n"))),
        Message::new("assistant", "Thank you, I have read the first part."),
        Message::new("user", format!("Here is the second part of my notes.\n\n{}", second.join("\n\n"))),
        Message::new("assistant", "Thank you, I have read your notes."),
        Message::new("user", item.question.clone()),
    ]
}

async fn prune_bench(common: &Common, items: &Path, keep: &[f64], limit: Option<usize>) -> Result<()> {
    let items: Vec<QaItem> =
        serde_json::from_slice(&read(items)?).map_err(|e| Error::BadOptions(format!("{}: {e}", items.display())))?;
    let items = &items[..limit.unwrap_or(items.len()).min(items.len())];
    if keep.iter().any(|&k| !(k > 0.0 && k <= 1.0)) {
        return Err(Error::BadOptions("--keep fractions must be in (0, 1]".into()));
    }
    let kv = common.kv()?;
    let (engine, _) = load(common)?;
    let mut session = engine.session(&kv)?;
    let options = GenerateOptions { max_tokens: 24, ..Default::default() };
    let methods = [PruneMethod::SelfInformation, PruneMethod::OldestTurns, PruneMethod::Front];
    let mut runs: Vec<(f64, PruneMethod)> = vec![(1.0, PruneMethod::None)];
    runs.extend(keep.iter().flat_map(|&k| methods.iter().map(move |&m| (k, m))));
    let mut correct = vec![0usize; runs.len()];
    let mut kept_tokens = vec![0usize; runs.len()];
    let start = Instant::now();
    for (n, item) in items.iter().enumerate() {
        let messages = qa_messages(item);
        let prompt = engine.chat_prompt(&messages)?;
        let droppable = prompt.tokens.len() - prompt.protected_tokens();
        for (r, &(fraction, method)) in runs.iter().enumerate() {
            let budget = prompt.protected_tokens() + (droppable as f64 * fraction).round() as usize;
            session.reset();
            let prune = PruneOptions { method, budget: Some(budget) };
            let reply = session.chat(&messages, &options, &prune, |_, _| Control::Continue).await?;
            let hit = reply.text.to_lowercase().contains(&item.answer.to_lowercase());
            correct[r] += hit as usize;
            kept_tokens[r] += reply.stats.prompt_tokens;
            eprintln!("item {n} keep {fraction} {}: {hit} {:?}", method.name(), reply.text);
        }
    }
    let results: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(r, &(fraction, method))| {
            json!({
                "keep": fraction,
                "method": method.name(),
                "accuracy": correct[r] as f64 / items.len() as f64,
                "correct": correct[r],
                "mean_prompt_tokens": kept_tokens[r] as f64 / items.len() as f64,
            })
        })
        .collect();
    let out = json!({ "model": engine.name(), "items": items.len(), "seconds": start.elapsed().as_secs_f64(), "results": results });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

fn bench_kernels(common: &Common, runs: usize, formats: &str) -> Result<()> {
    let formats = formats
        .split(',')
        .map(|f| match f.trim() {
            "f16" => Ok(KernelFormat::Float(QuantFormat::F16)),
            "bf16" => Ok(KernelFormat::Float(QuantFormat::Bf16)),
            "f32" => Ok(KernelFormat::Float(QuantFormat::F32)),
            name => match name.parse::<WeightFormat>()? {
                WeightFormat::Quantize(q) => Ok(KernelFormat::Quantized(q)),
                other => Err(hearth::Error::BadOptions(format!("--formats: {} is not a block format", other.name()))),
            },
        })
        .collect::<Result<Vec<_>>>()?;
    let (engine, _) = load(common)?;
    for t in hearth::analysis::bench::kernel_bench(engine.config(), engine.device(), runs.max(5), &formats)? {
        println!("{}", serde_json::to_string(&t).unwrap_or_default());
    }
    Ok(())
}

/// Peak resident set size of this process (Linux `VmHWM`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

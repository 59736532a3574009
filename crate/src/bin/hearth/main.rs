//! The native command-line tool: generate, chat and bench.

mod args;
mod bench;
mod files;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use hearth::analysis::bench::KernelFormat;
use hearth::load::hf::HfFiles;
use hearth::quant::packed::QuantFormat;
use hearth::{
    Activations, Control, DeviceKind, EarlyExitOptions, Engine, Error, GenerateOptions, Grammar, KvOptions, Message,
    PromptPruneMethod, PromptPruneOptions, Result, SamplerOptions, SpeculativeOptions, Tool, ToolChoice, WeightFormat,
};
use serde_json::json;
use web_time::Instant;

use args::*;
use bench::*;
use files::ModelFiles;

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
        /// The prompt is one user message, in the model's chat template.
        #[arg(long)]
        chat: bool,
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
        /// With a constraint (--json-object, --json-schema, --grammar, --regex): the same runs
        /// again under it (stopping where the grammar ends), reported beside the free ones.
        #[command(flatten)]
        constraint: Constraint,
    },
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
        Command::Generate { common, prompt, prompt_file, sampling, chat, json } => {
            let prompt = match (prompt, prompt_file) {
                (Some(p), _) => p,
                (None, Some(path)) => hearth::engine::prompt_from_bytes(&read(&path)?)?.to_string(),
                (None, None) => return Err(Error::InvalidPrompt("give --prompt or --prompt-file".into())),
            };
            let kv = common.kv()?;
            let (engine, _) = load(&common)?;
            let mut session = engine.session(&kv)?;
            sampling.speculation.attach(&common, &mut session)?;
            let options = sampling.options()?;
            let ids = if chat {
                engine.encode_chat_with_tools(&[Message::new("user", prompt.clone())], options.offered_tools())?
            } else if !options.tools.is_empty() {
                return Err(Error::BadOptions("--tools needs --chat (the model must see the tools)".into()));
            } else {
                engine.encode_prompt(&prompt)?
            };
            let mut stdout = std::io::stdout();
            let generation = session
                .generate(&ids, &options, |text, _| {
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
                    "logprobs": generation.logprobs,
                    "tool_calls": generation.tool_calls,
                    "tool_call_error": generation.tool_call_error,
                });
                println!("{out}");
            } else {
                println!();
                for call in generation.tool_calls.iter().flatten() {
                    println!("tool call {}: {}({})", call.id, call.function.name, call.function.arguments);
                }
                if let Some(why) = &generation.tool_call_error {
                    eprintln!("not a tool call: {why}");
                }
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
            use hearth::analysis::weight_pruning::{LayerChoice, WeightPruneOptions};
            let layers = if layer_ids.is_empty() { LayerChoice::Count(layers) } else { LayerChoice::Ids(layer_ids) };
            let prune = WeightPruneOptions { layers, heads, ffn };
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
        Command::Bench { common, prompt_tokens, gen_tokens, runs, speculation, constraint, .. } => {
            let grammar = constraint.grammar()?;
            bench(&common, prompt_tokens, gen_tokens, runs, &speculation, grammar).await
        }
    }
}

/// Reads the model at `common.model` onto the chosen device; returns it and the load time.
fn load(common: &Common) -> Result<(Arc<Engine>, f64)> {
    let device = common.device.parse::<DeviceKind>()?.device()?;
    let weights = common.weights.parse::<WeightFormat>()?;
    let activations = common.activations.parse::<Activations>()?;
    let start = Instant::now();
    let mut engine = if common.model.is_dir() {
        let dir = HfDir::read(&common.model)?;
        Engine::from_hf(dir.files(), &device, weights)?
    } else {
        let files = ModelFiles::open(&common.model)?;
        Engine::prepare_files(&files.slices(), &device, weights)?.upload(&device, &mut |_, _| files.release())?
    };
    engine.set_activations(activations);
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
    prune: &hearth::analysis::weight_pruning::WeightPruneOptions,
    weights: WeightFormat,
) -> Result<()> {
    use hearth::analysis::weight_pruning::{PrunedWeights, WeightCut, calibrate};
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
    let write = |parts: ModelParts, source: &dyn TensorSource| -> Result<(Vec<u8>, WeightCut)> {
        with_parts(source, &config, |source| {
            let pruning = WeightCut::choose(&config, prune, Some(&measured), source)?;
            let pack = burnpack::write_as(
                &pruning.parts(parts),
                &PrunedWeights::new(source, &config, pruning.clone()),
                weights,
            )?;
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

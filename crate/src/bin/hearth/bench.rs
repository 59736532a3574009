//! The research benchmarks behind `pkg-scripts/bench/`: speed (one stream or several), early
//! exit, speculative decoding, prompt pruning and kernels. Each prints one JSON object.

use super::*;

pub(super) async fn bench(
    common: &Common,
    prompt_tokens: usize,
    gen_tokens: usize,
    runs: usize,
    speculation: &Speculation,
    grammar: Option<Grammar>,
) -> Result<()> {
    let speculative = speculation.options()?;
    if runs == 0 || prompt_tokens == 0 || gen_tokens == 0 {
        return Err(Error::BadOptions("--runs, --prompt-tokens and --gen-tokens must be at least 1".into()));
    }
    let kv = KvOptions { capacity: Some(common.kv_capacity.unwrap_or(prompt_tokens + gen_tokens)), ..common.kv()? };
    hearth::backend::host_memory::reset_peak();
    let (engine, load_ms) = load(common)?;
    // Heap only: a mapped model file is not in it.
    let load_peak_allocated = hearth::backend::host_memory::peak_bytes();
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
    let median_of = |results: &[hearth::GenerationStats], f: &dyn Fn(&hearth::GenerationStats) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let median = |f: &dyn Fn(&hearth::GenerationStats) -> f64| median_of(&results, f);
    // The same runs under the grammar, after the free ones in the same process: decoding
    // stops where the grammar ends (an end-of-generation token is all it allows then).
    let constrained = match grammar {
        None => None,
        Some(grammar) => {
            let kind = grammar.kind();
            // The vocabulary (once per model) and the first parser, timed apart.
            let began = std::time::Instant::now();
            let compiler = engine.grammars()?;
            let vocabulary_ms = began.elapsed().as_secs_f64() * 1e3;
            let began = std::time::Instant::now();
            compiler.compile(&grammar)?;
            let first_parser_ms = began.elapsed().as_secs_f64() * 1e3;
            let options = GenerateOptions { grammar: Some(grammar.clone()), ignore_eos: false, ..options.clone() };
            // The first constrained run fills the lexer's caches: timed apart.
            session.reset();
            let first = session.generate(&prompt, &options, |_, _| Control::Continue).await?.stats;
            let mut under = Vec::new();
            let mut tokens = Vec::new();
            for _ in 0..runs {
                session.reset();
                let g = session.generate(&prompt, &options, |_, _| Control::Continue).await?;
                under.push(g.stats);
                tokens = g.tokens;
            }
            let rate = median_of(&under, &|s| s.decode_tokens_per_s);
            let free = median(&|s| s.decode_tokens_per_s);
            let began = std::time::Instant::now();
            let mut constraint = compiler.compile(&grammar)?;
            let parser_ms = began.elapsed().as_secs_f64() * 1e3;
            // Each position's mask alone, replayed over the last run's tokens (forced ones
            // included, which the run itself took without a mask).
            let mut masks = Vec::with_capacity(tokens.len());
            for &token in &tokens {
                let began = std::time::Instant::now();
                constraint.allowed()?;
                masks.push(began.elapsed().as_secs_f64() * 1e3);
                constraint.consume(token)?;
            }
            masks.sort_by(f64::total_cmp);
            let quantile = |q: f64| masks.get(((masks.len() as f64 * q) as usize).min(masks.len().saturating_sub(1)));
            Some(json!({
                "grammar": kind,
                "vocabulary_build_ms": vocabulary_ms,
                "first_parser_build_ms": first_parser_ms,
                "parser_build_ms": parser_ms,
                "first_run_grammar_ms": first.grammar_ms,
                "generated_tokens": median_of(&under, &|s| s.generated_tokens as f64),
                "forced_tokens": median_of(&under, &|s| s.forced_tokens as f64),
                "decode_tokens_per_s": rate,
                "vs_free": if free > 0.0 { rate / free } else { 0.0 },
                "grammar_ms_per_token": median_of(&under, &|s| s.grammar_ms / s.generated_tokens.max(1) as f64),
                "mask_ms_median": quantile(0.5),
                "mask_ms_p99": quantile(0.99),
                "mask_ms_max": masks.last(),
            }))
        }
    };
    let device_memory = engine.device().memory_pool_usage();
    let out = json!({
        "model": engine.name(),
        "device": common.device,
        "weights": common.weights,
        "activations": common.activations,
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
        "constrained": constrained,
        "cpu_isa": (common.device == "cpu").then(|| hearth::backend::cpu::Isa::best().name()),
        "cpu_threads": (common.device == "cpu").then(hearth::backend::cpu::threads),
        "peak_host_memory_bytes": peak_rss_bytes(),
        "load_peak_allocated_bytes": load_peak_allocated,
        "device_memory_in_use_bytes": device_memory.as_ref().map(|m| m.bytes_in_use),
        "device_memory_reserved_bytes": device_memory.as_ref().map(|m| m.bytes_reserved),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// Decode speed of `streams` conversations decoded together ([`hearth::generate_batch`]),
/// each with the bench prompt: the median of `runs`.
pub(super) async fn bench_streams(
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
        "activations": common.activations,
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
pub(super) struct Quiet;

impl hearth::Listener for Quiet {
    fn on_text(&mut self, _: &str, _: u32) -> Result<Control> {
        Ok(Control::Continue)
    }
}

/// Natural text repeated to `tokens` tokens, the benchmarks' prompt.
pub(super) fn bench_prompt(engine: &Engine, tokens: usize) -> Result<Vec<u32>> {
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
pub(super) struct AdaptivePlan {
    pub(super) prompts: (usize, usize, usize),
    pub(super) text_tokens: usize,
    pub(super) settings: Vec<EarlyExitOptions>,
}

/// Greedy continuations of every prompt, each from an empty cache: their tokens, and summed
/// over them the decode milliseconds, decode steps, and layers run in those steps.
pub(super) async fn continuations(
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

pub(super) async fn adaptive_bench(
    common: &Common,
    prompts_file: &Path,
    text: &Path,
    plan: &AdaptivePlan,
) -> Result<()> {
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
        "activations": common.activations,
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
pub(super) struct SpeculativeItem {
    pub(super) kind: String,
    pub(super) prompt: String,
}

pub(super) async fn speculative_bench(
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
    let prune = PromptPruneOptions { method: PromptPruneMethod::None, budget: None };
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
        "activations": common.activations,
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
pub(super) struct QaItem {
    pub(super) notes: Vec<String>,
    pub(super) question: String,
    pub(super) answer: String,
}

/// The conversation of a [`QaItem`]: the notes in two user turns (so that dropping whole
/// turns has something to choose), each acknowledged, then the question.
pub(super) fn qa_messages(item: &QaItem) -> Vec<Message> {
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

pub(super) async fn prune_bench(common: &Common, items: &Path, keep: &[f64], limit: Option<usize>) -> Result<()> {
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
    let methods = [PromptPruneMethod::SelfInformation, PromptPruneMethod::OldestTurns, PromptPruneMethod::Front];
    let mut runs: Vec<(f64, PromptPruneMethod)> = vec![(1.0, PromptPruneMethod::None)];
    runs.extend(keep.iter().flat_map(|&k| methods.iter().map(move |&m| (k, m))));
    let mut correct = vec![0usize; runs.len()];
    let mut kept_tokens = vec![0usize; runs.len()];
    let start = Instant::now();
    for (n, item) in items.iter().enumerate() {
        let messages = qa_messages(item);
        let prompt = engine.chat_prompt(&messages, &[])?;
        let droppable = prompt.tokens.len() - prompt.protected_tokens();
        for (r, &(fraction, method)) in runs.iter().enumerate() {
            let budget = prompt.protected_tokens() + (droppable as f64 * fraction).round() as usize;
            session.reset();
            let prune = PromptPruneOptions { method, budget: Some(budget) };
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

pub(super) fn bench_kernels(common: &Common, runs: usize, formats: &str) -> Result<()> {
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
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

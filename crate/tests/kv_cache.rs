//! The bounded KV cache and input pruning on a tiny random model: which tokens each policy
//! keeps, logits after eviction against the reference run over the same kept set, constant
//! memory over long generations, pruning that never touches the protected part.

mod common;

use std::sync::Arc;

use common::*;
use hearth::kv_cache::heavy_hitters_keep;
use hearth::text::prompt_pruning::ChatPrompt;
use hearth::text::template::Rendered;
use hearth::{
    Control, DeviceKind, Engine, Error, EvictionPolicy, GenerateOptions, KvOptions, Message, PromptPruneMethod,
    PromptPruneOptions, Session, WeightFormat,
};

const TOLERANCE: f32 = 2e-4;

fn engine(seed: u64, device: DeviceKind) -> (Arc<Engine>, Reference) {
    let c = TinyConfig { context: 256, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, seed, true, &|_| Ty::F32);
    let bytes = tiny_gguf(&c, &tensors);
    let engine = Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::F32).unwrap();
    (Arc::new(engine), Reference::new(&c, &tensors, RopeStyle::Adjacent))
}

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let vocab = TinyConfig::new().vocab as u64;
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

fn feed(session: &mut Session, ids: &[u32]) -> Vec<f32> {
    let logits = pollster::block_on(session.feed(ids)).unwrap();
    logits.into_data().try_into_vec_as::<f32>().unwrap()
}

/// What the policy must keep of the reference's entries when one more token comes to a full
/// cache of `capacity`.
fn expected_keep(policy: EvictionPolicy, stream: &RefStream, sinks: usize, recent: usize) -> Vec<usize> {
    let len = stream.len();
    match policy {
        EvictionPolicy::SinksWindow => (0..sinks).chain(sinks + 1..len).collect(),
        EvictionPolicy::HeavyHitters => heavy_hitters_keep(&stream.scores, sinks, recent, 1),
        EvictionPolicy::None => (0..len).collect(),
    }
}

/// Token by token through a cache of 12 slots, 40 tokens: after every eviction the cache holds
/// exactly the tokens the policy names, and the logits equal the reference's over that kept
/// set at positions `0..len`.
fn eviction_matches_reference(policy: EvictionPolicy, sinks: usize, device: DeviceKind) {
    let (engine, reference) = engine(71, device);
    eviction_matches(&engine, &reference, policy, sinks, &format!("{device:?}"));
}

/// [`eviction_matches_reference`] for a given model and its reference.
fn eviction_matches(engine: &Arc<Engine>, reference: &Reference, policy: EvictionPolicy, sinks: usize, label: &str) {
    const CAPACITY: usize = 12;
    let recent = 4;
    let kv = KvOptions { capacity: Some(CAPACITY), policy, sinks, recent: Some(recent), ..KvOptions::default() };
    let mut session = engine.session(&kv).unwrap();
    let mut stream = RefStream::new(reference);
    // The stream index of each reference entry.
    let mut origin: Vec<usize> = Vec::new();
    let mut evicted = 0;
    for (i, &t) in tokens(40, 3).iter().enumerate() {
        if stream.len() == CAPACITY {
            let keep = expected_keep(policy, &stream, sinks, recent);
            stream.keep(&keep);
            origin = keep.iter().map(|&k| origin[k]).collect();
            evicted += 1;
        }
        let want = stream.step(t);
        origin.push(i);
        let got = feed(&mut session, &[t]);
        let what = format!("{policy:?} sinks={sinks} {label} token {i}");
        assert_eq!(session.kv_cache().kept(), &origin[..], "{what}: kept tokens");
        assert_eq!(session.kv_cache().evicted(), evicted, "{what}: evicted count");
        let diff = max_rel_diff(&got, &want);
        assert!(diff < TOLERANCE, "{what}: logits differ by {diff}");
    }
    assert_eq!(evicted, 40 - CAPACITY);
}

#[test]
fn sinks_window_keeps_sinks_and_recent_tokens_at_contiguous_positions() {
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        eviction_matches_reference(EvictionPolicy::SinksWindow, 4, device);
    }
}

#[test]
fn plain_window_without_sinks() {
    eviction_matches_reference(EvictionPolicy::SinksWindow, 0, DeviceKind::Cpu);
}

#[test]
fn heavy_hitters_keep_the_most_attended_tokens() {
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        eviction_matches_reference(EvictionPolicy::HeavyHitters, 2, device);
    }
}

#[test]
fn heavy_hitters_choice() {
    let scores = [9.0, 0.1, 5.0, 0.2, 3.0, 0.05, 7.0, 0.0, 0.0];
    // Sink 0 and the last 2 stay whatever their scores; of slots 1..7 the 3 lowest go.
    assert_eq!(heavy_hitters_keep(&scores, 1, 2, 3), vec![0, 2, 4, 6, 7, 8]);
    // Equal scores: the newer token goes first.
    assert_eq!(heavy_hitters_keep(&[1.0, 0.0, 0.0, 0.0, 1.0], 0, 1, 1), vec![0, 1, 2, 4]);
}

/// A prompt longer than the cache runs in chunks with eviction in between; with capacity at
/// least the sequence, every policy gives the unbounded cache's logits.
#[test]
fn long_prompts_stream_and_roomy_caches_change_nothing() {
    let (engine, reference) = engine(72, DeviceKind::Cpu);
    let ids = tokens(30, 4);
    let want = reference.logits(&ids);
    for policy in [EvictionPolicy::None, EvictionPolicy::SinksWindow, EvictionPolicy::HeavyHitters] {
        let mut session = engine.session(&KvOptions::with_capacity(32).policy(policy)).unwrap();
        let mut got = feed(&mut session, &ids[..9]);
        assert!(max_rel_diff(&got, &want[8]) < TOLERANCE, "{policy:?} prefill");
        for (i, &t) in ids.iter().enumerate().skip(9) {
            got = feed(&mut session, &[t]);
            assert!(max_rel_diff(&got, &want[i]) < TOLERANCE, "{policy:?} token {i}");
        }
        assert_eq!(session.kv_cache().evicted(), 0);
    }

    // 30 tokens through 16 slots: chunks of at most (16 - 4) / 2 = 6, evicting before each.
    let mut session = engine.session(&KvOptions::with_capacity(16)).unwrap();
    feed(&mut session, &ids);
    let kept = session.kv_cache().kept().to_vec();
    assert_eq!(kept.len(), 16);
    assert_eq!(&kept[..4], &[0, 1, 2, 3]);
    assert_eq!(*kept.last().unwrap(), 29);
    assert!(kept.windows(2).all(|w| w[0] < w[1]));
}

/// Generation past the capacity keeps going with eviction; a next turn that extends the
/// conversation runs only its new tokens; a turn that does not starts over.
#[test]
fn generation_past_capacity_and_reuse_after_eviction() {
    let (engine, _) = engine(73, DeviceKind::Cpu);
    let mut session = engine.session(&KvOptions::with_capacity(16)).unwrap();
    let prompt = tokens(6, 5);
    let options = GenerateOptions { max_tokens: 40, ignore_eos: true, ..Default::default() };
    let first = pollster::block_on(session.generate(&prompt, &options, |_, _| Control::Continue)).unwrap();
    assert_eq!(first.tokens.len(), 40);
    assert_eq!(first.stats.kv_len, 16);
    // 6 + 39 fed tokens through 16 slots.
    assert_eq!(first.stats.evicted_tokens, 6 + 39 - 16);

    let mut next = prompt.clone();
    next.extend(&first.tokens);
    next.extend(tokens(3, 6));
    let second = pollster::block_on(session.generate(&next, &options, |_, _| Control::Continue)).unwrap();
    assert_eq!(second.stats.reused_tokens, 6 + 39);

    let other = tokens(5, 7);
    let third = pollster::block_on(session.generate(&other, &options, |_, _| Control::Continue)).unwrap();
    assert_eq!(third.stats.reused_tokens, 0);
    assert_eq!(session.kv_cache().kept().first(), Some(&0));
}

/// Device memory after 10,000 generated tokens is what it was after 100, up to the pool's own
/// bookkeeping: cubecl's small-object pool has been seen to reserve some 6 KB more (and hand out
/// 16 bytes more) once in a while, independent of the token count. A leak of anything per token
/// (a cache slot, a logits buffer, even four bytes) would be 40 KB or more over the 9,900
/// extra tokens.
#[test]
fn memory_stays_constant_over_long_generations() {
    let (engine, _) = engine(74, DeviceKind::Wgpu);
    let mut session = engine.session(&KvOptions::with_capacity(32)).unwrap();
    let prompt = tokens(8, 8);
    let mut run = |n| {
        session.reset();
        let options = GenerateOptions { max_tokens: n, ignore_eos: true, ..Default::default() };
        let g = pollster::block_on(session.generate(&prompt, &options, |_, _| Control::Continue)).unwrap();
        assert_eq!(g.tokens.len(), n);
        engine.device().sync().unwrap();
        let usage = engine.device().memory_pool_usage().expect("wgpu reports memory");
        (usage.bytes_reserved, usage.bytes_in_use)
    };
    run(100); // compiles kernels, fills the pools
    let after_100 = run(100);
    let after_10000 = run(10_000);
    let grown = (after_10000.0.saturating_sub(after_100.0), after_10000.1.saturating_sub(after_100.1));
    assert!(
        grown.0 < 32 * 1024 && grown.1 < 1024,
        "(reserved, in use) bytes after 10,000 tokens {after_10000:?} vs after 100 {after_100:?}"
    );
}

/// Self-information equals `-ln p` from the reference's logits, in one chunk and sliding.
#[test]
fn surprisal_matches_reference() {
    let (engine, reference) = engine(75, DeviceKind::Cpu);
    let ids = tokens(20, 9);
    let logits = reference.logits(&ids);
    let want: Vec<f32> = std::iter::once(0.0)
        .chain((1..ids.len()).map(|i| {
            let row = &logits[i - 1];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_sum = row.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
            log_sum - row[ids[i] as usize]
        }))
        .collect();
    let session = engine.session(&KvOptions::with_capacity(64)).unwrap();
    let got = pollster::block_on(session.surprisal(&ids)).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-3, "token {i}: {g} vs {w}");
    }
    // Through 12 slots the scores are defined for every token; the session's own cache is
    // not used.
    let small = engine.session(&KvOptions::with_capacity(12)).unwrap();
    let got = pollster::block_on(small.surprisal(&ids)).unwrap();
    assert_eq!(got.len(), ids.len());
    assert!(got[1..].iter().all(|s| s.is_finite() && *s > 0.0));
    assert!(small.kv_cache().is_empty());
}

fn conversation() -> Vec<Message> {
    vec![
        Message::new("system", "be brief"),
        Message::new("user", "one two three. four five six. seven eight nine. ten eleven twelve."),
        Message::new("assistant", "ok"),
        Message::new("user", "thirteen fourteen. fifteen sixteen."),
        Message::new("assistant", "ok"),
        Message::new("user", "what came first?"),
    ]
}

/// The protected part (system prompt, latest user message, template) survives every method;
/// each method drops what it says, and the report adds up.
#[test]
fn pruning_keeps_the_protected_part() {
    let (engine, _) = engine(76, DeviceKind::Cpu);
    let messages = conversation();
    let prompt = engine.chat_prompt(&messages, &[]).unwrap();
    let total = prompt.tokens.len();
    let protected = prompt.protected_tokens();
    assert!(protected < total);
    let tokenizer = engine.tokenizer();
    let text_of = |ids: &[u32]| tokenizer.decode(ids, false).unwrap();

    // Scores that make the second sentence of the first note the least informative.
    let mut scores = vec![5.0f32; total];
    let full = text_of(&prompt.tokens);
    let at = full.find(" four").unwrap();
    let mut pos = 0;
    for (i, &t) in prompt.tokens.iter().enumerate() {
        let piece = text_of(&[t]);
        if (at..at + " four five six.".len()).contains(&pos) {
            scores[i] = 0.5;
        }
        pos += piece.len();
    }

    // Exactly that sentence must go.
    let budget = total - scores.iter().filter(|&&s| s < 1.0).count();
    for method in [PromptPruneMethod::SelfInformation, PromptPruneMethod::OldestTurns, PromptPruneMethod::Front] {
        let report = prompt.prune(tokenizer, budget, method, &scores).unwrap();
        assert!(report.kept_tokens <= budget, "{method:?}");
        assert_eq!(report.kept_tokens + report.pruned_tokens, total);
        assert_eq!(report.dropped.iter().map(|d| d.tokens).sum::<usize>(), report.pruned_tokens);
        let kept = text_of(&report.tokens);
        for must in ["<|im_start|>system\nbe brief<|im_end|>", "<|im_start|>user\nwhat came first?<|im_end|>"] {
            assert!(kept.contains(must), "{method:?} lost {must:?}: {kept:?}");
        }
        assert_eq!(kept.matches("<|im_start|>").count(), 7, "{method:?}: template tokens stay");
        assert!(report.dropped.iter().all(|d| d.message == 1 || d.message == 3));
        let first = &report.dropped[0];
        let note = &messages[1].content;
        match method {
            PromptPruneMethod::SelfInformation => assert_eq!(first.text, " four five six.", "{report:?}"),
            PromptPruneMethod::Front => {
                assert!(note.starts_with(&first.text) && first.tokens == total - budget, "{report:?}")
            }
            PromptPruneMethod::OldestTurns => assert_eq!((first.message, &first.text), (1, note), "{report:?}"),
            PromptPruneMethod::None => {}
        }
    }
    let err = prompt.prune(tokenizer, protected - 1, PromptPruneMethod::Front, &scores).err().unwrap();
    assert!(matches!(err, Error::BadOptions(ref m) if m.contains("never dropped")), "{err}");
}

/// A prompt within its budget loses nothing, also when its very first token could be dropped.
#[test]
fn pruning_within_budget_drops_nothing() {
    let (engine, _) = engine(79, DeviceKind::Cpu);
    let messages = [Message::new("assistant", "one two"), Message::new("user", "q")];
    let rendered = Rendered { text: "one twoq".into(), spans: vec![Some(0..7), Some(7..8)] };
    let prompt = ChatPrompt::new(&messages, rendered, vec![10, 11, 12], vec![(0, 3), (3, 7), (7, 8)]);
    assert_eq!(prompt.protected_tokens(), 1);
    for method in [PromptPruneMethod::SelfInformation, PromptPruneMethod::OldestTurns, PromptPruneMethod::Front] {
        let report = prompt.prune(engine.tokenizer(), 3, method, &[0.0; 3]).unwrap();
        assert_eq!((report.pruned_tokens, &report.tokens[..]), (0, &[10, 11, 12][..]), "{method:?}");
    }
}

/// A chat whose prompt is over budget is pruned by the model's own scores and still answers;
/// the stats and the report agree.
#[test]
fn chat_prunes_to_budget() {
    let (engine, _) = engine(77, DeviceKind::Cpu);
    let mut session = engine.session(&KvOptions::with_capacity(256)).unwrap();
    let messages = conversation();
    let total = engine.chat_prompt(&messages, &[]).unwrap().tokens.len();
    let prune = PromptPruneOptions { method: PromptPruneMethod::SelfInformation, budget: Some(total - 10) };
    let options = GenerateOptions { max_tokens: 4, ignore_eos: true, ..Default::default() };
    let g = pollster::block_on(session.chat(&messages, &options, &prune, |_, _| Control::Continue)).unwrap();
    let report = g.pruned.expect("pruned");
    assert!(report.pruned_tokens >= 10);
    assert_eq!(g.stats.pruned_tokens, report.pruned_tokens);
    assert_eq!(g.stats.prompt_tokens, total - report.pruned_tokens);

    // Within budget: nothing pruned.
    let roomy = PromptPruneOptions { method: PromptPruneMethod::SelfInformation, budget: Some(total) };
    let g = pollster::block_on(session.chat(&messages, &options, &roomy, |_, _| Control::Continue)).unwrap();
    assert!(g.pruned.is_none());
    assert_eq!(g.stats.pruned_tokens, 0);
}

#[test]
fn bad_cache_and_pruning_options_are_refused() {
    let (engine, _) = engine(78, DeviceKind::Cpu);
    let refused = |kv: KvOptions| match engine.session(&kv) {
        Err(Error::BadOptions(m)) => m,
        Err(e) => panic!("{kv:?}: wrong error {e}"),
        Ok(_) => panic!("{kv:?} accepted"),
    };
    assert!(refused(KvOptions::with_capacity(0)).contains("at least 1"));
    assert!(refused(KvOptions::with_capacity(8).sinks(8)).contains("sinks"));
    assert!(refused(KvOptions::with_capacity(8).sinks(20)).contains("sinks"));
    let h2o =
        KvOptions { recent: Some(6), ..KvOptions::with_capacity(8).sinks(2).policy(EvictionPolicy::HeavyHitters) };
    assert!(refused(h2o).contains("heavy hitters"));
    assert!(refused(KvOptions { capacity_bytes: Some(1), ..KvOptions::default() }).contains("at least 1"));
    // Without eviction, sinks do not matter.
    assert!(engine.session(&KvOptions::with_capacity(8).sinks(8).policy(EvictionPolicy::None)).is_ok());

    for name in ["", "lru", "Sinks-Window"] {
        let err = name.parse::<EvictionPolicy>().err().unwrap();
        assert!(err.to_string().contains("sinks-window"), "{err}");
    }
    assert!("self information".parse::<PromptPruneMethod>().is_err());
    assert_eq!("heavy-hitters".parse::<EvictionPolicy>().unwrap(), EvictionPolicy::HeavyHitters);

    let mut session = engine.session(&KvOptions::with_capacity(256)).unwrap();
    let options = GenerateOptions { max_tokens: 4, ..Default::default() };
    let run = |session: &mut Session, prune: &PromptPruneOptions| {
        pollster::block_on(session.chat(&conversation(), &options, prune, |_, _| Control::Continue))
    };
    let tiny_budget = PromptPruneOptions { budget: Some(3), ..Default::default() };
    assert!(matches!(run(&mut session, &tiny_budget), Err(Error::BadOptions(m)) if m.contains("never dropped")));
    let zero = PromptPruneOptions { budget: Some(0), ..Default::default() };
    assert!(matches!(run(&mut session, &zero), Err(Error::BadOptions(_))));
    // Still usable.
    assert!(run(&mut session, &PromptPruneOptions::default()).is_ok());
}

/// Greedy generation past the capacity equals the reference's greedy run with one
/// StreamingLLM eviction per token (the browser test checks the same on WebGPU).
#[test]
fn greedy_generation_through_eviction_matches_reference() {
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let (engine, reference) = engine(43, device);
        let prompt: Vec<u32> = (0..6).map(|i| 7 + 13 * i).collect();
        let want = greedy_sinks_window(&reference, &prompt, 20, 12, 4);
        let mut session = engine.session(&KvOptions::with_capacity(12).sinks(4)).unwrap();
        let options = GenerateOptions { max_tokens: 20, ignore_eos: true, ..Default::default() };
        let g = pollster::block_on(session.generate(&prompt, &options, |_, _| Control::Continue)).unwrap();
        assert_eq!(g.tokens, want, "{device:?}");
        assert_eq!(g.stats.evicted_tokens, 6 + 19 - 12);
    }
}

/// A tiny Gemma 3 (window 5, six layers: five sliding-window, one global) in a cache of
/// `capacity` slots.
fn gemma3(capacity_hint: usize, device: DeviceKind) -> (Arc<Engine>, Reference, TinyConfig) {
    let c = TinyConfig {
        n_layers: 6,
        head_dim: Some(16),
        gemma3_window: Some(5),
        rope_theta: 1e6,
        context: capacity_hint.max(256),
        ..TinyConfig::new()
    };
    let tensors = gemma3_weights(&c, 81);
    let engine = Engine::from_gguf(&gemma3_gguf(&c, &tensors), &device.device().unwrap(), WeightFormat::F32).unwrap();
    (Arc::new(engine), Reference::new(&c, &tensors, RopeStyle::Half), c)
}

/// Sliding-window layers keep their window and room for one pass (4 + 16 rows here) instead of
/// a row per slot, whatever the capacity, and moving their slots down as passes come gives the
/// reference's logits at every position of 90 tokens (fed in passes of 16 by `logits_all`, then
/// one by one), on the CPU and on wgpu; the global layer keeps all 128.
fn sliding_window_layers_keep_only_their_window(device: DeviceKind) {
    let (engine, reference, _) = gemma3(128, device);
    let ids = tokens(90, 12);
    let want = reference.logits(&ids);
    let mut session = engine.session(&KvOptions::with_capacity(128)).unwrap();
    assert_eq!((0..6).map(|l| session.kv_cache().layer_rows(l)).collect::<Vec<_>>(), [20, 20, 20, 20, 20, 128]);
    let got = pollster::block_on(session.logits_all(&ids[..70])).unwrap();
    for (pos, (g, w)) in got.iter().zip(&want).enumerate() {
        let diff = max_rel_diff(g, w);
        assert!(diff < TOLERANCE, "{device:?} position {pos}: {diff}");
    }
    for (i, &t) in ids.iter().enumerate().skip(70) {
        let diff = max_rel_diff(&feed(&mut session, &[t]), &want[i]);
        assert!(diff < TOLERANCE, "{device:?} token {i} fed alone: {diff}");
    }
    // Smaller than twice the rows (and the sinks): every layer keeps a row per slot, so that
    // eviction never needs a slot a window lost.
    let small = engine.session(&KvOptions::with_capacity(40)).unwrap();
    assert!((0..6).all(|l| small.kv_cache().layer_rows(l) == 40));
}

each_device!(sliding_window_layers_keep_only_their_window);

/// Eviction with mixed layers: token by token through a cache of 48 slots (4 sinks; heavy
/// hitters with a recent span of 8) for 120 tokens, the kept tokens and the logits equal the
/// reference over that kept set; the windows are measured in slots, as the reference's in
/// entries, and heavy hitters count the attention sliding-window layers pay within them.
#[test]
fn eviction_with_sliding_window_layers_matches_reference() {
    const CAPACITY: usize = 48;
    let (engine, reference, _) = gemma3(CAPACITY, DeviceKind::Cpu);
    for policy in [EvictionPolicy::SinksWindow, EvictionPolicy::HeavyHitters] {
        let kv = KvOptions { capacity: Some(CAPACITY), policy, sinks: 4, recent: Some(8), ..KvOptions::default() };
        let mut session = engine.session(&kv).unwrap();
        assert_eq!(session.kv_cache().layer_rows(0), 20);
        let mut stream = RefStream::new(&reference);
        let mut origin: Vec<usize> = Vec::new();
        for (i, &t) in tokens(120, 5).iter().enumerate() {
            if stream.len() == CAPACITY {
                let keep = expected_keep(policy, &stream, 4, 8);
                stream.keep(&keep);
                origin = keep.iter().map(|&k| origin[k]).collect();
            }
            let want = stream.step(t);
            origin.push(i);
            let diff = max_rel_diff(&feed(&mut session, &[t]), &want);
            assert!(diff < TOLERANCE, "{policy:?} token {i}: logits differ by {diff}");
            assert_eq!(session.kv_cache().kept(), &origin[..], "{policy:?} token {i}: kept tokens");
        }
        assert_eq!(session.kv_cache().evicted(), 120 - CAPACITY);
    }
}

/// A new prompt that shares a prefix with the conversation reuses it when the windows still
/// hold what its next token sees, and starts over when they moved past it; both give the
/// reference's logits.
#[test]
fn prefix_reuse_with_sliding_window_layers_matches_reference() {
    let (engine, reference, _) = gemma3(128, DeviceKind::Cpu);
    let first = tokens(60, 21);
    let mut session = engine.session(&KvOptions::with_capacity(128)).unwrap();
    let opts = GenerateOptions { max_tokens: 1, ..GenerateOptions::default() };
    let run = |session: &mut Session, prompt: &[u32]| {
        let g = pollster::block_on(session.generate(prompt, &opts, |_, _| Control::Continue)).unwrap();
        (g.stats.reused_tokens, g.tokens[0])
    };
    let (_, t) = run(&mut session, &first);
    assert_eq!(t, reference.greedy(&first, 1)[0]);
    // Continues the conversation: all it ran is reused (the sampled token was never fed).
    let mut longer = first.clone();
    longer.extend([t, 7, 9]);
    let (reused, t) = run(&mut session, &longer);
    assert_eq!((reused, t), (60, reference.greedy(&longer, 1)[0]));
    // Edits near the end (inside what the windows hold): reused up to the edit.
    let mut edited = longer[..58].to_vec();
    edited.extend([30, 31]);
    let (reused, t) = run(&mut session, &edited);
    assert_eq!((reused, t), (58, reference.greedy(&edited, 1)[0]));
    // Edits far back: the windows moved past it, so the prompt runs again from the start.
    let mut early = first[..10].to_vec();
    early.extend([40, 41, 42]);
    let (reused, t) = run(&mut session, &early);
    assert_eq!((reused, t), (0, reference.greedy(&early, 1)[0]));
}

/// LongRoPE (Phi-3.5) scales every rotation by an attention factor; eviction turns kept keys
/// back by the distance they move, which must not scale them again: token by token through a
/// cache of 12 (short factors: within the original context of 128), the kept set and the
/// logits equal the reference's, whose every rotation is scaled once.
#[test]
fn eviction_under_longrope_matches_reference() {
    let base = TinyConfig { context: 256, ..TinyConfig::new() };
    let hd = base.head_dim();
    let short: Vec<f32> = (0..hd / 2).map(|i| 1.0 + i as f32 * 0.5).collect();
    let c = TinyConfig { rope_freq_factors: Some(short.clone()), rope_attn_factor: 1.15, ..base };
    let mut tensors = tiny_weights(&c, 73, true, &|_| Ty::F32);
    tensors.push(f32_tensor("rope_factors_short.weight", vec![hd / 2], short));
    tensors.push(f32_tensor("rope_factors_long.weight", vec![hd / 2], vec![8.0; hd / 2]));
    let mut metadata = tiny_metadata(&c);
    metadata.push(("llama.rope.scaling.attn_factor", Kv::F32(1.15)));
    metadata.push(("llama.rope.scaling.original_context_length", Kv::U32(128)));
    let bytes = write_gguf(&metadata, &tensors);
    let reference = Reference::new(&c, &tensors, RopeStyle::Adjacent);
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::F32).unwrap());
        eviction_matches(&engine, &reference, EvictionPolicy::SinksWindow, 2, &format!("LongRoPE {device:?}"));
    }
}

//! Speculative decoding on tiny random models: prompt lookup's, a draft model's and the model's
//! own first layers' greedy output equals one-token greedy decoding token for token (CPU and
//! wgpu, across evictions, with every policy), a rollback leaves the KV cache as if the dropped
//! tokens had never come, and speculative sampling draws from the same distribution as plain
//! sampling.

mod common;

use std::sync::Arc;

use common::*;
use hearth::model::Logits;
use hearth::{
    Control, DeviceKind, Engine, Error, EvictionPolicy, GenerateOptions, KvCache, KvOptions, SamplerOptions,
    SpeculativeMethod, SpeculativeOptions, WeightFormat,
};

fn lookup(max_draft: usize, ngram: usize) -> Option<SpeculativeOptions> {
    Some(SpeculativeOptions { max_draft, ngram, ..SpeculativeOptions::default() })
}

/// Greedy generation with prompt lookup gives the tokens one-token steps give, and leaves the
/// session (its history and every byte of its cache) as they leave it; the drafts were both
/// accepted and rejected, so the check is not empty.
fn greedy_output_is_unchanged(device: DeviceKind, weights: WeightFormat, kv: KvOptions) {
    let engine = engine(91, device, weights);
    let (mut drafted, mut accepted, mut evicted) = (0, 0, 0);
    for (seed, n) in [(1u64, 60usize), (2, 45), (3, 80)] {
        // A prompt that repeats itself, as the copying tasks prompt lookup is for, then one
        // drawn from six tokens, whose n-grams recur with other continuations each time.
        let mut prompt = tokens(12, seed);
        prompt.extend_from_within(..);
        if seed > 1 {
            prompt = tokens(30, seed).iter().map(|t| 40 + t % 6).collect();
        }
        let plain = GenerateOptions { max_tokens: n, ignore_eos: true, ..GenerateOptions::default() };
        for (max_draft, ngram) in [(7, 3), (3, 1), (15, 2)] {
            let mut a = engine.session(&kv).unwrap();
            let want = generate(&mut a, &prompt, &plain);
            let fast = GenerateOptions { speculative: lookup(max_draft, ngram), ..plain.clone() };
            let mut b = engine.session(&kv).unwrap();
            let got = generate(&mut b, &prompt, &fast);
            let what = format!("{device:?} {weights:?} {kv:?}, prompt {seed}, draft {max_draft}, ngram {ngram}");
            if got.tokens != want.tokens {
                let at = got.tokens.iter().zip(&want.tokens).take_while(|(a, b)| a == b).count();
                panic!(
                    "{what}: {} tokens ({:?}) vs {} ({:?}), first difference at {at}: {:?} vs {:?}",
                    got.tokens.len(),
                    got.finish_reason,
                    want.tokens.len(),
                    want.finish_reason,
                    got.tokens.get(at),
                    want.tokens.get(at)
                );
            }
            assert_eq!(b.history(), a.history(), "{what}");
            let (ca, cb) = pollster::block_on(async {
                (a.kv_cache().contents().await.unwrap(), b.kv_cache().contents().await.unwrap())
            });
            assert_eq!(cb.kept, ca.kept, "{what}: the caches hold other tokens");
            // burn's dense f32 matmul (f32 weights on the CPU) sums a several-token pass in
            // another order than a one-token pass: there the same tokens, keys equal only up to
            // rounding. Everywhere else, bit for bit.
            if !(weights == WeightFormat::F32 && device == DeviceKind::Cpu) {
                assert_eq!(cb.scores, ca.scores, "{what}: heavy-hitter scores differ");
                for (l, (x, y)) in cb.layers.iter().zip(&ca.layers).enumerate() {
                    let diff = x.keys.iter().zip(&y.keys).position(|(a, b)| a != b);
                    assert!(
                        x.first_slot == y.first_slot && diff.is_none(),
                        "{what}: layer {l} keys differ at {diff:?}"
                    );
                    assert!(x.values == y.values, "{what}: layer {l} values differ");
                }
            }
            assert_eq!(got.stats.evicted_tokens, want.stats.evicted_tokens, "{what}");
            drafted += got.stats.draft_tokens;
            accepted += got.stats.accepted_tokens;
            evicted += got.stats.evicted_tokens;
            // The next turn continues from the same state.
            let mut next = prompt.clone();
            next.extend(&got.tokens);
            next.extend(tokens(3, seed + 10));
            let short = GenerateOptions { max_tokens: 12, ..fast.clone() };
            let again = GenerateOptions { speculative: None, ..short.clone() };
            assert_eq!(generate(&mut b, &next, &short).tokens, generate(&mut a, &next, &again).tokens, "{what}");
        }
    }
    assert!(accepted > 0 && accepted < drafted, "{drafted} drafted, {accepted} accepted");
    if kv.capacity.is_some_and(|c| c < 150) {
        assert!(evicted > 0, "the cache never evicted");
    }
}

#[test]
fn prompt_lookup_greedy_equals_plain_greedy_on_cpu() {
    for weights in [WeightFormat::F32, WeightFormat::Int4] {
        greedy_output_is_unchanged(DeviceKind::Cpu, weights, KvOptions::with_capacity(256));
    }
}

/// Drafts stop where the cache is full, so eviction happens when and as one-token steps make
/// it happen: the same tokens past the capacity, with each policy.
#[test]
fn prompt_lookup_greedy_equals_plain_greedy_across_evictions() {
    for policy in [EvictionPolicy::SinksWindow, EvictionPolicy::HeavyHitters] {
        let kv = KvOptions::with_capacity(48).policy(policy);
        greedy_output_is_unchanged(DeviceKind::Cpu, WeightFormat::Int4, kv);
    }
}

#[test]
fn prompt_lookup_greedy_equals_plain_greedy_on_wgpu() {
    greedy_output_is_unchanged(DeviceKind::Wgpu, WeightFormat::Int4, KvOptions::with_capacity(48));
}

/// `tokens` through `cache` in passes of at most `pass`, evicting as its policy says.
fn feed(engine: &Engine, cache: &mut KvCache, tokens: &[u32], pass: usize) {
    for chunk in tokens.chunks(pass.min(cache.max_append())) {
        pollster::block_on(cache.make_room(chunk.len())).unwrap();
        engine.model().forward(chunk, cache, Logits::Last).unwrap();
    }
}

/// Feeding `a`, then `b` and `c` in one tentative pass and dropping `c` leaves the cache equal,
/// bit for bit, to one fed `a` and then `b` a token at a time (the decoding steps such a pass
/// stands in for): slots, stream indices, keys, values and heavy-hitter scores, after an
/// eviction too; the next pass gives the same logits.
#[test]
fn rollback_leaves_no_trace() {
    let engine = engine(92, DeviceKind::Cpu, WeightFormat::Int4);
    let config = engine.config().clone();
    let device = engine.device().clone();
    let (a, b, c, d) = (tokens(50, 21), tokens(5, 22), tokens(4, 23), tokens(3, 24));
    for policy in [EvictionPolicy::SinksWindow, EvictionPolicy::HeavyHitters, EvictionPolicy::None] {
        // 40 slots: `a` evicts (but under `none`, which gets room for all).
        let capacity = if policy == EvictionPolicy::None { 64 } else { 40 };
        let kv = KvOptions::with_capacity(capacity).policy(policy);
        let mut plain = KvCache::new(&config, &kv, &device).unwrap();
        let mut rolled = KvCache::new(&config, &kv, &device).unwrap();
        feed(&engine, &mut plain, &a, 8);
        feed(&engine, &mut rolled, &a, 8);
        // Room for the span first, in both: it must not evict.
        for cache in [&mut plain, &mut rolled] {
            pollster::block_on(cache.make_room(b.len() + c.len())).unwrap();
        }
        feed(&engine, &mut plain, &b, 1);
        rolled.tentative();
        let bc: Vec<u32> = b.iter().chain(&c).copied().collect();
        engine.model().forward(&bc, &mut rolled, Logits::All).unwrap();
        rolled.rollback(c.len()).unwrap();
        let contents = |cache: &KvCache| pollster::block_on(cache.contents()).unwrap();
        assert_eq!(contents(&rolled), contents(&plain), "{policy:?}");
        let next = |cache: &mut KvCache| {
            let logits = engine.model().forward(&d, cache, Logits::All).unwrap();
            logits.into_data().try_into_vec_as::<f32>().unwrap()
        };
        assert_eq!(next(&mut rolled), next(&mut plain), "{policy:?}");
        if policy != EvictionPolicy::None {
            assert!(plain.evicted() > 0, "{policy:?}: nothing was evicted");
        }
    }
    // Out of order or too much is refused and changes nothing.
    let mut cache = KvCache::new(&config, &KvOptions::with_capacity(32), &device).unwrap();
    feed(&engine, &mut cache, &a[..8], 8);
    assert!(cache.rollback(1).is_err());
    cache.tentative();
    engine.model().forward(&b, &mut cache, Logits::Last).unwrap();
    assert!(cache.rollback(b.len() + 1).is_err());
    assert_eq!(cache.len(), 8 + b.len());
    cache.rollback(b.len()).unwrap();
    assert_eq!(cache.len(), 8);
    assert!(!cache.is_tentative());
}

/// Top-`k` softmax of `logits` at temperature 1, computed here: the distribution sampling
/// must follow.
fn top_k_probabilities(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order.truncate(k);
    let max = logits[order[0] as usize] as f64;
    let weights: Vec<f64> = order.iter().map(|&t| (logits[t as usize] as f64 - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    order.into_iter().zip(weights.into_iter().map(|w| w / total)).collect()
}

/// With sampling, prompt lookup's second token (the first one checked against a draft) follows
/// the model's distribution: over 6,000 seeded generations the counts of each (first, second)
/// pair pass a chi-square test against the probabilities computed from the model's logits,
/// as plain sampling's do. The prompt is chosen so that drafts are often accepted and often
/// rejected.
#[test]
fn speculative_sampling_keeps_the_distribution() {
    const K: usize = 3;
    let engine = engine_of(93, DeviceKind::Cpu, WeightFormat::F32, true);
    let kv = KvOptions::with_capacity(64);
    let mut scratch = engine.session(&kv).unwrap();
    let mut logits_after = |tokens: &[u32]| pollster::block_on(scratch.logits_all(tokens)).unwrap().pop().unwrap();
    // A prompt whose likely next tokens each occurred in it before a likely successor, so
    // that 1-gram lookup drafts tokens the model gives real probability to.
    let (prompt, cells) = (0..500u64)
        .find_map(|seed| {
            let prompt = tokens(16, 100 + seed);
            let first = top_k_probabilities(&logits_after(&prompt), K);
            let mut cells = Vec::new();
            let mut draft_mass = 0.0;
            for &(t1, p1) in &first {
                let mut with = prompt.clone();
                with.push(t1);
                let second = top_k_probabilities(&logits_after(&with), K);
                let draft = prompt.iter().rposition(|&t| t == t1).map(|i| with[i + 1]);
                draft_mass += p1 * second.iter().find(|x| Some(x.0) == draft).map_or(0.0, |x| x.1);
                cells.extend(second.iter().map(|&(t2, p2)| ((t1, t2), p1 * p2)));
            }
            (0.3..0.7).contains(&draft_mass).then_some((prompt, cells))
        })
        .expect("a prompt whose drafts the model often accepts");

    let draws = 6000;
    let chi_square = |speculative: Option<SpeculativeOptions>| {
        let mut counts = vec![0usize; cells.len()];
        let (mut drafted, mut accepted) = (0, 0);
        let mut session = engine.session(&kv).unwrap();
        for seed in 0..draws {
            let sampler = SamplerOptions { temperature: 1.0, top_k: K, seed: Some(seed), ..SamplerOptions::default() };
            let options = GenerateOptions {
                max_tokens: 3,
                sampler,
                ignore_eos: true,
                speculative: speculative.clone(),
                ..GenerateOptions::default()
            };
            session.reset();
            let g = generate(&mut session, &prompt, &options);
            let cell = cells.iter().position(|c| c.0 == (g.tokens[0], g.tokens[1])).expect("a top-k pair");
            counts[cell] += 1;
            drafted += g.stats.draft_tokens;
            accepted += g.stats.accepted_tokens;
        }
        let chi: f64 = counts
            .iter()
            .zip(&cells)
            .map(|(&n, &(_, p))| {
                let want = p * draws as f64;
                (n as f64 - want).powi(2) / want
            })
            .sum();
        (chi, drafted, accepted)
    };
    // 8 degrees of freedom: 26.1 is the 0.001 critical value.
    let (plain, _, _) = chi_square(None);
    assert!(plain < 26.1, "plain sampling: chi-square {plain}");
    let (chi, drafted, accepted) = chi_square(lookup(2, 1));
    assert!(chi < 26.1, "speculative sampling: chi-square {chi}");
    assert!(
        accepted > drafted / 5 && accepted < drafted * 4 / 5,
        "{accepted} of {drafted} drafts accepted: the rule was hardly tested"
    );
}

/// Self-speculative decoding (the model's first layers guess, the whole model checks) gives
/// the tokens plain greedy decoding gives and leaves the same history and cache, bit for bit,
/// with a cache that evicts too; the first layers did guess.
fn self_speculation_changes_nothing(device: DeviceKind) {
    let engine = engine(91, device, WeightFormat::Int4);
    let plain = GenerateOptions { max_tokens: 40, ignore_eos: true, ..GenerateOptions::default() };
    let mut drafted = 0;
    for (seed, kv) in [(1u64, KvOptions::with_capacity(96)), (2, KvOptions::with_capacity(40))] {
        let prompt = tokens(14, seed);
        let mut a = engine.session(&kv).unwrap();
        let want = generate(&mut a, &prompt, &plain);
        let options = SpeculativeOptions {
            method: SpeculativeMethod::SelfDraft,
            draft_layers: 1,
            ..SpeculativeOptions::default()
        };
        let fast = GenerateOptions { speculative: Some(options), ..plain.clone() };
        let mut b = engine.session(&kv).unwrap();
        let got = generate(&mut b, &prompt, &fast);
        assert_eq!(got.tokens, want.tokens, "{device:?} seed {seed}");
        assert_eq!(b.history(), a.history());
        let (ca, cb) = pollster::block_on(async {
            (a.kv_cache().contents().await.unwrap(), b.kv_cache().contents().await.unwrap())
        });
        assert_eq!(cb, ca, "{device:?} seed {seed}: the caches differ");
        drafted += got.stats.draft_tokens;
    }
    assert!(drafted > 0, "the first layers never guessed");
    // Drafting with every layer leaves none to check with.
    let all =
        SpeculativeOptions { method: SpeculativeMethod::SelfDraft, draft_layers: 2, ..SpeculativeOptions::default() };
    let refused = pollster::block_on(engine.session(&KvOptions::with_capacity(32)).unwrap().generate(
        &tokens(3, 1),
        &GenerateOptions { speculative: Some(all), ..plain },
        |_, _| Control::Continue,
    ));
    assert!(matches!(refused, Err(Error::BadOptions(_))));
}

each_device!(self_speculation_changes_nothing);

/// A draft model's guesses change nothing either: greedy output equals plain greedy output
/// with a draft that often agrees (the same model quantized otherwise) and one that rarely
/// does (another random model), and the draft's own cache follows across turns; a draft whose
/// vocabulary differs is refused, and the method without a draft is refused.
#[test]
fn draft_model_greedy_equals_plain_greedy() {
    let main = engine(91, DeviceKind::Cpu, WeightFormat::Int4);
    let drafts = [engine(91, DeviceKind::Cpu, WeightFormat::F32), engine(97, DeviceKind::Cpu, WeightFormat::Int4)];
    let options = SpeculativeOptions { method: hearth::SpeculativeMethod::Draft, ..SpeculativeOptions::default() };
    let kv = KvOptions::with_capacity(96);
    let (mut drafted, mut accepted) = (0, 0);
    for draft in &drafts {
        for seed in [1u64, 2] {
            let prompt = tokens(10, seed);
            let plain = GenerateOptions { max_tokens: 40, ignore_eos: true, ..GenerateOptions::default() };
            let fast = GenerateOptions { speculative: Some(options.clone()), ..plain.clone() };
            let mut a = main.session(&kv).unwrap();
            let mut b = main.session(&kv).unwrap();
            b.set_draft(Some(Arc::clone(draft))).unwrap();
            let (want, got) = (generate(&mut a, &prompt, &plain), generate(&mut b, &prompt, &fast));
            assert_eq!(got.tokens, want.tokens, "seed {seed}");
            assert_eq!(b.history(), a.history());
            drafted += got.stats.draft_tokens;
            accepted += got.stats.accepted_tokens;
            // A second turn: the draft catches up with what it did not see.
            let mut next = prompt.clone();
            next.extend(&got.tokens);
            next.extend(tokens(4, seed + 20));
            assert_eq!(generate(&mut b, &next, &fast).tokens, generate(&mut a, &next, &plain).tokens, "seed {seed}");
        }
    }
    assert!(accepted > 0 && accepted < drafted, "{drafted} drafted, {accepted} accepted");

    let mut session = main.session(&kv).unwrap();
    let fast = GenerateOptions { speculative: Some(options), max_tokens: 4, ..GenerateOptions::default() };
    let refused = pollster::block_on(session.generate(&tokens(3, 1), &fast, |_, _| Control::Continue));
    assert!(matches!(refused, Err(Error::BadOptions(_))), "the draft method without a draft model");
    // Another vocabulary: one token's text changed.
    let c = TinyConfig { context: 256, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, 91, false, &|_| Ty::F32);
    let mut metadata = tiny_metadata(&c);
    for (key, value) in metadata.iter_mut() {
        if *key == "tokenizer.ggml.tokens"
            && let Kv::StrArray(tokens) = value
        {
            tokens[100] = "zz".into();
        }
    }
    let other =
        Engine::from_gguf(&write_gguf(&metadata, &tensors), &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4);
    let refused = session.set_draft(Some(Arc::new(other.unwrap())));
    assert!(matches!(refused, Err(Error::BadOptions(_))), "a draft with another vocabulary");
}

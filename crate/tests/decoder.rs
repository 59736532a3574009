//! The decoder on tiny random models, written by the tests as GGUF and as safetensors
//! directories of every family, run on the CPU and on wgpu: logits, decoding through the KV
//! cache, generation and stopping, compared with the plain f32 reference in `common` (and with
//! llama.cpp's logits on committed fixtures).

mod common;

use std::sync::Arc;

use common::*;
use hearth::load::hf::HfFiles;
use hearth::model::Logits;
use hearth::{
    Control, DeviceKind, Engine, EvictionPolicy, FinishReason, GenerateOptions, KvCache, KvOptions, Message,
    WeightFormat,
};

/// Prefill of the whole sequence gives the reference logits at every position, with f32
/// weights (every tensor type) and with int4 weights (the block types it keeps exact).
fn prefill_matches_reference(device: DeviceKind) {
    for (tied, weights) in
        [(true, WeightFormat::F32), (false, WeightFormat::F32), (true, WeightFormat::Int4), (false, WeightFormat::Int4)]
    {
        let types: &dyn Fn(&str) -> Ty = if weights == WeightFormat::F32 { &mixed_types } else { &block_types };
        let (bytes, reference) = gguf_model_of(11 + tied as u64, tied, types);
        let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), weights).unwrap());
        let ids = tokens(23, 5);
        let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
        assert_logits_close(&got, &reference.logits(&ids), &format!("{device:?} {weights:?} tied={tied}"));
    }
}

/// Prefill of a prefix, then one token at a time through the KV cache, gives the reference
/// logits of each position.
fn decode_matches_reference(device: DeviceKind) {
    let (bytes, reference) = gguf_model_of(21, true, &block_types);
    let engine = Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::Int4).unwrap();
    let ids = tokens(17, 6);
    let want = reference.logits(&ids);
    let mut cache = KvCache::new(engine.config(), &KvOptions::with_capacity(32), engine.device()).unwrap();
    let mut got = read(engine.model().forward(&ids[..9], &mut cache, Logits::All).unwrap());
    for &id in &ids[9..] {
        got.extend(read(engine.model().forward(&[id], &mut cache, Logits::Last).unwrap()));
    }
    assert_eq!(cache.len(), ids.len());
    assert_logits_close(&got, &want, &format!("{device:?} decode"));
}

each_device!(gguf_prefill_matches_reference, |device| prefill_matches_reference(device));

each_device!(gguf_decode_through_kv_cache_matches_reference, |device| decode_matches_reference(device));

/// A Hugging Face directory (safetensors in F32, F16 and BF16, rotate-half query/key layout,
/// separate output head) gives the reference logits, for each family as its checkpoints store
/// it: Qwen2's biases, Qwen3's head norms, Gemma 3's norms (stored minus one, after each
/// sub-block too, and a window of 3 in five of six layers), Phi-3's fused projections.
fn hf_matches_reference(device: DeviceKind, model_type: &str) {
    let c = match model_type {
        "qwen3" => TinyConfig { head_dim: Some(24), ..TinyConfig::new() },
        "gemma3" => {
            TinyConfig { n_layers: 6, head_dim: Some(24), gemma3_window: Some(3), rope_theta: 1e6, ..TinyConfig::new() }
        }
        _ => TinyConfig::new(),
    };
    let types = |name: &str| match name {
        n if n.contains("attn") => Ty::F16,
        n if n.contains("ffn") => Ty::BF16,
        _ => Ty::F32,
    };
    let mut tensors = tiny_weights(&c, 31, false, &types);
    let mut rng = Rng::new(32);
    let (q, kv, hd) = (c.q_dim(), c.n_kv_heads * c.head_dim(), c.head_dim());
    for l in 0..c.n_layers {
        let extras: Vec<(&str, usize, f32, f32)> = match model_type {
            "qwen2" => vec![("attn_q.bias", q, 0.5, 0.0), ("attn_k.bias", kv, 0.5, 0.0), ("attn_v.bias", kv, 0.5, 0.0)],
            "qwen3" => vec![("attn_q_norm.weight", hd, 0.5, 1.0), ("attn_k_norm.weight", hd, 0.5, 1.0)],
            "gemma3" => vec![
                ("attn_q_norm.weight", hd, 0.5, 1.0),
                ("attn_k_norm.weight", hd, 0.5, 1.0),
                ("post_attention_norm.weight", c.d_model, 0.2, 1.0),
                ("post_ffw_norm.weight", c.d_model, 0.2, 1.0),
            ],
            _ => vec![],
        };
        for (suffix, len, scale, offset) in extras {
            tensors.push(random_vector(&mut rng, &format!("blk.{l}.{suffix}"), len, scale, offset));
        }
    }
    // Store query/key rows (and biases) as Hugging Face does; the reference then rotates halves.
    for t in &mut tensors {
        let heads = if t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_q.bias") {
            c.n_heads
        } else if t.name.ends_with("attn_k.weight") || t.name.ends_with("attn_k.bias") {
            c.n_kv_heads
        } else {
            continue;
        };
        let cols = t.shape.get(1).copied().unwrap_or(1);
        t.values = gguf_to_hf_rows(&t.values, heads, cols);
        t.bytes = match t.ty {
            Ty::F16 => t.values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            Ty::F32 => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => unreachable!("attention weights are F16 here, biases F32"),
        };
    }
    let reference = Reference::new(&c, &tensors, RopeStyle::Half);
    let reference_tensors = tensors.clone();
    // Gemma's checkpoints hold each RMSNorm scale minus one (exact here: the scales are near 1).
    if model_type == "gemma3" {
        for t in tensors.iter_mut().filter(|t| t.name.contains("norm")) {
            t.bytes = t.values.iter().flat_map(|v| (v - 1.0).to_le_bytes()).collect();
        }
    }
    // Phi-3 stores Q, K, V as one matrix and gate, up as another.
    if model_type == "phi3" {
        for l in 0..c.n_layers {
            for (fused, parts) in
                [("attn_qkv", ["attn_q", "attn_k", "attn_v"].as_slice()), ("ffn_up", &["ffn_gate", "ffn_up"])]
            {
                let names: Vec<String> = parts.iter().map(|p| format!("blk.{l}.{p}.weight")).collect();
                let taken: Vec<StoredTensor> =
                    names.iter().map(|n| tensors.remove(tensors.iter().position(|t| &t.name == n).unwrap())).collect();
                let rows = taken.iter().map(|t| t.shape[0]).sum();
                tensors.push(StoredTensor {
                    name: format!("blk.{l}.{fused}.weight!"),
                    shape: vec![rows, taken[0].shape[1]],
                    ty: taken[0].ty,
                    values: taken.iter().flat_map(|t| t.values.clone()).collect(),
                    bytes: taken.iter().flat_map(|t| t.bytes.clone()).collect(),
                });
            }
        }
    }
    let hf_name = |gguf: &str| -> String {
        let table = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
        ];
        if let Some((_, hf)) = table.iter().find(|(g, _)| *g == gguf) {
            return hf.to_string();
        }
        let (layer, rest) = gguf.strip_prefix("blk.").unwrap().split_once('.').unwrap();
        let gemma = model_type == "gemma3";
        let suffix = match rest {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_qkv.weight!" => "self_attn.qkv_proj.weight",
            "attn_q.bias" => "self_attn.q_proj.bias",
            "attn_k.bias" => "self_attn.k_proj.bias",
            "attn_v.bias" => "self_attn.v_proj.bias",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "ffn_norm.weight" if gemma => "pre_feedforward_layernorm.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "post_attention_norm.weight" => "post_attention_layernorm.weight",
            "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_up.weight!" => "mlp.gate_up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            other => panic!("{other}"),
        };
        format!("model.layers.{layer}.{suffix}")
    };
    let dtype = |ty: Ty| match ty {
        Ty::F32 => "F32",
        Ty::F16 => "F16",
        Ty::BF16 => "BF16",
        _ => unreachable!(),
    };
    // Two shards, to exercise the index across files.
    let entries: Vec<_> =
        tensors.iter().map(|t| (hf_name(&t.name), dtype(t.ty), t.shape.clone(), t.bytes.clone())).collect();
    let (a, b) = entries.split_at(entries.len() / 2);
    let shards = [write_safetensors(a), write_safetensors(b)];

    let dir = tempfile::tempdir().unwrap();
    let mut config = serde_json::json!({
        "model_type": model_type, "hidden_act": "silu", "vocab_size": c.vocab, "hidden_size": c.d_model,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim(), "intermediate_size": c.d_ff, "rope_theta": c.rope_theta, "rms_norm_eps": c.eps,
        "max_position_embeddings": c.context, "tie_word_embeddings": false, "eos_token_id": 2, "bos_token_id": 1,
    });
    if model_type == "gemma3" {
        let gemma = serde_json::json!({
            "model_type": "gemma3_text", "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
            "sliding_window": c.gemma3_window, "rope_local_base_freq": c.rope_theta_local,
            "query_pre_attn_scalar": c.head_dim(), "final_logit_softcapping": null, "attn_logit_softcapping": null,
        });
        config.as_object_mut().unwrap().extend(gemma.as_object().unwrap().clone());
    }
    let tok_config = serde_json::json!({ "chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>" });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), tok_config.to_string()).unwrap();
    for (i, shard) in shards.iter().enumerate() {
        std::fs::write(dir.path().join(format!("model-0000{}-of-00002.safetensors", i + 1)), shard).unwrap();
    }

    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let (config, tokenizer, tok_config) = (read("config.json"), read("tokenizer.json"), read("tokenizer_config.json"));
    let shards: Vec<Vec<u8>> = (1..=2).map(|i| read(&format!("model-0000{i}-of-00002.safetensors"))).collect();
    let files = HfFiles {
        config_json: &config,
        tokenizer_json: &tokenizer,
        tokenizer_config_json: Some(&tok_config),
        safetensors: shards.iter().map(Vec::as_slice).collect(),
    };
    let engine = Arc::new(Engine::from_hf(files, &device.device().unwrap(), WeightFormat::F32).unwrap());
    let ids = tokens(19, 8);
    let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
    assert_logits_close(&got, &reference.logits(&ids), &format!("{device:?} {model_type} safetensors"));
    assert_eq!(engine.config().arch.name, model_type);
    if model_type == "gemma3" {
        // The window is used: without it (a reference that sees everything) the logits differ.
        let unwindowed = Reference::new(
            &TinyConfig { gemma3_window: Some(usize::MAX), ..c.clone() },
            &reference_tensors,
            RopeStyle::Half,
        );
        assert!(max_rel_diff(&unwindowed.logits(&ids)[7], &got[7]) > 1e-2, "the sliding window changes the logits");
    }

    // The chat template and end-of-turn token come from tokenizer_config.json.
    let chat = engine.encode_chat(&[Message::new("user", "the")]).unwrap();
    assert_eq!(chat[0], 1, "<|im_start|> is parsed as its special id");
    assert!(engine.tokenizer().is_end_of_generation(2));
}

each_device!(safetensors_directory_matches_reference, |device| {
    for model_type in ["llama", "qwen2", "qwen3", "gemma3", "phi3"] {
        hf_matches_reference(device, model_type);
    }
});

/// Greedy generation gives the reference's greedy tokens on both devices, and a second turn
/// that extends the first reuses the cached prefix and still matches.
#[test]
fn greedy_generation_matches_reference_and_reuses_prefix() {
    let (bytes, reference) = gguf_model(41, true);
    let prompt = tokens(6, 9);
    let want = reference.greedy(&prompt, 8);
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), WEIGHTS).unwrap());
        let mut session = engine.session(&KvOptions::with_capacity(40)).unwrap();
        let options = GenerateOptions { max_tokens: 8, ignore_eos: true, ..Default::default() };
        let first = pollster::block_on(session.generate(&prompt, &options, |_, _| Control::Continue)).unwrap();
        assert_eq!(first.tokens, want, "{device:?}");
        assert_eq!(first.finish_reason, FinishReason::Length);

        let mut longer = prompt.clone();
        longer.extend(&first.tokens);
        longer.extend(tokens(3, 10));
        let second = pollster::block_on(session.generate(&longer, &options, |_, _| Control::Continue)).unwrap();
        // The last generated token was never fed, so the cache held prompt + 7 of them.
        assert_eq!(second.stats.reused_tokens, prompt.len() + 7, "{device:?}");
        assert_eq!(second.tokens, reference.greedy(&longer, 8), "{device:?} second turn");
    }
}

/// The same seed gives the same tokens; sampling is not greedy.
#[test]
fn seeded_sampling_repeats() {
    let (bytes, _) = gguf_model(51, true);
    let engine = Arc::new(Engine::from_gguf(&bytes, &DeviceKind::Cpu.device().unwrap(), WEIGHTS).unwrap());
    let run = |seed| {
        let mut session = engine.session(&KvOptions::default()).unwrap();
        let mut options = GenerateOptions { max_tokens: 24, ignore_eos: true, ..Default::default() };
        options.sampler.temperature = 1.5;
        options.sampler.seed = Some(seed);
        pollster::block_on(session.generate(&tokens(4, 1), &options, |_, _| Control::Continue)).unwrap().tokens
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

/// Stop strings end generation before them; the callback can abort; the cache bound ends a
/// long generation with `ContextFull`.
#[test]
fn stop_conditions() {
    let (bytes, reference) = gguf_model(61, true);
    let engine = Arc::new(Engine::from_gguf(&bytes, &DeviceKind::Cpu.device().unwrap(), WEIGHTS).unwrap());
    let prompt = tokens(5, 2);
    let want = reference.greedy(&prompt, 12);
    let mut session = engine.session(&KvOptions::default()).unwrap();
    let plain = GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() };
    let full = pollster::block_on(session.generate(&prompt, &plain, |_, _| Control::Continue)).unwrap();
    assert_eq!(full.tokens, want);

    // Stop at a character from the middle of the text.
    let stop = full.text.chars().filter(|&c| c != '\u{FFFD}').nth(full.text.chars().count() / 2).unwrap().to_string();
    let options = GenerateOptions { stop: vec![stop.clone()], ..plain.clone() };
    let mut streamed = String::new();
    let g = pollster::block_on(session.generate(&prompt, &options, |t, _| {
        streamed.push_str(t);
        Control::Continue
    }))
    .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(g.text, full.text[..full.text.find(&stop).unwrap()]);
    assert_eq!(streamed, g.text, "streamed pieces add up to the text and never include the stop string");

    let mut calls = 0;
    let aborted = pollster::block_on(session.generate(
        &prompt,
        &GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() },
        |_, _| {
            calls += 1;
            if calls == 3 { Control::Stop } else { Control::Continue }
        },
    ))
    .unwrap();
    assert_eq!(aborted.finish_reason, FinishReason::Aborted);
    assert!(aborted.tokens.len() <= 4);

    let mut small = engine.session(&KvOptions::with_capacity(8).policy(EvictionPolicy::None)).unwrap();
    let g = pollster::block_on(small.generate(
        &prompt,
        &GenerateOptions { max_tokens: 100, ignore_eos: true, ..Default::default() },
        |_, _| Control::Continue,
    ))
    .unwrap();
    assert_eq!(g.finish_reason, FinishReason::ContextFull);
    assert_eq!(g.tokens, reference.greedy(&prompt, 4));
}

/// A tiny Qwen2: Llama with biases on Q, K and V, its GGUF's query and key rows left in
/// rotate-halves order (llama.cpp's NEOX), against the reference rotating halves and adding
/// the biases, with f32 and int4 weights on the CPU and on wgpu.
#[test]
fn a_qwen2_gguf_matches_the_reference_with_its_biases() {
    qwen_gguf_matches_the_reference("qwen2");
}

/// Qwen3: no biases, an RMSNorm over each query and key head (its weights reordered with the
/// rows), heads wider than d_model / n_heads.
#[test]
fn a_qwen3_gguf_matches_the_reference_with_its_head_norms() {
    qwen_gguf_matches_the_reference("qwen3");
}

fn qwen_gguf_matches_the_reference(arch: &str) {
    let c = match arch {
        "qwen3" => TinyConfig { head_dim: Some(24), ..TinyConfig::new() },
        _ => TinyConfig::new(),
    };
    let metadata: Vec<(String, Kv)> = tiny_metadata(&c)
        .into_iter()
        .map(|(k, v)| match (k, v) {
            ("general.architecture", _) => (k.to_string(), Kv::Str(arch.into())),
            (k, v) => (k.replacen("llama.", &format!("{arch}."), 1), v),
        })
        .collect();
    let metadata: Vec<(&str, Kv)> = metadata.into_iter().map(|(k, v)| (&*k.leak(), v)).collect();
    let ids = tokens(19, 12);
    for (weights, types) in
        [(WeightFormat::F32, &mixed_types as &dyn Fn(&str) -> Ty), (WeightFormat::Int4, &block_types)]
    {
        let mut tensors = tiny_weights(&c, 51, true, types);
        let mut rng = Rng::new(52);
        let kv = c.n_kv_heads * c.head_dim();
        for l in 0..c.n_layers {
            let extras = match arch {
                "qwen2" => {
                    [("attn_q.bias", c.q_dim(), 0.0), ("attn_k.bias", kv, 0.0), ("attn_v.bias", kv, 0.0)].to_vec()
                }
                _ => [("attn_q_norm.weight", c.head_dim(), 1.0), ("attn_k_norm.weight", c.head_dim(), 1.0)].to_vec(),
            };
            for (suffix, len, offset) in extras {
                let (values, bytes) = random_encoded(&mut rng, len, 0.5, offset, Ty::F32);
                let name = format!("blk.{l}.{suffix}");
                tensors.push(StoredTensor { name, shape: vec![len], ty: Ty::F32, values, bytes });
            }
        }
        let bytes = write_gguf(&metadata, &tensors);
        let reference = Reference::new(&c, &tensors, RopeStyle::Half);
        let want = reference.logits(&ids);
        for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
            let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), weights).unwrap());
            assert_eq!(engine.config().arch.name, arch);
            let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
            assert_logits_close(&got, &want, &format!("{device:?} {arch} {weights:?}"));
        }
        // `hearth convert` (packed weights: exact for the block types) keeps the architecture,
        // the biases and the reordered rows.
        if weights == WeightFormat::Int4 {
            let file = hearth::format::gguf::GgufFile::parse(&bytes).unwrap();
            let parts = hearth::load::ModelParts::from_gguf(&file).unwrap();
            let pack = hearth::load::burnpack::write(&parts, &file).unwrap();
            let engine = Arc::new(Engine::from_file_bytes(&pack, &DeviceKind::Cpu.device().unwrap(), weights).unwrap());
            let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
            assert_logits_close(&got, &want, &format!("{arch} through a burnpack"));
        }
        // Without the biases (the head norms) the logits differ: they are used.
        let extra = |t: &&StoredTensor| {
            t.name.ends_with(".bias") || t.name.contains("attn_q_norm") || t.name.contains("attn_k_norm")
        };
        let plain: Vec<StoredTensor> = tensors.iter().filter(|t| !extra(t)).cloned().collect();
        let unbiased = Reference::new(&c, &plain, RopeStyle::Half);
        assert!(max_rel_diff(&unbiased.logits(&ids)[5], &want[5]) > 1e-2);
    }
}

/// Tiny random GGUFs of each architecture, written by the `gguf` package (not by these tests'
/// own writer), give llama.cpp's logits at every position (`crate/tests/fixtures/make-arch-fixtures.py`;
/// f32 weights; llama.cpp keeps its KV cache in f16, which bounds the agreement).
#[test]
fn tiny_models_of_each_architecture_match_llama_cpp() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // llama-hd12: heads of 12 beside a d_model of 32 (queries 48 wide), stated by key_length;
    // qwen3: the same heads, each query and key head RMS-normed; gemma3: heads of 16, post-norms,
    // GeGLU, scaled and tied embeddings, five layers with a window of 4 tokens (of the 10) and
    // RoPE base 10,000 beside a global one with base 1,000,000; phi3: Q, K, V in one matrix and
    // gate and up in another, a SentencePiece vocabulary; phi3-longrope: Phi-3.5's LongRoPE
    // (original context 128, attention factor 1.15), its short factors in a cache of 64 (as
    // llama.cpp's n_ctx 64) and its long ones in a cache of 256.
    let fixtures_of = [
        ("llama", "llama", "logits", 64),
        ("qwen2", "qwen2", "logits", 64),
        ("llama-hd12", "llama", "logits", 64),
        ("qwen3", "qwen3", "logits", 64),
        ("gemma3", "gemma3", "logits", 64),
        ("phi3", "phi3", "logits", 64),
        ("phi3-longrope", "phi3", "logits", 64),
        ("phi3-longrope", "phi3", "logits_long", 256),
    ];
    for (label, arch, key, capacity) in fixtures_of {
        let bytes = std::fs::read(fixtures.join(format!("tiny-{label}.gguf"))).unwrap();
        let want: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures.join(format!("tiny-{label}.logits.json"))).unwrap())
                .unwrap();
        let ids: Vec<u32> = want["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let want: Vec<Vec<f32>> = want[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
            .collect();
        for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
            let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::F32).unwrap());
            assert_eq!(engine.config().arch.name, arch);
            let kv = KvOptions::with_capacity(capacity);
            let got = pollster::block_on(engine.session(&kv).unwrap().logits_all(&ids)).unwrap();
            let worst = got.iter().zip(&want).map(|(g, w)| max_rel_diff(g, w)).fold(0.0f32, f32::max);
            eprintln!("{label} {key} {device:?}: largest difference from llama.cpp {worst:.2e} (relative)");
            assert!(worst < 2e-3, "{label} {key} {device:?}: {worst} from llama.cpp's logits");
            for (pos, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(argmax(g), argmax(w), "{label} {key} {device:?}: top token at position {pos}");
            }
        }
    }
}

/// Heads wider than `d_model / n_heads` (`attention.key_length` stated, as Qwen3, Gemma 3 and
/// Mistral Nemo state it): queries and the attention output are `n_heads * head_dim` wide.
#[test]
fn an_explicit_head_dim_wider_than_d_model_over_heads_matches_the_reference() {
    let c = TinyConfig { head_dim: Some(24), ..TinyConfig::new() };
    assert_ne!(c.q_dim(), c.d_model);
    let ids = tokens(17, 13);
    for (weights, types) in
        [(WeightFormat::F32, &mixed_types as &dyn Fn(&str) -> Ty), (WeightFormat::Int4, &block_types)]
    {
        let tensors = tiny_weights(&c, 61, false, types);
        let (bytes, reference) = (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent));
        let want = reference.logits(&ids);
        for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
            let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), weights).unwrap());
            assert_eq!((engine.config().head_dim(), engine.config().q_dim()), (24, 96));
            let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
            assert_logits_close(&got, &want, &format!("{device:?} head_dim 24 {weights:?}"));
        }
    }
}

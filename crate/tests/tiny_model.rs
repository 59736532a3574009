//! A tiny random Llama, written by the test as GGUF and as a safetensors directory, run by
//! the engine on the CPU and on wgpu, compared with the plain f32 reference in `common`.

mod common;

use std::sync::Arc;

use common::*;
use hearth::load::hf::HfFiles;
use hearth::model::Logits;
use hearth::{
    Control, DeviceKind, Engine, EvictionPolicy, FinishReason, GenerateOptions, KvCache, KvOptions, Message,
    WeightFormat,
};

const WEIGHTS: WeightFormat = WeightFormat::F32;

/// f32 sums in a different order differ by rounding; logits here are O(1..10).
const TOLERANCE: f32 = 2e-4;

/// Every GGUF tensor type the loader reads, spread over the tensors.
fn mixed_types(name: &str) -> Ty {
    match name {
        n if n.starts_with("token_embd") => Ty::Q8_0,
        n if n.ends_with("attn_q.weight") => Ty::Q4_1,
        n if n.ends_with("attn_k.weight") => Ty::Q4_0,
        n if n.ends_with("attn_v.weight") => Ty::F16,
        n if n.ends_with("attn_output.weight") => Ty::BF16,
        n if n.ends_with("ffn_gate.weight") => Ty::Q4_1,
        n if n.ends_with("ffn_up.weight") => Ty::Q8_0,
        n if n.ends_with("ffn_down.weight") => Ty::Q4_0,
        _ => Ty::F32,
    }
}

/// Only the block formats the int4 path keeps packed, so it runs on exactly these values.
fn block_types(name: &str) -> Ty {
    match name {
        n if n.starts_with("token_embd") || n.ends_with("ffn_up.weight") => Ty::Q8_0,
        n if n.ends_with("attn_k.weight") || n.ends_with("ffn_down.weight") => Ty::Q4_0,
        _ => Ty::Q4_1,
    }
}

fn gguf_model(seed: u64, tied: bool) -> (Vec<u8>, Reference) {
    gguf_model_of(seed, tied, &mixed_types)
}

fn gguf_model_of(seed: u64, tied: bool, types: &dyn Fn(&str) -> Ty) -> (Vec<u8>, Reference) {
    let c = TinyConfig::new();
    let tensors = tiny_weights(&c, seed, tied, types);
    (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent))
}

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let vocab = TinyConfig::new().vocab as u64;
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

fn assert_logits_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: positions");
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = max_rel_diff(g, w);
        assert!(diff < TOLERANCE, "{what}: position {pos} differs by {diff} (relative)");
    }
}

fn read(t: burn::prelude::Tensor<2>) -> Vec<Vec<f32>> {
    let vocab = t.dims()[1];
    let v = t.into_data().try_into_vec_as::<f32>().unwrap();
    v.chunks(vocab).map(<[f32]>::to_vec).collect()
}

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
            let (values, bytes) = random_encoded(&mut rng, len, scale, offset, Ty::F32);
            tensors.push(StoredTensor {
                name: format!("blk.{l}.{suffix}"),
                shape: vec![len],
                ty: Ty::F32,
                values,
                bytes,
            });
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

/// `hearth convert`'s record: packed exactly as the GGUF loader packs, so the logits match to
/// the bit, and the config, tokenizer and chat template come back.
#[test]
fn burnpack_round_trip_gives_the_same_model() {
    use hearth::format::gguf::GgufFile;
    use hearth::load::{ModelParts, burnpack};
    let (bytes, _) = gguf_model_of(71, false, &block_types);
    let file = GgufFile::parse(&bytes).unwrap();
    let pack = burnpack::write(&ModelParts::from_gguf(&file).unwrap(), &file).unwrap();
    let ids = tokens(12, 3);
    let device = DeviceKind::Cpu.device().unwrap();
    let logits = |engine: Engine| {
        pollster::block_on(Arc::new(engine).session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap()
    };
    let from_gguf = Engine::from_gguf(&bytes, &device, WeightFormat::Int4).unwrap();
    let from_pack = Engine::from_file_bytes(&pack, &device, WeightFormat::Int4).unwrap();
    assert_eq!(
        from_pack.encode_chat(&[Message::new("user", "the")]).unwrap(),
        from_gguf.encode_chat(&[Message::new("user", "the")]).unwrap()
    );
    assert_eq!(from_pack.tokenizer().end_of_generation(), from_gguf.tokenizer().end_of_generation());
    assert_eq!(from_pack.model().weight_bytes(), from_gguf.model().weight_bytes());
    assert_eq!(logits(from_pack), logits(from_gguf));
}

/// `hearth export-safetensors` without noise writes a Hugging Face directory that loads back to
/// the same model, and perplexity through the cache equals the reference's.
#[test]
fn safetensors_export_round_trips_and_perplexity_matches_reference() {
    use hearth::format::gguf::GgufFile;
    use hearth::load::{ModelParts, hf};
    let (bytes, reference) = gguf_model(81, false);
    let file = GgufFile::parse(&bytes).unwrap();
    let files = hf::export(&ModelParts::from_gguf(&file).unwrap(), &file, 0.0, 0).unwrap();
    let get = |n: &str| files.iter().find(|(name, _)| name == n).unwrap().1.clone();
    let (config, tokenizer, tok_config, shard) =
        (get("config.json"), get("tokenizer.json"), get("tokenizer_config.json"), get("model.safetensors"));
    let hf_files = HfFiles {
        config_json: &config,
        tokenizer_json: &tokenizer,
        tokenizer_config_json: Some(&tok_config),
        safetensors: vec![&shard],
    };
    let device = DeviceKind::Cpu.device().unwrap();
    let engine = Arc::new(Engine::from_hf(hf_files, &device, WeightFormat::F32).unwrap());
    let ids = tokens(20, 4);
    let mut session = engine.session(&KvOptions::default()).unwrap();
    assert_logits_close(&pollster::block_on(session.logits_all(&ids)).unwrap(), &reference.logits(&ids), "exported");

    let want = reference.logits(&ids);
    let nll: f64 = (0..ids.len() - 1)
        .map(|i| {
            let row = &want[i];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = row.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>().ln() + max as f64;
            lse - row[ids[i + 1] as usize] as f64
        })
        .sum();
    let report = pollster::block_on(hearth::analysis::scoring::perplexity(&mut session, &ids, true)).unwrap();
    assert_eq!(report.tokens, ids.len() - 1);
    assert!(
        (report.perplexity - (nll / 19.0).exp()).abs() < 1e-3 * report.perplexity,
        "{} vs {}",
        report.perplexity,
        (nll / 19.0).exp()
    );
    assert_eq!(report.top1, want[..19].iter().map(|r| argmax(r)).collect::<Vec<_>>());
}

/// Random blocks of a 5-bit or K-quant format for a `[rows, cols]` tensor: random codes and
/// sub-block scales, the f16 parameters (at `halves`, ggml-common.h's offsets) set so that the
/// largest value is about `scale`. The values come from hearth's scalar dequantizer, which
/// `quant`'s fixture test proves bit-equal to the `gguf` package's: this test checks what the
/// loader and model do with the format (row layout, type dispatch, refusal), not the arithmetic.
fn blocks_of<B: hearth::quant::Block>(
    rng: &mut Rng,
    name: &str,
    rows: usize,
    cols: usize,
    ty: Ty,
    scale: f32,
) -> StoredTensor {
    use half::f16;
    let halves: &[usize] = match ty {
        Ty::Q5_0 => &[0],
        Ty::Q5_1 | Ty::Q4K | Ty::Q5K => &[0, 2],
        Ty::Q2K => &[80, 82],
        Ty::Q3K => &[108],
        Ty::Q6K => &[208],
        other => panic!("{other:?} is not written here"),
    };
    let n = rows * cols / B::ELEMENTS;
    let mut bytes: Vec<u8> = (0..n * B::BYTES).map(|_| rng.below(256) as u8).collect();
    let mut values = vec![0.0f32; rows * cols];
    for (block, out) in bytes.chunks_exact_mut(B::BYTES).zip(values.chunks_exact_mut(B::ELEMENTS)) {
        for &at in halves {
            block[at..at + 2].copy_from_slice(&f16::ONE.to_le_bytes());
        }
        hearth::quant::dequantize_row::<B>(block, out);
        let amax = out.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        let k = f16::from_f32(scale / amax * (0.5 + rng.uniform(0.5).abs()));
        for &at in halves {
            block[at..at + 2].copy_from_slice(&k.to_le_bytes());
        }
        hearth::quant::dequantize_row::<B>(block, out);
    }
    StoredTensor { name: name.into(), shape: vec![rows, cols], ty, values, bytes }
}

/// A model whose every matrix is a 5-bit or K-quant format (rows of 256: the K-quants'
/// super-block) gives the reference logits on the CPU and on wgpu, with f32 weights and with
/// the stored formats (the default: every matrix packed as stored, the K-quants fused with
/// each other into one Q/K/V matrix, gathered and used as the tied head, never requantized),
/// and through `hearth convert`.
#[test]
fn k_quant_and_five_bit_matrices_load_exactly() {
    use hearth::quant::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K};
    let c = TinyConfig { d_model: 256, d_ff: 512, ..TinyConfig::new() };
    let mut tensors = tiny_weights(&c, 41, true, &|_| Ty::F32);
    let mut rng = Rng::new(42);
    let lin = |fan_in: usize| 1.7 / (fan_in as f32).sqrt();
    for t in tensors.iter_mut().filter(|t| t.shape.len() == 2) {
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let scale = if t.name.starts_with("token_embd") { 1.0 } else { lin(cols) };
        let name = t.name.clone();
        *t = match name.rsplit('.').nth(1).unwrap_or("") {
            "token_embd" => blocks_of::<BlockQ6K>(&mut rng, &name, rows, cols, Ty::Q6K, scale),
            "attn_q" => blocks_of::<BlockQ4K>(&mut rng, &name, rows, cols, Ty::Q4K, scale),
            "attn_k" => blocks_of::<BlockQ5K>(&mut rng, &name, rows, cols, Ty::Q5K, scale),
            "attn_v" => blocks_of::<BlockQ3K>(&mut rng, &name, rows, cols, Ty::Q3K, scale),
            "attn_output" => blocks_of::<BlockQ2K>(&mut rng, &name, rows, cols, Ty::Q2K, scale),
            "ffn_gate" => blocks_of::<BlockQ5_0>(&mut rng, &name, rows, cols, Ty::Q5_0, scale),
            "ffn_up" => blocks_of::<BlockQ5_1>(&mut rng, &name, rows, cols, Ty::Q5_1, scale),
            _ => blocks_of::<BlockQ4K>(&mut rng, &name, rows, cols, Ty::Q4K, scale),
        };
    }
    let (bytes, reference) = (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent));
    let mut rng = Rng::new(7);
    let ids: Vec<u32> = (0..19).map(|_| rng.below(c.vocab as u64) as u32).collect();
    let want = reference.logits(&ids);
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let bytes_of = f32_and_int4_weight_bytes(&bytes, device, &ids, &want, "K-quants");
        // Packed: at most 9.2 bits a weight (Q5_K and Q6_K as 8-bit codes), not a float copy.
        assert!(bytes_of[1] * 32 < bytes_of[0] * 10, "{device:?}: {bytes_of:?} bytes");
    }
    // `hearth convert` keeps every K-quant matrix packed too.
    let file = hearth::format::gguf::GgufFile::parse(&bytes).unwrap();
    let pack = hearth::load::burnpack::write(&hearth::load::ModelParts::from_gguf(&file).unwrap(), &file).unwrap();
    assert!(pack.len() * 3 < bytes.len() * 5, "{} bytes from a {}-byte file", pack.len(), bytes.len());
    let engine =
        Arc::new(Engine::from_file_bytes(&pack, &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4).unwrap());
    let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
    assert_logits_close(&got, &want, "K-quants through hearth convert");
}

/// Loads `bytes` on `device` with f32 and with int4 weights, checks both give `want` for
/// `ids`, and returns their weight bytes `[f32, int4]`.
fn f32_and_int4_weight_bytes(
    bytes: &[u8],
    device: DeviceKind,
    ids: &[u32],
    want: &[Vec<f32>],
    what: &str,
) -> [usize; 2] {
    [WeightFormat::F32, WeightFormat::Int4].map(|weights| {
        let engine = Arc::new(Engine::from_gguf(bytes, &device.device().unwrap(), weights).unwrap());
        let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(ids)).unwrap();
        assert_logits_close(&got, want, &format!("{device:?} {what} with {weights:?} weights"));
        engine.model().weight_bytes()
    })
}

/// Q5_0 and Q5_1 matrices stay packed with int4 weights (as 8-bit codes, each weight the
/// file's own value) and give the reference logits on the CPU and on wgpu.
#[test]
fn five_bit_matrices_stay_packed_with_int4_weights() {
    use hearth::quant::{BlockQ5_0, BlockQ5_1};
    let c = TinyConfig::new();
    let mut tensors = tiny_weights(&c, 43, false, &block_types);
    let mut rng = Rng::new(44);
    for t in tensors.iter_mut().filter(|t| t.shape.len() == 2 && !t.name.starts_with("token_embd")) {
        let (rows, cols, name) = (t.shape[0], t.shape[1], t.name.clone());
        let scale = 1.7 / (cols as f32).sqrt();
        *t = match name.contains("attn") {
            true => blocks_of::<BlockQ5_0>(&mut rng, &name, rows, cols, Ty::Q5_0, scale),
            false => blocks_of::<BlockQ5_1>(&mut rng, &name, rows, cols, Ty::Q5_1, scale),
        };
    }
    let (bytes, reference) = (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent));
    let ids = tokens(21, 8);
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::Int4).unwrap());
        let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
        assert_logits_close(&got, &reference.logits(&ids), &format!("{device:?} Q5_0/Q5_1 with int4 weights"));
    }
}

/// F32, F16 and BF16 matrices of a quantized file stay as stored with int4 weights (packed at
/// four or two bytes a weight, fused with matrices of their own format: BF16 Q/K/V, the F16
/// embedding gathered and used as the tied head, an F32 down projection) and give the
/// reference logits on the CPU and on wgpu (a requantized matrix would be some 1e-2 off), and
/// through `hearth convert`. A float checkpoint's matrices are still quantized by int4 weights.
#[test]
fn float_matrices_of_a_quantized_file_stay_as_stored() {
    let c = TinyConfig::new();
    let types = |name: &str| match name.rsplit('.').nth(1).unwrap_or("") {
        "token_embd" | "attn_output" => Ty::F16,
        "attn_q" | "attn_k" | "attn_v" => Ty::BF16,
        "ffn_gate" => Ty::Q4_1,
        "ffn_up" => Ty::Q8_0,
        _ => Ty::F32,
    };
    let tensors = tiny_weights(&c, 45, true, &types);
    let (bytes, reference) = (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent));
    let ids = tokens(21, 9);
    let want = reference.logits(&ids);
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::Int4).unwrap());
        let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
        assert_logits_close(&got, &want, &format!("{device:?} F32/F16/BF16 matrices with int4 weights"));
    }
    let file = hearth::format::gguf::GgufFile::parse(&bytes).unwrap();
    let pack = hearth::load::burnpack::write(&hearth::load::ModelParts::from_gguf(&file).unwrap(), &file).unwrap();
    let engine =
        Arc::new(Engine::from_file_bytes(&pack, &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4).unwrap());
    let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
    assert_logits_close(&got, &want, "F32/F16/BF16 matrices through hearth convert");
    // A pack written before the K-quant kernels, which held such matrices as f32 records: they
    // load as F32 codes, on wgpu too (dense f32 would take burn's matmul there).
    let older = with_f32_record(&pack, "blk.1.ffn_down.weight");
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let engine = Arc::new(Engine::from_file_bytes(&older, &device.device().unwrap(), WeightFormat::Int4).unwrap());
        let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
        assert_logits_close(&got, &want, &format!("{device:?} an older pack's f32 record"));
    }

    // An F16 checkpoint: int4 weights quantize it (about a quarter of f32's bytes).
    let (floats, _) =
        gguf_model_of(46, true, &|name: &str| if name.ends_with("norm.weight") { Ty::F32 } else { Ty::F16 });
    let cpu = DeviceKind::Cpu.device().unwrap();
    let bytes_of = |w| Engine::from_gguf(&floats, &cpu, w).unwrap().model().weight_bytes();
    let (f32_bytes, int4_bytes) = (bytes_of(WeightFormat::F32), bytes_of(WeightFormat::Int4));
    assert!(int4_bytes * 3 < f32_bytes, "{int4_bytes} bytes of int4 weights, {f32_bytes} of f32");
}

/// `pack` with matrix `name` (of F32 codes) rewritten as packs before the K-quant kernels wrote
/// matrices they had no kernel for: a `[rows, cols]` record of f32 values, format "f32".
fn with_f32_record(pack: &[u8], name: &str) -> Vec<u8> {
    use burn_pack::{Bytes, DType, Reader, Tensor, Writer};
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(pack.to_vec())).unwrap();
    let mut meta = reader.metadata().clone();
    assert_eq!(meta[&format!("{name}.format")], "f32codes");
    let cols: usize = meta.remove(&format!("{name}.cols")).unwrap().parse().unwrap();
    meta.insert(format!("{name}.format"), "f32".into());
    let mut tensors = Vec::new();
    for t in reader.into_tensors().unwrap() {
        let (tensor, dtype, shape, _, bytes) = t.into_parts().unwrap();
        if tensor != format!("{name}.codes") {
            tensors.push(Tensor::new(tensor, dtype, shape.to_vec(), None, bytes));
            continue;
        }
        let (rows, words) = (shape[0], shape[1]);
        let values: Vec<u8> = (0..rows).flat_map(|r| bytes[r * words * 4..(r * words + cols) * 4].to_vec()).collect();
        tensors.push(Tensor::new(name.to_string(), DType::F32, vec![rows, cols], None, Bytes::from_bytes_vec(values)));
    }
    let mut writer = Writer::new(tensors);
    for (k, v) in &meta {
        writer = writer.with_metadata(k, v);
    }
    writer.into_bytes().unwrap().to_vec()
}

/// Matrices one projection reads whose blocks have no common form stay as stored, each its own
/// packed matrix: Q and K in Q4_K with V in Q8_0 (legacy with K-quant scales), a Q8_0 gate with
/// a BF16 up (quantized with float codes), its gated product outside the fused kernel. They give
/// the reference logits on the CPU and on wgpu, at a fraction of the f32 bytes (were they the
/// dense f32 of their fusion, as before, Q|K|V and gate|up would take over half of f32's).
#[test]
fn matrices_whose_blocks_do_not_fuse_run_as_separate_parts() {
    use hearth::quant::BlockQ4K;
    let c = TinyConfig { d_model: 256, d_ff: 512, ..TinyConfig::new() };
    let types = |name: &str| match name.rsplit('.').nth(1).unwrap_or("") {
        "attn_v" | "ffn_gate" => Ty::Q8_0,
        "ffn_up" => Ty::BF16,
        "ffn_down" | "attn_output" => Ty::Q4_0,
        "token_embd" => Ty::Q8_0,
        _ => Ty::F32,
    };
    let mut tensors = tiny_weights(&c, 47, true, &types);
    let mut rng = Rng::new(48);
    for t in tensors.iter_mut().filter(|t| t.name.contains("attn_q") || t.name.contains("attn_k")) {
        let (rows, cols, name) = (t.shape[0], t.shape[1], t.name.clone());
        *t = blocks_of::<BlockQ4K>(&mut rng, &name, rows, cols, Ty::Q4K, 1.7 / (cols as f32).sqrt());
    }
    let (bytes, reference) = (tiny_gguf(&c, &tensors), Reference::new(&c, &tensors, RopeStyle::Adjacent));
    let ids = tokens(17, 10);
    let want = reference.logits(&ids);
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        let bytes_of = f32_and_int4_weight_bytes(&bytes, device, &ids, &want, "unfusable parts");
        assert!(bytes_of[1] * 5 < bytes_of[0] * 2, "{device:?}: {bytes_of:?} bytes (f32, int4)");
    }
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

/// Each row of `x` (`cols` wide) through a K-quant and back, in super-blocks of 256 with zeros
/// past a ragged row's end: the quantizer is the one tested byte for byte against ggml's in
/// `quant::kquantize`, the way back the scalar dequantizer tested against the `gguf` package.
fn k_round_trip(kind: &str, x: &[f32], cols: usize) -> Vec<f32> {
    use hearth::quant::{Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        for part in row.chunks(256) {
            let mut padded = [0.0f32; 256];
            padded[..part.len()].copy_from_slice(part);
            let mut back = [0.0f32; 256];
            match kind {
                "q2_k" => BlockQ2K::quantize(&padded).dequantize(&mut back),
                "q3_k" => BlockQ3K::quantize(&padded).dequantize(&mut back),
                "q4_k" => BlockQ4K::quantize(&padded).dequantize(&mut back),
                "q5_k" => BlockQ5K::quantize(&padded).dequantize(&mut back),
                _ => BlockQ6K::quantize(&padded).dequantize(&mut back),
            }
            out.extend_from_slice(&back[..part.len()]);
        }
    }
    out
}

/// A float checkpoint loaded with `--weights q4_0`, `q4_1`, `q8_0` or a K-quant holds the
/// weights ggml's own quantizers give it (every matrix, the embedding too; K-quant rows of 64
/// and 128 are ragged super-blocks), on the CPU and on wgpu, and `hearth convert --weights`
/// writes the same.
#[test]
fn float_weights_quantize_at_load_as_ggml_would() {
    let c = TinyConfig::new();
    let tensors = tiny_weights(&c, 71, false, &|_| Ty::F32);
    let bytes = tiny_gguf(&c, &tensors);
    let ids = tokens(15, 10);
    for kind in ["q4_0", "q4_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let quantized: Vec<StoredTensor> = tensors
            .iter()
            .map(|t| match t.shape.len() {
                2 if kind.ends_with("_k") => {
                    StoredTensor { values: k_round_trip(kind, &t.values, t.shape[1]), ..t.clone() }
                }
                2 => StoredTensor { values: ggml_round_trip(kind, &t.values), ..t.clone() },
                _ => t.clone(),
            })
            .collect();
        let want = Reference::new(&c, &quantized, RopeStyle::Adjacent).logits(&ids);
        // Quantizing does change the model: the float reference differs.
        let float = Reference::new(&c, &tensors, RopeStyle::Adjacent).logits(&ids);
        assert!(max_rel_diff(&float[3], &want[3]) > 1e-4, "{kind} changes nothing");
        let weights: WeightFormat = kind.parse().unwrap();
        assert_eq!(weights.name(), kind);
        // Every format on the CPU; on wgpu a legacy one, a K-quant with shared half scales and
        // one with a scale per half (the kernels' three kinds of block).
        let devices: &[DeviceKind] = match kind {
            "q4_0" | "q4_k" | "q6_k" => &[DeviceKind::Cpu, DeviceKind::Wgpu],
            _ => &[DeviceKind::Cpu],
        };
        for &device in devices {
            let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), weights).unwrap());
            let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
            assert_logits_close(&got, &want, &format!("{device:?} {kind}"));
        }
        let file = hearth::format::gguf::GgufFile::parse(&bytes).unwrap();
        let parts = hearth::load::ModelParts::from_gguf(&file).unwrap();
        let pack = hearth::load::burnpack::write_as(&parts, &file, weights).unwrap();
        let engine = Arc::new(Engine::from_file_bytes(&pack, &DeviceKind::Cpu.device().unwrap(), weights).unwrap());
        let got = pollster::block_on(engine.session(&KvOptions::default()).unwrap().logits_all(&ids)).unwrap();
        assert_logits_close(&got, &want, &format!("{kind} through hearth convert"));
    }
    for name in ["q5_0", "q4_K", "fp8"] {
        assert!(matches!(name.parse::<WeightFormat>(), Err(hearth::Error::BadOptions(_))), "{name}");
    }
}

/// Each byte-level BPE pre-tokenizer `tokenizer.ggml.pre` names gives llama.cpp's ids on texts
/// where they split differently (digit runs, contractions, runs of spaces and newlines, letters
/// against digits), with merges that cross those boundaries (`crate/tests/fixtures/make-bpe-fixtures.py`:
/// vocabulary-only GGUFs and llama.cpp's ids, committed).
#[test]
fn bpe_pre_tokenizers_give_llama_cpps_ids() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("bpe-pretokenizers.json")).unwrap()).unwrap();
    for (pre, cases) in want["cases"].as_object().unwrap() {
        let bytes = std::fs::read(fixtures.join(format!("tiny-bpe-{pre}.gguf"))).unwrap();
        let file = hearth::format::gguf::GgufFile::parse(&bytes).unwrap();
        let tokenizer = hearth::Tokenizer::from_gguf(&file.metadata).unwrap();
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tokenizer.encode(text, false).unwrap(), ids, "{pre}: {text:?}");
            assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "{pre}: {text:?} decoded");
        }
    }
}

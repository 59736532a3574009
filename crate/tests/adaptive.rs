//! Adaptive computation on tiny random models: early exit against the whole model and against
//! a plain f32 reference that truncates the model at the exit layer.

mod common;

use std::sync::Arc;

use common::*;
use hearth::{
    DeviceKind, EarlyExitOptions, Engine, Error, ExitMeasure, GenerateOptions, Generation, KvOptions, Session,
    SpeculativeOptions, WeightFormat,
};

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let vocab = TinyConfig::new().vocab as u64;
    (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect()
}

fn generate(session: &mut Session, prompt: &[u32], options: &GenerateOptions) -> Generation {
    pollster::block_on(session.generate(prompt, options, |_, _| hearth::Control::Continue)).unwrap()
}

fn exits(layers: &[usize], threshold: f32, measure: ExitMeasure, shortlist: usize) -> Option<EarlyExitOptions> {
    Some(EarlyExitOptions { layers: layers.to_vec(), threshold, measure, shortlist })
}

/// A threshold no confidence passes (max-prob or margin strictly above 1) gives the whole
/// model's tokens and leaves the same cache, bit for bit, with and without a shortlist.
fn unreachable_threshold_is_the_whole_model(device: DeviceKind) {
    let c = TinyConfig { context: 256, n_layers: 3, ..TinyConfig::new() };
    let bytes = tiny_gguf(&c, &tiny_weights(&c, 61, false, &|_| Ty::Q4_0));
    let engine = Arc::new(Engine::from_gguf(&bytes, &device.device().unwrap(), WeightFormat::Int4).unwrap());
    let kv = KvOptions::with_capacity(64);
    let plain = GenerateOptions { max_tokens: 30, ignore_eos: true, ..GenerateOptions::default() };
    let prompt = tokens(12, 3);
    let mut a = engine.session(&kv).unwrap();
    let want = generate(&mut a, &prompt, &plain);
    let want_cache = pollster::block_on(a.kv_cache().contents()).unwrap();
    assert_eq!(want.stats.mean_layers, 3.0);
    for early_exit in [
        exits(&[1, 2], 1.0, ExitMeasure::MaxProb, 0),
        exits(&[1], 1.0, ExitMeasure::Margin, 0),
        exits(&[2], 1.0, ExitMeasure::MaxProb, 16),
    ] {
        let mut b = engine.session(&kv).unwrap();
        let got = generate(&mut b, &prompt, &GenerateOptions { early_exit: early_exit.clone(), ..plain.clone() });
        assert_eq!(got.tokens, want.tokens, "{early_exit:?}");
        assert_eq!(got.stats.mean_layers, 3.0, "{early_exit:?}");
        assert_eq!(pollster::block_on(b.kv_cache().contents()).unwrap(), want_cache, "{early_exit:?}");
        assert_eq!(b.history(), a.history());
    }
}

#[test]
fn unreachable_threshold_is_the_whole_model_on_cpu() {
    unreachable_threshold_is_the_whole_model(DeviceKind::Cpu);
}

#[test]
fn unreachable_threshold_is_the_whole_model_on_wgpu() {
    unreachable_threshold_is_the_whole_model(DeviceKind::Wgpu);
}

/// A threshold of 0 exits every decode step at the first exit layer `L`: the tokens are the
/// reference's when each decode step runs `L` layers and only projects the keys and values of
/// the rest from there, its prompt the whole model. A second turn without early exit, on the
/// same cache, runs every layer over those projected keys and values: its tokens are the
/// reference's too (they would not be with the skipped layers' entries left unwritten).
fn exit_equals_the_truncated_reference(device: DeviceKind) {
    let c = TinyConfig { context: 256, n_layers: 4, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, 62, false, &|_| Ty::F32);
    let engine =
        Arc::new(Engine::from_gguf(&tiny_gguf(&c, &tensors), &device.device().unwrap(), WeightFormat::F32).unwrap());
    let reference = Reference::new(&c, &tensors, RopeStyle::Adjacent);
    let prompt = tokens(10, 4);
    let n = 16;
    for layer in 1..c.n_layers {
        let mut stream = RefStream::new(&reference);
        let mut logits = Vec::new();
        for &t in &prompt {
            logits = stream.step(t);
        }
        let mut want = vec![argmax(&logits)];
        while want.len() < n {
            want.push(argmax(&stream.step_until(*want.last().unwrap(), layer)));
        }
        let options = GenerateOptions {
            max_tokens: n,
            ignore_eos: true,
            early_exit: exits(&[layer], 0.0, ExitMeasure::MaxProb, 0),
            ..GenerateOptions::default()
        };
        let mut session = engine.session(&KvOptions::with_capacity(64)).unwrap();
        let got = generate(&mut session, &prompt, &options);
        assert_eq!(got.tokens, want, "{device:?} exit after layer {layer}");
        assert_eq!(got.stats.mean_layers, layer as f64);

        let more = tokens(3, 5);
        let mut logits = stream.step(*want.last().unwrap());
        for &t in &more {
            logits = stream.step(t);
        }
        let mut then = vec![argmax(&logits)];
        while then.len() < n {
            then.push(argmax(&stream.step(*then.last().unwrap())));
        }
        let next: Vec<u32> = [prompt.clone(), want, more].concat();
        let plain = GenerateOptions { early_exit: None, ..options };
        let got = generate(&mut session, &next, &plain);
        assert_eq!(got.stats.reused_tokens, prompt.len() + n - 1, "the second turn continues the cache");
        assert_eq!(got.tokens, then, "{device:?} the whole model after exits after layer {layer}");
    }
}

#[test]
fn exit_equals_the_truncated_reference_on_cpu() {
    exit_equals_the_truncated_reference(DeviceKind::Cpu);
}

#[test]
fn exit_equals_the_truncated_reference_on_wgpu() {
    exit_equals_the_truncated_reference(DeviceKind::Wgpu);
}

/// Exit layers past the model, and early exit with speculative decoding, are refused before
/// anything runs.
#[test]
fn bad_early_exit_options_are_refused() {
    let c = TinyConfig { context: 64, n_layers: 2, ..TinyConfig::new() };
    let bytes = tiny_gguf(&c, &tiny_weights(&c, 63, false, &|_| Ty::F32));
    let engine = Arc::new(Engine::from_gguf(&bytes, &DeviceKind::Cpu.device().unwrap(), WeightFormat::F32).unwrap());
    let mut session = engine.session(&KvOptions::with_capacity(32)).unwrap();
    for options in [
        GenerateOptions { early_exit: exits(&[2], 0.5, ExitMeasure::MaxProb, 0), ..GenerateOptions::default() },
        GenerateOptions {
            early_exit: exits(&[1], 0.5, ExitMeasure::MaxProb, 0),
            speculative: Some(SpeculativeOptions::default()),
            ..GenerateOptions::default()
        },
    ] {
        let refused = pollster::block_on(session.generate(&tokens(3, 1), &options, |_, _| hearth::Control::Continue));
        assert!(matches!(refused, Err(Error::BadOptions(_))), "{options:?}");
        assert_eq!(session.kv_cache().len(), 0);
    }
}

/// Weight types the int4 path keeps packed as stored, so a pruned model's matrices are the
/// source's bit for bit.
fn packed_types(name: &str) -> Ty {
    match name {
        n if n.starts_with("token_embd") || n.ends_with("ffn_up.weight") => Ty::Q8_0,
        n if n.ends_with("attn_k.weight") || n.ends_with("ffn_down.weight") => Ty::Q4_0,
        n if n.ends_with("norm.weight") || n == "output.weight" => Ty::F32,
        _ => Ty::Q4_1,
    }
}

/// A model with layer 1 dropped by `prune-weights`' path (the parts and tensors without it,
/// written as a burnpack record) gives the same logits, bit for bit, as the model a GGUF file
/// of the same stored tensors without that layer loads as.
#[test]
fn a_pruned_model_equals_the_model_without_those_layers() {
    use hearth::load::{ModelParts, burnpack, gguf::GgufFile};
    use hearth::weight_pruning::{WithoutLayers, parts_without_layers};
    let c = TinyConfig { context: 64, n_layers: 4, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, 64, false, &packed_types);
    let gguf = tiny_gguf(&c, &tensors);
    let file = GgufFile::parse(&gguf).unwrap();
    let parts = parts_without_layers(ModelParts::from_gguf(&file).unwrap(), &[1]).unwrap();
    let config = ModelParts::from_gguf(&file).unwrap().config;
    let pack = burnpack::write(&parts, &WithoutLayers::new(&file, &config, &[1]).unwrap()).unwrap();

    let three = TinyConfig { n_layers: 3, ..c.clone() };
    let without: Vec<StoredTensor> = tensors
        .iter()
        .filter(|t| !t.name.starts_with("blk.1."))
        .map(|t| {
            let mut t = t.clone();
            for (from, to) in [("blk.2.", "blk.1."), ("blk.3.", "blk.2.")] {
                if let Some(rest) = t.name.strip_prefix(from) {
                    t.name = format!("{to}{rest}");
                }
            }
            t
        })
        .collect();
    let device = DeviceKind::Cpu.device().unwrap();
    let pruned = Arc::new(Engine::from_file_bytes(&pack, &device, WeightFormat::Int4).unwrap());
    let reference = Arc::new(Engine::from_gguf(&tiny_gguf(&three, &without), &device, WeightFormat::Int4).unwrap());
    assert_eq!(pruned.config().n_layers, 3);
    assert_eq!(pruned.model().weight_bytes(), reference.model().weight_bytes());
    let prompt = tokens(20, 6);
    let kv = KvOptions::with_capacity(32);
    let logits = |e: &Arc<Engine>| pollster::block_on(e.session(&kv).unwrap().logits_all(&prompt)).unwrap();
    assert_eq!(logits(&pruned), logits(&reference));
    // Gemma 3's windowed and global layers go by index: dropping one is refused.
    let g = TinyConfig { gemma3_window: Some(8), n_layers: 6, ..c.clone() };
    let gemma = gemma3_gguf(&g, &gemma3_weights(&g, 65));
    let gemma = GgufFile::parse(&gemma).unwrap();
    assert!(matches!(parts_without_layers(ModelParts::from_gguf(&gemma).unwrap(), &[0]), Err(Error::BadOptions(_))));
}

/// Block influence: a layer whose output projections are zero passes the state on unturned,
/// so its influence is 0 and it is the one dropped first; the others turn it.
#[test]
fn block_influence_finds_the_layer_that_does_nothing() {
    use hearth::weight_pruning::{block_influence, least_influential};
    let c = TinyConfig { context: 128, n_layers: 4, ..TinyConfig::new() };
    let mut tensors = tiny_weights(&c, 66, false, &|_| Ty::F32);
    for t in tensors.iter_mut().filter(|t| t.name == "blk.2.attn_output.weight" || t.name == "blk.2.ffn_down.weight") {
        t.values.iter_mut().for_each(|v| *v = 0.0);
        t.bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    let engine = Arc::new(
        Engine::from_gguf(&tiny_gguf(&c, &tensors), &DeviceKind::Cpu.device().unwrap(), WeightFormat::F32).unwrap(),
    );
    let influence = pollster::block_on(block_influence(&engine, &tokens(100, 7))).unwrap();
    assert_eq!(influence.len(), 4);
    assert!(influence[2].abs() < 1e-6, "{influence:?}");
    assert!(influence.iter().enumerate().all(|(l, &i)| l == 2 || i > 1e-3), "{influence:?}");
    assert_eq!(least_influential(&influence, 1), vec![2]);
}

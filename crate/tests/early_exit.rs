//! Early exit on tiny random models: against the whole model and against a plain f32 reference
//! that truncates the model at the exit layer; bad options refused.

mod common;

use std::sync::Arc;

use common::*;
use hearth::{
    DeviceKind, EarlyExitOptions, Engine, Error, ExitMeasure, GenerateOptions, KvOptions, SpeculativeOptions,
    WeightFormat,
};

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

each_device!(unreachable_threshold_is_the_whole_model);

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

each_device!(exit_equals_the_truncated_reference);

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

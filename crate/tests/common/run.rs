//! Tiny engines and generations for the tests of how tokens are decoded (speculation, batches,
//! early exit).

use std::sync::Arc;

use hearth::{Control, DeviceKind, Engine, GenerateOptions, Generation, Session, WeightFormat};

use super::*;

/// A tiny random model. Greedy tests take an untied head: with a tied one such a model repeats
/// its last token forever, and every draft would be accepted.
pub fn engine_of(seed: u64, device: DeviceKind, weights: WeightFormat, tied: bool) -> Arc<Engine> {
    let c = TinyConfig { context: 256, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, seed, tied, &|_| Ty::F32);
    Arc::new(Engine::from_gguf(&tiny_gguf(&c, &tensors), &device.device().unwrap(), weights).unwrap())
}

pub fn engine(seed: u64, device: DeviceKind, weights: WeightFormat) -> Arc<Engine> {
    engine_of(seed, device, weights, false)
}

pub fn generate(session: &mut Session, prompt: &[u32], options: &GenerateOptions) -> Generation {
    pollster::block_on(session.generate(prompt, options, |_, _| Control::Continue)).unwrap()
}

/// `n` random token ids of the tiny vocabulary.
pub fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(TinyConfig::new().vocab as u64) as u32).collect()
}

//! The README's Rust example: load a GGUF, start a conversation, stream the reply.
//! `cargo run --release --example chat [MODEL.gguf]` (the default model by default).

use std::sync::Arc;

use hearth::{Control, DeviceKind, Engine, GenerateOptions, KvOptions, Message, PromptPruneOptions, WeightFormat};

fn main() -> hearth::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let bytes = std::fs::read(&path).map_err(|e| hearth::Error::BadOptions(format!("{path}: {e}")))?;
    let device = DeviceKind::Cpu.device()?; // or DeviceKind::Wgpu
    let engine = Arc::new(Engine::from_gguf(&bytes, &device, WeightFormat::Int4)?);
    let mut session = engine.session(&KvOptions::default())?;

    let messages = [Message::new("user", "What is the capital of France?")];
    let options = GenerateOptions { max_tokens: 64, ..GenerateOptions::default() };
    let reply =
        pollster::block_on(session.chat(&messages, &options, &PromptPruneOptions::default(), |text, _token| {
            print!("{text}");
            Control::Continue
        }))?;
    println!("\n{:.1} tokens/s", reply.stats.decode_tokens_per_s);
    Ok(())
}

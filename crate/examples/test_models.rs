//! Writes the tiny random models the browser tests load (`pkg-scripts/test-browser.sh` runs
//! it): nothing is downloaded and nothing is committed. Usage: `test_models OUT_DIR`.
//!
//! - `tiny.gguf`: the tests' tiny Llama with a ChatML template and a context of 2^24 (so that
//!   a KV cache past the device's limits can be asked for), whose output head gives the three
//!   special tokens a logit of exactly 0, so that greedy decoding never ends by itself.
//! - `tiny-split-0000N-of-00003.gguf`: the same model in three shards, as gguf-split writes them.
//! - `tiny.bpk`: the same model converted, for the mutation fuzz of `.bpk` files.
//! - `wide.gguf`: one layer with 64 query heads per key/value head, for heavy hitters at a
//!   large capacity.
//! - `other-vocab.gguf`: a tiny model whose vocabulary differs from `tiny.gguf`'s in one
//!   token's text, which a draft model must not.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use hearth::format::gguf::GgufFile;
use hearth::load::{ModelParts, burnpack};

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: test_models OUT_DIR"));
    std::fs::create_dir_all(&out).expect("create the output directory");
    let block = |name: &str| match name {
        n if n.starts_with("token_embd") => Ty::Q8_0,
        n if n.ends_with("attn_k.weight") || n.ends_with("ffn_down.weight") => Ty::Q4_0,
        "output.weight" => Ty::F32,
        _ => Ty::Q4_1,
    };

    let c = TinyConfig { context: 1 << 24, ..TinyConfig::new() };
    let mut tensors = tiny_weights(&c, 51, false, &block);
    let head = tensors.iter_mut().find(|t| t.name == "output.weight").expect("an output head");
    for v in &mut head.values[..SPECIALS.len() * c.d_model] {
        *v = 0.0;
    }
    head.bytes = head.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let gguf = tiny_gguf(&c, &tensors);
    write(&out, "tiny.gguf", &gguf);
    for (i, shard) in write_gguf_shards(tiny_metadata(&c), &tensors, 3).iter().enumerate() {
        write(&out, &format!("tiny-split-{:05}-of-00003.gguf", i + 1), shard);
    }
    let file = GgufFile::parse(&gguf).expect("the tiny model parses");
    let pack = burnpack::write(&ModelParts::from_gguf(&file).expect("its parts"), &file).expect("it converts");
    write(&out, "tiny.bpk", &pack);

    let wide = TinyConfig { d_model: 128, n_heads: 64, n_kv_heads: 1, n_layers: 1, context: 8192, ..TinyConfig::new() };
    write(&out, "wide.gguf", &tiny_gguf(&wide, &tiny_weights(&wide, 52, true, &block)));

    let mut metadata = tiny_metadata(&c);
    for (key, value) in metadata.iter_mut() {
        if *key == "tokenizer.ggml.tokens"
            && let Kv::StrArray(tokens) = value
        {
            tokens[100] = "zz".into();
        }
    }
    write(&out, "other-vocab.gguf", &write_gguf(&metadata, &tiny_weights(&c, 53, false, &block)));
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    eprintln!("wrote {} ({} bytes)", dir.join(name).display(), bytes.len());
}

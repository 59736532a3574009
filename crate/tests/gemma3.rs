//! Gemma 3 270M Q4_K_M (fetched by `pkg-scripts/fetch-model.sh gemma3-270m`) against
//! llama.cpp's reference data in `tests/reference/gemma3-270m-q4_k_m/`. Set `HEARTH_GEMMA` to
//! use a model file elsewhere.

use std::path::PathBuf;

use hearth::Tokenizer;
use hearth::load::gguf::{GgmlType, GgufFile};
use serde_json::Value;

fn model_bytes() -> Vec<u8> {
    let path = std::env::var_os("HEARTH_GEMMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf"));
    assert!(path.exists(), "{} is missing: run pkg-scripts/fetch-model.sh gemma3-270m", path.display());
    std::fs::read(path).unwrap()
}

fn reference(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/gemma3-270m-q4_k_m").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The SentencePiece vocabulary (262,144 tokens, byte fallback, no space prefix) gives
/// llama.cpp's ids on texts with accents, digits, code, emoji, leading spaces and special-token
/// text, plain and with special tokens parsed; decoding gives the text back.
#[test]
fn the_sentencepiece_tokenizer_gives_llama_cpps_ids() {
    let bytes = model_bytes();
    let file = GgufFile::parse(&bytes).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file.metadata).unwrap();
    assert_eq!(tokenizer.vocab_size(), 262_144);
    for case in reference("tokenizer_llamacpp.json")["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tokenizer.encode(text, false).unwrap(), ids(&case["ids"]), "{text:?}");
        let parsed = ids(&case["ids_parse_special"]);
        assert_eq!(tokenizer.encode(text, true).unwrap(), parsed, "{text:?} with special tokens parsed");
        assert_eq!(tokenizer.decode(&ids(&case["ids"]), true).unwrap(), text, "{text:?} decoded");
    }
    assert!(tokenizer.is_end_of_generation(1) && tokenizer.is_end_of_generation(106), "<eos> and <end_of_turn>");
}

/// The same vocabulary with `add_space_prefix` on (Llama 2's and Mistral's setting): a `▁` goes
/// before the text and after every special or user-defined token, as llama.cpp puts it.
#[test]
fn the_sentencepiece_space_prefix_follows_llama_cpp() {
    let bytes = model_bytes();
    let mut metadata = GgufFile::parse(&bytes).unwrap().metadata;
    metadata.insert("tokenizer.ggml.add_space_prefix".into(), hearth::load::gguf::Value::Bool(true));
    let tokenizer = Tokenizer::from_gguf(&metadata).unwrap();
    for case in reference("tokenizer_llamacpp.json")["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tokenizer.encode(text, false).unwrap(), ids(&case["ids_space_prefix"]), "{text:?}");
        let parsed = ids(&case["ids_space_prefix_parse_special"]);
        assert_eq!(tokenizer.encode(text, true).unwrap(), parsed, "{text:?} with special tokens parsed");
    }
}

/// Every tensor of the file is read, in the types the issue names (Q8_0, Q5_0, Q4_K, Q6_K, F32).
#[test]
fn every_tensor_of_the_file_is_read() {
    let bytes = model_bytes();
    let file = GgufFile::parse(&bytes).unwrap();
    let mut types: Vec<GgmlType> = file.tensors.iter().map(|t| t.dtype).collect();
    types.sort_by_key(|t| t.name());
    types.dedup();
    assert_eq!(types, [GgmlType::F32, GgmlType::Q4_K, GgmlType::Q5_0, GgmlType::Q6_K, GgmlType::Q8_0]);
    let down = file.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(down.shape, [640, 2048]);
    assert!(down.data.iter().all(|v| v.is_finite()) && down.data.iter().any(|&v| v != 0.0));
}

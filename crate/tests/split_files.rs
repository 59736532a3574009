//! Split GGUF models (llama.cpp's `gguf-split` shards): a tiny model written whole and in three
//! shards loads the same from its shards in any order, in the library and through the CLI's
//! `--model first-shard`; incomplete or mixed sets are refused with `malformed`.

mod common;

use common::*;
use hearth::{DeviceKind, Engine, Error, GenerateOptions, KvOptions, WeightFormat};
use serde_json::Value;

/// The tiny model's tensors, and the model written whole.
fn model() -> (Vec<StoredTensor>, Vec<u8>) {
    let c = TinyConfig::new();
    let tensors = tiny_weights(&c, 11, false, &block_types);
    let whole = tiny_gguf(&c, &tensors);
    (tensors, whole)
}

fn shards(tensors: &[StoredTensor], count: usize) -> Vec<Vec<u8>> {
    write_gguf_shards(tiny_metadata(&TinyConfig::new()), tensors, count)
}

fn greedy(engine: Engine) -> Vec<u32> {
    let engine = std::sync::Arc::new(engine);
    let options = GenerateOptions { max_tokens: 8, ignore_eos: true, ..GenerateOptions::default() };
    generate(&mut engine.session(&KvOptions::default()).unwrap(), &tokens(7, 3), &options).tokens
}

fn load(files: &[&[u8]]) -> hearth::Result<Engine> {
    Engine::from_gguf_shards(files, &DeviceKind::Cpu.device().unwrap(), WeightFormat::Int4)
}

#[test]
fn a_split_model_loads_from_its_shards_in_any_order() {
    let (tensors, whole) = model();
    let want = greedy(load(&[&whole]).unwrap());
    let parts = shards(&tensors, 3);
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let files: Vec<&[u8]> = order.iter().map(|&i| parts[i].as_slice()).collect();
        assert_eq!(greedy(load(&files).unwrap()), want, "order {order:?}");
    }
}

#[test]
fn incomplete_or_mixed_shard_sets_are_refused() {
    let (tensors, whole) = model();
    let parts = shards(&tensors, 3);
    let other = shards(&tensors, 2);
    let cases: [(Vec<&[u8]>, &str); 6] = [
        (vec![&parts[0]], "shard 1 of 3, but 1 files were given"),
        (vec![&parts[0], &parts[2]], "shard 1 of 3, but 2 files were given"),
        (vec![&parts[0], &parts[1], &parts[1]], "shard 2 of 3 was given twice"),
        (vec![&parts[0], &parts[1], &whole], "file 3 of 3 is a whole model"),
        (vec![&parts[0], &parts[1], &other[1]], "shard 2 of 2, but 3 files were given"),
        (vec![&parts[0], &parts[1], &parts[2][..parts[2].len() - 8]], "file 3 of 3"),
    ];
    for (files, message) in cases {
        let e = load(&files).err().unwrap_or_else(|| panic!("{message}: loaded"));
        assert!(matches!(e, Error::Malformed(_) | Error::Truncated { .. }), "{message}: {e}");
        assert!(e.to_string().contains(message) || matches!(e, Error::Truncated { .. }), "{message}: {e}");
    }
    // A tensor in two shards, and a tensor count that is not the first shard's.
    let mut doubled = tensors[..tensors.len() - 1].to_vec();
    doubled.push(tensors[0].clone());
    let twice = shards(&doubled, 3);
    let e = load(&[&twice[0], &twice[1], &twice[2]]).err().unwrap();
    assert!(e.to_string().contains("is in two shards"), "{e}");
    let short = shards(&tensors[..tensors.len() - 1], 3);
    let mut files: Vec<&[u8]> = short.iter().map(Vec::as_slice).collect();
    files[2] = &parts[2];
    assert!(load(&files).is_err());
}

/// The CLI takes the first shard's path and finds the rest beside it.
#[test]
fn the_cli_loads_a_split_model_from_its_first_shard() {
    let (tensors, whole) = model();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.gguf"), &whole).unwrap();
    for (i, bytes) in shards(&tensors, 3).iter().enumerate() {
        std::fs::write(dir.path().join(format!("tiny-{:05}-of-00003.gguf", i + 1)), bytes).unwrap();
    }
    let run = |file: &str| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["generate", "--max-tokens", "6", "--ignore-eos", "--json", "--prompt", "the tiny model", "--model"])
            .arg(dir.path().join(file))
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(run("tiny-00001-of-00003.gguf")["ids"], run("tiny.gguf")["ids"]);
    // A later shard alone names what is missing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["generate", "--prompt", "x", "--model"])
        .arg(dir.path().join("tiny-00002-of-00003.gguf"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("a split model needs every shard"), "{stderr}");
}

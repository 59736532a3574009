//! Streamed loading (`hearth::streamed`): a model read from its headers, then a part at a
//! time, gives exactly the logits of the same model loaded from its whole file, for every
//! family's fixture, a Llama with `rope_freqs`, a split model in any shard order, on the CPU
//! and on wgpu; it never holds more of the file than one part; faults in the bytes are typed.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use hearth::backend::device::Limits;
use hearth::format::gguf::GgufFile;
use hearth::streamed::{Headers, Read, StreamedLoad};
use hearth::{DeviceKind, Engine, KvOptions, WeightFormat};

/// How a test's reader treats a read.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Every tensor read of the second part (the first block) comes back one byte short.
    ShortRead,
}

/// What a streamed load did: the engine, and the most bytes of the file it held at once.
struct Streamed {
    engine: Engine,
    most_held: u64,
}

/// Loads `files` by slices as a browser would, the header read from `first_read` bytes on,
/// doubled while it goes on.
fn stream(files: &[&[u8]], device: &DeviceKind, weights: WeightFormat, first_read: u64) -> hearth::Result<Streamed> {
    stream_with(files, device, weights, first_read, Fault::None)
}

fn stream_with(
    files: &[&[u8]],
    device: &DeviceKind,
    weights: WeightFormat,
    first_read: u64,
    fault: Fault,
) -> hearth::Result<Streamed> {
    let device = device.device().unwrap();
    let mut headers = Vec::new();
    for bytes in files {
        let len = bytes.len() as u64;
        let mut n = first_read.min(len);
        let header = loop {
            match GgufFile::parse_header(&bytes[..n as usize], len)? {
                Some(header) => break header,
                None => {
                    assert!(n < len, "asked for more than the whole file");
                    n = (n * 2).min(len);
                }
            }
        };
        headers.push(header);
    }
    let headers = Headers::join(headers)?;
    let read = |reads: &[Read], short: bool| -> HashMap<String, Vec<u8>> {
        reads
            .iter()
            .map(|r| {
                let bytes = &files[r.file][r.offset as usize..(r.offset + r.len) as usize];
                (r.name.clone(), bytes[..bytes.len() - short as usize].to_vec())
            })
            .collect()
    };
    let config = read(&headers.config_reads(), false);
    let mut load = StreamedLoad::new(headers, config, &device, weights, &Limits::of(&device))?;
    let mut most_held = 0;
    let mut reported = Vec::new();
    let mut stage = 0;
    while let Some(reads) = load.next_reads().map(<[Read]>::to_vec) {
        let window = read(&reads, fault == Fault::ShortRead && stage == 1);
        stage += 1;
        let held: u64 = window.values().map(|b| b.len() as u64).sum();
        assert!(held <= load.window_bytes(), "a part of {held} bytes, past the window of {}", load.window_bytes());
        most_held = most_held.max(held);
        load.load_next(window, &device, &mut |done, total| reported.push((done, total)))?;
    }
    assert!(reported.windows(2).all(|w| w[0].0 <= w[1].0), "progress only grows: {reported:?}");
    let engine = load.finish()?;
    Ok(Streamed { engine, most_held })
}

fn logits(engine: Engine, ids: &[u32]) -> Vec<Vec<f32>> {
    let engine = Arc::new(engine);
    pollster::block_on(engine.session(&KvOptions::with_capacity(64)).unwrap().logits_all(ids)).unwrap()
}

fn fixture(label: &str) -> Vec<u8> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::read(dir.join(format!("tiny-{label}.gguf"))).unwrap()
}

/// A Llama with llama.cpp's `rope_freqs.weight` (read before the checks: the config needs it)
/// and an untied head, in block formats.
fn llama_with_rope_freqs() -> Vec<u8> {
    let base = TinyConfig::new();
    let factors: Vec<f32> = (0..base.head_dim() / 2).map(|i| 1.0 + i as f32 * 0.5).collect();
    let c = TinyConfig { rope_freq_factors: Some(factors.clone()), ..base };
    let mut tensors = tiny_weights(&c, 5, false, &block_types);
    tensors.push(f32_tensor("rope_freqs.weight", vec![c.head_dim() / 2], factors));
    tiny_gguf(&c, &tensors)
}

#[test]
fn a_streamed_model_equals_the_whole_file_for_every_family() {
    let ids = tokens(12, 7);
    let mut models: Vec<(String, Vec<u8>)> =
        ["llama", "qwen2", "llama-hd12", "qwen3", "gemma3", "phi3", "phi3-longrope"]
            .iter()
            .map(|l| (l.to_string(), fixture(l)))
            .collect();
    models.push(("llama rope_freqs".into(), llama_with_rope_freqs()));
    for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
        for (label, bytes) in &models {
            for weights in [WeightFormat::F32, WeightFormat::Int4] {
                let whole = Engine::from_gguf(bytes, &device.device().unwrap(), weights).unwrap();
                let want = logits(whole, &ids);
                // A first read of 256 bytes: the header comes in several reads.
                let streamed = stream(&[bytes], &device, weights, 256).unwrap();
                assert!(
                    streamed.most_held < bytes.len() as u64 / 2,
                    "{label}: held {} of a {}-byte file",
                    streamed.most_held,
                    bytes.len()
                );
                let got = logits(streamed.engine, &ids);
                assert_eq!(got, want, "{label} {device:?} {weights:?}: streamed logits differ from the whole file's");
            }
        }
    }
}

#[test]
fn a_split_model_streams_from_its_shards_in_any_order() {
    let c = TinyConfig::new();
    let tensors = tiny_weights(&c, 11, false, &block_types);
    let whole = tiny_gguf(&c, &tensors);
    let parts = write_gguf_shards(tiny_metadata(&c), &tensors, 3);
    let ids = tokens(9, 4);
    let device = DeviceKind::Cpu;
    let want = logits(Engine::from_gguf(&whole, &device.device().unwrap(), WeightFormat::Int4).unwrap(), &ids);
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let files: Vec<&[u8]> = order.iter().map(|&i| parts[i].as_slice()).collect();
        let got = logits(stream(&files, &device, WeightFormat::Int4, 4 << 20).unwrap().engine, &ids);
        assert_eq!(got, want, "order {order:?}");
    }
    // A shard missing is refused at the headers, before any tensor is read.
    let e = stream(&[&parts[0], &parts[2]], &device, WeightFormat::Int4, 4 << 20).err().unwrap();
    assert!(e.to_string().contains("but 2 files were given"), "{e}");
}

/// Every prefix of a header is either not enough (`None`) or the whole header; a header
/// that claims more than the file holds, bytes short of what a tensor needs, and stages
/// taken out of order are typed errors.
#[test]
fn headers_and_parts_in_pieces_fail_typed() {
    let bytes = llama_with_rope_freqs();
    let len = bytes.len() as u64;
    let whole = GgufFile::parse(&bytes).unwrap();
    let mut first = None;
    for n in 0..bytes.len() {
        match GgufFile::parse_header(&bytes[..n], len).unwrap() {
            None => assert!(first.is_none(), "{n} bytes: more asked for after a whole header"),
            Some(h) => {
                first.get_or_insert(n);
                assert_eq!(h.tensors.len(), whole.tensors.len());
                assert!(!h.holds_data());
            }
        }
        if first.is_some_and(|f| n > f + 64) {
            break;
        }
    }
    let first = first.expect("a whole header before the file's end");
    assert!(first > 64 && first < bytes.len() / 2, "the header ended at {first} of {}", bytes.len());
    // A file shorter than its tensor table says: refused at the header, not mid-load.
    let e = GgufFile::parse_header(&bytes[..first], len - 1).err().unwrap();
    assert_eq!(e.kind(), "model_load");
    assert!(e.to_string().contains("but the file has"), "{e}");
    // A tensor's bytes one short, found when its part loads.
    let e = stream_with(&[&bytes], &DeviceKind::Cpu, WeightFormat::Int4, 256, Fault::ShortRead).err().unwrap();
    assert_eq!(e.kind(), "model_load", "{e}");
    // Parts go in order; each needs all its bytes.
    let device = DeviceKind::Cpu.device().unwrap();
    let header = GgufFile::parse_header(&bytes, len).unwrap().unwrap();
    let headers = Headers::join(vec![header]).unwrap();
    let config: HashMap<String, Vec<u8>> = headers
        .config_reads()
        .iter()
        .map(|r| (r.name.clone(), bytes[r.offset as usize..(r.offset + r.len) as usize].to_vec()))
        .collect();
    assert_eq!(config.len(), 1, "rope_freqs.weight is read before the checks");
    let mut load = StreamedLoad::new(headers, config, &device, WeightFormat::Int4, &Limits::of(&device)).unwrap();
    let e = load.load_next(HashMap::new(), &device, &mut |_, _| {}).unwrap_err();
    assert_eq!(e.kind(), "model_load", "{e}");
    assert!(load.next_reads().unwrap().iter().any(|r| r.name == "token_embd.weight"), "the failed part is next still");
}

/// The header of a model of real 3B shapes (no tensor data: every tensor at offset 0 of a
/// file claimed to be long enough), in Q4_0 with F32 norms (and Qwen2's biases).
fn header_of_3b(arch: &str, layers: usize, d: usize, ff: usize, heads: (usize, usize), vocab: usize) -> Vec<u8> {
    let (hd, q, kv) = (128, heads.0 * 128, heads.1 * 128);
    let tensor = |name: String, shape: Vec<usize>| {
        let ty = if shape.len() == 1 { Ty::F32 } else { Ty::Q4_0 };
        StoredTensor { name, shape, ty, values: vec![], bytes: vec![] }
    };
    let mut tensors = vec![tensor("token_embd.weight".into(), vec![vocab, d])];
    for i in 0..layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        tensors.extend([
            tensor(n("attn_norm.weight"), vec![d]),
            tensor(n("attn_q.weight"), vec![q, d]),
            tensor(n("attn_k.weight"), vec![kv, d]),
            tensor(n("attn_v.weight"), vec![kv, d]),
            tensor(n("attn_output.weight"), vec![d, q]),
            tensor(n("ffn_norm.weight"), vec![d]),
            tensor(n("ffn_gate.weight"), vec![ff, d]),
            tensor(n("ffn_up.weight"), vec![ff, d]),
            tensor(n("ffn_down.weight"), vec![d, ff]),
        ]);
        if arch == "qwen2" {
            tensors.extend([
                tensor(n("attn_q.bias"), vec![q]),
                tensor(n("attn_k.bias"), vec![kv]),
                tensor(n("attn_v.bias"), vec![kv]),
            ]);
        }
    }
    tensors.push(tensor("output_norm.weight".into(), vec![d]));
    let key = |k: &str| -> &'static str { Box::leak(format!("{arch}.{k}").into_boxed_str()) };
    let metadata = vec![
        ("general.architecture", Kv::Str(arch.into())),
        (key("block_count"), Kv::U32(layers as u32)),
        (key("context_length"), Kv::U32(32768)),
        (key("embedding_length"), Kv::U32(d as u32)),
        (key("feed_forward_length"), Kv::U32(ff as u32)),
        (key("attention.head_count"), Kv::U32(heads.0 as u32)),
        (key("attention.head_count_kv"), Kv::U32(heads.1 as u32)),
        (key("attention.key_length"), Kv::U32(hd as u32)),
        (key("rope.freq_base"), Kv::F32(1e6)),
        (key("attention.layer_norm_rms_epsilon"), Kv::F32(1e-6)),
        (key("vocab_size"), Kv::U32(vocab as u32)),
    ];
    write_gguf(&metadata, &tensors)
}

/// Every matrix of Qwen2.5-3B and Llama-3.2-3B fits WebGPU's default binding (128 MiB) in
/// one buffer, but their embeddings, which split by rows (and still fit a binding of 8 MiB);
/// a streamed load of either holds at most its embedding's bytes at once.
#[test]
fn every_matrix_of_a_3b_model_fits_a_default_webgpu_binding() {
    use hearth::config::RawConfig;
    use hearth::model::{Stage, checks};
    const MIB: u64 = 1 << 20;
    for (label, arch, layers, d, ff, heads, vocab) in [
        ("Qwen2.5-3B", "qwen2", 36, 2048, 11008, (16, 2), 151_936),
        ("Llama-3.2-3B", "llama", 28, 3072, 8192, (24, 8), 128_256),
    ] {
        let header = header_of_3b(arch, layers, d, ff, heads, vocab);
        // Tensors all begin at the data's start: the file is as long as the largest.
        let file = GgufFile::parse_header(&header, header.len() as u64 + 512 * MIB).unwrap().unwrap();
        let config = RawConfig::from_gguf(&file.metadata).unwrap().resolve().unwrap();
        let gpu = |max_buffer_bytes: u64| Limits {
            max_buffer_bytes,
            max_workgroups: 65_535,
            host_bytes_left: u64::MAX,
            weights_on_host: false,
        };
        checks::check(&config, &file, WeightFormat::Int4, &gpu(128 * MIB), 0)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        checks::check(&config, &file, WeightFormat::Int4, &gpu(32 * MIB), 0).unwrap();
        let e = checks::check(&config, &file, WeightFormat::Int4, &gpu(8 * MIB), 0).unwrap_err();
        assert!(e.to_string().contains("blk.0.ffn_gate"), "{label}: at 8 MiB the fused gate/up is refused: {e}");
        let mut parts: HashMap<Stage, u64> = HashMap::new();
        for t in &file.tensors {
            *parts.entry(Stage::of(&t.name)).or_default() += t.byte_len as u64;
        }
        let largest = parts.values().max().copied().unwrap();
        assert_eq!(largest, parts[&Stage::Embedding], "{label}: the embedding is the largest part");
        eprintln!("{label}: largest part {} MiB of a {} MiB model", largest / MIB, parts.values().sum::<u64>() / MIB);
        assert!(largest < 256 * MIB, "{label}");
    }
}

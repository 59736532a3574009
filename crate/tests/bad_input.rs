//! Broken files, absurd shapes, bad prompts and bad options give typed errors, never panics,
//! and leave the engine usable.

mod common;

use std::sync::Arc;

use common::*;
use hearth::format::gguf::GgufFile;
use hearth::{Control, DeviceKind, Engine, Error, EvictionPolicy, GenerateOptions, KvOptions, WeightFormat};

const WEIGHTS: WeightFormat = WeightFormat::Int4;

fn tiny() -> (TinyConfig, Vec<StoredTensor>) {
    let c = TinyConfig::new();
    let tensors = tiny_weights(&c, 3, true, &|_| Ty::Q4_1);
    (c, tensors)
}

fn load(bytes: &[u8]) -> hearth::Result<Engine> {
    Engine::from_gguf(bytes, &DeviceKind::Cpu.device().unwrap(), WEIGHTS)
}

/// Byte offset where the tensor data section starts (the first tensor's data).
fn data_start(bytes: &[u8]) -> usize {
    let file = GgufFile::parse(bytes).unwrap();
    file.tensors.iter().map(|t| t.offset).min().unwrap()
}

#[test]
fn wrong_magic() {
    let (c, t) = tiny();
    let mut bytes = tiny_gguf(&c, &t);
    bytes[..4].copy_from_slice(b"GGML");
    let err = load(&bytes).err().unwrap();
    assert!(matches!(err, Error::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("not a GGUF file"));
}

#[test]
fn unsupported_version() {
    let (c, t) = tiny();
    let mut bytes = tiny_gguf(&c, &t);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(load(&bytes), Err(Error::UnsupportedVersion(1))));
}

#[test]
fn truncated_anywhere() {
    let (c, t) = tiny();
    let bytes = tiny_gguf(&c, &t);
    // Cut inside the header, the metadata, the tensor table and the data.
    for cut in [0, 3, 7, 20, 100, 5000, data_start(&bytes) - 1, data_start(&bytes) + 10, bytes.len() - 1] {
        let err = load(&bytes[..cut]).err().unwrap_or_else(|| panic!("cut at {cut} loaded"));
        assert!(matches!(err, Error::Truncated { .. } | Error::BadMagic { .. }), "cut at {cut}: {err}");
    }
    let err = load(&bytes[..bytes.len() - 1]).err().unwrap();
    assert!(err.to_string().contains("output_norm.weight") || err.to_string().contains("needs bytes"), "{err}");
}

/// Builds a file whose one tensor has the given dims, type and offset.
fn one_tensor_file(dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(4u64.to_le_bytes());
    out.extend(b"t.wt");
    out.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        out.extend(d.to_le_bytes());
    }
    out.extend(ty.to_le_bytes());
    out.extend(offset.to_le_bytes());
    out.resize(out.len().div_ceil(32) * 32 + 64, 0);
    out
}

#[test]
fn offsets_sizes_and_dimensions_are_checked() {
    // Fits: 16 f32 = 64 bytes.
    assert!(GgufFile::parse(&one_tensor_file(&[16], 0, 0)).is_ok());
    // Offset past the end, size past the end.
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[16], 0, 1 << 40)), Err(Error::Truncated { .. })));
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[17], 0, 0)), Err(Error::Truncated { .. })));
    // Misaligned offset.
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[4], 0, 4)), Err(Error::Malformed(_))));
    // Dimensions whose product overflows u64, zero dims, too many dims.
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[u64::MAX, u64::MAX], 0, 0)), Err(Error::Malformed(_))));
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[1 << 62, 8], 0, 0)), Err(Error::Malformed(_))));
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[0], 0, 0)), Err(Error::Malformed(_))));
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[1, 1, 1, 1, 1], 0, 0)), Err(Error::Malformed(_))));
    // A quantized row that is not whole blocks.
    assert!(matches!(GgufFile::parse(&one_tensor_file(&[16], 3, 0)), Err(Error::Malformed(_))));
    // Absurd counts are refused before anything is allocated.
    let mut bytes = one_tensor_file(&[16], 0, 0);
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(GgufFile::parse(&bytes), Err(Error::Truncated { .. })));
}

#[test]
fn unsupported_tensor_type_is_named() {
    let err = GgufFile::parse(&one_tensor_file(&[256], 16, 0)).err().unwrap();
    assert!(matches!(err, Error::UnsupportedTensorType { .. }));
    assert!(err.to_string().contains("IQ2_XXS"), "{err}");
    // A K-quant row must be whole super-blocks of 256.
    let err = GgufFile::parse(&one_tensor_file(&[32], 12, 0)).err().unwrap();
    assert!(matches!(err, Error::Malformed(_)) && err.to_string().contains("Q4_K block size 256"), "{err}");
}

#[test]
fn missing_and_misshapen_tensors() {
    let (c, mut t) = tiny();
    t.retain(|t| t.name != "blk.1.ffn_up.weight");
    let err = load(&tiny_gguf(&c, &t)).err().unwrap();
    assert!(matches!(&err, Error::MissingTensor(n) if n == "blk.1.ffn_up.weight"), "{err}");

    let (c, mut t) = tiny();
    let k = t.iter_mut().find(|t| t.name == "blk.0.attn_k.weight").unwrap();
    k.shape = vec![k.shape[1], k.shape[0]];
    let err = load(&tiny_gguf(&c, &t)).err().unwrap();
    assert!(matches!(&err, Error::TensorShape { tensor, .. } if tensor == "blk.0.attn_k.weight"), "{err}");
}

#[test]
fn absurd_config_values() {
    let (mut c, t) = tiny();
    c.n_heads = 5; // 64 is not a multiple of 5
    assert!(matches!(load(&tiny_gguf(&c, &t)), Err(Error::Config(_))));
    let (mut c, t) = tiny();
    c.n_layers = u32::MAX as usize;
    assert!(matches!(load(&tiny_gguf(&c, &t)), Err(Error::Config(_))));
}

#[test]
fn bad_prompts_and_options_leave_the_engine_usable() {
    let (c, t) = tiny();
    let engine = Arc::new(load(&tiny_gguf(&c, &t)).unwrap());
    let mut session = engine.session(&KvOptions::with_capacity(16).policy(EvictionPolicy::None)).unwrap();
    let opts = GenerateOptions { max_tokens: 3, ..Default::default() };
    let run = |session: &mut hearth::Session, ids: &[u32], opts: &GenerateOptions| {
        pollster::block_on(session.generate(ids, opts, |_, _| Control::Continue))
    };

    assert!(matches!(engine.encode_prompt(""), Err(Error::InvalidPrompt(_))));
    assert!(matches!(run(&mut session, &[], &opts), Err(Error::InvalidPrompt(_))));
    assert!(matches!(hearth::engine::prompt_from_bytes(b"caf\xc3"), Err(Error::InvalidPrompt(_))));
    let long = engine.encode_prompt(&"the ".repeat(40)).unwrap();
    let err = run(&mut session, &long, &opts).err().unwrap();
    assert!(matches!(err, Error::PromptTooLong { capacity: 16, .. }), "{err}");
    assert!(matches!(run(&mut session, &[5, 100_000], &opts), Err(Error::InvalidPrompt(_))));
    assert!(matches!(
        run(&mut session, &[5], &GenerateOptions { max_tokens: 0, ..Default::default() }),
        Err(Error::BadOptions(_))
    ));
    let mut hot = opts.clone();
    hot.sampler.temperature = -1.0;
    assert!(matches!(run(&mut session, &[5], &hot), Err(Error::BadOptions(_))));
    assert!(matches!(engine.session(&KvOptions::with_capacity(0)), Err(Error::BadOptions(_))));
    assert!(matches!(engine.session(&KvOptions::with_capacity(1 << 20)), Err(Error::BadOptions(_))));

    // Still works.
    let g = run(&mut session, &engine.encode_prompt("the the").unwrap(), &opts).unwrap();
    assert!(!g.tokens.is_empty());
}

/// A thousand random mutations of a valid file, anywhere in it (header, tables, tensor data):
/// each load gives a model or an error, never a panic, and every model that loads generates.
#[test]
fn a_thousand_mutations_never_panic() {
    let c = TinyConfig { n_layers: 1, ..TinyConfig::new() };
    let tensors = tiny_weights(&c, 9, true, &|n| if n.contains("ffn") { Ty::Q4_0 } else { Ty::Q8_0 });
    let original = tiny_gguf(&c, &tensors);
    let header_end = data_start(&original);
    // Where the structure's numbers live: right after each metadata key and tensor name
    // (value types, config values, n_dims, dims, tensor types, offsets).
    let mut hot_spots = Vec::new();
    let names =
        ["llama.", "tokenizer.ggml.model", "tokenizer.ggml.pre", "general.", "blk.0.", "token_embd", "output_norm"];
    for i in 0..header_end {
        for name in names {
            if original[i..].starts_with(name.as_bytes()) {
                let end = i + original[i..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_'))
                    .unwrap();
                hot_spots.push(end);
            }
        }
    }
    let mut rng = Rng::new(2024);
    let mutants: Vec<Vec<u8>> = (0..1000)
        .map(|_| {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                // Half anywhere in the file (most of it is tensor data), half where the
                // structure lives.
                let at = match rng.below(4) {
                    0 | 1 => rng.below(bytes.len() as u64) as usize,
                    2 => rng.below(header_end as u64) as usize,
                    _ => hot_spots[rng.below(hot_spots.len() as u64) as usize] + rng.below(28) as usize,
                };
                if at >= bytes.len() {
                    continue;
                }
                match rng.below(5) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes[at] = rng.next_u64() as u8,
                    2 => {
                        let v = [0u64, 1, 0xFF, 0xFFFF_FFFF, u64::MAX, 1 << 32, 1 << 62][rng.below(7) as usize];
                        let end = (at + 8).min(bytes.len());
                        bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                    }
                    3 => bytes.truncate(at),
                    _ => {
                        let n = rng.below(16) as usize;
                        bytes.splice(at..at, (0..n).map(|_| rng.next_u64() as u8));
                    }
                }
            }
            bytes
        })
        .collect();
    let (loaded, refused) = loads_and_generates(&mutants, WeightFormat::Int4);
    eprintln!("GGUF mutations: {loaded} loaded and generated, {refused} refused");
    assert!(refused > 500, "most mutations break the file (loaded {loaded}, refused {refused})");
    assert!(loaded > 100, "mutations of tensor data leave a loadable file ({loaded} loaded)");
}

/// Loads every file of `files` on the CPU: a typed error or a model, and every model must
/// generate. Returns (loaded, refused).
fn loads_and_generates(files: &[Vec<u8>], weights: WeightFormat) -> (usize, usize) {
    let device = DeviceKind::Cpu.device().unwrap();
    let (mut loaded, mut refused) = (0, 0);
    for (i, bytes) in files.iter().enumerate() {
        match Engine::from_file_bytes(bytes, &device, weights) {
            Ok(engine) => {
                loaded += 1;
                let engine = Arc::new(engine);
                let mut session = engine.session(&KvOptions::default()).unwrap_or_else(|e| panic!("file {i}: {e}"));
                let opts = GenerateOptions { max_tokens: 2, ignore_eos: true, ..Default::default() };
                let g = pollster::block_on(session.generate(&[3, 4], &opts, |_, _| Control::Continue));
                let g = g.unwrap_or_else(|e| panic!("file {i} loaded but does not generate: {e}"));
                assert_eq!(g.tokens.len(), 2, "file {i}");
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty() && !e.kind().is_empty());
            }
        }
    }
    (loaded, refused)
}

/// A converted record, truncated or with bytes changed anywhere (its tensors included), loads
/// or fails with an error, never panics; what loads generates.
#[test]
fn broken_burnpacks_are_refused() {
    use hearth::load::{ModelParts, burnpack};
    let (c, t) = tiny();
    let bytes = tiny_gguf(&c, &t);
    let file = GgufFile::parse(&bytes).unwrap();
    let pack = burnpack::write(&ModelParts::from_gguf(&file).unwrap(), &file).unwrap();
    let device = DeviceKind::Cpu.device().unwrap();
    assert!(Engine::from_burnpack(&pack, &device, WEIGHTS).is_ok());
    let mut rng = Rng::new(5);
    let mutants: Vec<Vec<u8>> = (0..400)
        .map(|i| {
            let mut broken = pack.clone();
            match i % 4 {
                0 => broken.truncate(rng.below(pack.len() as u64) as usize),
                // The first 4 KiB hold the header and tensor index.
                1 => {
                    for _ in 0..4 {
                        let at = rng.below(4096.min(pack.len() as u64)) as usize;
                        broken[at] ^= 1 << rng.below(8);
                    }
                }
                _ => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(pack.len() as u64) as usize;
                        broken[at] = rng.next_u64() as u8;
                    }
                }
            }
            broken
        })
        .collect();
    let (loaded, refused) = loads_and_generates(&mutants, WEIGHTS);
    eprintln!("burnpack mutations: {loaded} loaded and generated, {refused} refused");
    assert!(loaded > 50 && refused > 100, "loaded {loaded}, refused {refused}");
}

/// The other families' files (Gemma 3: windows, post-norms, tied 8-bit head; Phi-3: fused
/// projections, a SentencePiece vocabulary; Phi-3.5's LongRoPE factors and attention factor),
/// mutated anywhere in their header and metadata
/// (where the window, the head sizes and the fused shapes live), load or fail with a typed
/// error, never panic; what loads generates.
#[test]
fn mutated_gemma3_and_phi3_files_never_panic() {
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for arch in ["gemma3", "phi3", "phi3-longrope"] {
        let original = std::fs::read(fixtures.join(format!("tiny-{arch}.gguf"))).unwrap();
        let header_end = data_start(&original);
        let mut rng = Rng::new(77);
        let mutants: Vec<Vec<u8>> = (0..150)
            .map(|_| {
                let mut bytes = original.clone();
                let at = rng.below(header_end as u64) as usize;
                match rng.below(3) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => {
                        let v = [0u64, 1, 3, 0xFFFF_FFFF, u64::MAX][rng.below(5) as usize];
                        let end = (at + 8).min(bytes.len());
                        bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                    }
                    _ => bytes.truncate(at),
                }
                bytes
            })
            .collect();
        let (loaded, refused) = loads_and_generates(&mutants, WeightFormat::Int4);
        eprintln!("{arch} mutations: {loaded} loaded and generated, {refused} refused");
        assert!(refused > 50, "{arch}: most header mutations break the file ({loaded} loaded)");
    }
}

/// A model of K-quant matrices (every type, rows of 256), mutated anywhere (its super-scales,
/// sub-block scales and codes included), and its converted record mutated too: a model or a
/// typed error, never a panic, and every model that loads generates.
#[test]
fn mutated_k_quant_files_and_records_never_panic() {
    use hearth::load::{ModelParts, burnpack};
    let c = TinyConfig { d_model: 256, d_ff: 512, n_layers: 1, ..TinyConfig::new() };
    let mut rng = Rng::new(31);
    use hearth::format::gguf::GgmlType as G;
    let kinds = [(Ty::Q2K, G::Q2_K), (Ty::Q3K, G::Q3_K), (Ty::Q4K, G::Q4_K), (Ty::Q5K, G::Q5_K), (Ty::Q6K, G::Q6_K)];
    let tensors: Vec<StoredTensor> = tiny_weights(&c, 5, true, &|_| Ty::F32)
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.shape.len() != 2 {
                return t;
            }
            let (ty, dtype) = kinds[i % kinds.len()];
            StoredTensor { ty, bytes: random_k_blocks(&mut rng, dtype, t.values.len() / 256), ..t }
        })
        .collect();
    let original = tiny_gguf(&c, &tensors);
    assert!(load(&original).is_ok(), "the unmutated file loads");
    let mutate = |bytes: &[u8], rng: &mut Rng| {
        let mut bytes = bytes.to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next_u64() as u8,
                _ => bytes.truncate(at),
            }
        }
        bytes
    };
    let mutants: Vec<Vec<u8>> = (0..300).map(|_| mutate(&original, &mut rng)).collect();
    let (loaded, refused) = loads_and_generates(&mutants, WeightFormat::Int4);
    eprintln!("K-quant GGUF mutations: {loaded} loaded and generated, {refused} refused");
    assert!(loaded > 50 && refused > 50, "loaded {loaded}, refused {refused}");
    let file = GgufFile::parse(&original).unwrap();
    let pack = burnpack::write(&ModelParts::from_gguf(&file).unwrap(), &file).unwrap();
    let mutants: Vec<Vec<u8>> = (0..200).map(|_| mutate(&pack, &mut rng)).collect();
    let (loaded, refused) = loads_and_generates(&mutants, WeightFormat::Int4);
    eprintln!("K-quant record mutations: {loaded} loaded and generated, {refused} refused");
    assert!(loaded > 20 && refused > 20, "loaded {loaded}, refused {refused}");
}

/// Gemma 3's window and Phi-3's fused shapes are checked: a missing or zero window, a stated
/// soft cap, partial rotation, and a fused matrix of the wrong size are refused by name.
#[test]
fn family_specific_metadata_and_shapes_are_checked() {
    use hearth::format::gguf::Value;
    use hearth::load::ModelParts;
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bytes = std::fs::read(fixtures.join("tiny-gemma3.gguf")).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let config_with = |key: &str, value: Option<Value>| {
        let mut metadata = file.metadata.clone();
        match value {
            Some(v) => metadata.insert(key.into(), v),
            None => metadata.remove(key),
        };
        hearth::config::RawConfig::from_gguf(&metadata).and_then(|raw| raw.resolve())
    };
    assert_eq!(config_with("gemma3.attention.sliding_window", Some(Value::U32(4))).unwrap().sliding_window, Some(4));
    for (key, value, says) in [
        ("gemma3.attention.sliding_window", None, "sliding window"),
        ("gemma3.attention.sliding_window", Some(Value::U32(0)), "sliding window"),
        ("gemma3.final_logit_softcapping", Some(Value::F32(30.0)), "soft-capping"),
        ("gemma3.rope.dimension_count", Some(Value::U32(8)), "partial rotary"),
    ] {
        let err = config_with(key, value).unwrap_err();
        assert!(matches!(err, Error::Config(_)) && err.to_string().contains(says), "{key}: {err}");
    }
    assert!(ModelParts::from_gguf(&file).is_ok());

    // Phi-3's fused Q|K|V one row short of what the heads need.
    let bytes = std::fs::read(fixtures.join("tiny-phi3.gguf")).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let rows_at = file.tensors.iter().find(|t| t.name == "blk.0.attn_qkv.weight").unwrap().shape[0];
    let mut broken = bytes.clone();
    // The tensor table stores dims innermost first: [cols, rows]; find the rows after the name.
    let name = b"blk.0.attn_qkv.weight";
    let at = broken.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 8;
    assert_eq!(u64::from_le_bytes(broken[at..at + 8].try_into().unwrap()), rows_at as u64);
    broken[at..at + 8].copy_from_slice(&(rows_at as u64 - 1).to_le_bytes());
    let err = load(&broken).err().expect("refused");
    assert!(err.to_string().contains("attn_qkv") || err.to_string().contains("attn_"), "{err}");
}

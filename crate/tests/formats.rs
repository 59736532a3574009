//! Weight formats and files on tiny random models: every stored block type loads exactly
//! (K-quants, 5-bit, floats kept as stored, parts that do not fuse), float weights quantize at
//! load as ggml would, records and exports round-trip, and the BPE pre-tokenizers give
//! llama.cpp's ids.

mod common;

use std::sync::Arc;

use common::*;
use hearth::load::hf::HfFiles;
use hearth::{DeviceKind, Engine, KvOptions, Message, WeightFormat};

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

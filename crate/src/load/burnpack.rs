//! A pre-quantized model as one burn record (burnpack, `.bpk`): packed matrices as they go to
//! the device, f32 norms, and the config, tokenizer and chat template as metadata. Loading it
//! does no quantization work; it is what `hearth convert` writes and what a browser downloads.
//!
//! A packed matrix `X` is stored as `X.codes` (u32 `[rows, words per row]`) and `X.params`
//! (u32 `[rows, blocks per row]`), with its format and column count in the metadata under
//! `X.format` and `X.cols`; a K-quant matrix ([`Scales::Super`], formats `q4k` and `q8k`) also
//! has `X.supers` (u32 `[rows, supers per row]`). Packs written before the K-quants had
//! kernels hold those matrices as f32 (format `f32`), which still load.

use std::collections::BTreeMap;

use burn_pack::{Bytes, DType, Reader, Writer};
use serde_json::{Value as Json, json};

use crate::config::RawConfig;
use crate::error::{Error, Result};
use crate::load::WeightFormat;
use crate::load::tensor_table::{Role, tensor_table};
use crate::load::{HostTensor, ModelParts, TensorSource, check_vocab, packed_or_quantized};
use crate::quant::BLOCK;
use crate::quant::packed::{PackedMatrix, QuantFormat, SUPER, Scales};
use crate::text::tokenizer::Tokenizer;

/// Bumped when the layout of a pack changes.
const FORMAT: &str = "hearth-int4-1";

fn bad(msg: impl Into<String>) -> Error {
    Error::Malformed(format!("burnpack: {}", msg.into()))
}

fn u32_tensor(name: String, words: &[u32], shape: [usize; 2]) -> burn_pack::Tensor {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    burn_pack::Tensor::new(name, DType::U32, shape, None, Bytes::from_bytes_vec(bytes))
}

/// Writes the model `parts` with weights from `source` as a burnpack.
pub fn write(parts: &ModelParts, source: &dyn TensorSource) -> Result<Vec<u8>> {
    write_as(parts, source, WeightFormat::Int4)
}

/// [`write`](fn@write) with float matrices quantized as `weights` says (`int4`, `q4_0`, `q4_1`, `q8_0`);
/// matrices stored in a packed block format are kept as they are.
pub fn write_as(parts: &ModelParts, source: &dyn TensorSource, weights: WeightFormat) -> Result<Vec<u8>> {
    if weights == WeightFormat::F32 {
        return Err(Error::BadOptions(
            "a converted model holds packed weights: f32 is not one of them (expected int4, q4_0, q4_1 or q8_0)".into(),
        ));
    }
    crate::load::fused::with_parts(source, &parts.config, |source| write_parts(parts, source, weights))
}

fn write_parts(parts: &ModelParts, source: &dyn TensorSource, weights: WeightFormat) -> Result<Vec<u8>> {
    let c = &parts.config;
    let tied = !source.contains("output.weight");
    let mut tensors = Vec::new();
    let mut writer_meta = BTreeMap::new();
    for spec in tensor_table(c, tied) {
        let Role::Matrix { fallback } = spec.role else { continue };
        let (rows, cols, name) = (spec.shape[0], spec.shape[1], spec.name);
        let keep = weights.keeps_floats(source);
        let p = packed_or_quantized(source, &name, rows, cols, weights.quantizer(fallback), keep)?;
        let words = p.blocks_per_row() * p.format.words_per_block();
        tensors.push(u32_tensor(format!("{name}.codes"), &p.codes, [rows, words]));
        if !p.format.is_float() {
            tensors.push(u32_tensor(format!("{name}.params"), &p.params, [rows, p.blocks_per_row()]));
        }
        if p.scales == Scales::Super {
            tensors.push(u32_tensor(format!("{name}.supers"), &p.supers, [rows, p.supers_per_row()]));
        }
        let format = match (p.format, p.scales) {
            (QuantFormat::Q4, Scales::Block) => "q4",
            (QuantFormat::Q8, Scales::Block) => "q8",
            (QuantFormat::Q4, Scales::Super) => "q4k",
            (QuantFormat::Q8, Scales::Super) => "q8k",
            (QuantFormat::Q5, Scales::Block) => "q5",
            (QuantFormat::Q5, Scales::Super) => "q5k",
            (QuantFormat::Q6, Scales::Block) => "q6",
            (QuantFormat::Q6, Scales::Super) => "q6k",
            (QuantFormat::F16, _) => "f16",
            (QuantFormat::Bf16, _) => "bf16",
            // Not "f32": that names an older pack's record of f32 values (`f32_record`).
            (QuantFormat::F32, _) => "f32codes",
        };
        writer_meta.insert(format!("{name}.format"), format.to_string());
        writer_meta.insert(format!("{name}.cols"), cols.to_string());
    }
    for spec in tensor_table(c, tied).into_iter().filter(|s| matches!(s.role, Role::Norm | Role::Bias)) {
        let t = source.tensor(&spec.name)?.expect_shape(&spec.shape)?;
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [spec.shape[0]];
        tensors.push(burn_pack::Tensor::new(spec.name, DType::F32, shape, None, Bytes::from_bytes_vec(bytes)));
    }
    let tok = &parts.tokenizer;
    let config = c.to_hf_json(tied);
    writer_meta.insert("hearth.format".into(), FORMAT.into());
    writer_meta.insert("hearth.name".into(), parts.name.clone());
    writer_meta.insert("hearth.config".into(), config.to_string());
    writer_meta.insert("hearth.tokenizer".into(), tok.to_json()?);
    writer_meta.insert(
        "hearth.special".into(),
        json!({ "bos": tok.bos(), "add_bos": tok.add_bos(), "eos": tok.end_of_generation() }).to_string(),
    );
    if let Some(t) = &parts.chat_template {
        writer_meta.insert("hearth.chat_template".into(), t.clone());
    }
    let mut writer = Writer::new(tensors);
    for (k, v) in &writer_meta {
        writer = writer.with_metadata(k, v);
    }
    let bytes = writer.into_bytes().map_err(|e| bad(e.to_string()))?;
    Ok(bytes.to_vec())
}

/// Whether `bytes` start like a burnpack.
pub fn is_burnpack(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && u32::from_le_bytes(bytes[..4].try_into().unwrap()) == burn_pack::MAGIC_NUMBER
}

/// The tensors of a parsed pack.
pub struct PackTensors {
    tensors: BTreeMap<String, (DType, Vec<usize>, Bytes)>,
    metadata: BTreeMap<String, String>,
}

/// Parses a pack into the model's parts and its tensors.
pub fn parse(bytes: &[u8]) -> Result<(ModelParts, PackTensors)> {
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| bad(e.to_string()))?;
    let metadata = reader.metadata().clone();
    let meta = |key: &str| metadata.get(key).ok_or_else(|| bad(format!("metadata {key} is missing")));
    if meta("hearth.format")? != FORMAT {
        return Err(bad(format!("format {:?}, expected {FORMAT:?}", meta("hearth.format")?)));
    }
    let config = RawConfig::from_hf_json(meta("hearth.config")?.as_bytes())?.resolve()?;
    let special: Json = serde_json::from_str(meta("hearth.special")?).map_err(|e| bad(e.to_string()))?;
    let eos: Vec<u32> =
        special["eos"].as_array().into_iter().flatten().filter_map(Json::as_u64).map(|v| v as u32).collect();
    let bos = special["bos"].as_u64().map(|v| v as u32);
    let add_bos = special["add_bos"].as_bool().unwrap_or(false);
    let tokenizer = Tokenizer::from_json(meta("hearth.tokenizer")?.as_bytes(), bos, add_bos, &eos)?;
    check_vocab(&config, &tokenizer)?;
    let parts = ModelParts {
        config,
        tokenizer,
        chat_template: metadata.get("hearth.chat_template").cloned(),
        name: metadata.get("hearth.name").cloned().unwrap_or_else(|| "burnpack model".into()),
    };
    let tensors = reader
        .into_tensors()
        .map_err(|e| bad(e.to_string()))?
        .into_iter()
        .map(|t| {
            let (name, dtype, shape, _, bytes) = t.into_parts().map_err(|e| bad(e.to_string()))?;
            Ok((name, (dtype, shape.to_vec(), bytes)))
        })
        .collect::<Result<_>>()?;
    Ok((parts, PackTensors { tensors, metadata }))
}

impl PackTensors {
    /// Whether `name` is a matrix of f32 values standing for a block format (K-quant matrices
    /// in packs written before their kernels existed): it loads as F32 codes.
    fn f32_record(&self, name: &str) -> bool {
        self.metadata.get(&format!("{name}.format")).is_some_and(|f| f == "f32")
    }

    fn format(&self, name: &str) -> Result<(QuantFormat, Scales)> {
        match self.metadata.get(&format!("{name}.format")).map(String::as_str) {
            Some("q4") => Ok((QuantFormat::Q4, Scales::Block)),
            Some("q8") => Ok((QuantFormat::Q8, Scales::Block)),
            Some("q4k") => Ok((QuantFormat::Q4, Scales::Super)),
            Some("q8k") => Ok((QuantFormat::Q8, Scales::Super)),
            Some("q5") => Ok((QuantFormat::Q5, Scales::Block)),
            Some("q5k") => Ok((QuantFormat::Q5, Scales::Super)),
            Some("q6") => Ok((QuantFormat::Q6, Scales::Block)),
            Some("q6k") => Ok((QuantFormat::Q6, Scales::Super)),
            Some("f16") => Ok((QuantFormat::F16, Scales::Block)),
            Some("bf16") => Ok((QuantFormat::Bf16, Scales::Block)),
            Some("f32codes") => Ok((QuantFormat::F32, Scales::Block)),
            other => Err(bad(format!("{name}: format {other:?}"))),
        }
    }

    fn cols(&self, name: &str) -> Result<usize> {
        self.metadata
            .get(&format!("{name}.cols"))
            .and_then(|c| c.parse().ok())
            .filter(|&c| c > 0)
            .ok_or_else(|| bad(format!("{name}: no column count")))
    }

    fn words(&self, name: &str, rows: usize, per_row: usize) -> Result<Vec<u32>> {
        let (dtype, shape, bytes) = self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let len = rows.checked_mul(per_row).and_then(|n| n.checked_mul(4));
        if *dtype != DType::U32 || shape[..] != [rows, per_row] || Some(bytes.len()) != len {
            return Err(Error::TensorShape {
                tensor: name.into(),
                expected: vec![rows, per_row],
                found: shape.clone(),
            });
        }
        Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
    }
}

impl TensorSource for PackTensors {
    fn tensor_count(&self) -> usize {
        // A packed matrix is two tensors in the pack but one to the model.
        self.tensors.keys().filter(|k| !k.ends_with(".params") && !k.ends_with(".supers")).count()
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.tensors.contains_key(&format!("{name}.codes"))
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        if let Some((_, shape, _)) = self.tensors.get(&format!("{name}.codes")) {
            let cols = self.cols(name)?;
            return Ok(Some(vec![shape.first().copied().unwrap_or(0), cols]));
        }
        Ok(self.tensors.get(name).map(|(_, shape, _)| shape.clone()))
    }

    fn stored_format(&self, name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        match self.tensors.contains_key(&format!("{name}.codes")) {
            true => self.format(name).map(Some),
            false if self.f32_record(name) => Ok(Some((QuantFormat::F32, Scales::Block))),
            false => Ok(None),
        }
    }

    fn holds_quantized(&self) -> bool {
        let floats = ["f32", "f32codes", "f16", "bf16"];
        self.metadata.iter().any(|(k, v)| k.ends_with(".format") && !floats.contains(&v.as_str()))
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .map(|k| {
                let part = [".codes", ".params", ".supers"].iter().find_map(|s| k.strip_suffix(s));
                part.unwrap_or(k).to_string()
            })
            .collect();
        names.dedup();
        names
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        if self.tensors.contains_key(&format!("{name}.codes"))
            && let Some(p) = self.packed(name)?
        {
            return Ok(HostTensor { name: name.into(), shape: vec![p.rows, p.cols], data: p.dequantize() });
        }
        let (dtype, shape, bytes) = self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let len = shape.iter().try_fold(4usize, |n, &d| n.checked_mul(d));
        if *dtype != DType::F32 || Some(bytes.len()) != len {
            return Err(bad(format!("tensor {name}: {dtype:?} {shape:?} with {} bytes", bytes.len())));
        }
        let data = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        Ok(HostTensor { name: name.into(), shape: shape.clone(), data })
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let Some((_, shape, _)) = self.tensors.get(&format!("{name}.codes")) else {
            if !self.f32_record(name) {
                return Ok(None);
            }
            let t = self.tensor(name)?;
            let &[rows, cols] = &t.shape[..] else {
                return Err(bad(format!("{name}: shape {:?} for a matrix", t.shape)));
            };
            return Ok(Some(PackedMatrix::from_f32(&t.data, rows, cols)));
        };
        let ((format, scales), cols) = (self.format(name)?, self.cols(name)?);
        let &[rows, _] = &shape[..] else {
            return Err(bad(format!("{name}.codes: shape {shape:?}")));
        };
        let blocks = cols.div_ceil(BLOCK);
        let per_row =
            blocks.checked_mul(format.words_per_block()).ok_or_else(|| bad(format!("{name}: {cols} columns")))?;
        let codes = self.words(&format!("{name}.codes"), rows, per_row)?;
        let params = match format.is_float() {
            true => Vec::new(),
            false => self.words(&format!("{name}.params"), rows, blocks)?,
        };
        let supers = match scales {
            Scales::Block => Vec::new(),
            Scales::Super => self.words(&format!("{name}.supers"), rows, blocks.div_ceil(SUPER))?,
        };
        Ok(Some(PackedMatrix { format, scales, rows, cols, codes, params, supers }))
    }
}

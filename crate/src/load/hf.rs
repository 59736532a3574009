//! A Hugging Face model directory: `config.json`, `*.safetensors` (F32, F16, BF16),
//! `tokenizer.json` and, for the chat template, `tokenizer_config.json`.
//!
//! Tensors are served under GGUF's names. Query and key rows are permuted from Hugging Face's
//! rotate-half layout into GGUF's adjacent-pair layout (the inverse of llama.cpp's
//! `convert_hf_to_gguf.py` permutation), so one RoPE serves both formats.

use std::collections::HashMap;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::config::{Architecture, ModelConfig, RawConfig};
use crate::error::{Error, Result};
use crate::load::{HostTensor, ModelParts, TensorSource, check_vocab, halves_to_pairs, pairs_to_halves, rope_heads};
use crate::text::tokenizer::Tokenizer;

/// GGUF name suffix to Hugging Face name suffix, for tensors inside `blk.{i}`.
const LAYER_NAMES: [(&str, &str); 14] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// Where Gemma's names differ: its `post_attention_layernorm` is the norm after attention, and
/// the norm before the feed-forward block has a name of its own.
const GEMMA_LAYER_NAMES: [(&str, &str); 3] = [
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_attention_norm.weight", "post_attention_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
];

/// Phi-3's fused projections, read as [`crate::load::fused`] splits them. (Exports write the
/// parts under Llama's names instead, which this reader takes as well.)
const PHI3_LAYER_NAMES: [(&str, &str); 2] =
    [("attn_qkv.weight", "self_attn.qkv_proj.weight"), ("ffn_up.weight", "mlp.gate_up_proj.weight")];

/// GGUF name to Hugging Face name, for tensors outside the blocks.
const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The files of a Hugging Face model directory, as bytes.
pub struct HfFiles<'a> {
    pub config_json: &'a [u8],
    pub tokenizer_json: &'a [u8],
    pub tokenizer_config_json: Option<&'a [u8]>,
    pub safetensors: Vec<&'a [u8]>,
}

/// The tensors of a Hugging Face model, borrowing its safetensors files.
pub struct HfTensors<'a> {
    config: ModelConfig,
    shards: Vec<SafeTensors<'a>>,
    /// Hugging Face tensor name to the shard holding it.
    index: HashMap<String, usize>,
    tie_word_embeddings: bool,
    /// The checkpoint stores Phi-3's projections fused.
    fused: bool,
}

/// Parses the directory's files into the model's parts and its tensors.
pub fn parse(files: HfFiles<'_>) -> Result<(ModelParts, HfTensors<'_>)> {
    let raw = RawConfig::from_hf_json(files.config_json)?;
    let config = raw.resolve()?;
    let config_json: Json =
        serde_json::from_slice(files.config_json).map_err(|e| Error::config(format!("config.json: {e}")))?;
    let tok_config: Json = match files.tokenizer_config_json {
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| Error::Tokenizer(format!("tokenizer_config.json: {e}")))?
        }
        None => Json::Null,
    };

    let ids = |v: Option<&Json>| -> Vec<u32> {
        match v {
            Some(Json::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            Some(Json::Array(a)) => a.iter().filter_map(|n| n.as_u64()).map(|n| n as u32).collect(),
            _ => Vec::new(),
        }
    };
    let mut eos = ids(config_json.get("eos_token_id"));
    let bos = ids(config_json.get("bos_token_id")).first().copied();
    let add_bos = tok_config.get("add_bos_token").and_then(Json::as_bool).unwrap_or(false);
    let probe = Tokenizer::from_json(files.tokenizer_json, bos, add_bos, &[u32::MAX])?;
    let token_text = |key: &str| -> Option<String> {
        match tok_config.get(key)? {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
            _ => None,
        }
    };
    if let Some(text) = token_text("eos_token")
        && let Ok(found) = probe.encode(&text, true)
        && let [id] = found.as_slice()
    {
        eos.push(*id);
    }
    let tokenizer = Tokenizer::from_json(files.tokenizer_json, bos, add_bos, &eos)?;
    check_vocab(&config, &tokenizer)?;

    let chat_template = match tok_config.get("chat_template") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .or(list.first())
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(str::to_string),
        _ => None,
    };

    let mut shards = Vec::with_capacity(files.safetensors.len());
    let mut index = HashMap::new();
    for (i, bytes) in files.safetensors.iter().enumerate() {
        let shard =
            SafeTensors::deserialize(bytes).map_err(|e| Error::malformed(format!("safetensors file {i}: {e}")))?;
        for name in shard.names() {
            if index.insert(name.to_string(), i).is_some() {
                return Err(Error::malformed(format!("tensor {name} appears in two safetensors files")));
            }
        }
        shards.push(shard);
    }
    let name = config_json.get("_name_or_path").and_then(Json::as_str).unwrap_or("safetensors model").to_string();
    let fused = index.contains_key("model.layers.0.self_attn.qkv_proj.weight");
    let tensors = HfTensors {
        config: config.clone(),
        shards,
        index,
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        fused,
    };
    Ok((ModelParts { config, tokenizer, chat_template, name }, tensors))
}

impl HfTensors<'_> {
    fn hf_name(arch: &Architecture, fused: bool, gguf_name: &str) -> Option<String> {
        if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf_name) {
            return Some(hf.to_string());
        }
        let rest = gguf_name.strip_prefix("blk.")?;
        let (layer, suffix) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let own: &[(&str, &str)] = match (arch.post_norms, fused) {
            (true, _) => &GEMMA_LAYER_NAMES,
            (_, true) => &PHI3_LAYER_NAMES,
            _ => &[],
        };
        let (_, hf) = own.iter().chain(&LAYER_NAMES).find(|(g, _)| *g == suffix)?;
        Some(format!("model.layers.{layer}.{hf}"))
    }

    fn read(&self, gguf_name: &str) -> Result<HostTensor> {
        let missing = || Error::MissingTensor(gguf_name.to_string());
        let hf = Self::hf_name(&self.config.arch, self.fused, gguf_name).ok_or_else(missing)?;
        let &shard = self.index.get(&hf).ok_or_else(|| Error::MissingTensor(format!("{hf} ({gguf_name})")))?;
        let view = self.shards[shard].tensor(&hf).map_err(|e| Error::malformed(format!("{hf}: {e}")))?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(Error::UnsupportedTensorType { tensor: hf, dtype: format!("{other:?}") }),
        };
        let data = match self.config.arch.hf_norm_minus_one && is_norm(gguf_name) {
            true => data.into_iter().map(|w| w + 1.0).collect(),
            false => data,
        };
        Ok(HostTensor { name: gguf_name.to_string(), shape: view.shape().to_vec(), data })
    }
}

impl TensorSource for HfTensors<'_> {
    fn tensor_count(&self) -> usize {
        self.index.len()
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        if !self.contains(name) {
            return Ok(None);
        }
        let Some(hf) = Self::hf_name(&self.config.arch, self.fused, name) else { return Ok(None) };
        let Some(&shard) = self.index.get(&hf) else { return Ok(None) };
        let view = self.shards[shard].tensor(&hf).map_err(|e| Error::malformed(format!("{hf}: {e}")))?;
        Ok(Some(view.shape().to_vec()))
    }

    fn contains(&self, name: &str) -> bool {
        if name == "output.weight" && self.tie_word_embeddings {
            return false;
        }
        Self::hf_name(&self.config.arch, self.fused, name).is_some_and(|hf| self.index.contains_key(&hf))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let t = self.read(name)?;
        match rope_heads(&self.config, name) {
            Some(heads) => halves_to_pairs(t, heads),
            None => Ok(t),
        }
    }
}

/// Whether a GGUF tensor name is an RMSNorm scale (the ones Gemma's checkpoints store minus 1).
fn is_norm(gguf_name: &str) -> bool {
    gguf_name.ends_with("norm.weight")
}

/// The files of a Hugging Face directory holding `parts` with f32 weights from `source`:
/// `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`. With
/// `noise > 0`, every matrix gets Gaussian noise of `noise` times its RMS (seeded), which makes
/// a float model that no quantization grid holds exactly, for quantization studies.
pub fn export(parts: &ModelParts, source: &dyn TensorSource, noise: f32, seed: u64) -> Result<Vec<(String, Vec<u8>)>> {
    crate::load::fused::with_parts(source, &parts.config, |source| export_parts(parts, source, noise, seed))
}

fn export_parts(
    parts: &ModelParts,
    source: &dyn TensorSource,
    noise: f32,
    seed: u64,
) -> Result<Vec<(String, Vec<u8>)>> {
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    let c = &parts.config;
    let tied = !source.contains("output.weight");
    let mut names: Vec<String> = vec!["token_embd.weight".into(), "output_norm.weight".into()];
    if !tied {
        names.push("output.weight".into());
    }
    let table = crate::load::tensor_table::tensor_table(c, tied);
    for i in 0..c.n_layers {
        for (g, _) in LAYER_NAMES.iter().chain(&GEMMA_LAYER_NAMES) {
            let name = format!("blk.{i}.{g}");
            if table.iter().any(|s| s.name == name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gaussian = move || {
        // Box-Muller from two uniforms in (0, 1].
        let u = |r: &mut ChaCha8Rng| ((r.next_u32() >> 8) as f64 + 1.0) / (1u64 << 24) as f64;
        let (a, b) = (u(&mut rng), u(&mut rng));
        ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
    };
    let mut tensors = Vec::new();
    for name in &names {
        let mut t = source.tensor(name)?;
        if let Some(heads) = rope_heads(c, name) {
            t = pairs_to_halves(t, heads);
        }
        if c.arch.hf_norm_minus_one && is_norm(name) {
            t.data.iter_mut().for_each(|w| *w -= 1.0);
        }
        if noise > 0.0 && t.shape.len() == 2 {
            let rms = (t.data.iter().map(|v| (v * v) as f64).sum::<f64>() / t.data.len() as f64).sqrt() as f32;
            for v in &mut t.data {
                *v += noise * rms * gaussian();
            }
        }
        let hf = HfTensors::hf_name(&c.arch, false, name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((hf, t.shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::malformed(format!("safetensors: {e}")))?;
    let safetensors = safetensors::serialize(views, None).map_err(|e| Error::malformed(format!("safetensors: {e}")))?;

    let tok = &parts.tokenizer;
    let mut config = c.to_hf_json(tied);
    config["eos_token_id"] = serde_json::json!(tok.end_of_generation());
    config["bos_token_id"] = serde_json::json!(tok.bos());
    let text = |id: Option<u32>| id.and_then(|id| tok.token_text(id));
    let tok_config = serde_json::json!({
        "chat_template": parts.chat_template,
        "bos_token": text(tok.bos()),
        "eos_token": text(Some(tok.eos())),
        "add_bos_token": tok.add_bos(),
    });
    Ok(vec![
        ("config.json".into(), config.to_string().into_bytes()),
        ("model.safetensors".into(), safetensors),
        ("tokenizer.json".into(), tok.to_json()?.into_bytes()),
        ("tokenizer_config.json".into(), tok_config.to_string().into_bytes()),
    ])
}

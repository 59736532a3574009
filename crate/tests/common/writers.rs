//! File writers, from the formats' specifications: GGUF v3, safetensors, and Hugging Face's
//! query/key row order.

use super::*;

/// A GGUF value for the writer.
pub enum Kv {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// `tensors` in `count` shards as llama.cpp's gguf-split writes them: `metadata` in the first,
/// the split keys (`split.no`, `split.count`, `split.tensors.count`) in each, the tensors in
/// order, about as many in each.
pub fn write_gguf_shards(metadata: Vec<(&str, Kv)>, tensors: &[StoredTensor], count: usize) -> Vec<Vec<u8>> {
    let per = tensors.len().div_ceil(count);
    let mut metadata = Some(metadata);
    tensors
        .chunks(per)
        .enumerate()
        .map(|(no, part)| {
            let mut kv = metadata.take().unwrap_or_default();
            kv.push(("split.no", Kv::U32(no as u32)));
            kv.push(("split.count", Kv::U32(count as u32)));
            kv.push(("split.tensors.count", Kv::U32(tensors.len() as u32)));
            write_gguf(&kv, part)
        })
        .collect()
}

/// Writes a GGUF v3 file (spec: ggml/docs/gguf.md) with alignment 32.
pub fn write_gguf(metadata: &[(&str, Kv)], tensors: &[StoredTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        match value {
            Kv::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Kv::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(*v as u8);
            }
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Kv::StrArray(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            Kv::I32Array(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    out.extend(v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.ty.ggml_id().to_le_bytes());
        out.extend(offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.bytes.len() as u64).div_ceil(32) * 32;
    }
    let data_start = out.len().div_ceil(32) * 32;
    out.resize(data_start, 0);
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off as usize, 0);
        out.extend(&t.bytes);
    }
    out
}

/// Hugging Face layout of a GGUF-layout query/key weight: the inverse of the engine's
/// permutation, written from `convert_hf_to_gguf.py`'s `permute` (reshape to
/// `[heads, 2, hd/2, d]`, swap axes 1 and 2).
pub fn gguf_to_hf_rows(w: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / n_heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                // GGUF row h*hd + 2i + j came from HF row h*hd + j*hd/2 + i.
                let src = (h * hd + 2 * i + j) * cols;
                let dst = (h * hd + j * hd / 2 + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// Writes a safetensors file (8-byte header length, JSON header, data) by hand.
pub fn write_safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()] }),
        );
        offset += bytes.len();
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
    }
    out
}

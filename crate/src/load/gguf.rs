//! GGUF files as a [`TensorSource`]: tensors dequantized to f32 or packed as stored, with the
//! query and key rows that GGUF keeps in llama.cpp's halves order put back in pairs.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{HostTensor, TensorSource, halves_to_pairs, pair_source, rope_heads_of};
use crate::config::Architecture;
use crate::error::{Error, Result};
use crate::format::gguf::{GgmlType, GgufFile, TensorInfo, Value};
use crate::quant::packed::{PackedMatrix, QuantFormat, Scales};

/// Reads and dequantizes a tensor to f32, rows as stored.
pub fn tensor(file: &GgufFile, name: &str) -> Result<HostTensor> {
    let info = info(file, name)?;
    Ok(dequantized(info, file.tensor_bytes(info)?))
}

fn info<'f>(file: &'f GgufFile, name: &str) -> Result<&'f TensorInfo> {
    file.tensor_info(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
}

/// `bytes`, the data of `info`, as f32.
fn dequantized(info: &TensorInfo, bytes: &[u8]) -> HostTensor {
    let mut data = vec![0.0f32; info.numel()];
    crate::quant::dequantize(info.dtype, bytes, &mut data);
    HostTensor { name: info.name.clone(), shape: info.shape.clone(), data }
}

impl TensorSource for GgufFile<'_> {
    fn contains(&self, name: &str) -> bool {
        self.tensor_info(name).is_some()
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let info = info(self, name)?;
        in_pairs(self, name, dequantized(info, self.tensor_bytes(info)?))
    }

    fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        Ok(self.tensor_info(name).map(|t| t.shape.clone()))
    }

    fn stored_format(&self, name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        use GgmlType as G;
        Ok(self.tensor_info(name).and_then(|t| match t.dtype {
            G::Q4_0 | G::Q4_1 => Some((QuantFormat::Q4, Scales::Block)),
            G::Q8_0 => Some((QuantFormat::Q8, Scales::Block)),
            G::Q5_0 | G::Q5_1 => Some((QuantFormat::Q5, Scales::Block)),
            G::Q2_K | G::Q3_K | G::Q4_K => Some((QuantFormat::Q4, Scales::Super)),
            G::Q5_K => Some((QuantFormat::Q5, Scales::Super)),
            G::Q6_K => Some((QuantFormat::Q6, Scales::Super)),
            G::F16 if t.shape.len() == 2 => Some((QuantFormat::F16, Scales::Block)),
            G::BF16 if t.shape.len() == 2 => Some((QuantFormat::Bf16, Scales::Block)),
            G::F32 if t.shape.len() == 2 => Some((QuantFormat::F32, Scales::Block)),
            _ => None,
        }))
    }

    fn holds_quantized(&self) -> bool {
        self.tensors.iter().any(|t| !matches!(t.dtype, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16))
    }

    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let info = info(self, name)?;
        packed(self, info, || self.tensor_bytes(info))
    }
}

/// A tensor as the decoder reads it: query and key rows in pairs.
fn in_pairs(file: &GgufFile, name: &str, t: HostTensor) -> Result<HostTensor> {
    match gguf_halves_heads(file, name) {
        Some(heads) => halves_to_pairs(t, heads),
        None => Ok(t),
    }
}

/// `info`'s matrix packed as stored, its bytes read by `bytes` only when it is one.
fn packed<'b>(
    file: &GgufFile,
    info: &TensorInfo,
    bytes: impl FnOnce() -> Result<&'b [u8]>,
) -> Result<Option<PackedMatrix>> {
    let name = info.name.as_str();
    match (info.dtype, &info.shape[..]) {
        (
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::F32,
            &[rows, cols],
        ) => {
            let p = PackedMatrix::from_gguf(name, info.dtype, bytes()?, rows, cols)?;
            match gguf_halves_heads(file, name) {
                Some(heads) if rows.is_multiple_of(2 * heads) => {
                    Ok(Some(p.reorder_rows(|r| pair_source(r, rows / heads))))
                }
                Some(heads) => Err(Error::TensorShape {
                    tensor: name.into(),
                    expected: vec![heads, cols],
                    found: vec![rows, cols],
                }),
                None => Ok(Some(p)),
            }
        }
        (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16, _) => Ok(None),
        (other, _) => Err(Error::UnsupportedTensorType {
            tensor: name.into(),
            dtype: format!("{} as a packed matrix", other.name()),
        }),
    }
}

/// A streamed model's tensors: the header answers for all of them, and the bytes of those a
/// load has read so far ([`crate::model::Stage`]'s) are in the window, by name, each dropped
/// once the loader has packed it ([`TensorSource::release`]).
pub struct Windowed<'f> {
    file: &'f GgufFile<'f>,
    window: RefCell<HashMap<String, Vec<u8>>>,
}

impl<'f> Windowed<'f> {
    pub fn new(file: &'f GgufFile<'f>, window: HashMap<String, Vec<u8>>) -> Self {
        Self { file, window: RefCell::new(window) }
    }
}

/// The bytes of `info` in `window`.
fn in_window<'w>(window: &'w HashMap<String, Vec<u8>>, info: &TensorInfo) -> Result<&'w [u8]> {
    match window.get(&info.name) {
        Some(bytes) if bytes.len() == info.byte_len => Ok(bytes),
        _ => Err(Error::malformed(format!("tensor {} was read before its bytes", info.name))),
    }
}

impl TensorSource for Windowed<'_> {
    fn contains(&self, name: &str) -> bool {
        self.file.contains(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let info = info(self.file, name)?;
        let t = dequantized(info, in_window(&self.window.borrow(), info)?);
        in_pairs(self.file, name, t)
    }

    fn packed(&self, name: &str) -> Result<Option<PackedMatrix>> {
        let info = info(self.file, name)?;
        let window = self.window.borrow();
        packed(self.file, info, || in_window(&window, info))
    }

    fn release(&self, name: &str) {
        if let Ok(mut window) = self.window.try_borrow_mut() {
            window.remove(name);
        }
    }

    fn tensor_count(&self) -> usize {
        self.file.tensor_count()
    }

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        self.file.shape(name)
    }

    fn stored_format(&self, name: &str) -> Result<Option<(QuantFormat, Scales)>> {
        self.file.stored_format(name)
    }

    fn holds_quantized(&self) -> bool {
        self.file.holds_quantized()
    }

    fn names(&self) -> Vec<String> {
        self.file.names()
    }
}

/// The heads of `name` when it is a query or key projection of a GGUF whose architecture
/// keeps them in rotate-halves order (every family but Llama), whose rows loading reorders.
fn gguf_halves_heads(file: &GgufFile, name: &str) -> Option<usize> {
    let arch = file.get("general.architecture")?.as_str()?;
    if !Architecture::named(arch).ok()?.gguf_rope_halves {
        return None;
    }
    let heads = |key: &str| file.get(&format!("{arch}.attention.{key}")).and_then(Value::as_u64);
    let n_heads = heads("head_count")? as usize;
    let n_kv_heads = heads("head_count_kv").map_or(n_heads, |v| v as usize);
    rope_heads_of(name, n_heads, n_kv_heads)
}

//! GGUF reader (versions 2 and 3): header, metadata, tensor table, bounds-checked tensor views.
//!
//! Spec: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. The reader borrows the
//! file's bytes and never trusts a count, length or offset before checking it against what is
//! left of the file, so a truncated or hostile file gives an [`Error`], never a panic or a huge
//! allocation.

use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Arrays may nest; real files use one level. Bounded so a hostile file cannot overflow the stack.
const MAX_ARRAY_DEPTH: u32 = 2;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Tensor element types this reader can dequantize, with ggml's type ids.
#[allow(non_camel_case_types)] // ggml's names
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Every type read: its ggml id, name, and (elements, bytes) per block, as ggml's
/// `GGML_QUANT_SIZES` states them. The container needs the sizes to bound a tensor's bytes;
/// [`crate::quant`] checks that its block structs agree.
const TYPES: [(GgmlType, u32, &str, (u64, u64)); 13] = [
    (GgmlType::F32, 0, "F32", (1, 4)),
    (GgmlType::F16, 1, "F16", (1, 2)),
    (GgmlType::Q4_0, 2, "Q4_0", (32, 18)),
    (GgmlType::Q4_1, 3, "Q4_1", (32, 20)),
    (GgmlType::Q5_0, 6, "Q5_0", (32, 22)),
    (GgmlType::Q5_1, 7, "Q5_1", (32, 24)),
    (GgmlType::Q8_0, 8, "Q8_0", (32, 34)),
    (GgmlType::Q2_K, 10, "Q2_K", (256, 84)),
    (GgmlType::Q3_K, 11, "Q3_K", (256, 110)),
    (GgmlType::Q4_K, 12, "Q4_K", (256, 144)),
    (GgmlType::Q5_K, 13, "Q5_K", (256, 176)),
    (GgmlType::Q6_K, 14, "Q6_K", (256, 210)),
    (GgmlType::BF16, 30, "BF16", (1, 2)),
];

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.1 == id).map(|t| t.0)
    }

    pub fn name(self) -> &'static str {
        TYPES.iter().find(|t| t.0 == self).map_or("?", |t| t.2)
    }

    /// The super-block formats (256 elements, sub-block scales).
    pub fn is_k_quant(self) -> bool {
        matches!(self, Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K)
    }

    /// ggml's name for a type id, for error messages about types we do not read.
    fn name_of(id: u32) -> String {
        const NAMES: [(u32, &str); 10] = [
            (9, "Q8_1"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (24, "I8"),
            (25, "I16"),
            (26, "I32"),
            (27, "I64"),
            (28, "F64"),
            (29, "IQ1_M"),
            (39, "MXFP4"),
        ];
        NAMES
            .iter()
            .find(|(i, _)| *i == id)
            .map_or_else(|| format!("ggml type {id}"), |(_, n)| format!("{n} (ggml type {id})"))
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (u64, u64) {
        TYPES.iter().find(|t| t.0 == self).map_or((1, 1), |t| t.3)
    }

    /// Every type this reader accepts.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPES.iter().map(|t| t.0)
    }
}

/// One entry of the tensor table, already checked against the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major shape (outermost first), i.e. ggml's `ne` reversed.
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
    /// Absolute offset of the first byte in its file.
    pub offset: usize,
    pub byte_len: usize,
    /// Which file of a split model holds it (0 for a whole file).
    pub shard: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed GGUF file borrowing its bytes (or a split model's files, joined: see
/// [`super::split`]).
pub struct GgufFile<'a> {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// The bytes of each file; a tensor's `shard` picks one.
    pub(super) files: Vec<&'a [u8]>,
}

impl<'a> GgufFile<'a> {
    /// Parses the header, metadata and tensor table, checking every tensor's extent.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut ran_out = false;
        Self::parse_within(bytes, bytes.len() as u64, &mut ran_out)
    }

    /// Parses what `bytes`, the first bytes of a file of `file_len`, hold of it; sets `ran_out`
    /// when the header goes on past them.
    fn parse_within(bytes: &'a [u8], file_len: u64, ran_out: &mut bool) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0, file_len, ran_out };
        let magic: [u8; 4] = r.take(4, "header")?.try_into().unwrap();
        if &magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = r.u32("header version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A key-value pair takes at least 13 bytes (key length, type, one-byte value); a tensor
        // entry at least 24 (name length, n_dims, type, offset).
        r.check_count(n_kv, 13, "metadata count")?;
        r.check_count(n_tensors, 24, "tensor count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&format!("metadata {key}: type"))?;
            let value = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(Error::malformed(format!("metadata key {key} appears twice")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(Error::malformed(format!("general.alignment {v:?} is not a power of two"))),
            },
        };

        let mut raw = Vec::new();
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("tensor {i}: name"))?;
            if !names.insert(name.clone()) {
                return Err(Error::malformed(format!("tensor {name} appears twice")));
            }
            let n_dims = r.u32(&format!("tensor {name}: n_dims"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::malformed(format!("tensor {name}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(r.u64(&format!("tensor {name}: dims"))?);
            }
            let ty = r.u32(&format!("tensor {name}: type"))?;
            let offset = r.u64(&format!("tensor {name}: offset"))?;
            raw.push((name, ne, ty, offset));
        }

        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, ne, ty, offset) in raw {
            let dtype = GgmlType::from_id(ty)
                .ok_or_else(|| Error::UnsupportedTensorType { tensor: name.clone(), dtype: GgmlType::name_of(ty) })?;
            let (block_elems, block_bytes) = dtype.block();
            if ne.contains(&0) {
                return Err(Error::malformed(format!("tensor {name}: zero-sized dimension in {ne:?}")));
            }
            if ne[0] % block_elems != 0 {
                return Err(Error::malformed(format!(
                    "tensor {name}: row length {} is not a multiple of the {} block size {block_elems}",
                    ne[0],
                    dtype.name()
                )));
            }
            let numel = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let byte_len = numel.and_then(|n| (n / block_elems).checked_mul(block_bytes));
            let (Some(numel), Some(byte_len)) = (numel, byte_len) else {
                return Err(Error::malformed(format!("tensor {name}: dimensions {ne:?} overflow")));
            };
            if offset % alignment != 0 {
                return Err(Error::malformed(format!("tensor {name}: offset {offset} is not aligned to {alignment}")));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(byte_len));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => {
                    // Fits in the file, so fits in usize; numel <= byte_len * 32 fits too.
                    let _ = numel;
                    tensors.push(TensorInfo {
                        name,
                        shape: ne.iter().rev().map(|&d| d as usize).collect(),
                        dtype,
                        offset: start as usize,
                        byte_len: byte_len as usize,
                        shard: 0,
                    });
                }
                _ => {
                    return Err(Error::Truncated {
                        what: format!("tensor {name} ({dtype:?} {ne:?})"),
                        offset: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    });
                }
            }
        }
        Ok(Self { version, metadata, tensors, files: vec![bytes] })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor, as stored; an error for a header read without its tensors
    /// ([`Self::parse_header`]).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&'a [u8]> {
        self.files
            .get(info.shard)
            .and_then(|file| file.get(info.offset..info.offset + info.byte_len))
            .ok_or_else(|| Error::malformed(format!("tensor {}: its bytes were not read", info.name)))
    }

    /// Whether the files' bytes are here, not only their headers.
    pub fn holds_data(&self) -> bool {
        !self.files.is_empty()
    }
}

impl GgufFile<'static> {
    /// The header, metadata and tensor table of a file of `file_len` bytes from its first
    /// bytes, for a load that reads the tensors later, in slices: every extent is checked
    /// against `file_len`. `Ok(None)` when the header goes on past `prefix`: read more of the
    /// file and call again.
    pub fn parse_header(prefix: &[u8], file_len: u64) -> Result<Option<Self>> {
        let mut ran_out = false;
        match GgufFile::parse_within(prefix, file_len, &mut ran_out) {
            Ok(file) => Ok(Some(GgufFile {
                version: file.version,
                metadata: file.metadata,
                tensors: file.tensors,
                files: Vec::new(),
            })),
            Err(_) if ran_out => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A cursor over the file's first bytes (all of them, or a header's worth) that checks every
/// read against the end.
struct Reader<'a, 'r> {
    bytes: &'a [u8],
    pos: usize,
    /// The whole file's length: `bytes` may be only its beginning.
    file_len: u64,
    /// Set when a read went past `bytes` but not past the file.
    ran_out: &'r mut bool,
}

impl<'a> Reader<'a, '_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// What is left of the whole file.
    fn file_remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            *self.ran_out = n as u64 <= self.file_remaining();
            return Err(Error::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                end: self.pos as u64 + n as u64,
                file_len: self.file_len,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Refuses a count whose entries could not possibly fit in the rest of the file.
    fn check_count(&self, count: u64, min_entry_bytes: u64, what: &str) -> Result<()> {
        if count.saturating_mul(min_entry_bytes) > self.file_remaining() {
            return Err(Error::Truncated {
                what: format!("{what} {count}"),
                offset: self.pos as u64,
                end: (self.pos as u64).saturating_add(count.saturating_mul(min_entry_bytes)),
                file_len: self.file_len,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().unwrap())
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        self.check_count(len, 1, what)?;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::malformed(format!("{what}: string is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::malformed(format!("metadata {key}: bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::malformed(format!("metadata {key}: arrays nested too deep")));
                }
                let elem_ty = self.u32(key)?;
                let len = self.u64(key)?;
                let min_elem = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10 | 11 | 12 => 8,
                    9 => 12,
                    _ => return Err(Error::malformed(format!("metadata {key}: unknown array element type {elem_ty}"))),
                };
                self.check_count(len, min_elem, key)?;
                // Reserved for what the bytes in hand can hold: the rest of a file being
                // streamed may be gigabytes.
                let mut items = Vec::with_capacity((len as usize).min(self.remaining() / min_elem as usize));
                for _ in 0..len {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            _ => return Err(Error::malformed(format!("metadata {key}: unknown value type {ty}"))),
        })
    }
}

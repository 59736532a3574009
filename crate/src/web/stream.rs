//! Streamed loading ([`crate::streamed`]) from files the page reads in slices: each is a JS
//! object `{size, read(offset, length)}`, `read` resolving to a `Uint8Array` of exactly
//! `length` bytes (the package makes one from a `Blob`, a cached download, a buffer or HTTP
//! range requests). Wasm memory holds the headers and one part of the model at a time.

use std::collections::HashMap;

use super::*;
use crate::format::gguf::GgufFile;
use crate::streamed::{Headers, Read, StreamedLoad, header_reads};

/// The largest header read: far past any real vocabulary (Gemma 3's 262k tokens take ~12 MB).
const MAX_HEADER_BYTES: u64 = 256 << 20;

/// A file the page reads in slices.
pub(super) struct JsFile {
    size: u64,
    reader: JsValue,
    read: Function,
}

impl JsFile {
    /// The files of `value`: one reader, or an array of them (a split model's shards).
    pub(super) fn list(value: &JsValue) -> Result<Vec<JsFile>, JsValue> {
        match value.dyn_ref::<js_sys::Array>() {
            Some(list) => {
                if list.length() == 0 || list.length() as usize > crate::format::split::MAX_SHARDS {
                    return Err(bad_options("a split model is 1 to 99999 files"));
                }
                list.iter().map(|v| Self::new(&v)).collect()
            }
            None => Ok(vec![Self::new(value)?]),
        }
    }

    fn new(reader: &JsValue) -> Result<Self, JsValue> {
        let bad = || bad_options("a streamed file is {size, read(offset, length)}, size a whole number of bytes");
        let size = Reflect::get(reader, &"size".into()).ok().and_then(|v| v.as_f64()).ok_or_else(bad)?;
        if !(0.0..=js_sys::Number::MAX_SAFE_INTEGER).contains(&size) || size.fract() != 0.0 {
            return Err(bad());
        }
        let read = Reflect::get(reader, &"read".into()).ok().and_then(|v| v.dyn_into::<Function>().ok());
        Ok(Self { size: size as u64, reader: reader.clone(), read: read.ok_or_else(bad)? })
    }

    /// `len` bytes at `offset`, in wasm memory once they are known to fit.
    async fn read(&self, offset: u64, len: u64, what: impl Fn() -> String) -> crate::error::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len as usize).map_err(|_| Error::ResourceLimit {
            what: what(),
            needed: len,
            limit: crate::backend::device::HOST_MEMORY_LIMIT,
            allowed: host_memory::bytes_left(),
        })?;
        let failed = |e: &JsValue| match Reflect::get(e, &"kind".into()).ok().and_then(|k| k.as_string()).as_deref() {
            Some("aborted") => Error::Aborted,
            _ => Error::Io {
                path: what(),
                source: std::sync::Arc::new(std::io::Error::other(format!("could not be read: {}", js_message(e)))),
            },
        };
        let promise =
            self.read.call2(&self.reader, &(offset as f64).into(), &(len as f64).into()).map_err(|e| failed(&e))?;
        let value = wasm_bindgen_futures::JsFuture::from(Promise::resolve(&promise)).await.map_err(|e| failed(&e))?;
        let array = value.dyn_into::<Uint8Array>().map_err(|_| Error::Io {
            path: what(),
            source: std::sync::Arc::new(std::io::Error::other("read() did not resolve to a Uint8Array")),
        })?;
        if array.length() as u64 != len {
            return Err(Error::Truncated {
                what: what(),
                offset,
                end: offset + len,
                file_len: offset + array.length() as u64,
            });
        }
        bytes.resize(len as usize, 0);
        array.copy_to(&mut bytes);
        Ok(bytes)
    }

    /// The file's header, read from its start until it is whole.
    async fn header(&self, i: usize, count: usize) -> crate::error::Result<GgufFile<'static>> {
        let name = |i: usize| if count > 1 { format!("file {} of {count}", i + 1) } else { "the model file".into() };
        let mut read = 0;
        loop {
            let n = header_reads(read, self.size);
            if n <= read || n > MAX_HEADER_BYTES {
                return Err(Error::malformed(format!("{}: no whole GGUF header in its first {read} bytes", name(i))));
            }
            let prefix = self.read(0, n, || format!("the header of {}", name(i))).await?;
            if let Some(header) = GgufFile::parse_header(&prefix, self.size)? {
                return Ok(header);
            }
            read = n;
        }
    }
}

/// Every file's header, joined, with the few tensors a config reads, checked for `device`:
/// everything a streamed load checks before it drops the model loaded now.
pub(super) async fn prepare_stream(
    files: &[JsFile],
    device: &Device,
    weights: WeightFormat,
    kv: &KvOptions,
    limits: &Limits,
) -> crate::error::Result<StreamedLoad> {
    let mut headers = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        headers.push(f.header(i, files.len()).await?);
    }
    let headers = Headers::join(headers)?;
    let config = read_window(files, &headers.config_reads()).await?;
    let load = StreamedLoad::new(headers, config, device, weights, limits)?;
    KvCache::plan(load.config(), kv, limits)?;
    Ok(load)
}

/// The bytes of `reads`, by tensor name.
pub(super) async fn read_window(files: &[JsFile], reads: &[Read]) -> crate::error::Result<HashMap<String, Vec<u8>>> {
    let mut window = HashMap::with_capacity(reads.len());
    for r in reads {
        let file =
            files.get(r.file).ok_or_else(|| Error::malformed(format!("tensor {}: no file {}", r.name, r.file)))?;
        let bytes = file.read(r.offset, r.len, || format!("tensor {}", r.name)).await?;
        window.insert(r.name.clone(), bytes);
    }
    Ok(window)
}

/// A fault found once the model loaded before is gone: said so in the error.
pub(super) fn after_drop(e: Error) -> Error {
    match e.kind() {
        "model_load" => Error::malformed(format!("{e} (the model loaded before was already dropped: load one again)")),
        _ => e,
    }
}

#[wasm_bindgen]
impl WasmEngine {
    /// Loads a GGUF model from files read in slices, replacing any model loaded before:
    /// `files` is one `{size, read(offset, length)}` (`read` resolving to a `Uint8Array` of
    /// `length` bytes) or an array of them (every shard of a `gguf-split` model, in any
    /// order); the other arguments are [`Self::load`]'s. Wasm memory holds the headers and one
    /// part of the model (the embedding, a block, the head) at a time.
    ///
    /// The headers, the tokenizer, the template, every shape, every buffer and the cache are
    /// checked before the old model is dropped; a fault in a tensor's bytes (a file shorter
    /// than its header says, a read that fails) is found only after, and says so. From the
    /// call until the promise settles, everything else is `busy`.
    pub fn load_stream(
        &self,
        files: &JsValue,
        weights: &str,
        kv: JsValue,
        progress: Option<Function>,
        device: &str,
        activations: &str,
    ) -> Result<Promise, JsValue> {
        let LoadChoice { device, weights, kv, activations } = self.load_options(weights, kv, device, activations)?;
        let files = JsFile::list(files)?;
        self.load_async(kv, weights, activations, async move |this, kv| {
            let mut load = prepare_stream(&files, &device, weights, kv, &this.load_limits(&device)).await?;
            this.drop_model()?;
            let mut report = reporter(progress);
            while let Some(reads) = load.next_reads().map(<[Read]>::to_vec) {
                let window = read_window(&files, &reads).await.map_err(after_drop)?;
                load.load_next(window, &device, &mut report).map_err(after_drop)?;
            }
            load.finish()
        })
    }
}

//! Loading a GGUF model whose files are read in slices (a browser's `Blob`, HTTP ranges, a
//! memory map): first every file's header, then the tensors one part of the model at a time
//! ([`Stage`]), each part's bytes dropped once it is on the device. Memory holds the headers
//! and one part, never a file.
//!
//! The caller does the reading (it may be async: a browser's reads are promises) and drives
//! the load:
//! 1. [`header_reads`] and [`GgufFile::parse_header`] on each file's first bytes, more of them
//!    while the header goes on; [`Headers::join`] the headers;
//! 2. [`Headers::config_reads`] (RoPE's factors, most models none) and
//!    [`StreamedLoad::new`]: every check that needs no tensor data, before the model loaded
//!    now is dropped;
//! 3. [`StreamedLoad::next_reads`] and [`StreamedLoad::load_next`] until no reads are left,
//!    then [`StreamedLoad::finish`].
//!
//! A fault in a tensor's bytes can only be found in step 3, once the old model is gone.

use std::collections::HashMap;

use burn::prelude::Device;

use crate::backend::device::Limits;
use crate::config::ModelConfig;
use crate::engine::{Counted, Engine, Prepared, Source};
use crate::error::{Error, Result};
use crate::format::gguf::{GgufFile, TensorInfo};
use crate::format::split::split_of;
use crate::load::fused::with_parts;
use crate::load::gguf::Windowed;
use crate::load::{ModelParts, ROPE_TENSORS, WeightFormat};
use crate::model::{Stage, Stages};

/// Bytes a streamed load asks for: `len` of them at `offset` of file `file` (the index of a
/// split model's shard as the caller gave them), tensor `name`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub file: usize,
    pub offset: u64,
    pub len: u64,
    pub name: String,
}

/// The first read of a file's header: 4 MiB holds most headers (a 150k-token vocabulary
/// takes some 5-8 MB: two more reads); doubled while [`GgufFile::parse_header`] asks for more.
pub const FIRST_HEADER_READ: u64 = 4 << 20;

/// How many bytes of a `file_len`-byte file to read next for its header, after `read` bytes
/// did not hold it.
pub fn header_reads(read: u64, file_len: u64) -> u64 {
    match read {
        0 => FIRST_HEADER_READ.min(file_len),
        n => n.saturating_mul(2).min(file_len),
    }
}

/// A model being loaded stage by stage from bytes its caller reads.
pub struct StreamedLoad {
    prepared: Prepared<'static>,
    stages: Stages,
    /// The file's tensors of each stage, in loading order.
    plan: Vec<(Stage, Vec<Read>)>,
    /// Tensors reported to `progress`.
    done: usize,
}

/// The most bytes of the file one stage of `plan` reads.
fn largest_part(plan: &[(Stage, Vec<Read>)]) -> u64 {
    plan.iter().map(|(_, reads)| reads.iter().map(|r| r.len).sum::<u64>()).max().unwrap_or(0)
}

/// A model's file headers, joined: one file, or every shard of a split model.
pub struct Headers {
    file: GgufFile<'static>,
    /// The caller's index of each shard, by shard number.
    caller_index: Vec<usize>,
}

impl Headers {
    /// Joins the headers of a model's files, in the caller's order (a split model's shards
    /// in any order), with [`GgufFile::join`]'s checks.
    pub fn join(headers: Vec<GgufFile<'static>>) -> Result<Self> {
        let mut caller_index: Vec<(usize, usize)> = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            // Faults are reported by `join`, which knows more.
            let no = split_of(h).ok().flatten().map_or(i, |(no, _)| no);
            caller_index.push((no, i));
        }
        let file = GgufFile::join(headers)?;
        caller_index.sort();
        Ok(Self { file, caller_index: caller_index.into_iter().map(|(_, i)| i).collect() })
    }

    /// Where the caller finds the bytes of `info`.
    fn read_of(&self, info: &TensorInfo) -> Read {
        Read {
            file: self.caller_index.get(info.shard).copied().unwrap_or(info.shard),
            offset: info.offset as u64,
            len: info.byte_len as u64,
            name: info.name.clone(),
        }
    }

    /// The tensors a model's config reads (RoPE's scaling factors, where the file has them),
    /// to be read before [`StreamedLoad::new`].
    pub fn config_reads(&self) -> Vec<Read> {
        ROPE_TENSORS.iter().filter_map(|name| self.file.tensor_info(name)).map(|t| self.read_of(t)).collect()
    }
}

impl StreamedLoad {
    /// Checks the model of `headers` for `device` against `limits`, with its largest part in
    /// memory besides: every tensor in its shape, the tokenizer and the template, every
    /// buffer. `config` holds the bytes of [`Headers::config_reads`].
    pub fn new(
        headers: Headers,
        config: HashMap<String, Vec<u8>>,
        device: &Device,
        weights: WeightFormat,
        limits: &Limits,
    ) -> Result<Self> {
        let file = &headers.file;
        let parts = ModelParts::from_gguf_with(file, &Windowed::new(file, config))?;
        let mut plan: Vec<(Stage, Vec<Read>)> = Stage::all(&parts.config).into_iter().map(|s| (s, vec![])).collect();
        for info in &file.tensors {
            let stage = Stage::of(&info.name);
            // A tensor no stage reads (`blk.N` past the layers) is refused by the checks.
            if let Some((_, reads)) = plan.iter_mut().find(|(s, _)| *s == stage) {
                reads.push(headers.read_of(info));
            }
        }
        let file = headers.file;
        for (_, reads) in &mut plan {
            reads.sort_by_key(|r| (r.file, r.offset));
        }
        let prepared = Prepared::new(parts, Source::Gguf(file), weights, limits, largest_part(&plan))?;
        let stages = Stages::new(prepared.config(), weights, device);
        Ok(Self { prepared, stages, plan, done: 0 })
    }

    pub fn config(&self) -> &ModelConfig {
        self.prepared.config()
    }

    /// The most bytes of the file one stage holds in memory.
    pub fn window_bytes(&self) -> u64 {
        largest_part(&self.plan)
    }

    /// The next stage and its reads, in file order; `None` once every stage is loaded.
    fn next(&self) -> Option<&(Stage, Vec<Read>)> {
        let stage = self.stages.next()?;
        self.plan.iter().find(|(s, _)| *s == stage)
    }

    /// The reads of the next stage, in file order; `None` once every stage is loaded.
    pub fn next_reads(&self) -> Option<&[Read]> {
        self.next().map(|(_, reads)| reads.as_slice())
    }

    /// Loads the next stage onto `device` from `window`, the bytes of its reads by tensor
    /// name (each dropped once packed), calling `progress(tensors_loaded, tensors_total)`
    /// after each tensor.
    pub fn load_next(
        &mut self,
        window: HashMap<String, Vec<u8>>,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let Some((stage, reads)) = self.next() else {
            return Err(Error::BadOptions("every stage of this model is loaded".into()));
        };
        for r in reads {
            match window.get(&r.name) {
                Some(bytes) if bytes.len() as u64 == r.len => {}
                found => {
                    return Err(Error::Truncated {
                        what: format!("tensor {}", r.name),
                        offset: r.offset,
                        end: r.offset + r.len,
                        file_len: r.offset + found.map_or(0, |b| b.len() as u64),
                    });
                }
            }
        }
        let Source::Gguf(file) = &self.prepared.source else {
            return Err(Error::BadOptions("a streamed load reads GGUF files".into()));
        };
        let stage = *stage;
        let source = Windowed::new(file, window);
        let done = with_parts(&source, &self.prepared.config, |tensors| -> Result<usize> {
            let counted = Counted::new(tensors, progress, device).from(self.done);
            self.stages.load(stage, &counted)?;
            Ok(counted.done())
        })?;
        self.done = done;
        Ok(())
    }

    /// The engine, once every stage is loaded.
    pub fn finish(self) -> Result<Engine> {
        let model = self.stages.finish()?;
        let name = self.prepared.name.clone();
        Ok(self.prepared.into_engine(model, name))
    }
}

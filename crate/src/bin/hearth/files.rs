//! A model's files as the CLI reads them: memory-mapped, not copied, and every shard of a
//! split model when `--model` names the first (`…-00001-of-00003.gguf`).
//!
//! The file's pages that a load touches count as resident memory until the kernel drops them;
//! loading hands them back after each tensor ([`ModelFiles::release`]), so that the peak is
//! the packed weights plus about one tensor, not the weights plus the whole file.

use std::fs::File;
use std::path::{Path, PathBuf};

use hearth::format::split::shard_names;
use hearth::{Error, Result};
use memmap2::{Mmap, UncheckedAdvice};

pub(crate) struct ModelFiles {
    maps: Vec<Mmap>,
}

impl ModelFiles {
    /// Maps `path`, or every shard when it names the first of a split model.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let paths: Vec<PathBuf> = match path.to_str().and_then(shard_names) {
            Some(names) => names.into_iter().map(PathBuf::from).collect(),
            None => vec![path.to_path_buf()],
        };
        let maps = paths.iter().map(|p| map(p)).collect::<Result<_>>()?;
        Ok(Self { maps })
    }

    /// Each file's bytes.
    pub(crate) fn slices(&self) -> Vec<&[u8]> {
        self.maps.iter().map(|m| &m[..]).collect()
    }

    /// Drops the pages read so far from this process's resident memory (they stay in the
    /// page cache; a later read maps them again).
    pub(crate) fn release(&self) {
        for m in &self.maps {
            // SAFETY: a read-only private map of a file: dropped pages read back the same
            // bytes from the file, and nothing holds them past this call that expects them
            // resident.
            let _ = unsafe { m.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }
}

fn map(path: &Path) -> Result<Mmap> {
    let io = |source: std::io::Error| Error::Io { path: path.display().to_string(), source: source.into() };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only. A file rewritten while it loads gives wrong weights or a
    // checked error, as changed bytes in a buffer would; one truncated under the map would
    // fault the process (SIGBUS), as it would llama.cpp's: the CLI's models are its own files.
    unsafe { Mmap::map(&file) }.map_err(io)
}

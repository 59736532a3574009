//! Split GGUF models, as llama.cpp's `gguf-split` writes them (`name-00001-of-00003.gguf`, ...):
//! each shard is a GGUF file of its own that says where it stands (`split.no`, 0-based, of
//! `split.count`); the first holds the model's metadata and `split.tensors.count`, every shard
//! some of the tensors. Joined here into one [`GgufFile`] whose tensors point into their shard,
//! so that nothing past this module knows a model was split.

use std::collections::HashSet;

use super::gguf::GgufFile;
use crate::error::{Error, Result};

pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS: &str = "split.tensors.count";

/// Most shards a split model may have (gguf-split writes five-digit numbers).
pub const MAX_SHARDS: usize = 99_999;

/// Where a file stands in a split model: `(index, count)`, index 0-based; `None` for a file
/// that is not a shard (no split keys, or a count of 1).
pub fn split_of(file: &GgufFile) -> Result<Option<(usize, usize)>> {
    let key = |k: &str| -> Result<Option<usize>> {
        match file.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= MAX_SHARDS as u64 => Ok(Some(n as usize)),
                _ => Err(Error::malformed(format!("{k} is {v:?}, not a shard number up to {MAX_SHARDS}"))),
            },
        }
    };
    match (key(SPLIT_NO)?, key(SPLIT_COUNT)?) {
        (None, None) | (Some(0), Some(1)) | (None, Some(1)) => Ok(None),
        (Some(no), Some(count)) if no < count => Ok(Some((no, count))),
        (no, count) => {
            Err(Error::malformed(format!("{SPLIT_NO} {no:?} and {SPLIT_COUNT} {count:?} do not name a shard")))
        }
    }
}

impl<'a> GgufFile<'a> {
    /// A model from its files: one whole GGUF file, or every shard of a split one, in any
    /// order. A shard alone, a shard missing or given twice, shards of different splits, a
    /// tensor in two shards or a tensor count other than the first shard says: `malformed`.
    pub fn parse_shards(files: &[&'a [u8]]) -> Result<Self> {
        let mut parsed = Vec::with_capacity(files.len());
        for (i, bytes) in files.iter().enumerate() {
            parsed.push(GgufFile::parse(bytes).map_err(|e| in_file(i, files.len(), e))?);
        }
        Self::join(parsed)
    }

    /// One model from its files parsed one by one (whole, or their headers alone: see
    /// [`GgufFile::parse_header`]), with the checks of [`Self::parse_shards`].
    pub fn join(files: Vec<GgufFile<'a>>) -> Result<Self> {
        let count = files.len();
        let mut parsed = Vec::with_capacity(count);
        for (i, file) in files.into_iter().enumerate() {
            let place = split_of(&file).map_err(|e| in_file(i, count, e))?;
            parsed.push((place, file));
        }
        match parsed.as_slice() {
            [] => return Err(Error::malformed("no model file given")),
            [(None, _)] => return Ok(parsed.pop().expect("one file").1),
            _ => {}
        }
        let mut by_index: Vec<Option<GgufFile<'a>>> = (0..count).map(|_| None).collect();
        for (i, (place, file)) in parsed.into_iter().enumerate() {
            let Some((no, of)) = place else {
                return Err(Error::malformed(format!(
                    "file {} of {count} is a whole model, not a shard of a split one",
                    i + 1
                )));
            };
            if of != count {
                return Err(Error::malformed(format!(
                    "file {} is shard {} of {of}, but {count} files were given: a split model needs every shard",
                    i + 1,
                    no + 1
                )));
            }
            if by_index[no].replace(file).is_some() {
                return Err(Error::malformed(format!("shard {} of {count} was given twice", no + 1)));
            }
        }
        let mut shards = by_index.into_iter().map(|f| f.expect("every index filled once"));
        let mut joined = shards.next().expect("at least two shards");
        let expected = joined
            .get(SPLIT_TENSORS)
            .map(|v| v.as_u64().ok_or_else(|| Error::malformed(format!("{SPLIT_TENSORS} is {v:?}, not a count"))));
        let mut names: HashSet<String> = joined.tensors.iter().map(|t| t.name.clone()).collect();
        for (shard, file) in shards.enumerate().map(|(i, f)| (i + 1, f)) {
            for mut info in file.tensors {
                if !names.insert(info.name.clone()) {
                    return Err(Error::malformed(format!("tensor {} is in two shards", info.name)));
                }
                info.shard = shard;
                joined.tensors.push(info);
            }
            joined.files.extend(file.files);
        }
        if let Some(expected) = expected.transpose()?
            && expected != joined.tensors.len() as u64
        {
            return Err(Error::malformed(format!(
                "the shards hold {} tensors, but {SPLIT_TENSORS} says {expected}",
                joined.tensors.len()
            )));
        }
        Ok(joined)
    }
}

/// `e`, saying which of `count` files it is about when there are several.
fn in_file(i: usize, count: usize, e: Error) -> Error {
    match e {
        Error::Malformed(m) if count > 1 => Error::malformed(format!("file {} of {count}: {m}", i + 1)),
        other => other,
    }
}

/// The file names of every shard of the split model whose first shard is named `first`
/// (`…-00001-of-00003.gguf`), in order; `None` when `first` is not named as a first shard.
pub fn shard_names(first: &str) -> Option<Vec<String>> {
    let stem = first.strip_suffix(".gguf")?;
    let (stem, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = stem.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) || no != "00001" {
        return None;
    }
    let count: usize = count.parse().ok().filter(|&c| c >= 1)?;
    Some((1..=count).map(|i| format!("{prefix}-{i:05}-of-{count:05}.gguf")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_follow_the_first() {
        let names = shard_names("models/qwen-3b-q4_0-00001-of-00003.gguf").unwrap();
        assert_eq!(
            names,
            [
                "models/qwen-3b-q4_0-00001-of-00003.gguf",
                "models/qwen-3b-q4_0-00002-of-00003.gguf",
                "models/qwen-3b-q4_0-00003-of-00003.gguf"
            ]
        );
        assert_eq!(shard_names("model.gguf"), None);
        assert_eq!(shard_names("model-00002-of-00003.gguf"), None, "not the first shard");
        assert_eq!(shard_names("model-1-of-3.gguf"), None);
    }
}

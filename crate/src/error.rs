//! The one error type of the core. Every fallible public function returns [`Result`].

/// Everything that can go wrong between a model file and generated text.
///
/// Loading errors name the tensor or key and the offsets involved, so a broken file can be
/// diagnosed from the message alone. [`Error::kind`] gives a stable machine-readable tag.
/// Clone, so that one failure of a pass shared by several conversations fails each of them.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The file does not start with a known magic number.
    #[error("not a GGUF file: magic {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    /// A GGUF version this reader does not know.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),

    /// A read would go past the end of the file.
    #[error("{what}: needs bytes {offset}..{end} but the file has {file_len} bytes")]
    Truncated { what: String, offset: u64, end: u64, file_len: u64 },

    /// The file is structurally invalid in some other way.
    #[error("malformed model file: {0}")]
    Malformed(String),

    /// A tensor is stored in a type this engine cannot read.
    #[error("tensor {tensor}: unsupported tensor type {dtype}")]
    UnsupportedTensorType { tensor: String, dtype: String },

    /// The model needs a tensor the file does not have.
    #[error("missing tensor {0}")]
    MissingTensor(String),

    /// A tensor's shape disagrees with the model configuration.
    #[error("tensor {tensor}: shape {found:?}, expected {expected:?}")]
    TensorShape { tensor: String, expected: Vec<usize>, found: Vec<usize> },

    /// The model configuration is missing a value or holds an impossible one.
    #[error("model config: {0}")]
    Config(String),

    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),

    /// The prompt cannot be used (empty, not UTF-8, ...).
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),

    /// The prompt does not fit the context.
    #[error("prompt has {tokens} tokens but the context holds {capacity}")]
    PromptTooLong { tokens: usize, capacity: usize },

    /// The KV cache has no free slot and its policy does not evict.
    #[error("KV cache full: all {capacity} slots are in use")]
    KvCacheFull { capacity: usize },

    /// Options out of range or inconsistent with each other.
    #[error("bad options: {0}")]
    BadOptions(String),

    /// The compute device failed or could not be created.
    #[error("device: {0}")]
    Device(String),

    /// The caller asked to stop.
    #[error("aborted")]
    Aborted,

    /// The engine is doing something that this call would disturb (a load or a reset while a
    /// generation runs); nothing was changed.
    #[error("busy: {0}")]
    Busy(String),

    /// The GPU device was lost (driver reset, GPU removed, page backgrounded on a phone); the
    /// engine has to be loaded again on a new device.
    #[error("device lost: {0}")]
    DeviceLost(String),

    /// Something would be bigger than a limit of the device or the platform; nothing was
    /// allocated. `limit` names the limit (`maxStorageBufferBindingSize`, `wasm32 memory`, ...).
    #[error("{what} needs {needed} bytes, more than {limit} allows ({allowed} bytes)")]
    ResourceLimit { what: String, needed: u64, limit: &'static str, allowed: u64 },

    /// The caller's streaming callback failed.
    #[error("the text callback failed: {0}")]
    Callback(String),

    /// The GPU computed a known product or attention step wrong (a driver that reports what it
    /// cannot do): the model is not run there ([`crate::backend::selfcheck`]).
    #[error("the GPU adapter is unusable: {0}")]
    DeviceUnusable(String),

    /// A file could not be read (native edges only; the core reads bytes).
    #[error("{path}: {source}")]
    Io { path: String, source: std::sync::Arc<std::io::Error> },
}

impl Error {
    /// Every [`Self::kind`], in a stable order: the TypeScript package's error kinds are
    /// generated from it.
    pub const KINDS: [&'static str; 13] = [
        "model_load",
        "tokenizer",
        "template",
        "bad_prompt",
        "kv_cache_full",
        "bad_options",
        "device",
        "aborted",
        "busy",
        "device_lost",
        "resource_limit",
        "callback",
        "device_unusable",
    ];

    /// A stable tag for the error's category, for bindings and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadMagic { .. }
            | Error::UnsupportedVersion(_)
            | Error::Truncated { .. }
            | Error::Malformed(_)
            | Error::UnsupportedTensorType { .. }
            | Error::MissingTensor(_)
            | Error::TensorShape { .. }
            | Error::Config(_)
            | Error::Io { .. } => "model_load",
            Error::Tokenizer(_) => "tokenizer",
            Error::Template(_) => "template",
            Error::InvalidPrompt(_) | Error::PromptTooLong { .. } => "bad_prompt",
            Error::KvCacheFull { .. } => "kv_cache_full",
            Error::BadOptions(_) => "bad_options",
            Error::Device(_) => "device",
            Error::Aborted => "aborted",
            Error::Busy(_) => "busy",
            Error::DeviceLost(_) => "device_lost",
            Error::ResourceLimit { .. } => "resource_limit",
            Error::Callback(_) => "callback",
            Error::DeviceUnusable(_) => "device_unusable",
        }
    }

    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `KINDS` lists exactly the kinds `kind()` gives: one error of every variant.
    #[test]
    fn kinds_lists_every_kind() {
        let s = || String::from("x");
        let every = [
            Error::BadMagic { found: *b"GGUX" },
            Error::UnsupportedVersion(9),
            Error::Truncated { what: s(), offset: 1, end: 2, file_len: 1 },
            Error::Malformed(s()),
            Error::UnsupportedTensorType { tensor: s(), dtype: s() },
            Error::MissingTensor(s()),
            Error::TensorShape { tensor: s(), expected: vec![1], found: vec![2] },
            Error::Config(s()),
            Error::Tokenizer(s()),
            Error::Template(s()),
            Error::InvalidPrompt(s()),
            Error::PromptTooLong { tokens: 2, capacity: 1 },
            Error::KvCacheFull { capacity: 1 },
            Error::BadOptions(s()),
            Error::Device(s()),
            Error::Aborted,
            Error::Busy(s()),
            Error::DeviceLost(s()),
            Error::ResourceLimit { what: s(), needed: 2, limit: "l", allowed: 1 },
            Error::Callback(s()),
            Error::DeviceUnusable(s()),
            Error::Io { path: s(), source: std::sync::Arc::new(std::io::Error::other("x")) },
        ];
        let mut seen: Vec<&str> = every.iter().map(Error::kind).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut kinds = Error::KINDS.to_vec();
        kinds.sort_unstable();
        assert_eq!(seen, kinds);
    }
}

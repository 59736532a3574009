//! A loaded model on a device, with its tokenizer and chat template: everything that is
//! shared and read-only. Conversations are [`Session`]s.

use std::sync::Arc;

use burn::prelude::Device;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvOptions;
use crate::load::burnpack;
use crate::load::gguf::GgufFile;
use crate::load::hf::{self, HfFiles};
use crate::load::{ModelParts, TensorSource};
use crate::model::{Llama, WeightFormat};
use crate::prune::ChatPrompt;
use crate::session::Session;
use crate::template::{ChatTemplate, Message};
use crate::tokenizer::Tokenizer;

pub struct Engine {
    model: Llama,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    name: String,
}

impl Engine {
    /// Loads a GGUF file's model, tokenizer and chat template onto `device`.
    pub fn from_gguf(bytes: &[u8], device: &Device, weights: WeightFormat) -> Result<Self> {
        Self::gguf(bytes, device, weights, &mut |_, _| {})
    }

    /// Loads a pre-quantized model written by [`crate::load::burnpack::write`] (`hearth convert`).
    pub fn from_burnpack(bytes: &[u8], device: &Device, weights: WeightFormat) -> Result<Self> {
        Self::burnpack(bytes, device, weights, &mut |_, _| {})
    }

    /// Loads a GGUF file or a burnpack, told apart by their magic numbers.
    pub fn from_file_bytes(bytes: &[u8], device: &Device, weights: WeightFormat) -> Result<Self> {
        Self::from_file_bytes_with_progress(bytes, device, weights, &mut |_, _| {})
    }

    /// [`Self::from_file_bytes`], calling `progress(tensors_uploaded, tensors_total)` after each
    /// tensor reaches the device.
    pub fn from_file_bytes_with_progress(
        bytes: &[u8],
        device: &Device,
        weights: WeightFormat,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        match burnpack::is_burnpack(bytes) {
            true => Self::burnpack(bytes, device, weights, progress),
            false => Self::gguf(bytes, device, weights, progress),
        }
    }

    fn gguf(
        bytes: &[u8],
        device: &Device,
        weights: WeightFormat,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let file = GgufFile::parse(bytes)?;
        let parts = ModelParts::from_gguf(&file)?;
        Self::new(parts, &Counted::new(&file, progress), device, weights)
    }

    fn burnpack(
        bytes: &[u8],
        device: &Device,
        weights: WeightFormat,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let (parts, tensors) = burnpack::parse(bytes)?;
        Self::new(parts, &Counted::new(&tensors, progress), device, weights)
    }

    /// Loads a Hugging Face model directory's files onto `device`.
    pub fn from_hf(files: HfFiles<'_>, device: &Device, weights: WeightFormat) -> Result<Self> {
        let (parts, tensors) = hf::parse(files)?;
        Self::new(parts, &tensors, device, weights)
    }

    fn new(parts: ModelParts, source: &dyn TensorSource, device: &Device, weights: WeightFormat) -> Result<Self> {
        let ModelParts { config, tokenizer, chat_template, name } = parts;
        let template = match chat_template {
            Some(source) => {
                let text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default();
                Some(ChatTemplate::new(&source, &text(tokenizer.bos()), &text(Some(tokenizer.eos())))?)
            }
            None => None,
        };
        let model = Llama::load(&config, source, weights, device)?;
        Ok(Self { model, tokenizer, template, name })
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn model(&self) -> &Llama {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new conversation with a KV cache as `kv` asks.
    pub fn session(self: &Arc<Self>, kv: &KvOptions) -> Result<Session> {
        Session::new(Arc::clone(self), kv)
    }

    /// Token ids of a plain-text prompt; special-token text stays plain text.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::InvalidPrompt("the prompt is empty".into()));
        }
        self.tokenizer.encode(prompt, false)
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The conversation rendered with the model's chat template, ending where the assistant's
    /// reply begins.
    fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let template =
            self.template.as_ref().ok_or_else(|| Error::Template("the model file has no chat template".into()))?;
        template.render(messages, true)
    }

    /// Token ids of a conversation rendered with the model's chat template.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.tokenizer.encode(&self.render_chat(messages)?, true)
    }

    /// [`Self::encode_chat`], knowing which message each token came from, for pruning.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<ChatPrompt> {
        let text = self.render_chat(messages)?;
        let (tokens, offsets) = self.tokenizer.encode_with_offsets(&text)?;
        Ok(ChatPrompt::new(messages, text, tokens, offsets))
    }
}

/// A prompt from raw bytes (a file, a pipe): refused unless it is UTF-8.
pub fn prompt_from_bytes(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|e| Error::InvalidPrompt(format!("not valid UTF-8: bad byte at offset {}", e.valid_up_to())))
}

/// A tensor source that reports each tensor it hands out.
struct Counted<'a> {
    inner: &'a dyn TensorSource,
    done: std::cell::Cell<usize>,
    total: usize,
    progress: std::cell::RefCell<&'a mut dyn FnMut(usize, usize)>,
}

impl<'a> Counted<'a> {
    fn new(inner: &'a dyn TensorSource, progress: &'a mut dyn FnMut(usize, usize)) -> Self {
        Self { inner, done: 0.into(), total: inner.tensor_count(), progress: std::cell::RefCell::new(progress) }
    }

    fn tick(&self) {
        let done = (self.done.get() + 1).min(self.total);
        self.done.set(done);
        if let Ok(mut progress) = self.progress.try_borrow_mut() {
            progress(done, self.total);
        }
    }
}

impl TensorSource for Counted<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&self, name: &str) -> Result<crate::load::HostTensor> {
        let t = self.inner.tensor(name)?;
        self.tick();
        Ok(t)
    }

    fn packed(&self, name: &str) -> Result<Option<crate::quant::packed::PackedMatrix>> {
        let p = self.inner.packed(name)?;
        if p.is_some() {
            self.tick();
        }
        Ok(p)
    }

    fn tensor_count(&self) -> usize {
        self.total
    }
}

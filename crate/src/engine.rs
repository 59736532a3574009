//! A loaded model on a device, with its tokenizer and chat template: everything that is
//! shared and read-only. Conversations are [`Session`](crate::Session)s.

use std::sync::{Arc, OnceLock};

use burn::prelude::Device;

use crate::backend::cpu::qgemm::Activations;
use crate::backend::device::Limits;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::format::gguf::GgufFile;
use crate::load::WeightFormat;
use crate::load::burnpack::{self, PackTensors};
use crate::load::fused::with_parts;
use crate::load::hf::{self, HfFiles, HfTensors};
use crate::load::{ModelParts, TensorSource};
use crate::model::{Decoder, checks};
use crate::text::grammar::GrammarCompiler;
use crate::text::prompt_pruning::ChatPrompt;
use crate::text::template::{ChatTemplate, Message, Rendered};
use crate::text::tokenizer::Tokenizer;
use crate::text::tools::Tool;

pub struct Engine {
    model: Decoder,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    name: String,
    /// Compiles the grammars of constrained replies: built at the first one (tens of
    /// milliseconds on a 50k vocabulary), then shared; the error when this vocabulary has none.
    grammars: OnceLock<std::result::Result<Arc<GrammarCompiler>, String>>,
}

/// Where a prepared model's tensors come from.
#[allow(clippy::large_enum_variant)] // one per load
pub(crate) enum Source<'a> {
    Gguf(GgufFile<'a>),
    Pack(PackTensors),
    Hf(HfTensors<'a>),
}

impl Source<'_> {
    pub(crate) fn tensors(&self) -> &dyn TensorSource {
        match self {
            Source::Gguf(f) => f,
            Source::Pack(p) => p,
            Source::Hf(h) => h,
        }
    }
}

/// A model file parsed and checked against a device, with nothing on the device yet: every
/// tensor is there in the right shape, the tokenizer and chat template are built, and every
/// buffer fits the device. Only the upload (and the device itself) can still fail, so a
/// caller can keep its old model until this succeeds.
pub struct Prepared<'a> {
    pub(crate) config: ModelConfig,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) template: Option<ChatTemplate>,
    pub(crate) name: String,
    pub(crate) source: Source<'a>,
    pub(crate) weights: WeightFormat,
}

impl Engine {
    /// The grammar compiler for this model's vocabulary, built at the first call.
    pub fn grammars(&self) -> Result<Arc<GrammarCompiler>> {
        let built = self.grammars.get_or_init(|| {
            GrammarCompiler::new(&self.tokenizer, self.model.config().vocab).map(Arc::new).map_err(|e| e.to_string())
        });
        built.clone().map_err(Error::BadOptions)
    }

    /// Loads a GGUF file's model, tokenizer and chat template onto `device`.
    pub fn from_gguf(bytes: &[u8], device: &Device, weights: WeightFormat) -> Result<Self> {
        Self::from_gguf_shards(&[bytes], device, weights)
    }

    /// [`Self::from_gguf`] for a model split in several files (all of them, in any order).
    pub fn from_gguf_shards(files: &[&[u8]], device: &Device, weights: WeightFormat) -> Result<Self> {
        let file = GgufFile::parse_shards(files)?;
        let parts = ModelParts::from_gguf(&file)?;
        Prepared::new(parts, Source::Gguf(file), weights, &Limits::of(device), 0)?.upload(device, &mut |_, _| {})
    }

    /// Loads a pre-quantized model written by [`crate::load::burnpack::write`] (`hearth convert`).
    pub fn from_burnpack(bytes: &[u8], device: &Device, weights: WeightFormat) -> Result<Self> {
        let (parts, tensors) = burnpack::parse(bytes)?;
        Prepared::new(parts, Source::Pack(tensors), weights, &Limits::of(device), 0)?.upload(device, &mut |_, _| {})
    }

    /// Loads a GGUF file or a burnpack, told apart by their magic numbers.
    pub fn from_file_bytes(bytes: &[u8], device: &Device, weights: WeightFormat) -> Result<Self> {
        Self::prepare(bytes, device, weights)?.upload(device, &mut |_, _| {})
    }

    /// Parses and checks a GGUF file or a burnpack for `device` without uploading anything.
    pub fn prepare<'a>(bytes: &'a [u8], device: &Device, weights: WeightFormat) -> Result<Prepared<'a>> {
        Self::prepare_files(&[bytes], device, weights)
    }

    /// [`Self::prepare`] for a model in one file or split in several (every shard of a
    /// `gguf-split` model, in any order: [`crate::format::split`]).
    pub fn prepare_files<'a>(files: &[&'a [u8]], device: &Device, weights: WeightFormat) -> Result<Prepared<'a>> {
        Self::prepare_within(files, weights, &Limits::of(device))
    }

    /// [`Self::prepare_files`] checked against `limits` (a device's, with room a caller is
    /// about to free: the model loaded now).
    pub fn prepare_within<'a>(files: &[&'a [u8]], weights: WeightFormat, limits: &Limits) -> Result<Prepared<'a>> {
        match files {
            [bytes] if burnpack::is_burnpack(bytes) => {
                // The pack reader keeps its own copy of the bytes.
                limits.check_host(|| "reading this .bpk file".into(), bytes.len() as u64)?;
                let (parts, tensors) = burnpack::parse(bytes)?;
                Prepared::new(parts, Source::Pack(tensors), weights, limits, 0)
            }
            _ => {
                let file = GgufFile::parse_shards(files)?;
                let parts = ModelParts::from_gguf(&file)?;
                Prepared::new(parts, Source::Gguf(file), weights, limits, 0)
            }
        }
    }

    /// Loads a Hugging Face model directory's files onto `device`.
    pub fn from_hf(files: HfFiles<'_>, device: &Device, weights: WeightFormat) -> Result<Self> {
        let (parts, tensors) = hf::parse(files)?;
        Prepared::new(parts, Source::Hf(tensors), weights, &Limits::of(device), 0)?.upload(device, &mut |_, _| {})
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Sets how activations meet the packed weights on the CPU (see [`Decoder::set_activations`]).
    pub fn set_activations(&mut self, mode: Activations) {
        self.model.set_activations(mode)
    }

    pub fn model(&self) -> &Decoder {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Token ids of a plain-text prompt; special-token text stays plain text.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::InvalidPrompt("the prompt is empty".into()));
        }
        check_prompt_bytes(prompt.len())?;
        self.tokenizer.encode(prompt, false)
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Token ids of a conversation rendered with the model's chat template, ending where the
    /// assistant's reply begins. Message contents are always plain text: `<|im_start|>` typed
    /// by a user stays those characters, only the template's own text makes special tokens.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        Ok(self.chat_prompt(messages, &[])?.tokens)
    }

    /// [`Self::encode_chat`] with tools the reply may call, in the template when it takes
    /// them, in the system prompt when it does not ([`crate::text::tools`]).
    pub fn encode_chat_with_tools(&self, messages: &[Message], tools: &[Tool]) -> Result<Vec<u32>> {
        Ok(self.chat_prompt(messages, tools)?.tokens)
    }

    /// [`Self::encode_chat_with_tools`], knowing which message each token came from, for pruning.
    pub fn chat_prompt(&self, messages: &[Message], tools: &[Tool]) -> Result<ChatPrompt> {
        let template =
            self.template.as_ref().ok_or_else(|| Error::Template("the model file has no chat template".into()))?;
        let tools_text =
            if tools.is_empty() { String::new() } else { serde_json::to_string(tools).unwrap_or_default() };
        let calls = |m: &Message| m.tool_calls.as_ref().map_or(0, |c| serde_json::to_string(c).map_or(0, |s| s.len()));
        check_prompt_bytes(
            tools_text.len() + messages.iter().map(|m| m.content.len() + m.role.len() + calls(m)).sum::<usize>(),
        )?;
        // The tools are the app's, but their text lands outside every message's span: special
        // tokens in it would be parsed as the template's own.
        if self.tokenizer.encode(&tools_text, true)?.iter().any(|&id| self.tokenizer.is_special(id)) {
            return Err(Error::BadOptions("a tool's definition contains special-token text".into()));
        }
        let rendered = template.render_with_spans(messages, tools, true)?;
        let content = content_ranges(messages, &rendered);
        let (tokens, offsets) = self.tokenizer.encode_chat(&rendered.text, &content)?;
        Ok(ChatPrompt::new(messages, rendered, tokens, offsets))
    }
}

/// The byte ranges of `rendered.text` that are message text. Where a content's place is known
/// that is its span; where it is not, every place the content's text occurs, so that special
/// tokens are never taken from anything a message could have written.
fn content_ranges(messages: &[Message], rendered: &Rendered) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    for (m, span) in messages.iter().zip(&rendered.spans) {
        match span {
            Some(span) => ranges.push(span.clone()),
            None if m.content.is_empty() => {}
            None => {
                for content in [m.content.as_str(), m.content.trim()] {
                    let mut from = 0;
                    while let Some(at) = rendered.text[from..].find(content).filter(|_| !content.is_empty()) {
                        ranges.push(from + at..from + at + content.len());
                        from += at + content.len().max(1);
                    }
                }
            }
        }
    }
    ranges
}

impl<'a> Prepared<'a> {
    /// Checks `source` against `limits`, with `window` bytes of it held in memory besides
    /// what the upload needs (a streamed load's part).
    pub(crate) fn new(
        parts: ModelParts,
        source: Source<'a>,
        weights: WeightFormat,
        limits: &Limits,
        window: u64,
    ) -> Result<Self> {
        let ModelParts { config, tokenizer, chat_template, name } = parts;
        let template = match chat_template {
            Some(source) => {
                let text = |id: Option<u32>| id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default();
                Some(ChatTemplate::new(&source, &text(tokenizer.bos()), &text(Some(tokenizer.eos())))?)
            }
            None => None,
        };
        with_parts(source.tensors(), &config, |tensors| checks::check(&config, tensors, weights, limits, window))?;
        Ok(Self { config, tokenizer, template, name, source, weights })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The engine of `model` (this file's, or one cut from it), named `name`.
    pub(crate) fn into_engine(self, model: Decoder, name: String) -> Engine {
        Engine { model, tokenizer: self.tokenizer, template: self.template, name, grammars: OnceLock::new() }
    }

    /// Uploads the weights to `device`, calling `progress(tensors_uploaded, tensors_total)`
    /// after each tensor reaches it.
    pub fn upload(self, device: &Device, progress: &mut dyn FnMut(usize, usize)) -> Result<Engine> {
        let model = with_parts(self.source.tensors(), &self.config, |tensors| {
            Decoder::load(&self.config, &Counted::new(tensors, progress, device), self.weights, device)
        })?;
        let name = self.name.clone();
        Ok(self.into_engine(model, name))
    }
}

/// Most bytes of prompt text accepted: some two million tokens, far past any context, and far
/// below what tokenizing would cost in memory.
pub const MAX_PROMPT_BYTES: usize = 8 << 20;

pub(crate) fn check_prompt_bytes(bytes: usize) -> Result<()> {
    if bytes > MAX_PROMPT_BYTES {
        return Err(Error::InvalidPrompt(format!(
            "the prompt has {bytes} bytes of text, more than the {MAX_PROMPT_BYTES} accepted"
        )));
    }
    Ok(())
}

/// A prompt from raw bytes (a file, a pipe): refused unless it is UTF-8.
pub fn prompt_from_bytes(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|e| Error::InvalidPrompt(format!("not valid UTF-8: bad byte at offset {}", e.valid_up_to())))
}

/// A tensor source that reports each tensor it hands out.
pub(crate) struct Counted<'a> {
    inner: &'a dyn TensorSource,
    done: std::cell::Cell<usize>,
    total: usize,
    progress: std::cell::RefCell<&'a mut dyn FnMut(usize, usize)>,
    device: Device,
}

impl<'a> Counted<'a> {
    /// `inner` read for `device`.
    pub(crate) fn new(inner: &'a dyn TensorSource, progress: &'a mut dyn FnMut(usize, usize), device: &Device) -> Self {
        let progress = std::cell::RefCell::new(progress);
        Self { inner, done: 0.into(), total: inner.tensor_count(), progress, device: device.clone() }
    }

    /// Counting from `done` tensors already loaded (by the stages before, in a streamed load).
    pub(crate) fn from(self, done: usize) -> Self {
        self.done.set(done.min(self.total));
        self
    }

    /// Tensors reported so far.
    pub(crate) fn done(&self) -> usize {
        self.done.get()
    }

    fn tick(&self) {
        // The uploads queued so far go to the GPU now: held for a batched submission, their
        // host copies piled up in wasm memory (Qwen2.5-Coder-0.5B's 491 MB file grew it to
        // 2.4 GB on WebGPU).
        let _ = self.device.flush();
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

    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        self.inner.shape(name)
    }

    fn stored_format(
        &self,
        name: &str,
    ) -> Result<Option<(crate::quant::packed::QuantFormat, crate::quant::packed::Scales)>> {
        self.inner.stored_format(name)
    }

    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn holds_quantized(&self) -> bool {
        self.inner.holds_quantized()
    }

    fn release(&self, name: &str) {
        self.inner.release(name)
    }
}

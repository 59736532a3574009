//! The browser bindings (wasm32 only): an engine that a page or a Web Worker drives through
//! wasm-bindgen. The TypeScript package (`npm/`) wraps it in the public API; this layer keeps
//! to plain values, ids and callbacks.
//!
//! Every exported function returns `Result<_, JsValue>`; an error is a JS `Error` with the
//! core's stable kind as its `kind` property (`model_load`, `bad_options`, ...), which the
//! TypeScript layer turns into typed errors. Nothing here panics on bad input: a panic would kill the wasm instance. Should
//! one happen anyway, [`set_panic_handler`] tells the page before the instance traps, so that
//! no call waits forever on a dead engine.
//!
//! Generations run together: up to [`MAX_STREAMS`] at once, each in its own session, decoded
//! as one batch that requests join and leave between steps ([`crate::generate::batch`]). The engine's
//! own session (the conversation, whose cache a follow-up reuses) goes to a request when it is
//! free, the others get a fresh one for their length. Speculative decoding, early exit and
//! scoring run alone. What does not fit waits in line here (see [`scheduler`]); `load`,
//! `reset` and `unload` refuse with `busy` while anything runs or waits and change nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use burn::prelude::Device;
use js_sys::{Function, Promise, Reflect, Uint8Array};
use serde::Serialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::analysis::weight_pruning::WeightPruneOptions;
use crate::backend::cpu::qgemm::Activations;
use crate::backend::device::Limits;
#[cfg(feature = "gpu")]
use crate::backend::device::WGPU_TASKS_PER_SUBMIT;
use crate::backend::host_memory;
use crate::engine::Engine;
use crate::error::Error;
use crate::generate::batch::Batch;
use crate::generate::early_exit::EarlyExitOptions;
use crate::generate::session::{ChatStart, Session};
use crate::generate::speculative::SpeculativeOptions;
use crate::generate::types::{Control, GenerateOptions, Listener};
use crate::kv_cache::{KvCache, KvOptions};
use crate::load::WeightFormat;
use crate::text::grammar::{Grammar, MAX_SCHEMA_DEPTH};
use crate::text::prompt_pruning::PromptPruneReport;
use crate::text::template::Message;
use crate::text::tools::ToolCall;
use crate::wire::{DraftInfo, EngineStats, GenerateRequest, KV_FIELDS, MAX_STREAMS, ModelInfo, PruneWeightsRequest};

mod errors;
mod event_loop;
mod gpu;
mod listener;
mod load;
mod scheduler;
mod stream;
#[cfg(target_feature = "atomics")]
mod threads;
mod wire;

use errors::*;
use gpu::*;
use listener::*;
use load::*;
use scheduler::*;
use wire::*;

/// Runs the module's static constructors (the registries that `inventory` collects for cubecl)
/// once per instance. A module that never calls them itself gets, from wasm-ld, a call at the
/// top of *every* export instead, callbacks and the glue's externref table included, and that
/// measured 12% of a decode step on the CPU path. Called when the instance starts and again,
/// as a no-op, when an engine is made: wasm-bindgen's test runner does not call `start`, and a
/// second run would link cubecl's registries into loops.
fn run_constructors() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // Safety: the linker's own constructor function, run once (the flag above) before any
    // engine exists.
    unsafe { __wasm_call_ctors() }
}

#[wasm_bindgen(start)]
fn start() {
    run_constructors();
    // tokenizers would hand batch work to rayon, whose threads this module cannot start.
    tokenizers::utils::parallelism::set_parallelism(false);
}

thread_local! {
    static PANIC_HANDLER: RefCell<Option<Function>> = const { RefCell::new(None) };
}

/// Registers `handler(message)` to be called when the core panics, just before the wasm
/// instance traps (`panic = "abort"`): the page learns that the engine is gone and why, and
/// can reject what was waiting on it instead of hanging.
#[wasm_bindgen]
pub fn set_panic_handler(handler: Function) {
    PANIC_HANDLER.with(|h| *h.borrow_mut() = Some(handler));
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        let handler = PANIC_HANDLER.try_with(|h| h.try_borrow().ok().and_then(|h| h.clone())).ok().flatten();
        if let Some(handler) = handler {
            let _ = handler.call1(&JsValue::NULL, &JsValue::from_str(&message));
        }
    }));
}

/// Panics on purpose, so that tests can check that the package survives a crashed engine.
/// Nothing else calls it.
#[wasm_bindgen(js_name = "__testPanic")]
pub fn test_panic() {
    panic!("hearth: panic requested by __testPanic");
}

/// One model and one conversation in this thread.
#[wasm_bindgen]
pub struct WasmEngine {
    state: Rc<RefCell<State>>,
}

impl Default for WasmEngine {
    fn default() -> Self {
        Self::new()
    }
}

#[wasm_bindgen]
impl WasmEngine {
    #[wasm_bindgen(constructor)]
    pub fn new() -> WasmEngine {
        run_constructors();
        WasmEngine { state: Rc::new(RefCell::new(State::new())) }
    }

    /// Initializes WebGPU once for this thread. Refuses (rather than hangs) where
    /// `navigator.gpu` is missing; later calls return at once.
    pub fn init(&self) -> Result<Promise, JsValue> {
        let start = DEVICE.with(|d| {
            let mut d = d.borrow_mut();
            match &*d {
                DeviceState::Uninitialized => {
                    *d = DeviceState::Initializing;
                    Ok(true)
                }
                DeviceState::Initializing => Err(busy("WebGPU initialization is already in progress")),
                _ => Ok(false),
            }
        })?;
        Ok(future_to_promise(async move {
            if start {
                #[cfg(not(feature = "gpu"))]
                let result: Result<Device, Error> =
                    Err(Error::Device("this build of hearth is the threaded CPU one, without WebGPU".into()));
                #[cfg(feature = "gpu")]
                let result = if has_webgpu() {
                    match Device::wgpu_options().tasks_max(WGPU_TASKS_PER_SUBMIT).init_async().await {
                        // Trust, then use: an adapter that computes known products wrong is refused.
                        Ok(device) => {
                            crate::backend::selfcheck::check_with(&device, injected_gpu_fault()).await.map(|()| device)
                        }
                        Err(e) => Err(Error::Device(format!("no usable WebGPU adapter: {e}"))),
                    }
                } else {
                    Err(Error::Device(
                        "this browser has no WebGPU (navigator.gpu is missing): use a browser with WebGPU \
                         enabled, e.g. Chrome 113+, or Chromium with --enable-unsafe-webgpu"
                            .into(),
                    ))
                };
                DEVICE.with(|d| {
                    *d.borrow_mut() = match result {
                        Ok(device) => DeviceState::Ready(device),
                        Err(e) => DeviceState::Failed(e),
                    }
                });
            }
            ready_device().map(|_| JsValue::TRUE)
        }))
    }

    /// Loads a GGUF file or a `.bpk` record from its bytes (a `Uint8Array`, or an array of them:
    /// every shard of a `gguf-split` model, in any order), replacing any model loaded before.
    /// `weights` is `"int4"`, `"f32"` or a ggml format to quantize floats to (`"q4_0"`, `"q4_1"`,
    /// `"q8_0"`, `"q2_k"` .. `"q6_k"`); `kv` is `{capacity, capacity_bytes, policy, sinks,
    /// recent}` (all optional); `progress(uploaded, total)` is called per tensor; `device` is
    /// `"webgpu"` (after `init()`) or `"cpu"`; `activations` is `"f32"` (exact) or `"q8"`
    /// (8-bit inputs and integer dot products on the CPU where the build has those kernels:
    /// `ModelInfo.activations` says the mode that runs).
    ///
    /// The new file is parsed and checked first (every tensor, the tokenizer, the template, the
    /// cache options, every buffer against the device's limits); only then is the old model
    /// dropped and the new one uploaded. A file that fails its checks leaves the old model
    /// loaded and its conversation intact. Refused with `busy` while a generation runs.
    pub fn load(
        &self,
        files: &JsValue,
        weights: &str,
        kv: JsValue,
        progress: Option<Function>,
        device: &str,
        activations: &str,
    ) -> Result<JsValue, JsValue> {
        let LoadChoice { device, weights, kv, activations } = self.load_options(weights, kv, device, activations)?;
        let files = model_files(files, &device)?;
        let prepared = prepare_model(&files, weights, &kv, &self.load_limits(&device)).map_err(js_error)?;
        self.drop_model().map_err(js_error)?;
        let loaded = prepared.upload(&device, &mut reporter(progress));
        self.finish_load(loaded, kv, weights, activations)
    }

    /// [`Self::load`] with structured pruning at load: `prune` is `{layers: n | [ids], heads,
    /// ffn, calibration}` (see `hearth::analysis::weight_pruning::WeightPruneOptions`), chosen on the plain
    /// text `calibration` (a built-in text when missing). The whole model is uploaded and run
    /// over the text first, then replaced by the pruned one, so the device briefly holds both.
    /// Resolves to the pruned model's info. The file's and the cut's checks run before the
    /// model loaded now is dropped (a failure leaves it); from the call until the promise
    /// settles, everything else is `busy`.
    // Positional as `load`'s, plus the cut: wasm-bindgen gives JavaScript the same shape.
    #[allow(clippy::too_many_arguments)]
    pub fn load_pruned(
        &self,
        files: &JsValue,
        weights: &str,
        kv: JsValue,
        progress: Option<Function>,
        device: &str,
        activations: &str,
        prune: JsValue,
    ) -> Result<Promise, JsValue> {
        let LoadChoice { device, weights, kv, activations } = self.load_options(weights, kv, device, activations)?;
        let request: PruneWeightsRequest = options_from_js(prune, &PruneWeightsRequest::FIELDS)?;
        let calibration = request.calibration().map_err(js_error)?.map(str::to_string);
        let PruneWeightsRequest { layers, heads, ffn, .. } = request;
        let prune = WeightPruneOptions { layers, heads, ffn };
        let files = model_files(files, &device)?;
        self.load_async(kv, weights, activations, async move |this, kv| {
            let prepared = prepare_model(&files, weights, kv, &this.load_limits(&device))?;
            prune.check(prepared.config())?;
            this.drop_model()?;
            let mut report = reporter(progress);
            let (engine, _) = prepared.upload_pruned(&device, &prune, calibration.as_deref(), &mut report).await?;
            Ok(engine)
        })
    }

    /// Runs `load` (given this engine and the cache options) as a promise: from the call until
    /// it settles, everything else is `busy`; then its engine is put in place, or its error
    /// returned.
    fn load_async(
        &self,
        kv: KvOptions,
        weights: WeightFormat,
        activations: Activations,
        load: impl AsyncFnOnce(Rc<WasmEngine>, &KvOptions) -> crate::error::Result<Engine> + 'static,
    ) -> Result<Promise, JsValue> {
        self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?.loading = true;
        let this = Rc::new(WasmEngine { state: Rc::clone(&self.state) });
        Ok(future_to_promise(async move {
            let loaded = load(Rc::clone(&this), &kv).await;
            this.finish_load(loaded, kv, weights, activations)
        }))
    }

    /// The limits a load is checked against: the device's, counting what dropping the model
    /// loaded now gives back.
    fn load_limits(&self, device: &Device) -> Limits {
        Limits::of(device).freeing(self.freed_by_drop())
    }

    /// Parses a load's options and refuses while anything runs or loads.
    fn load_options(&self, weights: &str, kv: JsValue, device: &str, activations: &str) -> Result<LoadChoice, JsValue> {
        let device = web_device(device)?;
        let weights: WeightFormat = weights.parse().map_err(js_error)?;
        let activations: Activations = activations.parse().map_err(js_error)?;
        let kv: KvOptions = options_from_js(kv, &KV_FIELDS)?;
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        if state.busy() {
            return Err(busy("cannot load a model while a generation runs or waits"));
        }
        if state.loading {
            return Err(busy("another load is in progress"));
        }
        host_memory::reset_peak();
        Ok(LoadChoice { device, weights, kv, activations })
    }

    /// Host memory that dropping the model loaded now gives back: its weights on the CPU
    /// path (on a GPU they are in device memory). A load counts it as free, so that model B
    /// replaces model A whenever B fits alone.
    fn freed_by_drop(&self) -> u64 {
        let state = self.state.try_borrow().ok();
        let engine = state.as_ref().and_then(|s| s.engine.as_ref());
        engine.filter(|e| !crate::backend::device::is_cube(e.device())).map_or(0, |e| e.model().weight_bytes() as u64)
    }

    /// Drops the model loaded now (its file's successor has passed its checks) and marks a
    /// load in progress.
    fn drop_model(&self) -> crate::error::Result<()> {
        let mut state = self.state.try_borrow_mut().map_err(|_| Error::Busy("the engine is busy".into()))?;
        state.engine = None;
        state.session = None;
        state.loading = true;
        Ok(())
    }

    /// Ends a load: the engine and its conversation in place, or the error (leaving whatever
    /// model is still loaded: none once the one before was dropped).
    fn finish_load(
        &self,
        loaded: crate::error::Result<Engine>,
        kv: KvOptions,
        weights: WeightFormat,
        activations: Activations,
    ) -> Result<JsValue, JsValue> {
        let loaded = loaded.and_then(|mut engine| {
            engine.set_activations(activations);
            let engine = Arc::new(engine);
            engine.session(&kv).map(|session| (engine, session))
        });
        let info = self.install(loaded, kv, weights);
        // What waited for the load starts now (and fails at once if no model is left).
        next(&self.state);
        info
    }

    /// Puts a loaded engine and its conversation in place and ends the load.
    fn install(
        &self,
        loaded: crate::error::Result<(Arc<Engine>, Session)>,
        kv: KvOptions,
        weights: WeightFormat,
    ) -> Result<JsValue, JsValue> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        state.loading = false;
        let (engine, session) = loaded.map_err(js_error)?;
        let c = engine.config();
        let info = ModelInfo {
            name: engine.name().to_string(),
            vocab: c.vocab,
            d_model: c.d_model,
            n_layers: c.n_layers,
            context_length: c.context_length,
            kv_capacity: session.kv_cache().capacity(),
            kv_policy: session.kv_cache().policy(),
            kv_sinks: session.kv_cache().sinks(),
            weights: weights.name(),
            weight_bytes: engine.model().weight_bytes(),
            has_chat_template: engine.has_chat_template(),
            device: device_name(&engine),
            cpu_isa: crate::backend::cpu::Isa::best().name(),
            threads: compute_threads(&engine),
            activations: running_activations(&engine),
            max_streams: MAX_STREAMS,
        };
        state.engine = Some(engine);
        state.load_peak = Some(host_memory::peak_bytes());
        state.kv = kv;
        state.session = Some(session);
        to_js(&info)
    }

    /// Loads a draft model for `speculative: { method: "draft" }` from its bytes (GGUF or
    /// `.bpk`; `weights` as for [`Self::load`]) onto the loaded model's device, replacing any
    /// draft before; `null` removes the draft. The draft must share the model's vocabulary
    /// token for token (else `bad_options`, and the draft before stays). A later `load` drops
    /// it with the model. Refused with `busy` while anything runs. Resolves to the draft's
    /// `{name, vocab, n_layers, weight_bytes}`, or `null` when removed.
    pub fn load_draft(
        &self,
        bytes: Option<Uint8Array>,
        weights: &str,
        progress: Option<Function>,
    ) -> Result<JsValue, JsValue> {
        let weights: WeightFormat = weights.parse().map_err(js_error)?;
        let engine = self.engine()?;
        let ready = |state: &State| -> Result<(), JsValue> {
            if state.busy() || state.loading {
                return Err(busy("cannot load a draft model while a generation or a load runs"));
            }
            Ok(())
        };
        ready(&*self.state.try_borrow().map_err(|_| busy("the engine is busy"))?)?;
        let Some(bytes) = bytes else {
            let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
            if let Some(session) = state.session.as_mut() {
                session.set_draft(None).map_err(js_error)?;
            }
            return Ok(JsValue::NULL);
        };
        let device = engine.device().clone();
        let bytes = model_bytes(&bytes, &device)?;
        let prepared = Engine::prepare(&bytes, &device, weights).map_err(js_error)?;
        // Refused before the upload, not after.
        crate::generate::speculative::check_vocabulary(prepared.config().vocab, prepared.tokenizer(), &engine)
            .map_err(js_error)?;
        let mut draft = prepared.upload(&device, &mut reporter(progress)).map_err(js_error)?;
        draft.set_activations(engine.model().activations());
        let draft = Arc::new(draft);
        let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        ready(&state)?;
        let session = state.session.as_mut().ok_or_else(|| bad_options("no model is loaded: call load() first"))?;
        session.set_draft(Some(Arc::clone(&draft))).map_err(js_error)?;
        let c = draft.config();
        to_js(&DraftInfo {
            name: draft.name().to_string(),
            vocab: c.vocab,
            n_layers: c.n_layers,
            weight_bytes: draft.model().weight_bytes(),
        })
    }

    fn engine(&self) -> Result<Arc<Engine>, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        state.engine.clone().ok_or_else(|| bad_options("no model is loaded: call load() first"))
    }

    /// Token ids of `text`; with `parse_special`, special-token text becomes special ids.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, JsValue> {
        let engine = self.engine()?;
        if text.len() > crate::engine::MAX_PROMPT_BYTES {
            let e = format!("{} bytes of text, more than the {} accepted", text.len(), crate::engine::MAX_PROMPT_BYTES);
            return Err(js_error(Error::InvalidPrompt(e)));
        }
        engine.tokenizer().encode(text, parse_special).map_err(js_error)
    }

    /// Text of `ids` (special tokens skipped).
    pub fn detokenize(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        let engine = self.engine()?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= engine.config().vocab) {
            return Err(js_error(Error::InvalidPrompt(format!("token id {bad} is outside the vocabulary"))));
        }
        engine.tokenizer().decode(&ids, true).map_err(js_error)
    }

    /// Token ids of a conversation (`[{role, content}]`) rendered with the model's chat
    /// template, ending where the assistant's reply begins. Contents are plain text: special
    /// tokens come only from the template.
    pub fn chat_tokens(&self, messages: JsValue) -> Result<Vec<u32>, JsValue> {
        let messages: Vec<Message> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| bad_options(format!("messages: {}", serde_message(e))))?;
        self.engine()?.encode_chat(&messages).map_err(js_error)
    }

    /// Continues `ids` (the whole conversation; the cached prefix is reused). `on_text(text,
    /// token)` gets each piece of text; returning `false` stops generation within a token, and
    /// so does aborting `signal` (an `AbortSignal`, optional), which is also heard during the
    /// prefill and while text is held back. `pause()` (optional) returns a promise awaited
    /// before each step, for flow control (the worker waits there until the page has received
    /// the text sent so far). Resolves to `{tokens, text, finish_reason, stats}`; a throwing
    /// `on_text` rejects with kind `callback`. Waits in line while the batch is full, work that
    /// runs alone runs or waits before it, or a load is in progress; aborted there, it rejects
    /// with kind `aborted`.
    pub fn generate(
        &self,
        ids: Vec<u32>,
        options: JsValue,
        on_text: Function,
        signal: JsValue,
        pause: Option<Function>,
    ) -> Result<Promise, JsValue> {
        let web = generate_request(options)?;
        if web.prune_budget.is_some() || web.prune_method.is_some() {
            return Err(bad_options("pruning options apply to chat(), not to generate()"));
        }
        let options = web.to_options().map_err(js_error)?;
        let listener = WebListener { on_text: Some(on_text), signal, on_cpu: false, pause };
        let alone = runs_alone(&options);
        request(&self.state, alone, listener, move |state, listener, reply| {
            if alone {
                return run_alone(state, reply, move |mut session| async move {
                    let result = session.generate_with(&ids, &options, listener).await;
                    (session, result)
                });
            }
            match lend(state) {
                Ok(lent) => join(state, Join { session: lent, prompt: ids, options, listener, pruned: None, reply }),
                Err(e) => reply.fail(e),
            }
        })
    }

    /// Answers a conversation (`[{role, content}]`, OpenAI's tool turns too) with the model's
    /// chat template, pruning the prompt to `prune_budget` tokens when it is longer (see
    /// [`Self::generate`]). With `tools`, each call the reply makes reaches `on_text` whole, as
    /// its third argument (the text empty). Resolves to `{tokens, text, finish_reason, stats,
    /// pruned, tool_calls}`.
    pub fn chat(
        &self,
        messages: JsValue,
        options: JsValue,
        on_text: Function,
        signal: JsValue,
        pause: Option<Function>,
    ) -> Result<Promise, JsValue> {
        let messages: Vec<Message> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| bad_options(format!("messages: {}", serde_message(e))))?;
        let web = generate_request(options)?;
        let (options, prune) = (web.to_options().map_err(js_error)?, web.prune());
        let listener = WebListener { on_text: Some(on_text), signal, on_cpu: false, pause };
        let alone = runs_alone(&options);
        request(&self.state, alone, listener, move |state, listener, reply| {
            if alone {
                return run_alone(state, reply, move |mut session| async move {
                    let result = session.chat_with(&messages, &options, &prune, listener).await;
                    (session, result)
                });
            }
            let lent = match lend(state) {
                Ok(lent) => lent,
                Err(e) => return reply.fail(e),
            };
            let state = Rc::clone(state);
            wasm_bindgen_futures::spawn_local(async move {
                // Pruning may score the prompt first (passes of its own, between the batch's steps).
                let prompt = lent.session.chat_prompt(&messages, &options, &prune, &listener).await;
                match prompt {
                    Ok(ChatStart::Ready { tokens, report }) => {
                        join(&state, Join { session: lent, prompt: tokens, options, listener, pruned: report, reply })
                    }
                    Ok(ChatStart::Aborted(generation)) => {
                        give_back(&state, lent);
                        reply.settle(Ok(*generation));
                    }
                    Err(e) => {
                        give_back(&state, lent);
                        reply.settle::<()>(Err(e));
                    }
                }
            });
        })
    }

    /// The log-probability `ln p(ids[i] | ids[..i])` of every token after the first, in one
    /// array of `ids.length - 1`: how likely the model finds a given text, teacher-forced (for
    /// perplexity, or comparing two engines on the same tokens). Runs in a scratch cache, so the
    /// conversation is kept; texts longer than the cache slide through it. Takes its turn like
    /// a generation that runs alone; an aborted `signal` stops it between passes, or takes it
    /// out of line (kind `aborted`).
    pub fn score(&self, ids: Vec<u32>, signal: JsValue) -> Result<Promise, JsValue> {
        if ids.len() < 2 {
            return Err(js_error(Error::InvalidPrompt(format!(
                "scoring needs at least two tokens (the first is only context), got {}",
                ids.len()
            ))));
        }
        let listener = WebListener { on_text: None, signal, on_cpu: false, pause: None };
        request(&self.state, true, listener, move |state, listener, reply| {
            run_alone(state, reply, move |session| async move {
                let result = session.surprisal_with(&ids, &listener).await;
                let logprobs = result.map(|s| s[1..].iter().map(|&nats| -nats).collect::<Vec<f32>>());
                (session, logprobs)
            });
        })
    }

    /// Refuses with `busy` (naming what the caller is `doing`) while anything runs or waits:
    /// the package asks before it fetches a model to load.
    pub fn check_idle(&self, doing: &str) -> Result<(), JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        if state.loading {
            return Err(busy(format!("cannot {doing} while a model loads")));
        }
        if state.busy() {
            return Err(busy(format!("cannot {doing} while a generation runs or waits")));
        }
        Ok(())
    }

    /// Forgets the conversation (the KV cache stays allocated). Refused with `busy` while a
    /// generation runs.
    pub fn reset(&self) -> Result<(), JsValue> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        if state.busy() {
            return Err(busy("cannot reset the conversation while a generation runs or waits"));
        }
        if let Some(session) = state.session.as_mut() {
            session.reset();
        }
        Ok(())
    }

    /// Model, cache occupancy, device memory and limits.
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        let on_gpu = state.engine.as_deref().is_some_and(on_webgpu);
        let (memory, limits, lost) = DEVICE.with(|d| match &*d.borrow() {
            DeviceState::Ready(device) if on_gpu => (device.memory_pool_usage(), Some(Limits::of(device)), false),
            DeviceState::Lost(_) => (None, None, true),
            _ => (None, None, false),
        });
        to_js(&EngineStats {
            loaded: state.engine.is_some(),
            generating: state.running(),
            streams: state.streams,
            queued: state.waiting.len(),
            model: state.engine.as_ref().map(|e| e.name().to_string()),
            weight_bytes: state.engine.as_ref().map(|e| e.model().weight_bytes()),
            kv_len: state.session.as_ref().map(|s| s.kv_cache().len()),
            kv_capacity: state.session.as_ref().map(|s| s.kv_cache().capacity()),
            kv_policy: state.session.as_ref().map(|s| s.kv_cache().policy()),
            kv_evicted: state.session.as_ref().map(|s| s.kv_cache().evicted()),
            device_memory_in_use_bytes: memory.as_ref().map(|m| m.bytes_in_use),
            device_memory_reserved_bytes: memory.as_ref().map(|m| m.bytes_reserved),
            max_buffer_bytes: limits.map(|l| l.max_buffer_bytes),
            device_lost: lost,
            device: state.engine.as_deref().map(device_name),
            cpu_isa: crate::backend::cpu::Isa::best().name(),
            threads: state.engine.as_deref().map(compute_threads),
            activations: state.engine.as_deref().map(running_activations),
            wasm_memory_bytes: host_memory::wasm_memory_bytes(),
            host_allocated_bytes: Some(host_memory::live_bytes()),
            host_bytes_left: Some(host_memory::bytes_left()),
            load_peak_bytes: state.load_peak,
        })
    }

    /// Drops the model and its cache and returns their GPU memory to the device. Refused with
    /// `busy` while a generation runs.
    pub fn unload(&self) -> Result<(), JsValue> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        if state.busy() {
            return Err(busy("cannot unload while a generation runs or waits"));
        }
        state.engine = None;
        state.session = None;
        drop(state);
        DEVICE.with(|d| {
            if let DeviceState::Ready(device) = &*d.borrow() {
                device.memory_cleanup();
            }
        });
        Ok(())
    }
}

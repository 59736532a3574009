//! The browser bindings (wasm32 only): an engine that a page or a Web Worker drives through
//! wasm-bindgen. The TypeScript package (`npm/`) wraps it in the public API; this layer keeps
//! to plain values, ids and callbacks.
//!
//! Every exported function returns `Result<_, JsError>`; the message starts with the error's
//! stable kind (`model_load: ...`, `bad_options: ...`), which the TypeScript layer turns into
//! typed errors. Nothing here panics on bad input: a panic would kill the wasm instance. Should
//! one happen anyway, [`set_panic_handler`] tells the page before the instance traps, so that
//! no call waits forever on a dead engine.
//!
//! Generations run together: up to [`MAX_STREAMS`] at once, each in its own session, decoded
//! as one batch that requests join and leave between steps ([`crate::generate::batch`]). The engine's
//! own session (the conversation, whose cache a follow-up reuses) goes to a request when it is
//! free, the others get a fresh one for their length. Speculative decoding, early exit and
//! scoring run alone. `load`, `reset` and `unload` refuse with `busy` while anything runs and
//! change nothing (the TypeScript layer queues what does not fit in front of this).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use burn::prelude::Device;
use js_sys::{Function, Promise, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::analysis::weight_pruning::PruneWeights;
use crate::backend::device::{Limits, WGPU_TASKS_PER_SUBMIT};
use crate::engine::Engine;
use crate::error::Error;
use crate::generate::batch::Batch;
use crate::generate::early_exit::EarlyExitOptions;
use crate::generate::sampler::SamplerOptions;
use crate::generate::session::{ChatStart, Session};
use crate::generate::speculative::SpeculativeOptions;
use crate::generate::types::{Control, GenerateOptions, Listener};
use crate::kv_cache::{KvCache, KvOptions};
use crate::load::WeightFormat;
use crate::text::prompt_pruning::{PruneMethod, PruneOptions, PruneReport};
use crate::text::template::Message;

mod event_loop;

/// `kind: message`, without repeating the category when the message starts with it
/// (`bad_options: x`, not `bad_options: bad options: x`).
fn js_error(e: Error) -> JsError {
    let kind = e.kind();
    let text = e.to_string();
    let category = format!("{}: ", kind.replace('_', " "));
    JsError::new(&format!("{kind}: {}", text.strip_prefix(&category).unwrap_or(&text)))
}

fn bad_options(msg: impl std::fmt::Display) -> JsError {
    js_error(Error::BadOptions(msg.to_string()))
}

fn busy(msg: impl std::fmt::Display) -> JsError {
    js_error(Error::Busy(msg.to_string()))
}

/// The message of a thrown JS value, for errors that carry it on.
fn js_message(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

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

/// serde-wasm-bindgen's errors print as JS errors (`Error: ...`); keep the message.
fn serde_message(e: serde_wasm_bindgen::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("Error: ").unwrap_or(&text).to_string()
}

thread_local! {
    /// burn's wgpu runtime may be initialized once per thread (page or worker).
    static DEVICE: RefCell<DeviceState> = const { RefCell::new(DeviceState::Uninitialized) };
}

enum DeviceState {
    Uninitialized,
    Initializing,
    Ready(Device),
    Failed(String),
    /// The device was lost; this thread's runtime cannot get another one (the TypeScript layer
    /// starts a fresh wasm instance).
    Lost(String),
}

fn ready_device() -> Result<Device, JsError> {
    DEVICE.with(|d| match &*d.borrow() {
        DeviceState::Ready(device) => Ok(device.clone()),
        DeviceState::Failed(msg) => Err(js_error(Error::Device(msg.clone()))),
        DeviceState::Lost(msg) => Err(js_error(Error::DeviceLost(msg.clone()))),
        _ => Err(js_error(Error::Device("WebGPU is not initialized: call init() first".into()))),
    })
}

/// Remembers a lost device, so that every later call says so at once.
fn note_device_lost(e: &Error) {
    if let Error::DeviceLost(msg) = e {
        DEVICE.with(|d| *d.borrow_mut() = DeviceState::Lost(msg.clone()));
    }
}

/// Whether this global (window or worker) exposes `navigator.gpu`.
fn has_webgpu() -> bool {
    let global = js_sys::global();
    Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|n| !n.is_undefined())
        .and_then(|n| Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|gpu| !gpu.is_undefined() && !gpu.is_null())
}

/// Options of one generation, flat and snake_case, as the TypeScript layer sends them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebGenerateOptions {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: Option<f64>,
    stop: Vec<String>,
    ignore_eos: bool,
    /// Chat only: most prompt tokens before earlier messages are pruned.
    prune_budget: Option<usize>,
    prune_method: Option<PruneMethod>,
    /// `{ method, max_draft, ngram, draft_layers }`, each optional.
    speculative: Option<SpeculativeOptions>,
    /// `{ layers, threshold, measure, shortlist }`, `layers` required.
    early_exit: Option<EarlyExitOptions>,
}

/// Parses a JS options object (`undefined` or `null`: the defaults), refusing keys not in
/// `fields` (serde-wasm-bindgen reads only the fields it looks for, so `deny_unknown_fields`
/// alone does not catch them).
fn options_from_js<T: Default + serde::de::DeserializeOwned>(options: JsValue, fields: &[&str]) -> Result<T, JsError> {
    if options.is_undefined() || options.is_null() {
        return Ok(T::default());
    }
    let object = options.dyn_ref::<js_sys::Object>().ok_or_else(|| bad_options("options must be an object"))?;
    for key in js_sys::Object::keys(object).iter() {
        let key = key.as_string().unwrap_or_default();
        if !fields.contains(&key.as_str()) {
            return Err(bad_options(format!("unknown option `{key}` (known: {})", fields.join(", "))));
        }
    }
    serde_wasm_bindgen::from_value(options).map_err(|e| bad_options(serde_message(e)))
}

/// `load_pruned`'s options: [`PruneWeights`] and the calibration text.
#[derive(Default, Deserialize)]
struct WebPrune {
    #[serde(default)]
    layers: crate::analysis::weight_pruning::LayerChoice,
    #[serde(default)]
    heads: usize,
    #[serde(default)]
    ffn: f64,
    calibration: Option<String>,
}

impl WebPrune {
    const FIELDS: [&'static str; 4] = ["layers", "heads", "ffn", "calibration"];
}

const KV_FIELDS: [&str; 5] = ["capacity", "capacity_bytes", "policy", "sinks", "recent"];

impl WebGenerateOptions {
    const FIELDS: [&'static str; 13] = [
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "seed",
        "stop",
        "ignore_eos",
        "prune_budget",
        "prune_method",
        "speculative",
        "early_exit",
    ];
    const SPECULATIVE_FIELDS: [&'static str; 4] = ["method", "max_draft", "ngram", "draft_layers"];
    const EARLY_EXIT_FIELDS: [&'static str; 4] = ["layers", "threshold", "measure", "shortlist"];

    fn from_js(options: JsValue) -> Result<Self, JsError> {
        // The nested objects' keys are checked as the top level's are.
        if let Some(object) = options.dyn_ref::<js_sys::Object>() {
            let nested = |key: &str| {
                Some(js_sys::Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED))
                    .filter(|v| !v.is_undefined() && !v.is_null())
            };
            if let Some(speculative) = nested("speculative") {
                options_from_js::<SpeculativeOptions>(speculative, &Self::SPECULATIVE_FIELDS)?;
            }
            if let Some(early_exit) = nested("early_exit") {
                options_from_js::<EarlyExitOptions>(early_exit, &Self::EARLY_EXIT_FIELDS)?;
            }
        }
        options_from_js(options, &Self::FIELDS)
    }

    fn prune(&self) -> PruneOptions {
        PruneOptions { method: self.prune_method.unwrap_or_default(), budget: self.prune_budget }
    }

    fn to_options(&self) -> Result<GenerateOptions, JsError> {
        let d = SamplerOptions::default();
        let seed = match self.seed {
            None => None,
            Some(s) if s >= 0.0 && s.fract() == 0.0 && s <= 9_007_199_254_740_991.0 => Some(s as u64),
            Some(s) => return Err(bad_options(format!("seed {s} must be a non-negative integer"))),
        };
        Ok(GenerateOptions {
            max_tokens: self.max_tokens.unwrap_or(GenerateOptions::default().max_tokens),
            sampler: SamplerOptions {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_k: self.top_k.unwrap_or(d.top_k),
                top_p: self.top_p.unwrap_or(d.top_p),
                min_p: self.min_p.unwrap_or(d.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
                seed,
                ..d
            },
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            speculative: self.speculative.clone(),
            early_exit: self.early_exit.clone(),
        })
    }
}

/// What [`WasmEngine::load`] reports about the model.
#[derive(Serialize)]
struct ModelInfo {
    name: String,
    vocab: usize,
    d_model: usize,
    n_layers: usize,
    context_length: usize,
    kv_capacity: usize,
    kv_policy: &'static str,
    kv_sinks: usize,
    weights: &'static str,
    weight_bytes: usize,
    has_chat_template: bool,
    /// `"cpu"` or `"webgpu"`.
    device: &'static str,
    /// The CPU kernels' SIMD level in this build (`"simd128"` or `"scalar"`).
    cpu_isa: &'static str,
    /// Generations served together at most (more wait their turn).
    max_streams: usize,
}

/// The burn device a load names: the CPU needs no initialization; WebGPU must have had
/// `init()`.
fn web_device(name: &str) -> Result<Device, JsError> {
    match name {
        "cpu" => Ok(Device::flex()),
        "webgpu" => ready_device(),
        other => Err(bad_options(format!("device must be \"cpu\" or \"webgpu\", got {other:?}"))),
    }
}

/// Whether an engine runs on WebGPU (not the CPU).
fn on_webgpu(engine: &Engine) -> bool {
    crate::backend::device::is_cube(engine.device())
}

/// What the page calls the device an engine runs on.
fn device_name(engine: &Engine) -> &'static str {
    if on_webgpu(engine) { "webgpu" } else { "cpu" }
}

/// Generations an engine serves together at most. Each holds a KV cache of its own, and a
/// batched pass of 4 tokens costs about 1.8 times a pass of one on a 2-core CPU (more gain
/// little there and cost a cache each).
const MAX_STREAMS: usize = 4;

struct State {
    engine: Option<Arc<Engine>>,
    /// The loaded model's cache options, for the sessions of requests served together.
    kv: KvOptions,
    /// The conversation, while no request holds it.
    session: Option<Session>,
    /// Generations running together (preparing their prompt or in the batch).
    streams: usize,
    /// A generation or scoring that runs alone holds the engine.
    alone: bool,
    /// Requests ready for the batch, taken in at its next step.
    joining: Vec<Join>,
    /// The batch is running.
    driving: bool,
    /// A load is between its checks and its upload.
    loading: bool,
}

impl State {
    fn busy(&self) -> bool {
        self.streams > 0 || self.alone
    }
}

/// A session lent to a request: the engine's conversation, or one made for the request.
struct Lent {
    session: Session,
    conversation: bool,
}

impl std::borrow::Borrow<Session> for Lent {
    fn borrow(&self) -> &Session {
        &self.session
    }
}

impl std::borrow::BorrowMut<Session> for Lent {
    fn borrow_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// The settling functions of a request's promise.
struct Reply {
    resolve: Function,
    reject: Function,
}

impl Reply {
    /// A promise and the functions that settle it.
    fn new() -> (Promise, Reply) {
        let mut reply = None;
        let promise = Promise::new(&mut |resolve, reject| reply = Some(Reply { resolve, reject }));
        (promise, reply.expect("the promise executor runs at once"))
    }

    fn settle<T: Serialize>(self, result: crate::error::Result<T>) {
        let settled = match result.map_err(|e| {
            note_device_lost(&e);
            js_error(e)
        }) {
            Ok(value) => match to_js(&value) {
                Ok(value) => self.resolve.call1(&JsValue::NULL, &value),
                Err(e) => self.reject.call1(&JsValue::NULL, &e.into()),
            },
            Err(e) => self.reject.call1(&JsValue::NULL, &e.into()),
        };
        // Settling a promise runs no code of the page's: it cannot throw.
        let _ = settled;
    }
}

/// A request on its way into the batch.
struct Join {
    session: Lent,
    prompt: Vec<u32>,
    options: GenerateOptions,
    listener: WebListener,
    pruned: Option<PruneReport>,
    reply: Reply,
}

/// Takes the session back from a request that ended: the conversation's is kept, one made for
/// the request is dropped with its cache.
fn give_back(state: &RefCell<State>, lent: Lent) {
    let mut s = state.borrow_mut();
    if lent.conversation {
        s.session = Some(lent.session);
    }
    s.streams -= 1;
}

/// Whether a generation runs alone rather than in the batch: speculative decoding and early
/// exit shape each step for one conversation.
fn runs_alone(options: &GenerateOptions) -> bool {
    options.speculative.is_some() || options.early_exit.is_some()
}

/// Hands a request to the batch, starting the batch when it is not running.
fn join(state: &Rc<RefCell<State>>, join: Join) {
    state.borrow_mut().joining.push(join);
    drive(state);
}

/// Runs the batch while requests are in it, taking in those that join between steps.
fn drive(state: &Rc<RefCell<State>>) {
    let engine = {
        let mut s = state.borrow_mut();
        let Some(engine) = s.engine.clone() else { return };
        if s.driving {
            return;
        }
        s.driving = true;
        engine
    };
    let state = Rc::clone(state);
    wasm_bindgen_futures::spawn_local(async move {
        let mut batch: Batch<'static, Lent> = Batch::new(engine);
        let mut replies: HashMap<u64, (Reply, Option<PruneReport>)> = HashMap::new();
        loop {
            let joining = std::mem::take(&mut state.borrow_mut().joining);
            for j in joining {
                match batch.join(j.session, j.prompt, &j.options, Box::new(j.listener)) {
                    Ok(id) => {
                        replies.insert(id, (j.reply, j.pruned));
                    }
                    Err((lent, e)) => {
                        give_back(&state, lent);
                        j.reply.settle::<()>(Err(e));
                    }
                }
            }
            if batch.is_empty() {
                state.borrow_mut().driving = false;
                return;
            }
            for finished in batch.step().await {
                give_back(&state, finished.session);
                if let Some((reply, pruned)) = replies.remove(&finished.id) {
                    reply.settle(finished.result.map(|mut generation| {
                        generation.stats.pruned_tokens = pruned.as_ref().map_or(0, |r| r.pruned_tokens);
                        generation.pruned = pruned;
                        generation
                    }));
                }
            }
        }
    });
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value
        .serialize(
            &serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true).serialize_missing_as_null(true),
        )
        .map_err(|e| js_error(Error::Device(format!("serializing a result: {e}"))))
}

/// A generation's view of the page: its text callback and its `AbortSignal`.
struct WebListener {
    /// `None` when nothing streams (scoring).
    on_text: Option<Function>,
    /// An `AbortSignal`, or `undefined`.
    signal: JsValue,
    /// The model runs on the CPU: yield to the event loop between steps (see [`event_loop`]).
    on_cpu: bool,
    /// The caller's flow control: a function returning a promise to await before each step.
    pause: Option<Function>,
}

impl Listener for WebListener {
    /// `false` from the callback stops generation; a throw is an error of its own (the page's
    /// code failed, which is not a request to stop).
    fn on_text(&mut self, text: &str, token: u32) -> crate::error::Result<Control> {
        let Some(on_text) = &self.on_text else { return Ok(Control::Continue) };
        match on_text.call2(&JsValue::NULL, &JsValue::from_str(text), &token.into()) {
            Ok(v) if v == JsValue::FALSE => Ok(Control::Stop),
            Ok(_) => Ok(Control::Continue),
            Err(thrown) => Err(Error::Callback(js_message(&thrown))),
        }
    }

    fn aborted(&self) -> bool {
        !self.signal.is_undefined()
            && !self.signal.is_null()
            && Reflect::get(&self.signal, &"aborted".into()).is_ok_and(|v| v.is_truthy())
    }

    fn pause(&self) -> Option<crate::generate::types::Pause> {
        let wait =
            self.pause.as_ref().and_then(|f| f.call0(&JsValue::NULL).ok()).and_then(|p| p.dyn_into::<Promise>().ok());
        match (wait, self.on_cpu) {
            (None, false) => None,
            (None, true) => Some(event_loop::next_task()),
            (Some(wait), on_cpu) => Some(Box::pin(async move {
                // A rejected pause is no reason to fail the generation: go on.
                let _ = wasm_bindgen_futures::JsFuture::from(wait).await;
                if on_cpu {
                    event_loop::next_task().await;
                }
            })),
        }
    }
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

/// A model file parsed and checked for `device`, its KV cache `kv` included: what a load
/// checks before it drops the model loaded now.
fn prepare_model<'a>(
    bytes: &'a [u8],
    device: &Device,
    weights: WeightFormat,
    kv: &KvOptions,
) -> crate::error::Result<crate::engine::Prepared<'a>> {
    let prepared = Engine::prepare(bytes, device, weights)?;
    KvCache::plan(prepared.config(), kv, &Limits::of(device))?;
    Ok(prepared)
}

/// A load's `progress(uploaded, total)` callback as the core calls it.
fn reporter(progress: Option<Function>) -> impl FnMut(usize, usize) {
    move |done: usize, total: usize| {
        if let Some(f) = &progress {
            let _ = f.call2(&JsValue::NULL, &(done as u32).into(), &(total as u32).into());
        }
    }
}

/// The bytes of a model, copied into wasm memory only after checking that they fit: a copy
/// that cannot be allocated would abort the instance.
fn model_bytes(bytes: &Uint8Array, device: &Device) -> Result<Vec<u8>, JsError> {
    let len = bytes.length() as usize;
    let limits = Limits::of(device);
    limits.check_host(|| format!("a model file of {len} bytes"), len as u64).map_err(js_error)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| {
        js_error(Error::ResourceLimit {
            what: format!("a model file of {len} bytes"),
            needed: len as u64,
            limit: crate::backend::device::HOST_MEMORY_LIMIT,
            allowed: limits.host_bytes_left,
        })
    })?;
    out.resize(len, 0);
    bytes.copy_to(&mut out);
    Ok(out)
}

#[wasm_bindgen]
impl WasmEngine {
    #[wasm_bindgen(constructor)]
    pub fn new() -> WasmEngine {
        run_constructors();
        let state = State {
            engine: None,
            kv: KvOptions::default(),
            session: None,
            streams: 0,
            alone: false,
            joining: Vec::new(),
            driving: false,
            loading: false,
        };
        WasmEngine { state: Rc::new(RefCell::new(state)) }
    }

    /// Initializes WebGPU once for this thread. Refuses (rather than hangs) where
    /// `navigator.gpu` is missing; later calls return at once.
    pub fn init(&self) -> Result<Promise, JsError> {
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
                let result = if has_webgpu() {
                    Device::wgpu_options()
                        .tasks_max(WGPU_TASKS_PER_SUBMIT)
                        .init_async()
                        .await
                        .map_err(|e| format!("no usable WebGPU adapter: {e}"))
                } else {
                    Err("this browser has no WebGPU (navigator.gpu is missing): use a browser with WebGPU \
                         enabled, e.g. Chrome 113+, or Chromium with --enable-unsafe-webgpu"
                        .to_string())
                };
                DEVICE.with(|d| {
                    *d.borrow_mut() = match result {
                        Ok(device) => DeviceState::Ready(device),
                        Err(msg) => DeviceState::Failed(msg),
                    }
                });
            }
            ready_device().map(|_| JsValue::TRUE).map_err(JsValue::from)
        }))
    }

    /// Loads a GGUF file or a `.bpk` record from its bytes, replacing any model loaded before.
    /// `weights` is `"int4"`, `"f32"` or a ggml format to quantize floats to (`"q4_0"`, `"q4_1"`,
    /// `"q8_0"`, `"q2_k"` .. `"q6_k"`); `kv` is `{capacity, capacity_bytes, policy, sinks,
    /// recent}` (all optional); `progress(uploaded, total)` is called per tensor; `device` is
    /// `"webgpu"` (after `init()`) or `"cpu"`.
    ///
    /// The new file is parsed and checked first (every tensor, the tokenizer, the template, the
    /// cache options, every buffer against the device's limits); only then is the old model
    /// dropped and the new one uploaded. A file that fails its checks leaves the old model
    /// loaded and its conversation intact. Refused with `busy` while a generation runs.
    pub fn load(
        &self,
        bytes: &Uint8Array,
        weights: &str,
        kv: JsValue,
        progress: Option<Function>,
        device: &str,
    ) -> Result<JsValue, JsError> {
        let (device, weights, kv) = self.load_options(weights, kv, device)?;
        let bytes = model_bytes(bytes, &device)?;
        let prepared = prepare_model(&bytes, &device, weights, &kv).map_err(js_error)?;
        self.drop_model().map_err(js_error)?;
        let loaded = prepared.upload(&device, &mut reporter(progress)).map(Arc::new);
        self.finish_load(loaded, kv, weights)
    }

    /// [`Self::load`] with structured pruning at load: `prune` is `{layers: n | [ids], heads,
    /// ffn, calibration}` (see `hearth::analysis::weight_pruning::PruneWeights`), chosen on the plain
    /// text `calibration` (a built-in text when missing). The whole model is uploaded and run
    /// over the text first, then replaced by the pruned one, so the device briefly holds both.
    /// Resolves to the pruned model's info. The file's and the cut's checks run before the
    /// model loaded now is dropped (a failure leaves it); from the call until the promise
    /// settles, everything else is `busy`.
    pub fn load_pruned(
        &self,
        bytes: &Uint8Array,
        weights: &str,
        kv: JsValue,
        progress: Option<Function>,
        device: &str,
        prune: JsValue,
    ) -> Result<Promise, JsError> {
        let (device, weights, kv) = self.load_options(weights, kv, device)?;
        let WebPrune { layers, heads, ffn, calibration } = options_from_js(prune, &WebPrune::FIELDS)?;
        let prune = PruneWeights { layers, heads, ffn };
        if let Some(text) = &calibration {
            crate::engine::check_prompt_bytes(text.len()).map_err(js_error)?;
        }
        let bytes = model_bytes(bytes, &device)?;
        // Loading from here on: everything else is busy until the promise settles.
        self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?.loading = true;
        let this = WasmEngine { state: Rc::clone(&self.state) };
        Ok(future_to_promise(async move {
            let loaded = async {
                let prepared = prepare_model(&bytes, &device, weights, &kv)?;
                prune.check(prepared.config())?;
                this.drop_model()?;
                let mut report = reporter(progress);
                let (engine, _) = prepared.upload_pruned(&device, &prune, calibration.as_deref(), &mut report).await?;
                Ok(Arc::new(engine))
            };
            let loaded = loaded.await;
            this.finish_load(loaded, kv, weights).map_err(JsValue::from)
        }))
    }

    /// Parses a load's options and refuses while anything runs or loads.
    fn load_options(
        &self,
        weights: &str,
        kv: JsValue,
        device: &str,
    ) -> Result<(Device, WeightFormat, KvOptions), JsError> {
        let device = web_device(device)?;
        let weights: WeightFormat = weights.parse().map_err(js_error)?;
        let kv: KvOptions = options_from_js(kv, &KV_FIELDS)?;
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        if state.busy() {
            return Err(busy("cannot load a model while a generation runs"));
        }
        if state.loading {
            return Err(busy("another load is in progress"));
        }
        Ok((device, weights, kv))
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
        loaded: crate::error::Result<Arc<Engine>>,
        kv: KvOptions,
        weights: WeightFormat,
    ) -> Result<JsValue, JsError> {
        let loaded = loaded.and_then(|engine| engine.session(&kv).map(|session| (engine, session)));
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
            kv_policy: session.kv_cache().policy().name(),
            kv_sinks: session.kv_cache().sinks(),
            weights: weights.name(),
            weight_bytes: engine.model().weight_bytes(),
            has_chat_template: engine.has_chat_template(),
            device: device_name(&engine),
            cpu_isa: crate::backend::cpu::Isa::best().name(),
            max_streams: MAX_STREAMS,
        };
        state.engine = Some(engine);
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
    ) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        struct DraftInfo {
            name: String,
            vocab: usize,
            n_layers: usize,
            weight_bytes: usize,
        }
        let weights: WeightFormat = weights.parse().map_err(js_error)?;
        let engine = self.engine()?;
        let ready = |state: &State| -> Result<(), JsError> {
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
        let draft = Arc::new(prepared.upload(&device, &mut reporter(progress)).map_err(js_error)?);
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

    /// Whether the loaded model runs on the CPU.
    fn on_cpu(&self) -> bool {
        self.state.try_borrow().is_ok_and(|s| s.engine.as_deref().is_some_and(|e| !on_webgpu(e)))
    }

    fn engine(&self) -> Result<Arc<Engine>, JsError> {
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        state.engine.clone().ok_or_else(|| bad_options("no model is loaded: call load() first"))
    }

    /// Token ids of `text`; with `parse_special`, special-token text becomes special ids.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, JsError> {
        let engine = self.engine()?;
        if text.len() > crate::engine::MAX_PROMPT_BYTES {
            let e = format!("{} bytes of text, more than the {} accepted", text.len(), crate::engine::MAX_PROMPT_BYTES);
            return Err(js_error(Error::InvalidPrompt(e)));
        }
        engine.tokenizer().encode(text, parse_special).map_err(js_error)
    }

    /// Text of `ids` (special tokens skipped).
    pub fn detokenize(&self, ids: Vec<u32>) -> Result<String, JsError> {
        let engine = self.engine()?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= engine.config().vocab) {
            return Err(js_error(Error::InvalidPrompt(format!("token id {bad} is outside the vocabulary"))));
        }
        engine.tokenizer().decode(&ids, true).map_err(js_error)
    }

    /// Token ids of a conversation (`[{role, content}]`) rendered with the model's chat
    /// template, ending where the assistant's reply begins. Contents are plain text: special
    /// tokens come only from the template.
    pub fn chat_tokens(&self, messages: JsValue) -> Result<Vec<u32>, JsError> {
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
    /// `on_text` rejects with kind `callback`.
    pub fn generate(
        &self,
        ids: Vec<u32>,
        options: JsValue,
        on_text: Function,
        signal: JsValue,
        pause: Option<Function>,
    ) -> Result<Promise, JsError> {
        let web = WebGenerateOptions::from_js(options)?;
        if web.prune_budget.is_some() || web.prune_method.is_some() {
            return Err(bad_options("pruning options apply to chat(), not to generate()"));
        }
        let options = web.to_options()?;
        let listener = WebListener { on_text: Some(on_text), signal, on_cpu: self.on_cpu(), pause };
        if runs_alone(&options) {
            return self.with_session(move |mut session| async move {
                let result = session.generate_with(&ids, &options, listener).await;
                (session, result)
            });
        }
        let lent = self.lend()?;
        let (promise, reply) = Reply::new();
        join(&self.state, Join { session: lent, prompt: ids, options, listener, pruned: None, reply });
        Ok(promise)
    }

    /// Answers a conversation (`[{role, content}]`) with the model's chat template, pruning the
    /// prompt to `prune_budget` tokens when it is longer (see [`Self::generate`]). Resolves to
    /// `{tokens, text, finish_reason, stats, pruned}`.
    pub fn chat(
        &self,
        messages: JsValue,
        options: JsValue,
        on_text: Function,
        signal: JsValue,
        pause: Option<Function>,
    ) -> Result<Promise, JsError> {
        let messages: Vec<Message> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| bad_options(format!("messages: {}", serde_message(e))))?;
        let web = WebGenerateOptions::from_js(options)?;
        let (options, prune) = (web.to_options()?, web.prune());
        let listener = WebListener { on_text: Some(on_text), signal, on_cpu: self.on_cpu(), pause };
        if runs_alone(&options) {
            return self.with_session(move |mut session| async move {
                let result = session.chat_with(&messages, &options, &prune, listener).await;
                (session, result)
            });
        }
        let lent = self.lend()?;
        let state = Rc::clone(&self.state);
        Ok(future_to_promise(async move {
            // Pruning may score the prompt first (passes of its own, between the batch's steps).
            let prompt = lent.session.chat_prompt(&messages, &options, &prune, &listener).await;
            let (prompt, pruned) = match prompt {
                Ok(ChatStart::Ready { tokens, report }) => (tokens, report),
                Ok(ChatStart::Aborted(generation)) => {
                    give_back(&state, lent);
                    return to_js(&generation).map_err(JsValue::from);
                }
                Err(e) => {
                    give_back(&state, lent);
                    note_device_lost(&e);
                    return Err(js_error(e).into());
                }
            };
            let (promise, reply) = Reply::new();
            join(&state, Join { session: lent, prompt, options, listener, pruned, reply });
            wasm_bindgen_futures::JsFuture::from(promise).await
        }))
    }

    /// A session for a request served with others: the conversation's when it is free, else
    /// a new one. Refused with `busy` while a load or a generation running alone holds the
    /// engine, or when [`MAX_STREAMS`] generations run.
    fn lend(&self) -> Result<Lent, JsError> {
        let mut s = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        let engine = s.engine.clone().ok_or_else(|| bad_options("no model is loaded: call load() first"))?;
        if on_webgpu(&engine) {
            ready_device()?;
        }
        if s.loading {
            return Err(busy("a load is in progress"));
        }
        if s.alone {
            return Err(busy("a generation that runs alone is running"));
        }
        if s.streams >= MAX_STREAMS {
            return Err(busy(format!("{MAX_STREAMS} generations are already running")));
        }
        let lent = match s.session.take() {
            Some(session) => Lent { session, conversation: true },
            None => Lent { session: engine.session(&s.kv).map_err(js_error)?, conversation: false },
        };
        s.streams += 1;
        Ok(lent)
    }

    /// The log-probability `ln p(ids[i] | ids[..i])` of every token after the first, in one
    /// array of `ids.length - 1`: how likely the model finds a given text, teacher-forced (for
    /// perplexity, or comparing two engines on the same tokens). Runs in a scratch cache, so the
    /// conversation is kept; texts longer than the cache slide through it. Takes its turn like
    /// a generation; an aborted `signal` stops it between passes (kind `aborted`).
    pub fn score(&self, ids: Vec<u32>, signal: JsValue) -> Result<Promise, JsError> {
        if ids.len() < 2 {
            return Err(js_error(Error::InvalidPrompt(format!(
                "scoring needs at least two tokens (the first is only context), got {}",
                ids.len()
            ))));
        }
        let listener = WebListener { on_text: None, signal, on_cpu: self.on_cpu(), pause: None };
        self.with_session(move |session| async move {
            let result = session.surprisal_with(&ids, &listener).await;
            let logprobs = result.map(|s| s[1..].iter().map(|&nats| -nats).collect::<Vec<f32>>());
            (session, logprobs)
        })
    }

    /// Lends the conversation's session to `run` (a generation or scoring that runs alone:
    /// nothing else may be running) and resolves to its result. The session comes back whatever the result, so the engine stays usable.
    fn with_session<F, Fut, T>(&self, run: F) -> Result<Promise, JsError>
    where
        F: FnOnce(Session) -> Fut + 'static,
        Fut: std::future::Future<Output = (Session, crate::error::Result<T>)> + 'static,
        T: Serialize,
    {
        let state = Rc::clone(&self.state);
        let session = {
            let mut s = state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
            if s.engine.as_deref().is_some_and(on_webgpu) {
                ready_device()?;
            }
            if s.busy() {
                return Err(busy("a generation is already running"));
            }
            if s.loading {
                return Err(busy("a load is in progress"));
            }
            let session = s.session.take().ok_or_else(|| bad_options("no model is loaded: call load() first"))?;
            s.alone = true;
            session
        };
        Ok(future_to_promise(async move {
            let (session, result) = run(session).await;
            {
                // Nothing borrows the state across an await, so this cannot fail; were it to,
                // the session would be lost, never the flag left set.
                let mut s = state.borrow_mut();
                s.session = Some(session);
                s.alone = false;
            }
            match result {
                Ok(value) => to_js(&value).map_err(JsValue::from),
                Err(e) => {
                    note_device_lost(&e);
                    Err(js_error(e).into())
                }
            }
        }))
    }

    /// Forgets the conversation (the KV cache stays allocated). Refused with `busy` while a
    /// generation runs.
    pub fn reset(&self) -> Result<(), JsError> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        if state.busy() {
            return Err(busy("cannot reset the conversation while a generation runs"));
        }
        if let Some(session) = state.session.as_mut() {
            session.reset();
        }
        Ok(())
    }

    /// Model, cache occupancy, device memory and limits.
    pub fn stats(&self) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        struct Stats {
            loaded: bool,
            generating: bool,
            /// Generations running together now.
            streams: usize,
            model: Option<String>,
            weight_bytes: Option<usize>,
            kv_len: Option<usize>,
            kv_capacity: Option<usize>,
            kv_policy: Option<&'static str>,
            /// Tokens evicted since the conversation began.
            kv_evicted: Option<usize>,
            device_memory_in_use_bytes: Option<u64>,
            device_memory_reserved_bytes: Option<u64>,
            /// The largest buffer the device binds, which caps the KV cache and every matrix.
            max_buffer_bytes: Option<u64>,
            device_lost: bool,
            /// Where the model runs: `"cpu"` or `"webgpu"`.
            device: Option<&'static str>,
            cpu_isa: &'static str,
        }
        let state = self.state.try_borrow().map_err(|_| busy("the engine is busy"))?;
        let on_gpu = state.engine.as_deref().is_some_and(on_webgpu);
        let (memory, limits, lost) = DEVICE.with(|d| match &*d.borrow() {
            DeviceState::Ready(device) if on_gpu => (device.memory_pool_usage(), Some(Limits::of(device)), false),
            DeviceState::Lost(_) => (None, None, true),
            _ => (None, None, false),
        });
        to_js(&Stats {
            loaded: state.engine.is_some(),
            generating: state.busy(),
            streams: state.streams,
            model: state.engine.as_ref().map(|e| e.name().to_string()),
            weight_bytes: state.engine.as_ref().map(|e| e.model().weight_bytes()),
            kv_len: state.session.as_ref().map(|s| s.kv_cache().len()),
            kv_capacity: state.session.as_ref().map(|s| s.kv_cache().capacity()),
            kv_policy: state.session.as_ref().map(|s| s.kv_cache().policy().name()),
            kv_evicted: state.session.as_ref().map(|s| s.kv_cache().evicted()),
            device_memory_in_use_bytes: memory.as_ref().map(|m| m.bytes_in_use),
            device_memory_reserved_bytes: memory.as_ref().map(|m| m.bytes_reserved),
            max_buffer_bytes: limits.map(|l| l.max_buffer_bytes),
            device_lost: lost,
            device: state.engine.as_deref().map(device_name),
            cpu_isa: crate::backend::cpu::Isa::best().name(),
        })
    }

    /// Drops the model and its cache and returns their GPU memory to the device. Refused with
    /// `busy` while a generation runs.
    pub fn unload(&self) -> Result<(), JsError> {
        let mut state = self.state.try_borrow_mut().map_err(|_| busy("the engine is busy"))?;
        if state.busy() {
            return Err(busy("cannot unload while a generation runs"));
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

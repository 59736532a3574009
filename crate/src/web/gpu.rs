//! The WebGPU device of this thread (page or worker): initialized once, remembered when lost,
//! and which device a load names.

use super::*;

thread_local! {
    /// burn's wgpu runtime may be initialized once per thread (page or worker).
    pub(super) static DEVICE: RefCell<DeviceState> = const { RefCell::new(DeviceState::Uninitialized) };
}

pub(super) enum DeviceState {
    Uninitialized,
    Initializing,
    Ready(Device),
    Failed(Error),
    /// The device was lost; this thread's runtime cannot get another one (the TypeScript layer
    /// starts a fresh wasm instance).
    Lost(String),
}

pub(super) fn ready_device() -> Result<Device, JsValue> {
    DEVICE.with(|d| match &*d.borrow() {
        DeviceState::Ready(device) => Ok(device.clone()),
        DeviceState::Failed(e) => Err(js_error(e.clone())),
        DeviceState::Lost(msg) => Err(js_error(Error::DeviceLost(msg.clone()))),
        _ => Err(js_error(Error::Device("WebGPU is not initialized: call init() first".into()))),
    })
}

/// Remembers a lost device, so that every later call says so at once.
pub(super) fn note_device_lost(e: &Error) {
    if let Error::DeviceLost(msg) = e {
        DEVICE.with(|d| *d.borrow_mut() = DeviceState::Lost(msg.clone()));
    }
}

/// Whether this global (window or worker) exposes `navigator.gpu`.
#[cfg(feature = "gpu")]
pub(super) fn has_webgpu() -> bool {
    let global = js_sys::global();
    Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|n| !n.is_undefined())
        .and_then(|n| Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|gpu| !gpu.is_undefined() && !gpu.is_null())
}

/// The burn device a load names: the CPU needs no initialization; WebGPU must have had
/// `init()`.
pub(super) fn web_device(name: &str) -> Result<Device, JsValue> {
    match name {
        "cpu" => Ok(Device::flex()),
        "webgpu" => ready_device(),
        other => Err(bad_options(format!("device must be \"cpu\" or \"webgpu\", got {other:?}"))),
    }
}

/// Whether an engine runs on WebGPU (not the CPU).
pub(super) fn on_webgpu(engine: &Engine) -> bool {
    crate::backend::device::is_cube(engine.device())
}

/// What the page calls the device an engine runs on.
pub(super) fn device_name(engine: &Engine) -> &'static str {
    if on_webgpu(engine) { "webgpu" } else { "cpu" }
}

/// Threads `engine` computes on: the CPU path's pool, or the one thread that drives WebGPU.
pub(super) fn compute_threads(engine: &Engine) -> usize {
    if on_webgpu(engine) { 1 } else { crate::backend::cpu::threads() }
}

/// The activation mode the loaded model runs in: its own on the CPU where this build has the
/// kernels ([`Activations::runs_on`]), f32 on WebGPU.
pub(super) fn running_activations(engine: &Engine) -> Activations {
    match on_webgpu(engine) {
        true => Activations::F32,
        false => engine.model().activations().runs_on(crate::backend::cpu::Isa::best()),
    }
}

thread_local! {
    static GPU_FAULT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread's next WebGPU initialization see a wrong result in its self-check, so that
/// tests can check the refusal (`device_unusable`) and the fallback to the CPU.
#[wasm_bindgen(js_name = "__testBreakGpuSelfCheck")]
pub fn test_break_gpu_self_check() {
    GPU_FAULT.with(|f| f.set(true));
}

/// The fault [`test_break_gpu_self_check`] asked for, once.
#[cfg(feature = "gpu")]
pub(super) fn injected_gpu_fault() -> crate::backend::selfcheck::Fault {
    if GPU_FAULT.with(|f| f.replace(false)) {
        crate::backend::selfcheck::Fault::WrongResult
    } else {
        crate::backend::selfcheck::Fault::None
    }
}

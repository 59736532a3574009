//! The threaded artifact's side of its worker pool (wasm32 built with atomics, no WebGPU).
//!
//! JavaScript starts the pool: it instantiates this module on the engine's worker, then starts
//! a Web Worker per extra thread that instantiates the same module on the same shared memory
//! and calls [`pool_worker`], which never returns. Blocking (a pool wait, a contended lock)
//! traps on a page's main thread, so this artifact runs only inside a worker.

use wasm_bindgen::prelude::*;

use crate::backend::cpu::pool;

/// The shared memory, for the pool's workers to instantiate the module on.
#[wasm_bindgen]
pub fn threads_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// The compiled module, for the pool's workers.
#[wasm_bindgen]
pub fn threads_module() -> JsValue {
    wasm_bindgen::module()
}

/// Sets how many threads the CPU kernels use from the next call on (at least 1): this one and
/// `threads - 1` of the pool's workers (those not started yet leave their share to the others).
#[wasm_bindgen]
pub fn set_threads(threads: usize) {
    pool::set_threads(threads);
}

/// Where a worker's JavaScript stores 1 (`Atomics.store` on an `Int32Array`, at this byte
/// address / 4) when its worker traps, so that the engine panics instead of waiting for it.
#[wasm_bindgen]
pub fn pool_poison_flag() -> usize {
    pool::poison_flag()
}

/// Runs the calling Web Worker as one of the pool's threads, forever.
#[wasm_bindgen]
pub fn pool_worker() {
    pool::enter_as_worker()
}

/// Panics on a pool worker, so that tests can check that the engine survives a worker's trap.
#[wasm_bindgen(js_name = "__testPoolPanic")]
pub fn test_pool_panic() {
    pool::panic_in_worker();
}

/// Microseconds one fork/join on the pool takes: `rounds` jobs of one task per thread, each
/// task waiting until every thread has arrived (so each round needs every worker), back to back
/// as a decode step's matrix products come (workers spinning, not parked). NaN if a round's
/// threads did not all arrive within 50 ms (a worker missing).
#[wasm_bindgen(js_name = "__benchPoolJoin")]
pub fn bench_pool_join(rounds: u32) -> f64 {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let threads = crate::backend::cpu::threads();
    let arrived = AtomicUsize::new(0);
    let missing = AtomicBool::new(false);
    let start = web_time::Instant::now();
    for round in 1..=rounds as usize {
        crate::backend::cpu::for_each(threads, |_| {
            arrived.fetch_add(1, Ordering::AcqRel);
            let since = web_time::Instant::now();
            let mut spins = 0u32;
            while arrived.load(Ordering::Acquire) < round * threads && !missing.load(Ordering::Relaxed) {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096) && since.elapsed().as_millis() > 50 {
                    missing.store(true, Ordering::Relaxed);
                }
            }
        });
        if missing.load(Ordering::Relaxed) {
            return f64::NAN;
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / rounds.max(1) as f64
}

//! Where a forward pass on the CPU spends its time: matmuls, the output head, attention (with
//! RoPE and the cache write), and by difference the rest. Off unless a benchmark turns it on;
//! on the CPU every op has finished when it returns, so wall-clock spans are exact (on a GPU
//! they would time only the queueing, so nothing turns this on there).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use web_time::Instant;

/// A part of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The projections of the blocks.
    Matmul,
    /// The output head (logits).
    Head,
    /// RoPE, the cache write and attention.
    Attention,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Turns timing on or off, and clears what was timed.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
    reset();
}

pub fn reset() {
    NANOS.iter().for_each(|n| n.store(0, Ordering::Relaxed));
}

/// Milliseconds spent in each part since the last reset: `[matmul, head, attention]`.
pub fn totals_ms() -> [f64; 3] {
    NANOS.each_ref().map(|n| n.load(Ordering::Relaxed) as f64 / 1e6)
}

/// Runs `f`, adding its time to `part` when timing is on.
#[inline]
pub fn time<T>(part: Part, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    NANOS[part as usize].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    out
}

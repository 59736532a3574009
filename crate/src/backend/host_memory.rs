//! Host memory as the allocator sees it. wasm memory grows and never shrinks: after an unload
//! its pages hold free blocks that the next load reuses. Counting the pages not yet grown as
//! all that is left refused a second load of any model over ~40% of the address space, also
//! after `unload()`. So on wasm32 every allocation goes through a counting wrapper of the
//! system allocator (dlmalloc), and what a load may still take is the address space less what
//! is allocated now: pages not grown plus free blocks of pages grown.
//!
//! Natively the operating system's own figure stands (`MemAvailable`); the counts are kept
//! there too, for `hearth bench` and the tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes allocated now, and the most allocated at once since the last [`reset_peak`].
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counted.
pub struct Counting;

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes as u64, Relaxed) + bytes as u64;
    PEAK.fetch_max(live, Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes as u64, Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    // Kept out of line: inlined into every allocation site, the wrapper and dlmalloc's entry
    // grew the wasm file by 200 KB.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated now.
pub fn live_bytes() -> u64 {
    LIVE.load(Relaxed)
}

/// The most bytes allocated at once since the last [`reset_peak`] (or the start).
pub fn peak_bytes() -> u64 {
    PEAK.load(Relaxed)
}

/// Starts a new peak at what is allocated now (a load measures its own).
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// The size of wasm memory (what it has grown into), in bytes; `None` natively.
pub fn wasm_memory_bytes() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(core::arch::wasm32::memory_size(0) as u64 * 65_536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        None
    }
}

/// What the allocator can still give on wasm32: the 4 GiB address space less what is
/// allocated now, that is pages not grown yet and free blocks in pages grown. dlmalloc merges
/// neighbouring free blocks, so an unloaded model's buffers become one run again; a heap
/// scattered by what stayed allocated could still fail one large buffer, which the load's
/// largest copies meet with `try_reserve` (a `resource_limit` error, not a trap).
#[cfg(target_arch = "wasm32")]
pub fn bytes_left() -> u64 {
    const ADDRESS_SPACE: u64 = 1 << 32;
    ADDRESS_SPACE.saturating_sub(live_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts follow allocations and frees, realloc included.
    #[test]
    fn counts_follow_allocations() {
        // Other tests allocate concurrently: compare against a margin, with a size far above
        // what they hold.
        const MB: usize = 1 << 20;
        let before = live_bytes();
        let mut v: Vec<u8> = Vec::with_capacity(256 * MB);
        assert!(live_bytes() >= before + 255 * MB as u64);
        v.reserve_exact(512 * MB);
        assert!(live_bytes() >= before + 511 * MB as u64);
        assert!(peak_bytes() >= before + 511 * MB as u64);
        drop(v);
        assert!(live_bytes() < before + 128 * MB as u64);
    }
}

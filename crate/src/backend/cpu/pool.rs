//! One persistent pool of worker threads for the CPU kernels, started on first use.
//!
//! A decode step hands out some 240 small jobs (a matmul each, tens of microseconds), with a
//! few microseconds of single-threaded work between them. rayon's workers go to sleep on a
//! futex between such jobs, and waking them measured 20% of a decode step on this 2-core
//! machine; here a worker spins for a short while after each job (as ggml's thread pool does)
//! and parks only when no job came for [`SPIN`], so a generation runs without system calls and
//! an idle engine costs nothing.
//!
//! In the threaded wasm artifact (wasm32 with atomics) nothing here can start a thread: each
//! worker is a Web Worker the page's JavaScript starts, instantiating this module on the same
//! shared memory and calling [`enter_as_worker`], which never returns. [`set_threads`] says how
//! many of them take part. A worker that traps (a panic, with `panic = "abort"`) cannot tell
//! Rust; its JavaScript sets the flag at [`poison_flag`], and a caller waiting for a job it
//! would never finish panics instead of waiting forever.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use web_time::Instant;

/// How long an idle worker keeps spinning before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// One call's tasks: workers and the caller take indices until none are left.
struct Job {
    /// The caller's closure, valid until `done` reaches `tasks` (the caller waits for that).
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// A task panicked (a bug): the caller panics too instead of waiting forever.
    panicked: AtomicBool,
}

// Safety: `task` is `Sync`, and it is only called while the caller that owns it waits.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Runs tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            // Safety: i < tasks, so the caller is still waiting and the closure alive.
            let run = std::panic::AssertUnwindSafe(|| unsafe { (*self.task)(i) });
            if std::panic::catch_unwind(run).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Pool {
    /// Bumped for every job, so that spinning workers see a new one without a lock.
    epoch: AtomicU64,
    current: Mutex<Option<Arc<Job>>>,
    wake: Condvar,
    /// Where workers left out by [`set_threads`] wait (under `current`'s lock) until they are
    /// let in: apart from `wake`, so that a job never wakes them.
    standby: Condvar,
    sleepers: AtomicUsize,
    /// One job at a time: a second caller waits for the first.
    busy: Mutex<()>,
    /// Workers that take part in jobs: natively every one started; in wasm what
    /// [`set_threads`] asked for (workers that are not there yet leave their share to the
    /// others, since the caller takes tasks too).
    active: AtomicUsize,
    /// Workers that have entered the pool (in wasm), each numbered in order.
    #[cfg(target_family = "wasm")]
    entered: AtomicUsize,
    /// Nonzero once a worker has trapped (set from JavaScript in wasm).
    poisoned: AtomicU32,
}

thread_local! {
    /// Set on the pool's own threads, where a nested call runs inline instead of waiting for
    /// itself.
    static IN_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads that compute: the caller and the workers. `HEARTH_THREADS` overrides the count
/// natively; in wasm it is what [`set_threads`] asked for.
pub fn threads() -> usize {
    pool().active.load(Ordering::Relaxed) + 1
}

/// Sets how many threads compute (at least 1): the caller and `threads - 1` workers, which
/// JavaScript starts and sends to [`enter_as_worker`].
#[cfg(target_family = "wasm")]
pub fn set_threads(threads: usize) {
    let pool = pool();
    let _guard = pool.current.lock().unwrap_or_else(|e| e.into_inner());
    pool.active.store(threads.max(1) - 1, Ordering::Relaxed);
    pool.standby.notify_all();
}

/// The address of the flag a worker's JavaScript sets (to 1, with `Atomics.store`) when its
/// worker traps.
#[cfg(target_family = "wasm")]
pub fn poison_flag() -> usize {
    &pool().poisoned as *const AtomicU32 as usize
}

/// Makes the next worker to take a job panic (tests of a worker's trap).
#[cfg(target_family = "wasm")]
pub fn panic_in_worker() {
    PANIC_NEXT.store(true, Ordering::Relaxed);
}

#[cfg(target_family = "wasm")]
static PANIC_NEXT: AtomicBool = AtomicBool::new(false);

/// Runs this thread as one of the pool's workers, forever.
#[cfg(target_family = "wasm")]
pub fn enter_as_worker() -> ! {
    let pool = pool();
    let index = pool.entered.fetch_add(1, Ordering::SeqCst);
    worker(pool, index)
}

fn new_pool() -> &'static Pool {
    Box::leak(Box::new(Pool {
        epoch: AtomicU64::new(0),
        current: Mutex::new(None),
        wake: Condvar::new(),
        standby: Condvar::new(),
        sleepers: AtomicUsize::new(0),
        busy: Mutex::new(()),
        active: AtomicUsize::new(0),
        #[cfg(target_family = "wasm")]
        entered: AtomicUsize::new(0),
        poisoned: AtomicU32::new(0),
    }))
}

#[cfg(target_family = "wasm")]
fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(new_pool)
}

#[cfg(not(target_family = "wasm"))]
fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("HEARTH_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = new_pool();
        let started = (0..threads - 1)
            .filter(|&i| {
                let spawned =
                    std::thread::Builder::new().name(format!("hearth-cpu-{i}")).spawn(move || worker(pool, i));
                spawned.is_ok()
            })
            .count();
        if started < threads - 1 {
            // Threads that did not start leave their share to the others: jobs still finish,
            // as the caller takes tasks too.
            log::warn!("hearth: not every CPU worker thread could start");
        }
        pool.active.store(threads - 1, Ordering::Relaxed);
        pool
    })
}

fn worker(pool: &'static Pool, index: usize) -> ! {
    IN_POOL.with(|f| f.set(true));
    let mut seen = 0u64;
    loop {
        if index >= pool.active.load(Ordering::Relaxed) {
            // Left out by `set_threads`: wait to be let in, not for jobs.
            let guard = pool.current.lock().unwrap_or_else(|e| e.into_inner());
            let _guard = pool
                .standby
                .wait_while(guard, |_| index >= pool.active.load(Ordering::Relaxed))
                .unwrap_or_else(|e| e.into_inner());
            seen = pool.epoch.load(Ordering::Acquire);
            continue;
        }
        let since = Instant::now();
        let mut spins = 0u32;
        while pool.epoch.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(1024) && since.elapsed() > SPIN {
                let guard = pool.current.lock().unwrap_or_else(|e| e.into_inner());
                pool.sleepers.fetch_add(1, Ordering::SeqCst);
                let _guard = pool
                    .wake
                    .wait_while(guard, |_| pool.epoch.load(Ordering::Acquire) == seen)
                    .unwrap_or_else(|e| e.into_inner());
                pool.sleepers.fetch_sub(1, Ordering::SeqCst);
                break;
            }
        }
        seen = pool.epoch.load(Ordering::Acquire);
        let job = pool.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(job) = job {
            #[cfg(target_family = "wasm")]
            if PANIC_NEXT.swap(false, Ordering::Relaxed) {
                panic!("hearth: panic requested in a CPU worker thread");
            }
            job.work();
        }
    }
}

/// Runs `task(i)` for every `i` in `0..tasks` on the pool and the calling thread; returns when
/// all are done.
pub fn run(tasks: usize, task: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    if pool.poisoned.load(Ordering::Relaxed) != 0 {
        panic!("a CPU worker thread crashed");
    }
    if tasks <= 1 || pool.active.load(Ordering::Relaxed) == 0 || IN_POOL.with(|f| f.get()) {
        (0..tasks).for_each(task);
        return;
    }
    let _one_at_a_time = pool.busy.lock().unwrap_or_else(|e| e.into_inner());
    // Safety: the lifetime is erased only for as long as this function waits for `done`.
    let task: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(task) };
    let job = Arc::new(Job {
        task,
        tasks,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    });
    {
        let mut current = pool.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Some(job.clone());
        pool.epoch.fetch_add(1, Ordering::Release);
    }
    if pool.sleepers.load(Ordering::SeqCst) > 0 {
        pool.wake.notify_all();
    }
    job.work();
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < tasks {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        // A worker that trapped holds its task forever.
        if spins.is_multiple_of(1024) && pool.poisoned.load(Ordering::Relaxed) != 0 {
            panic!("a CPU worker thread crashed");
        }
    }
    // Workers that still hold the job find no task left: drop it from the slot.
    *pool.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    assert!(!job.panicked.load(Ordering::Relaxed), "a CPU kernel task panicked");
}

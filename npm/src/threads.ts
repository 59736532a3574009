/**
 * The threaded artifact: the CPU path on a pool of Web Workers sharing one wasm memory.
 *
 * It needs a cross-origin isolated page (for SharedArrayBuffer) and a worker to run in
 * (waiting on another thread traps on a page's main thread), so the worker engine uses it and
 * the in-page engine never does. The pool's workers instantiate the same module on the same
 * memory and enter the core's pool loop for good; they are started before the first call that
 * waits for them (a worker starts only once its spawner yields). A worker that traps sets the
 * core's poison flag in shared memory, so that the engine panics instead of waiting for it:
 * the instance is then dead, and the worker that holds it is replaced (`worker.ts`).
 */

import { HearthError } from "./errors.js";
import type { Core } from "./instance.js";

/** What the worker engine needs beyond `Core`: the pool's size. */
export interface ThreadedCore extends Core {
  /** Threads the core computes on now. */
  threads: number;
  /** Starts workers until `threads` compute (this one and `threads - 1` workers). */
  setThreads(threads: number): Promise<void>;
  /** Makes a pool worker panic at its next job (tests). */
  testPoolPanic(): void;
  /** Microseconds one hand-off to the pool takes, over `rounds` empty jobs (benchmarks). */
  benchJoin(rounds: number): number;
}

/** The most threads a load may ask for. */
export const MAX_THREADS = 64;

/** The smallest wasm module with a shared memory and an atomic load (as wasm-feature-detect
 * checks threads): a browser that validates it can run the threaded artifact. */
const ATOMIC_MODULE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 5, 4, 1, 3, 1, 1, 10, 11, 1, 9, 0, 65, 0, 254, 16, 2, 0, 26, 11,
]);

/** Why the threaded artifact cannot run here, or null where it can. `forWorker`: asked by a
 * page for the worker engine it runs (the page itself may not wait for threads; its worker may). */
export function threadsUnavailable(forWorker = false): string | null {
  const g = globalThis as unknown as {
    WorkerGlobalScope?: abstract new () => unknown;
    crossOriginIsolated?: boolean;
    SharedArrayBuffer?: unknown;
    Worker?: unknown;
  };
  if (!forWorker && (!g.WorkerGlobalScope || !(globalThis instanceof g.WorkerGlobalScope))) {
    return "the engine runs on the page's main thread, where threads cannot wait (use the worker engine)";
  }
  if (g.crossOriginIsolated !== true) {
    return "the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)";
  }
  if (typeof g.SharedArrayBuffer !== "function") return "this browser has no SharedArrayBuffer";
  if (!forWorker && typeof g.Worker !== "function") return "this browser cannot start workers from a worker";
  try {
    new MessageChannel().port1.postMessage(new SharedArrayBuffer(4));
    if (!WebAssembly.validate(ATOMIC_MODULE)) return "this browser's WebAssembly has no threads";
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true } as WebAssembly.MemoryDescriptor);
  } catch (e) {
    return `shared memory is unavailable: ${e instanceof Error ? e.message : String(e)}`;
  }
  return null;
}

/** The default thread count: every logical core up to 4, half of them beyond (one core of two
 * hyperthreads gains little from its second, and the page and the browser need a core), at
 * most 8 (the memory bandwidth of a laptop is spent by then). */
export function defaultThreads(cores: number = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency ?? 1): number {
  const n = Math.max(1, Math.floor(cores));
  return Math.min(8, n <= 4 ? n : Math.ceil(n / 2));
}

/** Loads the threaded artifact on this worker (its memory is created by the glue, shared, with
 * the module's maximum) and returns its core, with a pool of no workers yet. */
export async function startThreaded(died: (message: string) => void): Promise<ThreadedCore> {
  const glue = await import("../wasm-threads/hearth.js");
  await glue.default();
  glue.set_panic_handler(died);
  const module = glue.threads_module() as WebAssembly.Module;
  const memory = glue.threads_memory() as WebAssembly.Memory;
  const workers: Worker[] = [];
  const start = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const worker = new Worker(new URL("./pool-worker.js", import.meta.url), { type: "module", name: "hearth-pool" });
      workers.push(worker);
      worker.addEventListener("message", (event: MessageEvent<{ type: string; message?: string }>) => {
        if (event.data?.type === "ready") resolve();
        if (event.data?.type === "crashed") died(`a CPU worker thread crashed: ${event.data.message ?? "a trap"}`);
        if (event.data?.type === "failed") reject(new Error(`a CPU worker thread could not start: ${event.data.message}`));
      });
      worker.addEventListener("error", (event: ErrorEvent) => {
        event.preventDefault();
        reject(new Error(`a CPU worker thread could not start: ${event.message || "an error"}`));
      });
      worker.postMessage({ module, memory });
    });
  const core: ThreadedCore = {
    WasmEngine: glue.WasmEngine,
    testPanic: glue.__testPanic,
    testPoolPanic: glue.__testPoolPanic,
    benchJoin: (rounds: number) => glue.__benchPoolJoin(rounds),
    threads: 1,
    async setThreads(threads: number) {
      while (workers.length < threads - 1) await start();
      glue.set_threads(threads);
      core.threads = threads;
    },
  };
  return core;
}

/** How many threads a CPU load runs on, and why. */
export interface ThreadPlan {
  threads: number;
  reason: string;
}

/** The plan for a CPU load asking for `threads` (the `threads` load option; default
 * [`defaultThreads`]): one thread where the threaded artifact cannot run, saying why. */
export function threadPlan(threads: unknown, forWorker = false): ThreadPlan {
  if (threads !== undefined && (typeof threads !== "number" || !Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS)) {
    throw new HearthError("bad_options", `threads must be an integer from 1 to ${MAX_THREADS}, got ${JSON.stringify(threads) ?? typeof threads}`);
  }
  const cores = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency ?? 1;
  const n = threads ?? defaultThreads(cores);
  const why = threads === undefined ? `the default for ${cores} logical core${cores === 1 ? "" : "s"}` : "requested";
  if (n === 1) return { threads: 1, reason: `1 thread (${why})` };
  const unavailable = threadsUnavailable(forWorker);
  if (unavailable) return { threads: 1, reason: `1 thread: ${unavailable}` };
  return { threads: n, reason: `${n} threads (${why})` };
}

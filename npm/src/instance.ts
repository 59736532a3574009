/** The wasm instances of this realm (page or worker): loaded once each, shared by its engines,
 * replaced after a crash or a lost device. */

import initWasm, {
  WasmEngine,
  __testBreakGpuSelfCheck,
  __testPanic,
  __wbg_reset_state_async,
  set_panic_handler,
} from "../wasm/hearth.js";
import { HearthError, isTrap, toHearthError } from "./errors.js";
import { type ThreadedCore, startThreaded } from "./threads.js";

/** What an engine on an instance is told when it dies. */
export interface InstanceUser {
  onInstanceDied(error: HearthError, instance: Instance): void;
}

/** The artifact an instance runs: the default one (WebGPU and the CPU path on one thread), or
 * the threaded one (the CPU path on a pool of workers; in a worker only). */
export type Artifact = "single" | "threads";

/** The calls an engine makes on either artifact's glue (the engine class as `object`, so that
 * the package's declarations never reach the glue's types: the seat knows it). */
export type Core = {
  WasmEngine: new () => object;
  testPanic(): void;
};

/**
 * A wasm instance of this realm, shared by its engines. The core is built with
 * `panic = "abort"`, so a panic (or any other trap) kills the instance: every engine on it is
 * told at once (a panic through the core's panic handler, other traps through the error that
 * reaches the caller or the global error handlers), rejects what it was doing, and the next
 * `load` replaces the instance with a fresh one. The default artifact is replaced in place
 * (wasm-bindgen's `__wbg_reset_state`, made asynchronous by `patch-glue.mjs`: a page's main
 * thread may not instantiate it synchronously). The threaded one cannot be: its memory is
 * shared with its pool, so the worker that holds it is replaced (`worker.ts`). A lost GPU
 * device is handled as a crash: this thread's runtime cannot get another device.
 */
export class Instance {
  /** The core loading or loaded (once per realm). */
  private core: Promise<Core> | null = null;
  /** The core, once loaded. */
  private started: Core | null = null;
  /** Bumped each time the instance is replaced; engines compare it with their own. */
  epoch = 0;
  /** WebGPU initialized on this instance. */
  device: Promise<unknown> | null = null;
  /** Why the current instance is unusable, if it is. */
  dead: HearthError | null = null;
  /** Engines to tell when it dies (weakly held: an engine the page dropped is not kept). */
  engines = new Set<WeakRef<InstanceUser>>();
  /** Called once when this instance dies (the worker replaces itself for the threaded one). */
  onDeath: ((error: HearthError) => void) | null = null;

  constructor(
    readonly artifact: Artifact,
    private readonly start: (died: (message: string) => void) => Promise<Core>,
    private readonly reset: ((died: (message: string) => void) => Promise<void>) | null,
  ) {}

  /** Marks the instance dead (once) and tells every engine on it. */
  died(error: HearthError): void {
    if (this.dead) return;
    this.dead = error;
    for (const ref of this.engines) {
      const engine = ref.deref();
      if (engine) engine.onInstanceDied(error, this);
      else this.engines.delete(ref);
    }
    this.onDeath?.(error);
  }

  private panicked = (message: string) => {
    this.died(new HearthError("engine_crashed", `the engine crashed: ${message}; load a model again`));
  };

  /** The instance, ready for a new engine: loaded once, replaced after a crash. */
  async live(webgpu: boolean): Promise<{ epoch: number; core: Core }> {
    this.core ??= this.start(this.panicked).catch((e: unknown) => {
      this.core = null;
      throw e;
    });
    const core = await this.core;
    this.started = core;
    if (this.dead) {
      if (!this.reset) throw this.dead;
      await this.reset(this.panicked);
      this.epoch += 1;
      this.device = null;
      this.dead = null;
    }
    const epoch = this.epoch;
    if (webgpu) {
      if (breakGpu && this.artifact === "single" && !this.device) {
        breakGpu = false;
        __testBreakGpuSelfCheck();
      }
      // One WebGPU initialization per instance; engines created at the same time share it.
      this.device ??= (new core.WasmEngine() as WasmEngine).init().catch((e: unknown) => {
        this.device = null;
        throw e;
      });
      await this.device;
    }
    return { epoch, core };
  }

  /** The core once loaded, while it is alive. */
  loaded(): Core | null {
    return this.dead ? null : this.started;
  }
}

/** A trap inside a task the core runs by itself (a generation's future) surfaces only as an
 * uncaught error of the realm: every instance with an engine on it is taken as dead (which one
 * trapped cannot be told; an engine holds a model on one instance only). */
function watchForTraps(): void {
  interface Event {
    error?: unknown;
    reason?: unknown;
    preventDefault(): void;
  }
  const scope = globalThis as unknown as { addEventListener?: (type: string, listener: (event: Event) => void) => void };
  const onError = (event: Event, e: unknown) => {
    if (isTrap(e)) {
      for (const i of [single, threaded]) if (i.engines.size > 0) i.died(toHearthError(e));
      // The threaded instance's death has been reported (its worker is replaced, `worker.ts`):
      // the trap is not also an error of the page.
      if (threaded.dead) event.preventDefault();
    }
    // Callbacks the dead instance had scheduled (a GPU readback, a timer) fire into the new one
    // and are refused by the glue: expected after a crash, and nothing to report.
    if (e instanceof Error && e.message === "Cannot invoke closure from previous WASM instance") event.preventDefault();
  };
  scope.addEventListener?.("error", (event) => onError(event, event.error));
  scope.addEventListener?.("unhandledrejection", (event) => onError(event, event.reason));
}

let watching = false;
function watchOnce(): void {
  if (!watching) watchForTraps();
  watching = true;
}

const singleCore: Core = { WasmEngine, testPanic: __testPanic };

/** The default artifact's instance. */
export const single = new Instance(
  "single",
  async (died) => {
    await initWasm();
    set_panic_handler(died);
    watchOnce();
    return singleCore;
  },
  async (died) => {
    await __wbg_reset_state_async();
    set_panic_handler(died);
  },
);

/** The threaded artifact's instance (in a worker only: see `threads.ts`). */
export const threaded = new Instance(
  "threads",
  async (died) => {
    const core = await startThreaded(died);
    watchOnce();
    return core;
  },
  null,
);

/** The threaded instance's core while it is loaded and alive (for its pool). */
export function threadedStarted(): ThreadedCore | null {
  return threaded.loaded() as ThreadedCore | null;
}

/** Flow control of generations, by their signal: awaited before each step. The worker sets one
 * so that it never runs more than a token ahead of what the page has received (an abort or a
 * `break` from the page then lands within a token, however fast tokens come).
 * @internal */
export const pauses = new WeakMap<AbortSignal, () => Promise<void>>();

let breakGpu = false;

/** Makes the next WebGPU initialization in this realm see a wrong result in the core's
 * self-check (tests of `device_unusable` and the fallback to the CPU).
 * @internal */
export function testBreakGpuSelfCheck(): void {
  breakGpu = true;
}

/** Panics the default artifact's core on purpose, so that tests can check recovery from a
 * crashed engine.
 * @internal */
export function testPanic(): void {
  try {
    __testPanic();
  } catch (e) {
    single.died(toHearthError(e));
  }
}

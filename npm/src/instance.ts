/** The wasm instance of this realm (page or worker): loaded once, shared by its engines,
 * replaced after a crash or a lost device. */

import initWasm, { WasmEngine, __testPanic, __wbg_reset_state_async, set_panic_handler } from "../wasm/hearth.js";
import { HearthError, isTrap, toHearthError } from "./errors.js";

/** What an engine on the instance is told when it dies. */
export interface InstanceUser {
  onInstanceDied(error: HearthError): void;
}

/**
 * The wasm instance of this realm (page or worker), shared by its engines. The core is built
 * with `panic = "abort"`, so a panic (or any other trap) kills the instance: every engine on it
 * is told at once (a panic through the core's panic handler, other traps through the error that
 * reaches the caller or the global error handlers), rejects what it was doing, and the next
 * `load` replaces the instance with a fresh one (wasm-bindgen's `__wbg_reset_state`, made
 * asynchronous by `patch-glue.mjs`: a page's main thread may not instantiate it synchronously).
 * A lost GPU device is handled the same way: this thread's runtime cannot get another device.
 */
export const instance = {
  /** The module loaded (once per realm). */
  module: null as Promise<unknown> | null,
  /** Bumped each time the instance is replaced; engines compare it with their own. */
  epoch: 0,
  /** WebGPU initialized on this instance. */
  device: null as Promise<unknown> | null,
  /** Why the current instance is unusable, if it is. */
  dead: null as HearthError | null,
  /** Engines to tell when it dies (weakly held: an engine the page dropped is not kept). */
  engines: new Set<WeakRef<InstanceUser>>(),
};

/** Marks the instance dead (once) and tells every engine on it. */
export function instanceDied(error: HearthError): void {
  if (instance.dead) return;
  instance.dead = error;
  for (const ref of instance.engines) {
    const engine = ref.deref();
    if (engine) engine.onInstanceDied(error);
    else instance.engines.delete(ref);
  }
}

function panicHandler(message: string): void {
  instanceDied(new HearthError("engine_crashed", `the engine crashed: ${message}; load a model again`));
}

/** A trap inside a task the core runs by itself (a generation's future) surfaces only as an
 * uncaught error of the realm. */
function watchForTraps(): void {
  interface Event {
    error?: unknown;
    reason?: unknown;
    preventDefault(): void;
  }
  const scope = globalThis as unknown as { addEventListener?: (type: string, listener: (event: Event) => void) => void };
  const onError = (event: Event, e: unknown) => {
    if (isTrap(e)) instanceDied(toHearthError(e));
    // Callbacks the dead instance had scheduled (a GPU readback, a timer) fire into the new one
    // and are refused by the glue: expected after a crash, and nothing to report.
    if (e instanceof Error && e.message === "Cannot invoke closure from previous WASM instance") event.preventDefault();
  };
  scope.addEventListener?.("error", (event) => onError(event, event.error));
  scope.addEventListener?.("unhandledrejection", (event) => onError(event, event.reason));
}

/** The wasm instance, ready for a new engine: loaded once, replaced after a crash. */
export async function liveInstance(webgpu: boolean): Promise<number> {
  if (!instance.module) {
    instance.module = initWasm().then(() => {
      set_panic_handler(panicHandler);
      watchForTraps();
    });
  }
  await instance.module;
  if (instance.dead) {
    await __wbg_reset_state_async();
    set_panic_handler(panicHandler);
    instance.epoch += 1;
    instance.device = null;
    instance.dead = null;
  }
  const epoch = instance.epoch;
  if (webgpu) {
    // One WebGPU initialization per instance; engines created at the same time share it.
    instance.device ??= new WasmEngine().init().catch((e: unknown) => {
      instance.device = null;
      throw e;
    });
    await instance.device;
  }
  return epoch;
}

/** Flow control of generations, by their signal: awaited before each step. The worker sets one
 * so that it never runs more than a token ahead of what the page has received (an abort or a
 * `break` from the page then lands within a token, however fast tokens come).
 * @internal */
export const pauses = new WeakMap<AbortSignal, () => Promise<void>>();

/** Panics the wasm core on purpose, so that tests can check recovery from a crashed engine.
 * @internal */
export function testPanic(): void {
  try {
    __testPanic();
  } catch (e) {
    instanceDied(toHearthError(e));
  }
}

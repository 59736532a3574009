/** An engine's seat on the wasm instance (see `instance.ts`). Kept out of `instance.ts` so that
 * the package's declarations never reach the wasm glue's types: only an engine's private field
 * holds one. */

import { WasmEngine } from "../wasm/hearth.js";
import { HearthError, toHearthError } from "./errors.js";
import { type InstanceUser, instance, instanceDied, liveInstance } from "./instance.js";

/** An engine's seat on the instance: its wasm engine while the instance lives, start-up (once,
 * shared by the calls made at the same time), and crash recovery: a trap or a lost device
 * rejects every call in flight, tells the engine (`onDied`), and the next start takes a fresh
 * instance. Held privately by the engine, so the package's types never name the wasm glue's. */
export class InstanceSeat implements InstanceUser {
  wasm: WasmEngine | null = null;
  /** The instance epoch `wasm` belongs to. */
  private epoch = -1;
  /** The first call's start-up, shared by calls made at the same time. */
  private starting: Promise<WasmEngine> | null = null;
  /** Why this engine cannot run until the next load (a crash, a lost device). */
  broken: HearthError | null = null;
  /** Rejecters of the calls in flight, for when the instance dies under them. */
  private inFlight = new Set<(e: HearthError) => void>();

  constructor(private readonly onDied: (error: HearthError) => void) {
    instance.engines.add(new WeakRef(this));
  }

  /** @internal Called when the wasm instance dies: everything in flight rejects. */
  onInstanceDied(error: HearthError): void {
    this.broken = error;
    this.wasm = null;
    for (const reject of this.inFlight) reject(error);
    this.inFlight.clear();
    this.onDied(error);
  }

  /** `promise`, or the error of the instance dying while it runs (a dead instance never
   * settles what it started). */
  guard<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fail = (e: HearthError) => reject(e);
      this.inFlight.add(fail);
      promise.then(
        (v) => (this.inFlight.delete(fail), resolve(v)),
        (e: unknown) => (this.inFlight.delete(fail), reject(this.failure(e))),
      );
    });
  }

  /** Turns what a wasm call threw into a `HearthError`, noting traps and lost devices. */
  failure(e: unknown): HearthError {
    const error = toHearthError(e);
    if (error.kind === "engine_crashed" || error.kind === "device_lost") {
      instanceDied(error);
      this.onInstanceDied(error);
    }
    return error;
  }

  /** Starts the wasm core (and WebGPU, when `webgpu`) once, for the first call and every call
   * made at the same time; after a crash or a lost device, on a fresh instance. */
  ready(webgpu: boolean): Promise<WasmEngine> {
    const wasm = this.live();
    if (wasm && !webgpu) return Promise.resolve(wasm);
    if (wasm && instance.device) return instance.device.then(() => wasm);
    this.starting ??= this.start(webgpu).finally(() => {
      this.starting = null;
    });
    return this.starting;
  }

  private async start(webgpu: boolean): Promise<WasmEngine> {
    // A live engine that now needs WebGPU keeps its model (a failed load must not lose it).
    const live = this.live();
    try {
      this.epoch = await liveInstance(webgpu);
    } catch (e) {
      throw toHearthError(e);
    }
    this.wasm = live ?? new WasmEngine();
    this.broken = null;
    return this.wasm;
  }

  /** The engine's wasm side, while it is on the current, working instance. */
  live(): WasmEngine | null {
    const ok = this.wasm && !this.broken && !instance.dead && this.epoch === instance.epoch;
    return ok ? this.wasm : null;
  }
}

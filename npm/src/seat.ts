/** An engine's seat on a wasm instance (see `instance.ts`). Kept out of `instance.ts` so that
 * the package's declarations never reach the wasm glue's types: only an engine's private field
 * holds one. */

import type { WasmEngine } from "../wasm/hearth.js";
import { HearthError, toHearthError } from "./errors.js";
import { type Artifact, type Instance, type InstanceUser, single, threaded } from "./instance.js";

/** Where a seat sat before it moved to another artifact, until the load that moved it settles. */
interface Place {
  instance: Instance;
  wasm: WasmEngine | null;
  epoch: number;
}

/** An engine's seat on an instance: its wasm engine while the instance lives, start-up (once,
 * shared by the calls made at the same time), and crash recovery: a trap or a lost device
 * rejects every call in flight, tells the engine (`onDied`), and the next start takes a fresh
 * instance. A load may move the seat to the other artifact (the CPU path on threads, or back);
 * the model on the old one is dropped only once the new load succeeds (`settle`). Held
 * privately by the engine, so the package's types never name the wasm glue's. */
export class InstanceSeat implements InstanceUser {
  wasm: WasmEngine | null = null;
  /** The instance `wasm` lives on. */
  instance: Instance = single;
  /** The instance epoch `wasm` belongs to. */
  private epoch = -1;
  /** The seat before a load moved it, until that load settles. */
  private previous: Place | null = null;
  /** The first call's start-up, shared by calls made at the same time. */
  private starting: Promise<WasmEngine> | null = null;
  /** Why this engine cannot run until the next load (a crash, a lost device). */
  broken: HearthError | null = null;
  /** Rejecters of the calls in flight, for when the instance dies under them. */
  private inFlight = new Set<(e: HearthError) => void>();

  constructor(private readonly onDied: (error: HearthError) => void) {
    for (const i of [single, threaded]) i.engines.add(new WeakRef(this));
  }

  /** @internal Called when a wasm instance dies: if it is this seat's, everything in flight
   * rejects. */
  onInstanceDied(error: HearthError, instance: Instance): void {
    if (this.previous?.instance === instance) this.previous.wasm = null;
    if (instance !== this.instance) return;
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
      const instance = this.instance;
      instance.died(error);
      this.onInstanceDied(error, instance);
    }
    return error;
  }

  /** Starts the wasm core of `artifact` (and WebGPU, when `webgpu`) once, for the first call
   * and every call made at the same time; after a crash or a lost device, on a fresh instance. */
  ready(webgpu: boolean, artifact: Artifact = "single"): Promise<WasmEngine> {
    const target = artifact === "threads" ? threaded : single;
    const wasm = this.live();
    if (wasm && target === this.instance) {
      if (!webgpu) return Promise.resolve(wasm);
      if (target.device) return target.device.then(() => wasm);
    }
    this.starting ??= this.start(webgpu, target).finally(() => {
      this.starting = null;
    });
    return this.starting;
  }

  private async start(webgpu: boolean, target: Instance): Promise<WasmEngine> {
    // A live engine that now needs WebGPU keeps its model (a failed load must not lose it).
    const live = target === this.instance ? this.live() : null;
    let started: { epoch: number; core: { WasmEngine: new () => object } };
    try {
      started = await target.live(webgpu);
    } catch (e) {
      throw toHearthError(e);
    }
    if (target !== this.instance) {
      this.previous ??= { instance: this.instance, wasm: this.live(), epoch: this.epoch };
      this.instance = target;
    }
    this.epoch = started.epoch;
    this.wasm = live ?? (new started.core.WasmEngine() as WasmEngine);
    this.broken = null;
    return this.wasm;
  }

  /** After a load: where it succeeded, the model on the artifact it left is dropped; where it
   * failed, the seat goes back to the artifact (and the model) it had. */
  settle(loaded: boolean): void {
    const previous = this.previous;
    this.previous = null;
    if (!previous) return;
    if (loaded) {
      try {
        previous.wasm?.unload();
      } catch {
        // The old instance is left as it is: a failure there is not this load's.
      }
      return;
    }
    this.instance = previous.instance;
    this.wasm = previous.wasm;
    this.epoch = previous.epoch;
    this.broken = null;
  }

  /** The engine's wasm side, while it is on the current, working instance. */
  live(): WasmEngine | null {
    const ok = this.wasm && !this.broken && !this.instance.dead && this.epoch === this.instance.epoch;
    return ok ? this.wasm : null;
  }

  /** Panics the core this seat is on (tests). */
  async testPanic(): Promise<void> {
    const core = this.instance.loaded();
    try {
      core?.testPanic();
    } catch (e) {
      this.failure(e);
    }
  }
}

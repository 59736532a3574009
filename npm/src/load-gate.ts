/** Loads against everything else on one engine. While a load holds the engine (from fetching
 * the file to the model's upload) calls wait here, and go on in order when it ends; an aborted
 * signal takes a call out of the line. Which generations run together, what runs alone and
 * what waits for room is the core's decision (its scheduler keeps that line); this only keeps
 * calls off an engine whose model is being replaced. */

import { HearthError, abortError } from "./errors.js";

interface Waiting {
  start: () => void;
  reject: (e: HearthError) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class LoadGate {
  /** A load holds the engine. */
  private loading = false;
  private waiting: Waiting[] = [];

  /** Calls waiting for a load to end. */
  get queued(): number {
    return this.waiting.length;
  }

  get held(): boolean {
    return this.loading;
  }

  /** Refuses with `busy` while a load holds the engine. */
  idle(doing: string): void {
    if (this.loading) throw new HearthError("busy", `cannot ${doing} while a model loads`);
  }

  /** Holds the engine for a load until `release`. */
  hold(doing: string): void {
    this.idle(doing);
    this.loading = true;
  }

  /** Ends the load: what waited goes on, in order. */
  release(): void {
    this.loading = false;
    for (const w of this.waiting.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.start();
    }
  }

  /** Runs `work` now, or when the load that holds the engine ends; rejects with
   * `abortError()` if `signal` aborts while it waits. */
  pass<T>(signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    if (!this.loading) return work();
    return new Promise<T>((resolve, reject) => {
      const w: Waiting = { start: () => work().then(resolve, reject), reject, signal };
      if (signal) {
        w.onAbort = () => {
          const at = this.waiting.indexOf(w);
          if (at >= 0) {
            this.waiting.splice(at, 1);
            reject(abortError());
          }
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiting.push(w);
    });
  }

  /** Rejects everything waiting with `error` and ends the load (the instance died). */
  clear(error: HearthError): void {
    for (const w of this.waiting.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.reject(error);
    }
    this.loading = false;
  }
}

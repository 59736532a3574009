/** Whose turn it is on one engine: generations run beside each other up to the model's
 * `max_streams` (the core decodes them as one batch), work that runs alone (speculative
 * decoding, early exit, scoring) when nothing else runs, and nothing while a model loads.
 * Waiting work starts in order; an aborted signal takes it out of the line. */

import { HearthError, abortError } from "./errors.js";

interface Waiting {
  alone: boolean;
  start: () => void;
  reject: (e: HearthError) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class Turns {
  /** A load holds the engine. */
  loading = false;
  /** Work that runs alone holds the engine. */
  private alone = false;
  /** Generations running together. */
  private streams = 0;
  private waiting: Waiting[] = [];
  /** Bumped by `clear`: work that ends after it does not count itself out again. */
  private epoch = 0;

  constructor(private readonly limit: () => number) {}

  /** Requests waiting for their turn. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Refuses with `busy` while anything runs or waits. */
  idle(doing: string): void {
    if (this.loading) throw new HearthError("busy", `cannot ${doing} while a model loads`);
    if (this.alone || this.streams || this.waiting.length) throw new HearthError("busy", `cannot ${doing} while a generation runs`);
  }

  /** Runs `work` when its turn comes; rejects with `abortError()` if `signal` aborts first. */
  take<T>(signal: AbortSignal | undefined, alone: boolean, work: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError());
      const start = () => {
        if (alone) this.alone = true;
        else this.streams += 1;
        const epoch = this.epoch;
        work()
          .then(resolve, reject)
          .finally(() => {
            if (epoch === this.epoch) {
              if (alone) this.alone = false;
              else this.streams = Math.max(0, this.streams - 1);
            }
            this.next();
          });
      };
      const w: Waiting = { alone, start, reject, signal };
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
      this.next();
    });
  }

  /** Starts waiting work in order while it fits. */
  next(): void {
    while (this.waiting.length && !this.loading && !this.alone) {
      const w = this.waiting[0];
      if (w.alone ? this.streams > 0 : this.streams >= this.limit()) return;
      this.waiting.shift();
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.start();
    }
  }

  /** Rejects everything waiting with `error` and forgets what runs (the instance died). */
  clear(error: HearthError): void {
    for (const w of this.waiting.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.reject(error);
    }
    this.loading = this.alone = false;
    this.streams = 0;
    this.epoch += 1;
  }
}

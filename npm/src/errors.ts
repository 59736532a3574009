/** Typed errors: every failure is a `HearthError` with a stable `kind`; an abort is also
 * named `AbortError`, as `fetch` does. */

import { CORE_ERROR_KINDS } from "./wire.js";

/** Every kind of failure: the wasm core's (`CORE_ERROR_KINDS`, generated from its `Error`:
 * `busy` means another call is running that this one would disturb and nothing was changed;
 * `resource_limit` a size past a limit of the device or of wasm memory, nothing allocated;
 * `callback` the `onText` callback threw, its error the `cause`; `device_lost` the GPU device
 * was lost and `load()` again starts on a new one), and this package's own. */
export const ERROR_KINDS = [
  ...CORE_ERROR_KINDS,
  "no_webgpu",
  "network",
  /** The engine's wasm instance trapped, or its worker died; `load()` again starts a new one. */
  "engine_crashed",
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

const KINDS: ReadonlySet<string> = new Set<string>(ERROR_KINDS);

export class HearthError extends Error {
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = kind === "aborted" ? "AbortError" : "HearthError";
  }
}

/** The plain form that crosses `postMessage`. */
export interface SerializedError {
  kind: ErrorKind;
  message: string;
}

export function serializeError(e: unknown): SerializedError {
  const err = toHearthError(e);
  return { kind: err.kind, message: err.message };
}

export function deserializeError(e: SerializedError): HearthError {
  return new HearthError(e.kind, e.message);
}

/** Turns anything thrown (the wasm core's errors, which carry their `kind` as a property, a
 * DOMException, a trap of a crashed wasm instance) into a `HearthError`. */
export function toHearthError(e: unknown): HearthError {
  if (e instanceof HearthError) return e;
  if (e instanceof DOMException && e.name === "AbortError") return new HearthError("aborted", "aborted");
  if (isTrap(e)) {
    return new HearthError("engine_crashed", `the engine crashed (${(e as Error).message}); load a model again`);
  }
  const message = e instanceof Error ? e.message : String(e);
  const kind = e instanceof Error ? (e as Error & { kind?: unknown }).kind : undefined;
  if (typeof kind === "string" && KINDS.has(kind)) return new HearthError(kind as ErrorKind, message);
  return new HearthError("device", message);
}

export function abortError(): HearthError {
  return new HearthError("aborted", "aborted");
}

export function busyError(message: string): HearthError {
  return new HearthError("busy", message);
}

/** Whether `e` is what a trapped wasm instance throws. */
export function isTrap(e: unknown): boolean {
  return typeof WebAssembly !== "undefined" && e instanceof WebAssembly.RuntimeError;
}

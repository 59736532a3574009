/** Typed errors: every failure is a `HearthError` with a stable `kind`; an abort is also
 * named `AbortError`, as `fetch` does. */

/** Every kind of failure, as the wasm core and this package name them. */
export const ERROR_KINDS = [
  "model_load",
  "tokenizer",
  "template",
  "bad_prompt",
  "kv_cache_full",
  "bad_options",
  "device",
  "aborted",
  "no_webgpu",
  "network",
  /** Another call is running that this one would disturb; nothing was changed. */
  "busy",
  /** A size is past a limit of the device or of wasm memory; nothing was allocated. */
  "resource_limit",
  /** The `onText` callback threw; the error it threw is the `cause`. */
  "callback",
  /** The GPU device was lost; `load()` again starts on a new one. */
  "device_lost",
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

/** Turns anything thrown (a wasm `JsError` whose message starts with `kind: `, a DOMException,
 * a trap of a crashed wasm instance) into a `HearthError`. */
export function toHearthError(e: unknown): HearthError {
  if (e instanceof HearthError) return e;
  if (e instanceof DOMException && e.name === "AbortError") return new HearthError("aborted", "aborted");
  if (isTrap(e)) {
    return new HearthError("engine_crashed", `the engine crashed (${(e as Error).message}); load a model again`);
  }
  const message = e instanceof Error ? e.message : String(e);
  const colon = message.indexOf(": ");
  const kind = colon > 0 ? message.slice(0, colon) : "";
  if (KINDS.has(kind)) return new HearthError(kind as ErrorKind, message.slice(colon + 2));
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

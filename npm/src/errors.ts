/** Typed errors: every failure is a `HearthError` with a stable `kind`; an abort is also
 * named `AbortError`, as `fetch` does. */

export type ErrorKind =
  | "model_load"
  | "tokenizer"
  | "template"
  | "bad_prompt"
  | "kv_cache_full"
  | "bad_options"
  | "device"
  | "aborted"
  | "no_webgpu"
  | "network"
  | "engine_crashed";

const KINDS: ReadonlySet<string> = new Set<ErrorKind>([
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
  "engine_crashed",
]);

export class HearthError extends Error {
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string) {
    super(message);
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
  if (typeof WebAssembly !== "undefined" && e instanceof WebAssembly.RuntimeError) {
    return new HearthError("engine_crashed", `the engine crashed (${e.message}); reload the page`);
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

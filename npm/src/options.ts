/** The public options as the wasm core takes them. The core validates them (unknown keys,
 * types, ranges) and says what is wrong; this layer only renames and drops what is its own
 * (signals, callbacks, the OpenAI request's messages and stream flag). */

import { HearthError } from "./errors.js";
import type { GenerateRequest, KvOptions } from "./wire.js";
import type { LoadOptions } from "./types.js";

/** Every key a load takes: the core's (weights, the KV cache, pruning) and this layer's. */
const LOAD_KEYS: readonly string[] = [
  "device",
  "threads",
  "weights",
  "activations",
  "kv_capacity",
  "kv_policy",
  "kv_sinks",
  "kv_recent",
  "cache",
  "prune_weights",
  "onProgress",
  "signal",
];

/** A generation's options as the core reads them: every key but `own` passed on as it is
 * (unknown ones too, for the core to refuse), `stop` as a list. */
export function generateRequest(options: object, own: readonly string[]): GenerateRequest {
  if (typeof options !== "object" || options === null) throw new HearthError("bad_options", "options must be an object");
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || own.includes(key)) continue;
    out[key] = key === "stop" && typeof value === "string" ? [value] : value;
  }
  return out as GenerateRequest;
}

/** The KV cache options of a load, under the core's names; only those given (the core reads
 * an `undefined` field as a value, not a default). Unknown load keys are refused here, since
 * the load's options object is this layer's. */
export function kvRequest(options: LoadOptions): Partial<KvOptions> {
  for (const key of Object.keys(options)) {
    if (!LOAD_KEYS.includes(key)) throw new HearthError("bad_options", `unknown load option ${JSON.stringify(key)}`);
  }
  const kv = { capacity: options.kv_capacity, policy: options.kv_policy, sinks: options.kv_sinks, recent: options.kv_recent };
  return Object.fromEntries(Object.entries(kv).filter(([, v]) => v !== undefined)) as Partial<KvOptions>;
}

/** `ids` as the core takes them, or a `bad_options` error. */
export function tokenIds(ids: unknown): Uint32Array {
  if (!Array.isArray(ids) || !ids.every((i) => Number.isInteger(i) && i >= 0 && i < 2 ** 32)) {
    throw new HearthError("bad_options", "ids must be an array of non-negative integers");
  }
  return Uint32Array.from(ids as number[]);
}

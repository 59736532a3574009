/** The engine in this thread (a page or a Web Worker), on the wasm core and WebGPU. */

import initWasm, { WasmEngine, __testPanic, __wbg_reset_state_async, set_panic_handler } from "../wasm/hearth.js";
import { AsyncQueue } from "./queue.js";
import { completions } from "./completions.js";
import { HearthError, abortError, busyError, isTrap, toHearthError } from "./errors.js";
import { readModel } from "./loader.js";
import { DEVICES, resolveDevice } from "./device.js";
import { EXIT_MEASURES, KV_POLICIES, PRUNE_METHODS, SPECULATIVE_METHODS, WEIGHT_FORMATS } from "./types.js";
import type {
  AdapterInfo,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletions,
  Completions,
  ChatMessage,
  DraftInfo,
  DraftLoadOptions,
  EngineApi,
  EngineStats,
  FinishReason,
  GenerateOptions,
  GenerateResult,
  LoadOptions,
  ModelInfo,
  ModelSource,
  PruneReport,
  Timings,
  Usage,
} from "./types.js";

/** What the wasm core resolves a generation to. */
interface RawGeneration {
  tokens: number[];
  text: string;
  finish_reason: FinishReason;
  stats: {
    prompt_tokens: number;
    reused_tokens: number;
    generated_tokens: number;
    prefill_ms: number;
    decode_ms: number;
    time_to_first_token_ms: number;
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
    kv_len: number;
    kv_capacity: number;
    evicted_tokens: number;
    pruned_tokens: number;
    draft_tokens: number;
    accepted_tokens: number;
    acceptance_rate: number;
    mean_layers: number;
  };
  pruned?: PruneReport | null;
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
const instance = {
  /** The module loaded (once per realm). */
  module: null as Promise<unknown> | null,
  /** Bumped each time the instance is replaced; engines compare it with their own. */
  epoch: 0,
  /** WebGPU initialized on this instance. */
  device: null as Promise<unknown> | null,
  /** Why the current instance is unusable, if it is. */
  dead: null as HearthError | null,
  /** Engines to tell when it dies (weakly held: an engine the page dropped is not kept). */
  engines: new Set<WeakRef<HearthEngine>>(),
};

/** Marks the instance dead (once) and tells every engine on it. */
function instanceDied(error: HearthError): void {
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
async function liveInstance(webgpu: boolean): Promise<number> {
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

const LOAD_KEYS = [
  "device",
  "weights",
  "kv_capacity",
  "kv_policy",
  "kv_sinks",
  "kv_recent",
  "cache",
  "prune_weights",
  "onProgress",
  "signal",
] as const;
const SAMPLING_KEYS = [
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "repetition_penalty",
  "seed",
  "stop",
  "speculative",
  "early_exit",
] as const;
const CHAT_KEYS = [...SAMPLING_KEYS, "prune_budget", "prune_method"] as const;

/** Sampling options as the wasm core takes them; unknown or mistyped options are refused. */
function wasmOptions(
  options: object,
  allowed: readonly string[],
  known: readonly string[] = SAMPLING_KEYS,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (allowed.includes(key)) continue;
    if (!known.includes(key)) {
      throw new HearthError("bad_options", `unknown option ${JSON.stringify(key)}`);
    }
    if (key === "prune_method") {
      if (typeof value !== "string" || !(PRUNE_METHODS as readonly string[]).includes(value)) {
        throw new HearthError("bad_options", `prune_method must be one of ${PRUNE_METHODS.join(", ")}`);
      }
      out[key] = value;
    } else if (key === "speculative") {
      out.speculative = nestedOptions("speculative", value, SPECULATIVE_CHECKS);
    } else if (key === "early_exit") {
      out.early_exit = nestedOptions("early_exit", value, EARLY_EXIT_CHECKS, ["layers"]);
    } else if (key === "stop") {
      const stop = typeof value === "string" ? [value] : value;
      if (!Array.isArray(stop) || !stop.every((s) => typeof s === "string")) {
        throw new HearthError("bad_options", "stop must be a string or an array of strings");
      }
      out.stop = stop;
    } else {
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw new HearthError("bad_options", `${key} must be a finite number, got ${JSON.stringify(value)}`);
      }
      const integer = key === "max_tokens" || key === "top_k" || key === "seed" || key === "prune_budget";
      if (integer && (!Number.isInteger(value) || value < 0)) {
        throw new HearthError("bad_options", `${key} must be a non-negative integer, got ${value}`);
      }
      out[key] = value;
    }
  }
  return out;
}

/** What a nested option's value must be (`null`: it is). */
type Check = (v: unknown) => string | null;
const oneOf = (names: readonly string[]): Check => (v) =>
  typeof v === "string" && names.includes(v) ? null : `one of ${names.join(", ")}`;
const count: Check = (v) => (typeof v === "number" && Number.isInteger(v) && v >= 0 ? null : "a non-negative integer");
const finite: Check = (v) => (typeof v === "number" && Number.isFinite(v) ? null : "a finite number");
const counts: Check = (v) =>
  Array.isArray(v) && v.every((l) => Number.isInteger(l) && l >= 0 && l < 2 ** 32) ? null : "an array of non-negative integers";

/** A nested options object (`speculative`, `early_exit`) as the wasm core takes it: only the
 * keys of `checks`, each of its type (the core checks the ranges), `required` ones present. */
function nestedOptions(name: string, value: unknown, checks: Record<string, Check>, required: string[] = []): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HearthError("bad_options", `${name} must be an object`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (v === undefined) continue;
    if (!Object.hasOwn(checks, key)) throw new HearthError("bad_options", `unknown option ${name}.${key}`);
    const wanted = checks[key](v);
    if (wanted) throw new HearthError("bad_options", `${name}.${key} must be ${wanted}, got ${JSON.stringify(v)}`);
    out[key] = v;
  }
  for (const key of required) {
    if (out[key] === undefined) throw new HearthError("bad_options", `${name}.${key} is required`);
  }
  return out;
}

const PRUNE_WEIGHTS_CHECKS: Record<string, Check> = {
  layers: (v) => (count(v) === null || counts(v) === null ? null : "a non-negative integer or an array of them"),
  heads: count,
  ffn: (v) => (typeof v === "number" && v >= 0 && v < 1 ? null : "a number in [0, 1)"),
  calibration: (v) => (typeof v === "string" && v.length > 0 ? null : "a non-empty string"),
};

const SPECULATIVE_CHECKS: Record<string, Check> = {
  method: oneOf(SPECULATIVE_METHODS),
  max_draft: count,
  ngram: count,
  draft_layers: count,
};
const EARLY_EXIT_CHECKS: Record<string, Check> = { layers: counts, threshold: finite, measure: oneOf(EXIT_MEASURES), shortlist: count };

function usageOf(raw: RawGeneration): Usage {
  const { prompt_tokens, generated_tokens } = raw.stats;
  return { prompt_tokens, completion_tokens: generated_tokens, total_tokens: prompt_tokens + generated_tokens };
}

function timingsOf(raw: RawGeneration): Timings {
  const s = raw.stats;
  return {
    time_to_first_token_ms: s.time_to_first_token_ms,
    prefill_ms: s.prefill_ms,
    decode_ms: s.decode_ms,
    prefill_tokens_per_s: s.prefill_tokens_per_s,
    decode_tokens_per_s: s.decode_tokens_per_s,
    reused_tokens: s.reused_tokens,
    kv_len: s.kv_len,
    kv_capacity: s.kv_capacity,
    evicted_tokens: s.evicted_tokens,
    pruned_tokens: s.pruned_tokens,
    draft_tokens: s.draft_tokens,
    accepted_tokens: s.accepted_tokens,
    acceptance_rate: s.acceptance_rate,
    mean_layers: s.mean_layers,
  };
}

let completionCounter = 0;

/** One generation (or scoring) waiting for its turn. */
interface Waiting {
  /** It runs with nothing else (speculative decoding, scoring), not beside others. */
  alone: boolean;
  start: () => void;
  reject: (e: HearthError) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class HearthEngine implements EngineApi {
  private wasm: WasmEngine | null = null;
  /** The instance epoch `wasm` belongs to. */
  private epoch = -1;
  private adapter: AdapterInfo | null = null;
  /** Why the model loaded now runs where it does (the core reports where). */
  private deviceReason: string | null = null;
  private model: ModelInfo | null = null;
  /** The first call's start-up, shared by calls made at the same time. */
  private starting: Promise<WasmEngine> | null = null;
  /** Why this engine cannot run until the next load (a crash, a lost device). */
  private broken: HearthError | null = null;
  /** A load holds the engine. */
  private loading = false;
  /** A generation that runs alone holds the engine. */
  private alone = false;
  /** Generations running together (the core decodes them as one batch). */
  private streams = 0;
  private waiting: Waiting[] = [];
  /** Rejecters of the calls in flight, for when the instance dies under them. */
  private inFlight = new Set<(e: HearthError) => void>();

  readonly chat: { readonly completions: ChatCompletions } = {
    completions: {
      create: ((request: ChatCompletionRequest) => this.createCompletion(request)) as ChatCompletions["create"],
    },
  };

  readonly completions: Completions = completions({
    generate: (prompt, options) => this.generate(prompt, options),
    modelName: () => this.model?.name ?? "",
  });

  constructor() {
    instance.engines.add(new WeakRef(this));
  }

  /** @internal Called when the wasm instance dies: everything in flight or waiting rejects. */
  onInstanceDied(error: HearthError): void {
    this.broken = error;
    this.model = null;
    this.wasm = null;
    for (const reject of this.inFlight) reject(error);
    this.inFlight.clear();
    for (const w of this.waiting.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.reject(error);
    }
    this.loading = this.alone = false;
    this.streams = 0;
  }

  /** `promise`, or the error of the instance dying while it runs (a dead instance never
   * settles what it started). */
  private guard<T>(promise: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fail = (e: HearthError) => reject(e);
      this.inFlight.add(fail);
      promise.then(
        (v) => {
          this.inFlight.delete(fail);
          resolve(v);
        },
        (e: unknown) => {
          this.inFlight.delete(fail);
          reject(this.failure(e));
        },
      );
    });
  }

  /** Turns what a wasm call threw into a `HearthError`, noting traps and lost devices. */
  private failure(e: unknown): HearthError {
    const error = toHearthError(e);
    if (error.kind === "engine_crashed" || error.kind === "device_lost") {
      instanceDied(error);
      this.onInstanceDied(error);
    }
    return error;
  }

  /** Starts the wasm core (and WebGPU, when `webgpu`) once, for the first call and every call
   * made at the same time; after a crash or a lost device, on a fresh instance. */
  private ready(webgpu: boolean): Promise<WasmEngine> {
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
  private live(): WasmEngine | null {
    const ok = this.wasm && !this.broken && !instance.dead && this.epoch === instance.epoch;
    return ok ? this.wasm : null;
  }

  /** The engine with a model, or the reason there is none. */
  private loaded(): WasmEngine {
    if (this.broken) throw this.broken;
    if (!this.wasm || !this.model) throw new HearthError("bad_options", "no model is loaded: call load() first");
    return this.wasm;
  }

  /** Refuses with `busy` while anything runs or waits. */
  private idle(doing: string): void {
    if (this.loading) throw busyError(`cannot ${doing} while a model loads`);
    if (this.alone || this.streams || this.waiting.length) throw busyError(`cannot ${doing} while a generation runs`);
  }

  async load(source: ModelSource, options: LoadOptions = {}): Promise<ModelInfo> {
    try {
      this.idle("load a model");
      for (const key of Object.keys(options)) {
        if (!(LOAD_KEYS as readonly string[]).includes(key)) {
          throw new HearthError("bad_options", `unknown load option ${JSON.stringify(key)}`);
        }
      }
      const requested = options.device ?? "auto";
      if (!(DEVICES as readonly string[]).includes(requested)) {
        throw new HearthError("bad_options", `device must be one of ${DEVICES.join(", ")}, got ${JSON.stringify(requested)}`);
      }
      const weights = options.weights ?? "int4";
      if (!(WEIGHT_FORMATS as readonly string[]).includes(weights)) {
        throw new HearthError("bad_options", `weights must be one of ${WEIGHT_FORMATS.map((w) => `"${w}"`).join(", ")}`);
      }
      const capacity = options.kv_capacity;
      if (capacity !== undefined && (!Number.isInteger(capacity) || capacity < 1)) {
        throw new HearthError("bad_options", `kv_capacity must be a positive integer, got ${capacity}`);
      }
      const sinks = options.kv_sinks;
      if (sinks !== undefined && (!Number.isInteger(sinks) || sinks < 0)) {
        throw new HearthError("bad_options", `kv_sinks must be a non-negative integer, got ${sinks}`);
      }
      const recent = options.kv_recent;
      if (recent !== undefined && (!Number.isInteger(recent) || recent < 0)) {
        throw new HearthError("bad_options", `kv_recent must be a non-negative integer, got ${recent}`);
      }
      if (options.kv_policy !== undefined && !KV_POLICIES.includes(options.kv_policy)) {
        throw new HearthError("bad_options", `kv_policy must be one of ${KV_POLICIES.join(", ")}`);
      }
      const prune = options.prune_weights === undefined ? undefined : nestedOptions("prune_weights", options.prune_weights, PRUNE_WEIGHTS_CHECKS);
      if (options.signal?.aborted) throw abortError();
      // Only the options given: the core reads an `undefined` field as a value, not a default.
      const kv = Object.fromEntries(
        Object.entries({ capacity, policy: options.kv_policy, sinks, recent }).filter(([, v]) => v !== undefined),
      );
      this.loading = true;
      try {
        const placement = await resolveDevice(requested);
        if (placement.adapter) this.adapter = placement.adapter;
        const wasm = await this.ready(placement.device === "webgpu");
        const bytes = await readModel(source, options);
        if (options.signal?.aborted) throw abortError();
        let info: ModelInfo;
        try {
          // Checks the file before it drops the model loaded now: a failure leaves that one.
          const progress = (loaded: number, total: number) => options.onProgress?.({ stage: "upload", loaded, total });
          info = (prune === undefined
            ? wasm.load(bytes, weights, kv, progress, placement.device)
            : await wasm.load_pruned(bytes, weights, kv, progress, placement.device, prune)) as ModelInfo;
        } catch (e) {
          throw this.failure(e);
        }
        this.model = info;
        this.deviceReason = placement.reason;
        options.onProgress?.({ stage: "ready", loaded: info.weight_bytes, total: info.weight_bytes });
        return info;
      } finally {
        this.loading = false;
        this.next();
      }
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async loadDraft(source: ModelSource | null, options: DraftLoadOptions = {}): Promise<DraftInfo | null> {
    try {
      this.idle("load a draft model");
      for (const key of Object.keys(options)) {
        if (!["weights", "cache", "onProgress", "signal"].includes(key)) {
          throw new HearthError("bad_options", `unknown draft load option ${JSON.stringify(key)}`);
        }
      }
      const weights = options.weights ?? "int4";
      if (!(WEIGHT_FORMATS as readonly string[]).includes(weights)) {
        throw new HearthError("bad_options", `weights must be one of ${WEIGHT_FORMATS.map((w) => `"${w}"`).join(", ")}`);
      }
      const wasm = this.loaded();
      this.loading = true;
      try {
        const bytes = source === null ? undefined : await readModel(source, options);
        if (options.signal?.aborted) throw abortError();
        const progress = (loaded: number, total: number) => options.onProgress?.({ stage: "upload", loaded, total });
        try {
          return wasm.load_draft(bytes, weights, progress) as DraftInfo | null;
        } catch (e) {
          throw this.failure(e);
        }
      } finally {
        this.loading = false;
        this.next();
      }
    } catch (e) {
      throw toHearthError(e);
    }
  }

  /** Starts waiting work in order while it fits: generations beside each other up to the
   * model's `max_streams`, work that runs alone when nothing else runs. */
  private next(): void {
    const limit = this.model?.max_streams ?? 1;
    while (this.waiting.length && !this.loading && !this.alone) {
      const w = this.waiting[0];
      if (w.alone ? this.streams > 0 : this.streams >= limit) return;
      this.waiting.shift();
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.start();
    }
  }

  /** Runs one generation, beside those running (or alone, with speculative decoding or early
   * exit) once there is room; `onText` gets each piece; an aborted signal stops it between
   * prefill chunks or within a token, also while it waits. */
  private run(
    input: { prompt: string } | { messages: ChatMessage[] },
    options: Record<string, unknown>,
    onText: (text: string) => void,
    signal: AbortSignal | undefined,
  ): Promise<RawGeneration> {
    const alone = options.speculative !== undefined || options.early_exit !== undefined;
    return this.inTurn(signal, alone, () => this.generateNow(input, options, onText, signal));
  }

  /** Runs `work` (a generation or a scoring) when its turn comes (see `next`); an aborted
   * signal takes it out of the queue while it waits. */
  private inTurn<T>(signal: AbortSignal | undefined, alone: boolean, work: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError());
      if (this.broken) return reject(this.broken);
      if (!this.model && !this.loading) {
        return reject(new HearthError("bad_options", "no model is loaded: call load() first"));
      }
      const start = () => {
        if (alone) this.alone = true;
        else this.streams += 1;
        const epoch = this.epoch;
        work()
          .then(resolve, reject)
          .finally(() => {
            // A crash in between has already cleared the counts.
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

  private async generateNow(
    input: { prompt: string } | { messages: ChatMessage[] },
    options: Record<string, unknown>,
    onText: (text: string) => void,
    signal: AbortSignal | undefined,
  ): Promise<RawGeneration> {
    if (signal?.aborted) throw abortError();
    const wasm = this.loaded();
    let thrown: { error: unknown } | null = null;
    const onPiece = (text: string) => {
      if (signal?.aborted) return false;
      try {
        onText(text);
      } catch (error) {
        thrown = { error };
        throw error;
      }
      return true;
    };
    let raw: RawGeneration;
    try {
      // Tokenized at its turn: a load queued before it may have changed the model.
      const pause = signal ? pauses.get(signal) : undefined;
      const promise = "prompt" in input
        ? wasm.generate(wasm.tokenize(input.prompt, false), options, onPiece, signal, pause)
        : wasm.chat(input.messages, options, onPiece, signal, pause);
      raw = (await this.guard(promise)) as RawGeneration;
    } catch (e) {
      const error = this.failure(e);
      const failed = thrown as { error: unknown } | null;
      if (failed) {
        const message = failed.error instanceof Error ? failed.error.message : String(failed.error);
        throw new HearthError("callback", `onText threw: ${message}`, { cause: failed.error });
      }
      throw error;
    }
    if (raw.finish_reason === "aborted" && signal?.aborted) throw abortError();
    return raw;
  }

  async generate(prompt: string, options: GenerateOptions = {}): Promise<GenerateResult> {
    try {
      const wasmOpts = wasmOptions(options, ["signal", "onText"]);
      if (typeof prompt !== "string") throw new HearthError("bad_prompt", "the prompt must be a string");
      const raw = await this.run({ prompt }, wasmOpts, (t) => options.onText?.(t), options.signal);
      return { text: raw.text, tokens: raw.tokens, finish_reason: raw.finish_reason, usage: usageOf(raw), timings: timingsOf(raw) };
    } catch (e) {
      throw toHearthError(e);
    }
  }

  private createCompletion(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const id = `chatcmpl-hearth-${++completionCounter}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.model?.name ?? "";
    let options: Record<string, unknown>;
    let input: { messages: ChatMessage[] };
    try {
      if (!request || !Array.isArray(request.messages)) throw new HearthError("bad_options", "messages must be an array");
      options = wasmOptions(request, ["messages", "stream", "signal"], CHAT_KEYS);
      if (this.broken) throw this.broken;
      if (!this.model && !this.loading) this.loaded(); // refuses now, not in the stream
      input = { messages: request.messages };
    } catch (e) {
      return Promise.reject(toHearthError(e));
    }
    if (!request.stream) {
      return (async () => {
        try {
          const raw = await this.run(input, options, () => {}, request.signal);
          const completion: ChatCompletion = {
            id,
            object: "chat.completion",
            created,
            model,
            choices: [{ index: 0, message: { role: "assistant", content: raw.text }, finish_reason: raw.finish_reason }],
            usage: usageOf(raw),
            timings: timingsOf(raw),
            ...(raw.pruned ? { pruned: raw.pruned } : {}),
          };
          return completion;
        } catch (e) {
          throw toHearthError(e);
        }
      })();
    }
    // Leaving the stream early aborts the generation, as the request's own signal does.
    const stop = new AbortController();
    const outer = request.signal;
    const forward = () => stop.abort();
    const queue = new AsyncQueue<ChatCompletionChunk>(() => stop.abort());
    // A flow-controlled caller (the worker, whose loop posts each chunk on) counts a piece
    // when its loop has posted it: the next step waits for that loop first, or it could run a
    // token ahead of the count.
    const pause = outer ? pauses.get(outer) : undefined;
    if (pause) pauses.set(stop.signal, () => queue.idle().then(pause));
    if (outer?.aborted) stop.abort();
    outer?.addEventListener("abort", forward, { once: true });
    const chunk = (delta: ChatCompletionChunk["choices"][0]["delta"], finish: FinishReason | null): ChatCompletionChunk => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
    });
    let first = true;
    this.run(
      input,
      options,
      (text) => {
        queue.push(chunk(first ? { role: "assistant", content: text } : { content: text }, null));
        first = false;
      },
      stop.signal,
    )
      .then(
        (raw) => {
          const pruned = raw.pruned ? { pruned: raw.pruned } : {};
          queue.push({ ...chunk({}, raw.finish_reason), usage: usageOf(raw), timings: timingsOf(raw), ...pruned });
          queue.close();
        },
        (e: unknown) => queue.close(toHearthError(e)),
      )
      .finally(() => outer?.removeEventListener("abort", forward));
    return Promise.resolve(queue);
  }

  async score(ids: number[], options: { signal?: AbortSignal } = {}): Promise<number[]> {
    try {
      if (!Array.isArray(ids) || !ids.every((i) => Number.isInteger(i) && i >= 0 && i < 2 ** 32)) {
        throw new HearthError("bad_options", "ids must be an array of non-negative integers");
      }
      const { signal } = options;
      return await this.inTurn(signal, true, async () => {
        if (signal?.aborted) throw abortError();
        try {
          return Array.from((await this.guard(this.loaded().score(Uint32Array.from(ids), signal))) as number[]);
        } catch (e) {
          throw this.failure(e);
        }
      });
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async tokenize(text: string, options: { parseSpecial?: boolean } = {}): Promise<number[]> {
    try {
      return Array.from(this.loaded().tokenize(text, options.parseSpecial ?? false));
    } catch (e) {
      throw this.failure(e);
    }
  }

  async detokenize(ids: number[]): Promise<string> {
    try {
      if (!Array.isArray(ids) || !ids.every((i) => Number.isInteger(i) && i >= 0 && i < 2 ** 32)) {
        throw new HearthError("bad_options", "ids must be an array of non-negative integers");
      }
      return this.loaded().detokenize(Uint32Array.from(ids));
    } catch (e) {
      throw this.failure(e);
    }
  }

  async stats(): Promise<EngineStats> {
    const none = {
      loaded: false,
      generating: false,
      streams: 0,
      model: null,
      weight_bytes: null,
      kv_len: null,
      kv_capacity: null,
      kv_policy: null,
      kv_evicted: null,
      device_memory_in_use_bytes: null,
      device_memory_reserved_bytes: null,
      max_buffer_bytes: null,
      device_lost: false,
      device: null,
      cpu_isa: null,
    };
    try {
      // A dead instance is not called again: it might trap once more.
      const live = this.live();
      const core = live ? (live.stats() as typeof none) : none;
      return {
        ...core,
        queued: this.waiting.length,
        crashed: this.broken?.kind === "engine_crashed",
        device_lost: core.device_lost || this.broken?.kind === "device_lost",
        device: core.device,
        device_reason: core.device ? this.deviceReason : null,
        adapter: this.adapter,
      };
    } catch (e) {
      throw this.failure(e);
    }
  }

  async resetChat(): Promise<void> {
    try {
      this.idle("reset the conversation");
      if (this.broken || !this.wasm) return;
      this.wasm.reset();
    } catch (e) {
      throw this.failure(e);
    }
  }

  async unload(): Promise<void> {
    try {
      this.idle("unload the model");
      const wasm = this.broken ? null : this.wasm;
      this.model = null;
      wasm?.unload();
    } catch (e) {
      throw this.failure(e);
    }
  }
}

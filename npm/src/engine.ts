/** The engine in this thread (a page or a Web Worker), on the wasm core and WebGPU. */

import initWasm, { WasmEngine } from "../wasm/hearth.js";
import { AsyncQueue } from "./queue.js";
import { HearthError, abortError, toHearthError } from "./errors.js";
import { readModel } from "./loader.js";
import { KV_POLICIES, PRUNE_METHODS } from "./types.js";
import type {
  AdapterInfo,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletions,
  ChatMessage,
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

/** The part of WebGPU's API this file touches (TypeScript's DOM types do not include WebGPU). */
interface GpuAdapterLike {
  features: Iterable<string>;
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number };
  info?: { vendor?: string; architecture?: string; description?: string };
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: "high-performance" | "low-power" }): Promise<GpuAdapterLike | null>;
}

function webGpu(): GpuLike | undefined {
  return (globalThis.navigator as unknown as { gpu?: GpuLike } | undefined)?.gpu;
}

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
  };
  pruned?: PruneReport | null;
}

let wasmModule: Promise<unknown> | null = null;

const SAMPLING_KEYS = ["max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "stop"] as const;
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
  };
}

let completionCounter = 0;

export class HearthEngine implements EngineApi {
  private wasm: WasmEngine | null = null;
  private adapter: AdapterInfo | null = null;
  private model: ModelInfo | null = null;

  readonly chat: { readonly completions: ChatCompletions } = {
    completions: {
      create: ((request: ChatCompletionRequest) => this.createCompletion(request)) as ChatCompletions["create"],
    },
  };

  /** Initializes WebGPU and the wasm core once. Refuses where WebGPU is missing. */
  private async ready(): Promise<WasmEngine> {
    if (this.wasm) return this.wasm;
    const gpu = webGpu();
    if (!gpu) {
      throw new HearthError(
        "no_webgpu",
        "this browser has no WebGPU (navigator.gpu is missing): use Chrome or Edge 113+, or enable WebGPU " +
          "(chrome://flags/#enable-unsafe-webgpu, Firefox's dom.webgpu.enabled, Safari's WebGPU feature flag)",
      );
    }
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) throw new HearthError("no_webgpu", "WebGPU is present but the browser offers no GPU adapter");
    this.adapter = {
      vendor: adapter.info?.vendor ?? "",
      architecture: adapter.info?.architecture ?? "",
      description: adapter.info?.description ?? "",
      features: [...adapter.features],
      max_buffer_size: adapter.limits.maxBufferSize,
      max_storage_buffer_binding_size: adapter.limits.maxStorageBufferBindingSize,
    };
    wasmModule ??= initWasm();
    await wasmModule;
    const wasm = new WasmEngine();
    await wasm.init();
    this.wasm = wasm;
    return wasm;
  }

  private loaded(): WasmEngine {
    if (!this.wasm || !this.model) throw new HearthError("bad_options", "no model is loaded: call load() first");
    return this.wasm;
  }

  async load(source: ModelSource, options: LoadOptions = {}): Promise<ModelInfo> {
    try {
      const wasm = await this.ready();
      const bytes = await readModel(source, options);
      if (options.signal?.aborted) throw abortError();
      const weights = options.weights ?? "int4";
      if (weights !== "int4" && weights !== "f32") throw new HearthError("bad_options", `weights must be "int4" or "f32"`);
      const capacity = options.kv_capacity;
      if (capacity !== undefined && (!Number.isInteger(capacity) || capacity < 1)) {
        throw new HearthError("bad_options", `kv_capacity must be a positive integer, got ${capacity}`);
      }
      const sinks = options.kv_sinks;
      if (sinks !== undefined && (!Number.isInteger(sinks) || sinks < 0)) {
        throw new HearthError("bad_options", `kv_sinks must be a non-negative integer, got ${sinks}`);
      }
      if (options.kv_policy !== undefined && !KV_POLICIES.includes(options.kv_policy)) {
        throw new HearthError("bad_options", `kv_policy must be one of ${KV_POLICIES.join(", ")}`);
      }
      // Only the options given: the core reads an `undefined` field as a value, not a default.
      const kv = Object.fromEntries(
        Object.entries({ capacity, policy: options.kv_policy, sinks }).filter(([, v]) => v !== undefined),
      );
      this.model = null;
      const info = wasm.load(bytes, weights, kv, (loaded: number, total: number) =>
        options.onProgress?.({ stage: "upload", loaded, total }),
      ) as ModelInfo;
      this.model = info;
      options.onProgress?.({ stage: "ready", loaded: info.weight_bytes, total: info.weight_bytes });
      return info;
    } catch (e) {
      throw toHearthError(e);
    }
  }

  /** Runs one generation; `onText` gets each piece; an aborted signal stops it within a token. */
  private async run(
    input: { ids: number[] } | { messages: ChatMessage[] },
    options: Record<string, unknown>,
    onText: (text: string) => void,
    signal: AbortSignal | undefined,
  ): Promise<RawGeneration> {
    if (signal?.aborted) throw abortError();
    const onPiece = (text: string) => {
      onText(text);
      return !signal?.aborted;
    };
    const wasm = this.loaded();
    const raw = (await ("ids" in input
      ? wasm.generate(Uint32Array.from(input.ids), options, onPiece)
      : wasm.chat(input.messages, options, onPiece))) as RawGeneration;
    if (raw.finish_reason === "aborted" && signal?.aborted) throw abortError();
    return raw;
  }

  async generate(prompt: string, options: GenerateOptions = {}): Promise<GenerateResult> {
    try {
      const wasmOpts = wasmOptions(options, ["signal", "onText"]);
      if (typeof prompt !== "string") throw new HearthError("bad_prompt", "the prompt must be a string");
      const ids = Array.from(this.loaded().tokenize(prompt, false));
      const raw = await this.run({ ids }, wasmOpts, (t) => options.onText?.(t), options.signal);
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
      this.loaded(); // refuses now, not in the stream, when no model is loaded
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
    const queue = new AsyncQueue<ChatCompletionChunk>();
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
      request.signal,
    ).then(
      (raw) => {
        const pruned = raw.pruned ? { pruned: raw.pruned } : {};
        queue.push({ ...chunk({}, raw.finish_reason), usage: usageOf(raw), timings: timingsOf(raw), ...pruned });
        queue.close();
      },
      (e: unknown) => queue.close(toHearthError(e)),
    );
    return Promise.resolve(queue);
  }

  async tokenize(text: string, options: { parseSpecial?: boolean } = {}): Promise<number[]> {
    try {
      return Array.from(this.loaded().tokenize(text, options.parseSpecial ?? false));
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async detokenize(ids: number[]): Promise<string> {
    try {
      if (!Array.isArray(ids) || !ids.every((i) => Number.isInteger(i) && i >= 0 && i < 2 ** 32)) {
        throw new HearthError("bad_options", "ids must be an array of non-negative integers");
      }
      return this.loaded().detokenize(Uint32Array.from(ids));
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async stats(): Promise<EngineStats> {
    try {
      const core = this.wasm
        ? (this.wasm.stats() as Omit<EngineStats, "adapter">)
        : {
            loaded: false,
            generating: false,
            model: null,
            weight_bytes: null,
            kv_len: null,
            kv_capacity: null,
            kv_policy: null,
            kv_evicted: null,
            device_memory_in_use_bytes: null,
            device_memory_reserved_bytes: null,
          };
      return { ...core, adapter: this.adapter };
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async resetChat(): Promise<void> {
    try {
      this.wasm?.reset();
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async unload(): Promise<void> {
    try {
      this.wasm?.unload();
      this.model = null;
    } catch (e) {
      throw toHearthError(e);
    }
  }
}

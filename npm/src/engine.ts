/** The engine in this thread (a page or a Web Worker), on the wasm core and WebGPU. */

import type { WasmEngine } from "../wasm/hearth.js";
import { completions } from "./completions.js";
import { checkDevice, resolveDevice } from "./device.js";
import { HearthError, abortError, toHearthError } from "./errors.js";
import { pauses, threadedStarted } from "./instance.js";
import { type ThreadPlan, type ThreadedCore, threadPlan } from "./threads.js";
import { InstanceSeat } from "./seat.js";
import { isGguf, openModelFiles, readModel } from "./loader.js";
import { OPENAI_KEYS, chatCompletion, chatStream, constraintRequest, logprobsOf, newCompletion, timingsOf, usageOf } from "./openai.js";
import { LoadGate } from "./load-gate.js";
import { generateRequest, kvRequest, tokenIds } from "./options.js";
import type { DraftInfo, EngineStats as CoreStats, GenerateRequest, Generation, ToolCall } from "./wire.js";
import type {
  AdapterInfo,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletions,
  ChatMessage,
  Completions,
  DraftLoadOptions,
  EngineApi,
  EngineStats,
  GenerateOptions,
  GenerateResult,
  LoadOptions,
  ModelInfo,
  ModelFiles,
  ModelSource,
} from "./types.js";

export { pauses, testBreakGpuSelfCheck, testPanic } from "./instance.js";

type Input = { prompt: string } | { messages: ChatMessage[] };

/** The core's stats when there is no live core to ask (before the first load, after a crash). */
const NO_CORE: Omit<CoreStats, "cpu_isa"> = {
  loaded: false,
  generating: false,
  streams: 0,
  queued: 0,
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
  wasm_memory_bytes: null,
  host_allocated_bytes: null,
  host_bytes_left: null,
  load_peak_bytes: null,
  device: null,
  threads: null,
  activations: null,
};

export class HearthEngine implements EngineApi {
  private adapter: AdapterInfo | null = null;
  /** Why the model loaded now runs where it does (the core reports where). */
  private deviceReason: string | null = null;
  private model: ModelInfo | null = null;
  private gate = new LoadGate();
  /** The wasm engine; when the instance dies, what waits rejects and the model is gone. */
  private seat = new InstanceSeat((error) => {
    this.model = null;
    this.gate.clear(error);
  });

  readonly chat: { readonly completions: ChatCompletions } = {
    completions: {
      create: ((request: ChatCompletionRequest) => this.createCompletion(request)) as ChatCompletions["create"],
    },
  };

  readonly completions: Completions = completions({
    generate: (prompt, options) => this.generate(prompt, options),
    modelName: () => this.model?.name ?? "",
  });

  /** The engine with a model, or the reason there is none. */
  private loaded(): WasmEngine {
    if (this.seat.broken) throw this.seat.broken;
    if (!this.seat.wasm || !this.model) throw new HearthError("bad_options", "no model is loaded: call load() first");
    return this.seat.wasm;
  }

  /** Refuses with `busy` while a load holds the engine or the core runs or queues anything. */
  private idle(doing: string): void {
    this.gate.idle(doing);
    this.seat.live()?.check_idle(doing);
  }

  /** Runs a load's `work` holding the engine; what waits starts after it. */
  private async holding<T>(doing: string, work: () => Promise<T>): Promise<T> {
    try {
      this.idle(doing);
      this.gate.hold(doing);
      try {
        return await work();
      } finally {
        this.gate.release();
      }
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async load(source: ModelFiles, options: LoadOptions = {}): Promise<ModelInfo> {
    const requested = options.device ?? "auto";
    return this.holding("load a model", async () => {
      const kv = kvRequest(options);
      checkDevice(requested);
      if (options.signal?.aborted) throw abortError();
      let placement = await resolveDevice(requested);
      if (placement.adapter) this.adapter = placement.adapter;
      let plan = placement.device === "cpu" ? threadPlan(options.threads) : { threads: 1, reason: "" };
      let wasm: WasmEngine;
      try {
        wasm = await this.seatFor(placement.device, plan);
      } catch (e) {
        // An adapter that failed the core's self-check (wrong results on known products) is
        // not used: `auto` runs on the CPU instead; a forced "webgpu" is refused.
        const error = toHearthError(e);
        if (error.kind !== "device_unusable" || requested !== "auto") throw error;
        placement = { ...placement, device: "cpu", reason: `the WebGPU adapter failed hearth's self-check (${error.message})` };
        plan = threadPlan(options.threads);
        wasm = await this.seatFor("cpu", plan);
      }
      let info: ModelInfo;
      try {
        const files = await openModelFiles(source, options);
        if (options.signal?.aborted) throw abortError();
        const weights = weightsOf(options.weights);
        const activations = activationsOf(options.activations);
        const progress = (loaded: number, total: number) => options.onProgress?.({ stage: "upload", loaded, total });
        // GGUF files stream: the core reads them a part at a time. A pruned load runs the whole
        // model first and a .bpk is read whole: their bytes are copied in.
        const streamed = options.prune_weights === undefined && (await Promise.all(files.map(isGguf))).every((g) => g);
        try {
          // The core checks the files and the options before it drops the model loaded now.
          if (streamed) {
            info = (await wasm.load_stream(files.length === 1 ? files[0] : files, weights, kv, progress, placement.device, activations)) as ModelInfo;
          } else {
            const whole = await Promise.all(files.map((f) => f.read(0, f.size)));
            // One file as itself; a split model's shards as an array (the core joins them).
            const bytes = whole.length === 1 ? whole[0] : whole;
            info = (options.prune_weights === undefined
              ? wasm.load(bytes, weights, kv, progress, placement.device, activations)
              : await wasm.load_pruned(bytes, weights, kv, progress, placement.device, activations, options.prune_weights)) as ModelInfo;
          }
        } catch (e) {
          throw this.seat.failure(e);
        }
      } catch (e) {
        this.seat.settle(false);
        throw e;
      }
      this.seat.settle(true);
      this.model = info;
      this.deviceReason = plan.reason ? `${placement.reason}; ${plan.reason}` : placement.reason;
      options.onProgress?.({ stage: "ready", loaded: info.weight_bytes, total: info.weight_bytes });
      return info;
    });
  }

  /** The wasm engine a load on `device` runs on: the threaded artifact's when `plan` asks for
   * threads and it starts (with its pool at `plan.threads`), else the default one's, with
   * `plan` saying so. */
  private async seatFor(device: "webgpu" | "cpu", plan: ThreadPlan): Promise<WasmEngine> {
    if (plan.threads > 1) {
      try {
        const wasm = await this.seat.ready(false, "threads");
        await threadedStarted()!.setThreads(plan.threads);
        return wasm;
      } catch (e) {
        this.seat.settle(false);
        plan.reason = `1 thread: the threaded build could not start (${toHearthError(e).message})`;
        plan.threads = 1;
      }
    }
    return this.seat.ready(device === "webgpu", "single");
  }

  async loadDraft(source: ModelSource | null, options: DraftLoadOptions = {}): Promise<DraftInfo | null> {
    return this.holding("load a draft model", async () => {
      for (const key of Object.keys(options)) {
        if (!["weights", "cache", "onProgress", "signal"].includes(key)) {
          throw new HearthError("bad_options", `unknown draft load option ${JSON.stringify(key)}`);
        }
      }
      const wasm = this.loaded();
      const bytes = source === null ? undefined : await readModel(source, options);
      if (options.signal?.aborted) throw abortError();
      const progress = (loaded: number, total: number) => options.onProgress?.({ stage: "upload", loaded, total });
      try {
        return wasm.load_draft(bytes, weightsOf(options.weights), progress) as DraftInfo | null;
      } catch (e) {
        throw this.seat.failure(e);
      }
    });
  }

  /** Hands `work` to the core once no load holds the engine (the core decides when it runs),
   * if the engine can run it at all. */
  private inTurn<T>(signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortError());
    if (this.seat.broken) return Promise.reject(this.seat.broken);
    if (!this.model && !this.gate.held) {
      return Promise.reject(new HearthError("bad_options", "no model is loaded: call load() first"));
    }
    return this.gate.pass(signal, work);
  }

  /** One generation, handed to the core. `onText` gets each piece; an aborted signal takes
   * it out of line, or stops it between prefill chunks or within a token. */
  private run(input: Input, request: GenerateRequest, onText: (text: string, call?: ToolCall) => void, signal?: AbortSignal): Promise<Generation> {
    return this.inTurn(signal, () => this.generateNow(input, request, onText, signal));
  }

  private async generateNow(input: Input, request: GenerateRequest, onText: (text: string, call?: ToolCall) => void, signal?: AbortSignal): Promise<Generation> {
    if (signal?.aborted) throw abortError();
    const wasm = this.loaded();
    let thrown: { error: unknown } | null = null;
    // The core passes a whole tool call as the third argument (its text is empty).
    const onPiece = (text: string, _token?: number, call?: ToolCall) => {
      if (signal?.aborted) return false;
      try {
        onText(text, call);
      } catch (error) {
        thrown = { error };
        throw error;
      }
      return true;
    };
    let raw: Generation;
    try {
      // Tokenized after any load that held the engine: it may have changed the model.
      const pause = signal ? pauses.get(signal) : undefined;
      const promise = "prompt" in input
        ? wasm.generate(wasm.tokenize(input.prompt, false), request, onPiece, signal, pause)
        : wasm.chat(input.messages, request, onPiece, signal, pause);
      raw = (await this.seat.guard(promise)) as Generation;
    } catch (e) {
      const error = this.seat.failure(e);
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
      const request = generateRequest(options, ["signal", "onText"]);
      if (typeof prompt !== "string") throw new HearthError("bad_prompt", "the prompt must be a string");
      const raw = await this.run({ prompt }, request, (t, call) => {
        if (!call) options.onText?.(t);
      }, options.signal);
      return {
        text: raw.text, tokens: raw.tokens, finish_reason: raw.finish_reason, usage: usageOf(raw), timings: timingsOf(raw),
        logprobs: logprobsOf(raw),
      };
    } catch (e) {
      throw toHearthError(e);
    }
  }

  private createCompletion(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const completion = newCompletion(this.model?.name ?? "");
    let options: GenerateRequest;
    let input: { messages: ChatMessage[] };
    try {
      if (!request || !Array.isArray(request.messages)) throw new HearthError("bad_options", "messages must be an array");
      options = { ...generateRequest(request, ["messages", "stream", "signal", ...OPENAI_KEYS]), ...constraintRequest(request) };
      if (this.seat.broken) throw this.seat.broken;
      if (!this.model && !this.gate.held) this.loaded(); // refuses now, not in the stream
      input = { messages: request.messages };
    } catch (e) {
      return Promise.reject(toHearthError(e));
    }
    if (!request.stream) {
      return this.run(input, options, () => {}, request.signal).then(
        (raw) => chatCompletion(completion, raw),
        (e: unknown) => Promise.reject(toHearthError(e)),
      );
    }
    return Promise.resolve(chatStream(completion, request.signal, pauses, (onText, signal) => this.run(input, options, onText, signal)));
  }

  async score(ids: number[], options: { signal?: AbortSignal } = {}): Promise<number[]> {
    try {
      const tokens = tokenIds(ids);
      const { signal } = options;
      return await this.inTurn(signal, async () => {
        if (signal?.aborted) throw abortError();
        try {
          return Array.from((await this.seat.guard(this.loaded().score(tokens, signal))) as number[]);
        } catch (e) {
          throw this.seat.failure(e);
        }
      });
    } catch (e) {
      throw toHearthError(e);
    }
  }

  async tokenize(text: string, options: { parseSpecial?: boolean } = {}): Promise<number[]> {
    try {
      if (typeof text !== "string") throw new HearthError("bad_prompt", "the text must be a string");
      return Array.from(this.loaded().tokenize(text, options.parseSpecial === true));
    } catch (e) {
      throw this.seat.failure(e);
    }
  }

  async detokenize(ids: number[]): Promise<string> {
    try {
      return this.loaded().detokenize(tokenIds(ids));
    } catch (e) {
      throw this.seat.failure(e);
    }
  }

  async stats(): Promise<EngineStats> {
    try {
      // A dead instance is not called again: it might trap once more.
      const live = this.seat.live();
      const core = live ? (live.stats() as CoreStats) : null;
      return {
        ...(core ?? NO_CORE),
        cpu_isa: core?.cpu_isa ?? null,
        queued: (core?.queued ?? 0) + this.gate.queued,
        crashed: this.seat.broken?.kind === "engine_crashed",
        device_lost: (core?.device_lost ?? false) || this.seat.broken?.kind === "device_lost",
        device_reason: core?.device ? this.deviceReason : null,
        adapter: this.adapter,
      };
    } catch (e) {
      throw this.seat.failure(e);
    }
  }

  /** Panics the core this engine is on (tests of crash recovery).
   * @internal */
  async testPanic(): Promise<void> {
    await this.seat.testPanic();
  }

  /** Makes a thread of the threaded artifact's pool panic at its next job (tests).
   * @internal */
  testPoolPanic(): void {
    pool().testPoolPanic();
  }

  /** Microseconds one hand-off to the threaded pool takes (benchmarks).
   * @internal */
  benchPoolJoin(rounds: number): number {
    return pool().benchJoin(rounds);
  }

  async resetChat(): Promise<void> {
    try {
      this.gate.idle("reset the conversation");
      if (this.seat.broken || !this.seat.wasm) return;
      this.seat.wasm.reset();
    } catch (e) {
      throw this.seat.failure(e);
    }
  }

  async unload(): Promise<void> {
    try {
      this.gate.idle("unload the model");
      const wasm = this.seat.broken ? null : this.seat.wasm;
      this.model = null;
      wasm?.unload();
    } catch (e) {
      throw this.seat.failure(e);
    }
  }
}

/** The threaded build's core, for its pool's test and bench hooks. */
function pool(): ThreadedCore {
  const core = threadedStarted();
  if (!core) throw new HearthError("bad_options", "the threaded build is not running");
  return core;
}

/** `activations` as the core takes it: a string, which the core parses. */
function activationsOf(activations: unknown): string {
  if (activations === undefined) return "f32";
  if (typeof activations !== "string") {
    throw new HearthError("bad_options", `activations must be a string, got ${JSON.stringify(activations) ?? typeof activations}`);
  }
  return activations;
}

/** `weights` as the core takes it: a string (wasm-bindgen's glue writes whatever it is given
 * into the core's memory as one, and a value that is not a string corrupts its heap). */
function weightsOf(weights: unknown): string {
  if (weights === undefined) return "int4";
  if (typeof weights !== "string") throw new HearthError("bad_options", `weights must be a string, got ${JSON.stringify(weights) ?? typeof weights}`);
  return weights;
}

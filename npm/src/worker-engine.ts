/** The page side of a worker-hosted engine: the same `EngineApi`, over `postMessage`. */

import { AsyncQueue } from "./queue.js";
import { HearthError, abortError, deserializeError } from "./errors.js";
import type { Request, Response, ResultValue } from "./protocol.js";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletions,
  EngineApi,
  EngineStats,
  GenerateOptions,
  GenerateResult,
  LoadOptions,
  LoadProgress,
  ModelInfo,
  ModelSource,
} from "./types.js";

/** A request without its id (each request variant minus `id`). */
type Body = Request extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

interface Pending {
  resolve: (value: ResultValue) => void;
  reject: (error: HearthError) => void;
  onProgress?: (p: LoadProgress) => void;
  onText?: (text: string) => void;
  onChunk?: (chunk: ChatCompletionChunk) => void;
}

export class WorkerEngine implements EngineApi {
  private nextId = 1;
  private pending = new Map<number, Pending>();

  readonly chat: { readonly completions: ChatCompletions } = {
    completions: {
      create: ((request: ChatCompletionRequest) => this.createCompletion(request)) as ChatCompletions["create"],
    },
  };

  /** Wraps a worker started from `hearth/worker`. */
  constructor(private readonly worker: Worker) {
    worker.addEventListener("message", (event: MessageEvent<Response>) => this.receive(event.data));
    worker.addEventListener("error", (event: ErrorEvent) => {
      const error = new HearthError("engine_crashed", `the engine worker failed: ${event.message}`);
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    });
  }

  private receive(msg: Response): void {
    const p = this.pending.get(msg.id);
    if (!p) return;
    switch (msg.type) {
      case "progress":
        p.onProgress?.(msg.progress);
        break;
      case "text":
        p.onText?.(msg.text);
        break;
      case "chunk":
        p.onChunk?.(msg.chunk);
        break;
      case "result":
        this.pending.delete(msg.id);
        p.resolve(msg.value);
        break;
      case "error":
        this.pending.delete(msg.id);
        p.reject(deserializeError(msg.error));
        break;
    }
  }

  private call(
    body: Body,
    hooks: Omit<Pending, "resolve" | "reject"> = {},
    signal?: AbortSignal,
    transfer: Transferable[] = [],
  ): Promise<ResultValue> {
    if (signal?.aborted) return Promise.reject(abortError());
    const id = this.nextId++;
    return new Promise<ResultValue>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...hooks });
      signal?.addEventListener("abort", () => this.worker.postMessage({ id: this.nextId++, type: "abort", target: id }), {
        once: true,
      });
      this.worker.postMessage({ ...body, id } as Request, transfer);
    });
  }

  async load(source: ModelSource, options: LoadOptions = {}): Promise<ModelInfo> {
    const { onProgress, signal, ...plain } = options;
    // A buffer is moved to the worker rather than copied.
    const transfer: Transferable[] = source instanceof ArrayBuffer ? [source] : source instanceof Uint8Array ? [source.buffer] : [];
    const src = source instanceof URL ? source.href : source;
    return (await this.call({ type: "load", source: src, options: plain }, { onProgress }, signal, transfer)) as ModelInfo;
  }

  async generate(prompt: string, options: GenerateOptions = {}): Promise<GenerateResult> {
    const { onText, signal, ...plain } = options;
    return (await this.call({ type: "generate", prompt, options: plain }, { onText }, signal)) as GenerateResult;
  }

  private createCompletion(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    const { signal, ...plain } = request;
    if (!request.stream) {
      return this.call({ type: "chat", request: plain }, {}, signal) as Promise<ChatCompletion>;
    }
    const queue = new AsyncQueue<ChatCompletionChunk>();
    this.call({ type: "chat", request: plain }, { onChunk: (c) => queue.push(c) }, signal).then(
      () => queue.close(),
      (e: HearthError) => queue.close(e),
    );
    return Promise.resolve(queue);
  }

  async tokenize(text: string, options: { parseSpecial?: boolean } = {}): Promise<number[]> {
    return (await this.call({ type: "tokenize", text, parseSpecial: options.parseSpecial ?? false })) as number[];
  }

  async detokenize(ids: number[]): Promise<string> {
    return (await this.call({ type: "detokenize", ids })) as string;
  }

  async stats(): Promise<EngineStats> {
    return (await this.call({ type: "stats" })) as EngineStats;
  }

  async resetChat(): Promise<void> {
    await this.call({ type: "reset" });
  }

  async unload(): Promise<void> {
    await this.call({ type: "unload" });
  }

  /** Stops the worker; pending calls reject. */
  terminate(): void {
    this.worker.terminate();
    const error = new HearthError("engine_crashed", "the engine worker was terminated");
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }
}

/** The page side of a worker-hosted engine: the same `EngineApi`, over `postMessage`. */

import { AsyncQueue } from "./queue.js";
import { completions } from "./completions.js";
import { HearthError, abortError, deserializeError } from "./errors.js";
import type { Request, Response, ResultValue } from "./protocol.js";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletions,
  Completions,
  DraftInfo,
  DraftLoadOptions,
  EngineApi,
  EngineStats,
  GenerateOptions,
  GenerateResult,
  LoadOptions,
  LoadProgress,
  ModelFiles,
  ModelInfo,
  ModelSource,
} from "./types.js";

/** A model source as it crosses `postMessage`: a URL as its text, and a buffer moved to the
 * worker rather than copied. */
function posted<S extends ModelSource | null>(source: S): [S | string, Transferable[]] {
  const transfer: Transferable[] = source instanceof ArrayBuffer ? [source] : source instanceof Uint8Array ? [source.buffer] : [];
  return [source instanceof URL ? source.href : source, transfer];
}

/** [`posted`] for a model's files: each source as it crosses, every buffer moved. */
function postedFiles(source: ModelFiles): [ModelFiles, Transferable[]] {
  if (!Array.isArray(source)) return posted(source as ModelSource);
  const each = (source as readonly ModelSource[]).map((s) => posted(s));
  return [each.map(([s]) => s), each.flatMap(([, t]) => t)];
}

/** Requests that need a loaded model. */
const NEEDS_MODEL = new Set<string>(["generate", "chat", "tokenize", "detokenize", "score", "load-draft"]);

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
  private worker: Worker | null = null;
  /** Why no call can be served any more (a worker that died and cannot be replaced, or
   * `terminate()`). */
  private dead: HearthError | null = null;
  private readonly spawn: (() => Worker) | null;

  readonly chat: { readonly completions: ChatCompletions } = {
    completions: {
      create: ((request: ChatCompletionRequest) => this.createCompletion(request)) as ChatCompletions["create"],
    },
  };

  /** The name of the model the last successful load gave. */
  private modelName = "";

  readonly completions: Completions = completions({
    generate: (prompt, options) => this.generate(prompt, options),
    modelName: () => this.modelName,
  });

  /** Wraps a worker started from `hearth/worker`. Given a function that starts one, the proxy
   * replaces a worker that dies (its pending calls reject with `engine_crashed`) with a fresh
   * one at the next call; given a worker, it can only report the death. */
  constructor(worker: Worker | (() => Worker)) {
    this.spawn = typeof worker === "function" ? worker : null;
    this.attach(typeof worker === "function" ? worker() : worker);
  }

  private attach(worker: Worker): void {
    this.worker = worker;
    worker.addEventListener("message", (event: MessageEvent<Response>) => this.receive(event.data));
    const died = (what: string) => {
      if (this.worker !== worker) return;
      this.crashed(new HearthError("engine_crashed", `the engine worker failed: ${what}`));
    };
    worker.addEventListener("error", (event: ErrorEvent) => {
      event.preventDefault();
      died(event.message || "an uncaught error");
    });
    worker.addEventListener("messageerror", () => died("a message could not be read"));
  }

  /** The crash that replaced the worker, until the next load succeeds. */
  private crash: HearthError | null = null;

  /** Rejects every pending call; the worker is dropped and (with a factory) replaced next time. */
  private crashed(error: HearthError): void {
    this.crash = error;
    this.worker?.terminate();
    this.worker = null;
    if (!this.spawn) this.dead = error;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }

  private live(): Worker {
    if (this.dead) throw this.dead;
    if (!this.worker) this.attach(this.spawn!());
    return this.worker!;
  }

  private receive(msg: Response): void {
    if (typeof msg !== "object" || msg === null) return;
    if (msg.type === "crashed") {
      this.crashed(deserializeError(msg.error));
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    switch (msg.type) {
      case "progress":
        p.onProgress?.(msg.progress);
        break;
      case "text":
        try {
          p.onText?.(msg.text);
        } catch (error) {
          // The page's callback failed: the call fails with it, and the worker stops generating.
          this.abort(msg.id);
          this.pending.delete(msg.id);
          const message = error instanceof Error ? error.message : String(error);
          p.reject(new HearthError("callback", `onText threw: ${message}`, { cause: error }));
          break;
        }
        this.ack(msg.id);
        break;
      case "chunk":
        // Acknowledged by the stream, once its reader has taken the chunk.
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

  /** Tells the worker a piece of request `target` arrived (after its callback ran, so that an
   * abort the callback caused reaches the worker first): it waits for this before the next token. */
  private ack(target: number): void {
    try {
      this.worker?.postMessage({ id: this.nextId++, type: "ack", target } as Request);
    } catch {
      // A worker that cannot be reached has died; `crashed` handles that.
    }
  }

  /** Sends a request; returns its id (to abort it) and its result. The abort listener lives as
   * long as the request, and a message that cannot be sent rejects at once. */
  private send(
    body: Body,
    hooks: Omit<Pending, "resolve" | "reject"> = {},
    signal?: AbortSignal,
    transfer: Transferable[] = [],
  ): { id: number; result: Promise<ResultValue> } {
    const id = this.nextId++;
    const result = new Promise<ResultValue>((resolve, reject) => {
      if (signal?.aborted) return reject(abortError());
      // After a crash, what needs the model fails as it did in the worker, until a load.
      if (this.crash && NEEDS_MODEL.has(body.type)) return reject(this.crash);
      let worker: Worker;
      try {
        worker = this.live();
      } catch (e) {
        return reject(e);
      }
      const onAbort = () => this.abort(id);
      const done = () => signal?.removeEventListener("abort", onAbort);
      this.pending.set(id, {
        ...hooks,
        resolve: (v) => {
          done();
          resolve(v);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        worker.postMessage({ ...body, id } as Request, transfer);
      } catch (e) {
        this.pending.delete(id);
        done();
        const why = e instanceof Error ? e.message : String(e);
        reject(new HearthError("bad_options", `the request cannot be sent to the engine worker: ${why}`));
      }
    });
    return { id, result };
  }

  private call(
    body: Body,
    hooks: Omit<Pending, "resolve" | "reject"> = {},
    signal?: AbortSignal,
    transfer: Transferable[] = [],
  ): Promise<ResultValue> {
    return this.send(body, hooks, signal, transfer).result;
  }

  private abort(target: number): void {
    if (!this.pending.has(target)) return;
    try {
      this.worker?.postMessage({ id: this.nextId++, type: "abort", target } as Request);
    } catch {
      // The worker is gone; its pending calls have been rejected.
    }
  }

  async load(source: ModelFiles, options: LoadOptions = {}): Promise<ModelInfo> {
    const { onProgress, signal, ...plain } = options;
    const [src, transfer] = postedFiles(source);
    const info = (await this.call({ type: "load", source: src, options: plain }, { onProgress }, signal, transfer)) as ModelInfo;
    this.modelName = info.name;
    this.crash = null;
    return info;
  }

  async loadDraft(source: ModelSource | null, options: DraftLoadOptions = {}): Promise<DraftInfo | null> {
    const { onProgress, signal, ...plain } = options;
    const [src, transfer] = posted(source);
    return (await this.call({ type: "load-draft", source: src, options: plain }, { onProgress }, signal, transfer)) as DraftInfo | null;
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
    let id = 0;
    // Each chunk is acknowledged (the worker waits for that before its next token) when the
    // reader asks for the one after it, or else at the next task: a reader that breaks out
    // on a chunk has its abort posted before that chunk's acknowledgement, so the worker
    // stops at the token it was waiting to run, and one that is slow to read does not stall
    // the worker (a page may read its streams in any order).
    let owed = 0;
    const settle = () => {
      if (owed === 0) return;
      owed -= 1;
      this.ack(id);
    };
    // Leaving the stream early aborts the request in the worker; what it still owed is moot.
    const queue = new AsyncQueue<ChatCompletionChunk>(() => ((owed = 0), this.abort(id)), settle);
    const arrived = (chunk: ChatCompletionChunk) => {
      owed += 1;
      queue.push(chunk);
      setTimeout(settle, 0);
    };
    const sent = this.send({ type: "chat", request: plain }, { onChunk: arrived }, signal);
    id = sent.id;
    sent.result.then(
      () => queue.close(),
      (e: HearthError) => queue.close(e),
    );
    return Promise.resolve(queue);
  }

  async tokenize(text: string, options: { parseSpecial?: boolean } = {}): Promise<number[]> {
    return (await this.call({ type: "tokenize", text, parseSpecial: options.parseSpecial ?? false })) as number[];
  }

  async score(ids: number[], options: { signal?: AbortSignal } = {}): Promise<number[]> {
    return (await this.call({ type: "score", ids }, {}, options.signal)) as number[];
  }

  async detokenize(ids: number[]): Promise<string> {
    return (await this.call({ type: "detokenize", ids })) as string;
  }

  async stats(): Promise<EngineStats> {
    const stats = (await this.call({ type: "stats" })) as EngineStats;
    // A worker replaced after a crash knows nothing of it: the page does, until the next load.
    return this.crash ? { ...stats, crashed: true } : stats;
  }

  async resetChat(): Promise<void> {
    await this.call({ type: "reset" });
  }

  async unload(): Promise<void> {
    await this.call({ type: "unload" });
  }

  /** Microseconds one hand-off to the worker's threaded pool takes, for benchmarks.
   * @internal */
  async benchPoolJoin(rounds: number): Promise<number> {
    return (await this.call({ type: "bench-pool-join", rounds })) as number;
  }

  /** Makes a thread of the worker's pool panic at its next job, for tests of crash recovery.
   * @internal */
  async testPoolPanic(): Promise<void> {
    await this.call({ type: "test-pool-panic" });
  }

  /** Panics the wasm core inside the worker, for tests of crash recovery.
   * @internal */
  async testPanic(): Promise<void> {
    // A threaded engine's worker is replaced at once, this call with it: the panic happened.
    await this.call({ type: "test-panic" }).catch((e: unknown) => {
      if (!(e instanceof HearthError && e.kind === "engine_crashed")) throw e;
    });
  }

  /** Stops the worker; pending calls reject, and so do later ones. */
  terminate(): void {
    const error = new HearthError("engine_crashed", "the engine worker was terminated");
    this.worker?.terminate();
    this.worker = null;
    this.dead = error;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }
}

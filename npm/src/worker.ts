/**
 * The worker entry: runs a `HearthEngine` off the page's main thread and answers the
 * messages of `protocol.ts`. Start it with
 * `new Worker(new URL("hearth/worker", import.meta.url), { type: "module" })`.
 */

import { HearthEngine, pauses } from "./engine.js";
import { threaded } from "./instance.js";
import { HearthError, serializeError } from "./errors.js";
import type { Request, Response } from "./protocol.js";
import type { ChatCompletionChunk } from "./types.js";

interface WorkerScope {
  postMessage(message: Response): void;
  addEventListener(type: "message", listener: (event: MessageEvent<Request>) => void): void;
}

const scope = globalThis as unknown as WorkerScope;
const engine = new HearthEngine();
const aborts = new Map<number, AbortController>();
// The threaded instance cannot be replaced here: the page replaces this worker (and its pool).
threaded.onDeath = (error) => post({ id: 0, type: "crashed", error: serializeError(error) });
/** Per generation: pieces sent that the page has not acknowledged, and the step waiting. */
const windows = new Map<number, { unacked: number; resume: (() => void) | null }>();

function post(message: Response): void {
  scope.postMessage(message);
}

/** Sends a piece of a generation, counting it until the page acknowledges it. */
function postPiece(message: Response): void {
  const window = windows.get(message.id);
  if (window) window.unacked += 1;
  post(message);
}

/** Lets a waiting step go on once nothing is unacknowledged (or the request is aborted). */
function release(id: number, acknowledged: boolean): void {
  const window = windows.get(id);
  if (!window) return;
  if (acknowledged) window.unacked = Math.max(0, window.unacked - 1);
  if ((window.unacked === 0 || !acknowledged) && window.resume) {
    const resume = window.resume;
    window.resume = null;
    resume();
  }
}

/** Flow control for request `id`: the next step waits until the page has every piece. */
function flowControl(id: number, signal: AbortSignal): void {
  const window = { unacked: 0, resume: null as (() => void) | null };
  windows.set(id, window);
  pauses.set(signal, () =>
    window.unacked === 0 || signal.aborted ? Promise.resolve() : new Promise<void>((r) => (window.resume = r)),
  );
}

async function handle(req: Exclude<Request, { type: "abort" }>): Promise<Response> {
  const id = req.id;
  // Every request can be aborted by id; only load, generate and chat listen.
  const controller = new AbortController();
  aborts.set(id, controller);
  const signal = controller.signal;
  flowControl(id, signal);
  switch (req.type) {
    case "load": {
      const value = await engine.load(req.source, {
        ...req.options,
        signal,
        onProgress: (progress) => post({ id, type: "progress", progress }),
      });
      return { id, type: "result", value };
    }
    case "load-draft": {
      const value = await engine.loadDraft(req.source, {
        ...req.options,
        signal,
        onProgress: (progress) => post({ id, type: "progress", progress }),
      });
      return { id, type: "result", value };
    }
    case "generate": {
      const value = await engine.generate(req.prompt, {
        ...req.options,
        signal,
        onText: (text) => postPiece({ id, type: "text", text }),
      });
      return { id, type: "result", value };
    }
    case "chat": {
      if (req.request.stream) {
        const stream = await engine.chat.completions.create({ ...req.request, stream: true, signal });
        for await (const chunk of stream as AsyncIterable<ChatCompletionChunk>) postPiece({ id, type: "chunk", chunk });
        return { id, type: "result", value: null };
      }
      const value = await engine.chat.completions.create({ ...req.request, stream: false, signal });
      return { id, type: "result", value };
    }
    case "tokenize":
      return { id, type: "result", value: await engine.tokenize(req.text, { parseSpecial: req.parseSpecial }) };
    case "detokenize":
      return { id, type: "result", value: await engine.detokenize(req.ids) };
    case "score":
      return { id, type: "result", value: await engine.score(req.ids, { signal }) };
    case "stats":
      return { id, type: "result", value: await engine.stats() };
    case "reset":
      await engine.resetChat();
      return { id, type: "result", value: null };
    case "unload":
      await engine.unload();
      return { id, type: "result", value: null };
    case "test-panic":
      await engine.testPanic();
      return { id, type: "result", value: null };
    case "bench-pool-join":
      return { id, type: "result", value: engine.benchPoolJoin(req.rounds) };
    case "test-pool-panic":
      engine.testPoolPanic();
      return { id, type: "result", value: null };
    default:
      throw new HearthError("bad_options", `unknown request ${JSON.stringify((req as { type?: unknown }).type)}`);
  }
}

scope.addEventListener("message", (event) => {
  const req = event.data;
  // Messages that are not requests of the protocol (another script's) are not ours to answer.
  if (typeof req !== "object" || req === null || typeof req.id !== "number") return;
  if (req.type === "abort") {
    aborts.get(req.target)?.abort();
    release(req.target, false);
    return;
  }
  if (req.type === "ack") {
    release(req.target, true);
    return;
  }
  handle(req)
    .then(post, (e: unknown) => post({ id: req.id, type: "error", error: serializeError(e) }))
    .finally(() => {
      aborts.delete(req.id);
      windows.delete(req.id);
    });
});

/**
 * The messages between the worker proxy (`WorkerEngine`, page side) and the worker
 * (`worker.ts`). Every request carries an `id`; the worker answers it with exactly one
 * `result` or `error`, after any number of `progress` (load) or `chunk`/`text` (generation)
 * messages with the same id. `abort` names the id of the request to stop. Tokens travel one
 * message each, and the proxy acknowledges each `text` or `chunk` with an `ack`: the worker
 * generates the next token only when the page has received the previous one, so an abort (or
 * a `break` out of a stream) from the page lands within a token however fast tokens come.
 * Model buffers are transferred, not copied.
 */

import type { SerializedError } from "./errors.js";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  DraftInfo,
  DraftLoadOptions,
  EngineStats,
  GenerateOptions,
  GenerateResult,
  LoadOptions,
  LoadProgress,
  ModelInfo,
  ModelFiles,
  ModelSource,
} from "./types.js";

/** Options without the parts that cannot cross `postMessage` (signals, callbacks). */
export type PlainLoadOptions = Omit<LoadOptions, "onProgress" | "signal">;
export type PlainDraftLoadOptions = Omit<DraftLoadOptions, "onProgress" | "signal">;
export type PlainGenerateOptions = Omit<GenerateOptions, "onText" | "signal">;
export type PlainChatRequest = Omit<ChatCompletionRequest, "signal">;

export type Request =
  | { id: number; type: "load"; source: ModelFiles; options: PlainLoadOptions }
  | { id: number; type: "load-draft"; source: ModelSource | null; options: PlainDraftLoadOptions }
  | { id: number; type: "generate"; prompt: string; options: PlainGenerateOptions }
  | { id: number; type: "chat"; request: PlainChatRequest }
  | { id: number; type: "tokenize"; text: string; parseSpecial: boolean }
  | { id: number; type: "detokenize"; ids: number[] }
  | { id: number; type: "score"; ids: number[] }
  | { id: number; type: "stats" }
  | { id: number; type: "reset" }
  | { id: number; type: "unload" }
  /** Panics the wasm core (tests of crash recovery only). */
  | { id: number; type: "test-panic" }
  /** Panics a thread of the threaded artifact's pool (tests of crash recovery only). */
  | { id: number; type: "test-pool-panic" }
  /** Times hand-offs to the threaded pool (benchmarks only). */
  | { id: number; type: "bench-pool-join"; rounds: number }
  | { id: number; type: "abort"; target: number }
  /** The page received one `text` or `chunk` of request `target`. */
  | { id: number; type: "ack"; target: number };

export type ResultValue =
  | ModelInfo
  | DraftInfo
  | GenerateResult
  | ChatCompletion
  | EngineStats
  | number[]
  | number
  | string
  | null;

export type Response =
  | { id: number; type: "result"; value: ResultValue }
  | { id: number; type: "error"; error: SerializedError }
  | { id: number; type: "progress"; progress: LoadProgress }
  | { id: number; type: "text"; text: string }
  | { id: number; type: "chunk"; chunk: ChatCompletionChunk }
  /** The worker's threaded instance died and cannot be replaced in the worker (its memory is
   * shared with its pool): the page replaces the worker. */
  | { id: 0; type: "crashed"; error: SerializedError };

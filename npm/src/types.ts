/**
 * The public types of hearth's JavaScript API. Option and result names follow OpenAI's chat
 * completions API (snake_case), which is what web developers already know.
 */

import type * as wire from "./wire.js";
import type { Activations, DraftInfo, FinishReason, ModelInfo, ToolCall, WeightFormat } from "./wire.js";

export type Role = "system" | "user" | "assistant" | "tool";

/** A turn of the conversation, in OpenAI's shape: an assistant turn may carry the calls it
 * made (`content` null or text), a `tool` turn the result of the call `tool_call_id` names. */
export interface ChatMessage {
  role: Role;
  content: string | null;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  name?: string;
}

/** A function the model may call, its call, and whether it must: OpenAI's shapes. */
export type { Tool, ToolCall, ToolChoice, FunctionDef, FunctionCall } from "./wire.js";

/** A call as a stream sends it: whole, in one chunk, with its place among the reply's calls. */
export type ToolCallDelta = ToolCall & { index: number };

/** How to pick tokens and when to stop. Every field is optional; the default is greedy. */
export interface SamplingOptions {
  /** Most tokens to generate (default 256). */
  max_tokens?: number;
  /** 0 is greedy (default). */
  temperature?: number;
  top_p?: number;
  /** 0 keeps every token. */
  top_k?: number;
  min_p?: number;
  /** Divides positive (multiplies negative) logits of recent tokens; 1 is off. */
  repetition_penalty?: number;
  /** Same seed, same prompt, same options: same text. */
  seed?: number;
  /** Generation ends before the first occurrence of any of these. */
  stop?: string | string[];
  /** `{ "token id": bias }`: added to that token's logit, -100 (banned) to 100. */
  logit_bias?: Record<string, number>;
  /** Draft tokens and check them together in one forward pass: greedy output is the same
   * token for token, sampled output follows the same distribution; faster when the answer
   * copies from the conversation (rewriting, fixing, extracting). */
  speculative?: SpeculativeOptions;
  /** Let a decode step end at an earlier layer when the model is sure enough there (the
   * skipped layers still get the token's keys and values). Runs alone, like speculative
   * decoding; not combined with it. Models not trained for it lose quality fast: measure. */
  early_exit?: EarlyExitOptions;
}

/** Where drafts come from: `prompt-lookup` copies what followed the last few tokens where
 * they occurred earlier in the conversation; `draft` asks a smaller model with the same
 * vocabulary (`loadDraft`); `self` asks the model's own first `draft_layers` layers. */
export type { SpeculativeMethod, ExitMeasure } from "./wire.js";
export { SPECULATIVE_METHODS, EXIT_MEASURES, PRUNE_METHODS } from "./wire.js";

/** How to speculate; every field optional (`method` defaults to "prompt-lookup"). */
export type SpeculativeOptions = Partial<wire.SpeculativeOptions>;

/** Early exit: `layers` required, the rest optional (threshold 0.9, measure "max-prob",
 * shortlist 0: the whole head). */
export type EarlyExitOptions = Pick<wire.EarlyExitOptions, "layers"> & Partial<wire.EarlyExitOptions>;

/** How a chat prompt longer than its budget is shortened. */
export type PruneMethod = wire.PromptPruneMethod;

/** What the reply must match. `json_object` with a `schema` is WebLLM's spelling of a JSON
 * schema (an object or its JSON text); `grammar` is a Lark grammar in llguidance's syntax
 * (not GBNF or XGrammar's EBNF). */
export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object"; schema?: object | string }
  | { type: "json_schema"; json_schema: { name?: string; description?: string; schema: object; strict?: boolean } }
  | { type: "grammar"; grammar: string }
  | { type: "regex"; regex: string };

/** One token's log-probability in OpenAI's shape: its text, its bytes and, with
 * `top_logprobs`, the likeliest tokens there. The model's own log-softmax (before bias,
 * grammar or temperature). */
export interface LogprobToken {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export interface ChoiceLogprobs {
  content: LogprobToken[];
}

export interface ChatCompletionRequest extends SamplingOptions {
  messages: ChatMessage[];
  stream?: boolean;
  /** Holds the reply to a JSON object, a JSON schema, a Lark grammar or a regex. */
  response_format?: ResponseFormat;
  /** Report each token's log-probability (`choices[0].logprobs`). */
  logprobs?: boolean;
  /** With `logprobs`: this many likeliest alternatives per token, 0..20. */
  top_logprobs?: number;
  /** Functions the model may call. A template that writes tool calls (Qwen 2.5's) gets them;
   * any other model gets them in its system prompt, in the Hermes format. */
  tools?: wire.Tool[];
  /** `"auto"` (default: text, or calls once the model starts one), `"none"` (the tools are
   * not shown), `"required"` (calls only), or `{type: "function", function: {name}}`. A
   * call's name is one of the tools and its arguments follow that tool's schema. */
  tool_choice?: wire.ToolChoice;
  /** More than one call in a reply (default true). */
  parallel_tool_calls?: boolean;
  /** Most prompt tokens; when the conversation is longer, earlier messages lose their least
   * informative spans (never the system prompt or the latest user message). Default: the KV
   * capacity less the answer's tokens. */
  prune_budget?: number;
  /** Default "self-information" (the model's own surprisal of each span). */
  prune_method?: PruneMethod;
  /** Aborting stops pruning's scoring or the prefill between chunks, or generation within one
   * token; the call (or the stream) then rejects with an `AbortError`. Leaving a `for await`
   * over the stream early aborts it too. */
  signal?: AbortSignal;
}

export type StreamingChatCompletionRequest = ChatCompletionRequest & { stream: true };
export type NonStreamingChatCompletionRequest = ChatCompletionRequest & { stream?: false };

/** Why generation ended: `stop` (end of turn or a stop string), `length` (max_tokens),
 * `context_full` (the KV cache is full), `aborted`, `tool_calls` (the reply called tools). */
export type { FinishReason } from "./wire.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A generation's timings and counts: the core's stats but the token counts, which `usage`
 * carries. */
export type Timings = Omit<wire.GenerationStats, "prompt_tokens" | "generated_tokens">;

export type { DroppedSpan } from "./wire.js";

/** What pruning did to a prompt over its budget. */
export type PruneReport = wire.PromptPruneReport;

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: [
    {
      index: 0;
      /** `content` is null when the reply is only tool calls. */
      message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[] };
      finish_reason: FinishReason;
      logprobs: ChoiceLogprobs | null;
    },
  ];
  usage: Usage;
  timings: Timings;
  /** Present when the prompt was pruned. */
  pruned?: PruneReport;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  /** `logprobs`: every token's, on the last chunk (the text chunks follow the text, not the
   * tokens). */
  choices: [
    {
      index: 0;
      delta: { role?: "assistant"; content?: string; tool_calls?: ToolCallDelta[] };
      finish_reason: FinishReason | null;
      logprobs?: ChoiceLogprobs | null;
    },
  ];
  /** On the last chunk only. */
  usage?: Usage;
  /** On the last chunk only. */
  timings?: Timings;
  /** On the last chunk, when the prompt was pruned. */
  pruned?: PruneReport;
}

/** OpenAI's legacy completions: plain text continued, for base models (no chat template). */
export interface CompletionRequest extends SamplingOptions {
  prompt: string;
  stream?: boolean;
  /** Holds the continuation to a JSON object, a JSON schema, a Lark grammar or a regex, as
   * in `chat.completions.create`. */
  response_format?: ResponseFormat;
  /** Report each token's log-probability (`choices[0].logprobs`, in the chat's shape; a
   * stream sends them on its last chunk). */
  logprobs?: boolean;
  /** With `logprobs`: this many likeliest alternatives per token, 0..20. */
  top_logprobs?: number;
  /** Aborting stops the prefill between chunks, or generation within one token; the call (or
   * the stream) then rejects with an `AbortError`. Leaving a `for await` early aborts too. */
  signal?: AbortSignal;
}

export type StreamingCompletionRequest = CompletionRequest & { stream: true };
export type NonStreamingCompletionRequest = CompletionRequest & { stream?: false };

export interface TextCompletion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: [{ index: 0; text: string; finish_reason: FinishReason; logprobs: ChoiceLogprobs | null }];
  usage: Usage;
  timings: Timings;
}

/** One piece of a streamed completion; the last has `finish_reason`, `usage` and `timings`. */
export interface TextCompletionChunk {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: [{ index: 0; text: string; finish_reason: FinishReason | null; logprobs: ChoiceLogprobs | null }];
  usage?: Usage;
  timings?: Timings;
}

export interface Completions {
  create(request: StreamingCompletionRequest): Promise<AsyncIterable<TextCompletionChunk>>;
  create(request: NonStreamingCompletionRequest): Promise<TextCompletion>;
}

/** How matrices are kept: `int4` (the default: every stored block format kept, float
 * matrices quantized to 4 bits), `f32`, or `q4_0`, `q4_1`, `q8_0`, `q2_k`, `q3_k`, `q4_k`,
 * `q5_k`, `q6_k` (float matrices quantized as ggml's reference quantizers would). */
export type { Activations, WeightFormat } from "./wire.js";
export { WEIGHT_FORMATS, KV_POLICIES } from "./wire.js";

export type ModelSource = string | URL | ArrayBuffer | Uint8Array | Blob;
/** A model in one file, or split in several (llama.cpp's `gguf-split` shards, in any order):
 * a list of sources, or the URL of the first shard (`…-00001-of-00003.gguf`), whose siblings
 * are then fetched beside it. */
export type ModelFiles = ModelSource | readonly ModelSource[];

export type LoadStage = "fetch" | "cache" | "upload" | "ready";

export interface LoadProgress {
  stage: LoadStage;
  /** Bytes read (fetch, cache) or tensors uploaded (upload). */
  loaded: number;
  /** Total bytes or tensors, when known. */
  total: number | null;
}

export type KvPolicy = wire.EvictionPolicy;

/** Where a model runs: `"auto"` (default) picks WebGPU on a hardware adapter and the CPU when
 * WebGPU is missing, offers no adapter or only a software one; `"webgpu"` and `"cpu"` force it. */
export type DeviceChoice = "auto" | "webgpu" | "cpu";

export interface LoadOptions {
  device?: DeviceChoice;
  /** "int4" (packed, default) or "f32". */
  weights?: WeightFormat;
  /** How activations meet the packed weights on the CPU: "f32" (exact, default) or "q8"
   * (8-bit inputs and integer dot products, as llama.cpp; see docs/cpu-kernels.md for what it
   * costs in quality). This build's wasm kernels run q8 as f32 for now: `ModelInfo.activations`
   * and `stats().activations` say the mode that runs. */
  activations?: Activations;
  /** Threads the CPU path computes on (1 to 64). Default: every logical core up to 4, half of
   * them beyond, at most 8. More than 1 needs the worker engine on a cross-origin isolated
   * page; elsewhere the model runs on one thread and `stats().device_reason` says why. */
  threads?: number;
  /** KV cache size in tokens (default: the model's context or 2048, whichever is smaller). */
  kv_capacity?: number;
  /** What a full KV cache evicts (default "sinks-window": the first `kv_sinks` tokens and the
   * most recent ones stay); "none" ends generation when it is full. */
  kv_policy?: KvPolicy;
  /** First tokens never evicted (default 4). */
  kv_sinks?: number;
  /** `"heavy-hitters"`: most recent tokens never evicted (default: half of what the sinks leave). */
  kv_recent?: number;
  /** Keep a downloaded model in the browser's Cache Storage and read it from there next time (default true). */
  cache?: boolean;
  /** Load a smaller model cut from this one (structured pruning at load). */
  prune_weights?: PruneWeightsOptions;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
}

/** What structured pruning cuts at load: whole layers (the least influential on the
 * calibration text, ShortGPT's block influence, or the ones named), query heads and FFN
 * channels (least activation-weighted magnitude, Wanda's scores) from every layer. The whole
 * model is uploaded and run over the calibration text first, then replaced by the pruned one
 * (the device briefly holds both). Models not trained for it lose quality fast: measure. */
export type PruneWeightsOptions = wire.PruneWeightsRequest;

export interface DraftLoadOptions {
  /** How the draft's matrices are kept, as for `load` (default "int4"). */
  weights?: WeightFormat;
  /** As for `load` (default true). */
  cache?: boolean;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
}

/** What `loadDraft` loaded. */
export type { DraftInfo } from "./wire.js";

/** What a load reports. `max_streams`: generations served together at most, decoded as one
 * batch (each with a KV cache of its own); more wait their turn. Speculative decoding and
 * scoring run alone. */
export type { ModelInfo } from "./wire.js";

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  description: string;
  features: string[];
  max_buffer_size: number;
  max_storage_buffer_binding_size: number;
  /** The browser says this adapter is a software fallback. */
  is_fallback_adapter: boolean;
}

/** The engine's state: the core's, and what this layer knows besides. */
export type EngineStats = Omit<wire.EngineStats, "cpu_isa"> & {
  /** The wasm instance trapped (or the worker died); `load()` starts a new one. */
  crashed: boolean;
  /** Why the model runs where it does (what `device: "auto"` saw, or "requested"). */
  device_reason: string | null;
  /** The CPU kernels' SIMD level in this build ("simd128"); null before the core starts. */
  cpu_isa: string | null;
  /** The WebGPU adapter seen, if one was asked for. */
  adapter: AdapterInfo | null;
};

export interface GenerateOptions extends SamplingOptions {
  /** What the continuation must match: the core's grammar (`{type: "json_object"}`,
   * `{type: "json_schema", schema}`, `{type: "lark", grammar}` or `{type: "regex", regex}`). */
  grammar?: wire.Grammar;
  /** Record each token's log-probability with this many likeliest alternatives (0..20):
   * `logprobs` in the result. */
  logprobs?: number;
  /** Aborting stops the prefill between chunks, or generation within one token; the call then
   * rejects with an `AbortError`. */
  signal?: AbortSignal;
  /** Called with each new piece of text. If it throws, generation stops and the call rejects
   * with kind `callback` and the thrown error as `cause`. */
  onText?: (text: string) => void;
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  finish_reason: FinishReason;
  usage: Usage;
  timings: Timings;
  /** Each token's log-probability, when `logprobs` asked for them (OpenAI's shape). */
  logprobs: ChoiceLogprobs | null;
}

export interface ChatCompletions {
  create(request: StreamingChatCompletionRequest): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(request: NonStreamingChatCompletionRequest): Promise<ChatCompletion>;
}

/** What both the in-page engine and the worker proxy offer.
 *
 * One generation runs at a time: further `chat.completions.create` and `generate` calls wait
 * their turn, in order. `load`, `resetChat` and `unload` while a generation runs or waits, and
 * a second `load` while one runs, reject with kind `busy` and change nothing. A failed `load`
 * leaves the model that was loaded before, and its conversation. After a crash
 * (`engine_crashed`) or a lost GPU (`device_lost`) every call rejects with that kind until a
 * `load` starts the engine afresh; no call hangs. */
export interface EngineApi {
  load(source: ModelFiles, options?: LoadOptions): Promise<ModelInfo>;
  /** Loads a draft model for `speculative: { method: "draft" }` onto the loaded model's
   * device (replacing any draft before; `null` removes it). It must share the model's
   * vocabulary token for token, else `bad_options` and the draft before stays. A later `load`
   * drops it with the model. `busy` while anything runs. */
  loadDraft(source: ModelSource | null, options?: DraftLoadOptions): Promise<DraftInfo | null>;
  readonly chat: { readonly completions: ChatCompletions };
  /** Continues a prompt as plain text (no chat template), in OpenAI's legacy completions
   * shape: what a base model is for. */
  readonly completions: Completions;
  /** Continues plain text (no chat template). */
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  /** The natural-log probability of each token after the first given those before it
   * (`ids.length - 1` numbers), teacher-forced: perplexity, or two engines compared on the
   * same tokens. The conversation is kept. Takes its turn like a generation; `signal` aborts
   * it between passes of the model. */
  score(ids: number[], options?: { signal?: AbortSignal }): Promise<number[]>;
  tokenize(text: string, options?: { parseSpecial?: boolean }): Promise<number[]>;
  detokenize(ids: number[]): Promise<string>;
  stats(): Promise<EngineStats>;
  /** Forgets the conversation held in the KV cache. */
  resetChat(): Promise<void>;
  /** Frees the model and its GPU memory. */
  unload(): Promise<void>;
}

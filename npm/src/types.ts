/**
 * The public types of hearth's JavaScript API. Option and result names follow OpenAI's chat
 * completions API (snake_case), which is what web developers already know.
 */

export type Role = "system" | "user" | "assistant";

export interface ChatMessage {
  role: Role;
  content: string;
}

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
export const SPECULATIVE_METHODS = ["prompt-lookup", "draft", "self"] as const;
export type SpeculativeMethod = (typeof SPECULATIVE_METHODS)[number];

export interface SpeculativeOptions {
  /** Default "prompt-lookup". */
  method?: SpeculativeMethod;
  /** Most tokens one draft proposes, 1..15 (default 7). */
  max_draft?: number;
  /** prompt-lookup: the longest n-gram matched, 1..16 (default 3). */
  ngram?: number;
  /** self: the layers that guess, below the model's `n_layers` (default: half of them). */
  draft_layers?: number;
}

/** How sure the model is at an exit: the largest probability, or it less the second. */
export const EXIT_MEASURES = ["max-prob", "margin"] as const;
export type ExitMeasure = (typeof EXIT_MEASURES)[number];

export interface EarlyExitOptions {
  /** Layers after which a step may exit, ascending, each below the model's `n_layers`. */
  layers: number[];
  /** Exit where the confidence is strictly above this, 0..1 (default 0.9; a max-prob of 1 never exits). */
  threshold?: number;
  /** Default "max-prob". */
  measure?: ExitMeasure;
  /** Read the confidence from the head's rows of the last full step's likeliest N tokens
   * only, 2..1024 (default 0: the whole head, which costs a small model's head each look). */
  shortlist?: number;
}

/** How a chat prompt longer than its budget is shortened. */
export const PRUNE_METHODS = ["self-information", "oldest-turns", "front", "none"] as const;
export type PruneMethod = (typeof PRUNE_METHODS)[number];

export interface ChatCompletionRequest extends SamplingOptions {
  messages: ChatMessage[];
  stream?: boolean;
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
 * `context_full` (the KV cache is full), `aborted`. */
export type FinishReason = "stop" | "length" | "context_full" | "aborted";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface Timings {
  time_to_first_token_ms: number;
  prefill_ms: number;
  decode_ms: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  /** Prompt tokens already in the KV cache from the previous turn. */
  reused_tokens: number;
  kv_len: number;
  kv_capacity: number;
  /** Tokens the KV cache evicted during this generation. */
  evicted_tokens: number;
  /** Prompt tokens dropped by pruning. */
  pruned_tokens: number;
  /** Speculative decoding: tokens drafted, how many the model accepted, and their ratio. */
  draft_tokens: number;
  accepted_tokens: number;
  acceptance_rate: number;
  /** Layers run per decode step on average (the model's `n_layers` without early exit). */
  mean_layers: number;
}

/** One run of tokens pruning dropped. */
export interface DroppedSpan {
  /** Index of the message it came from. */
  message: number;
  tokens: number;
  text: string;
}

/** What pruning did to a prompt over its budget. */
export interface PruneReport {
  method: PruneMethod;
  budget: number;
  original_tokens: number;
  kept_tokens: number;
  pruned_tokens: number;
  dropped: DroppedSpan[];
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: [{ index: 0; message: { role: "assistant"; content: string }; finish_reason: FinishReason }];
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
  choices: [{ index: 0; delta: { role?: "assistant"; content?: string }; finish_reason: FinishReason | null }];
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
  choices: [{ index: 0; text: string; finish_reason: FinishReason; logprobs: null }];
  usage: Usage;
  timings: Timings;
}

/** One piece of a streamed completion; the last has `finish_reason`, `usage` and `timings`. */
export interface TextCompletionChunk {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: [{ index: 0; text: string; finish_reason: FinishReason | null; logprobs: null }];
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
export const WEIGHT_FORMATS = ["int4", "f32", "q4_0", "q4_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

export type ModelSource = string | URL | ArrayBuffer | Uint8Array | Blob;

export type LoadStage = "fetch" | "cache" | "upload" | "ready";

export interface LoadProgress {
  stage: LoadStage;
  /** Bytes read (fetch, cache) or tensors uploaded (upload). */
  loaded: number;
  /** Total bytes or tensors, when known. */
  total: number | null;
}

export const KV_POLICIES = ["sinks-window", "heavy-hitters", "none"] as const;
export type KvPolicy = (typeof KV_POLICIES)[number];

/** Where a model runs: `"auto"` (default) picks WebGPU on a hardware adapter and the CPU when
 * WebGPU is missing, offers no adapter or only a software one; `"webgpu"` and `"cpu"` force it. */
export type DeviceChoice = "auto" | "webgpu" | "cpu";

export interface LoadOptions {
  device?: DeviceChoice;
  /** "int4" (packed, default) or "f32". */
  weights?: WeightFormat;
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
export interface PruneWeightsOptions {
  /** How many layers to drop, or which (by index). Default 0. */
  layers?: number | number[];
  /** Query heads to drop from every layer, a multiple of the key/value heads. Default 0. */
  heads?: number;
  /** The share of every layer's FFN channels to drop, 0..1 (the count rounded to a multiple of 32). Default 0. */
  ffn?: number;
  /** Plain text the cut is chosen on (its first 512 tokens; default: a built-in text). */
  calibration?: string;
}

export interface DraftLoadOptions {
  /** How the draft's matrices are kept, as for `load` (default "int4"). */
  weights?: WeightFormat;
  /** As for `load` (default true). */
  cache?: boolean;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
}

/** What `loadDraft` loaded. */
export interface DraftInfo {
  name: string;
  vocab: number;
  n_layers: number;
  weight_bytes: number;
}

export interface ModelInfo {
  name: string;
  vocab: number;
  d_model: number;
  n_layers: number;
  context_length: number;
  kv_capacity: number;
  kv_policy: KvPolicy;
  kv_sinks: number;
  weights: WeightFormat;
  weight_bytes: number;
  has_chat_template: boolean;
  device: "webgpu" | "cpu";
  cpu_isa: string;
  /** Generations served together at most, decoded as one batch (each with a KV cache of its
   * own); more wait their turn. Speculative decoding and scoring run alone. */
  max_streams: number;
}

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

export interface EngineStats {
  loaded: boolean;
  /** True exactly while a generation (or scoring) runs. */
  generating: boolean;
  /** Generations running together now. */
  streams: number;
  /** Requests waiting for their turn (all `max_streams` running, or one that runs alone). */
  queued: number;
  /** The wasm instance trapped (or the worker died); `load()` starts a new one. */
  crashed: boolean;
  /** The GPU device was lost; `load()` starts on a new one. */
  device_lost: boolean;
  /** The largest buffer the device binds, which caps the KV cache and every matrix. */
  max_buffer_bytes: number | null;
  model: string | null;
  weight_bytes: number | null;
  kv_len: number | null;
  kv_capacity: number | null;
  kv_policy: KvPolicy | null;
  /** Tokens evicted since the conversation began. */
  kv_evicted: number | null;
  device_memory_in_use_bytes: number | null;
  device_memory_reserved_bytes: number | null;
  /** Where the loaded model runs. */
  device: "webgpu" | "cpu" | null;
  /** Why it runs there (what `device: "auto"` saw, or "requested"). */
  device_reason: string | null;
  /** The CPU kernels' SIMD level in this build ("simd128"). */
  cpu_isa: string | null;
  /** The WebGPU adapter seen, if one was asked for. */
  adapter: AdapterInfo | null;
}

export interface GenerateOptions extends SamplingOptions {
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
  load(source: ModelSource, options?: LoadOptions): Promise<ModelInfo>;
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

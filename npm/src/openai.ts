/** OpenAI's shapes over the core's generations: usage, timings, a chat completion and its
 * stream of chunks. */

import { AsyncQueue } from "./queue.js";
import { HearthError, toHearthError } from "./errors.js";
import type { GenerateRequest, Generation, Grammar, ToolCall } from "./wire.js";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChoiceLogprobs,
  FinishReason,
  Timings,
  Usage,
} from "./types.js";

/** The request's own OpenAI keys that this layer turns into the core's. */
export const OPENAI_KEYS = ["response_format", "logprobs", "top_logprobs"] as const;

/** `response_format`, `logprobs` and `top_logprobs` as the core's `grammar` and `logprobs`. */
export function constraintRequest(request: ChatCompletionRequest): Pick<GenerateRequest, "grammar" | "logprobs"> {
  const out: Pick<GenerateRequest, "grammar" | "logprobs"> = {};
  const format = request.response_format as Record<string, unknown> | undefined;
  if (format !== undefined) {
    if (typeof format !== "object" || format === null) throw new HearthError("bad_options", "response_format must be an object");
    const grammar = grammarOf(format);
    if (grammar) out.grammar = grammar;
  }
  if (request.logprobs === true) out.logprobs = request.top_logprobs ?? 0;
  else if (request.logprobs !== undefined && request.logprobs !== false) {
    throw new HearthError("bad_options", "logprobs must be a boolean");
  } else if (request.top_logprobs !== undefined) {
    throw new HearthError("bad_options", "top_logprobs needs logprobs: true");
  }
  return out;
}

/** The keys each `response_format` type takes. */
const FORMAT_KEYS: Record<string, readonly string[]> = {
  text: ["type"],
  json_object: ["type", "schema"],
  json_schema: ["type", "json_schema"],
  grammar: ["type", "grammar"],
  regex: ["type", "regex"],
};
const JSON_SCHEMA_KEYS = ["name", "description", "schema", "strict"];

function refuseUnknown(object: object, known: readonly string[], what: string): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) throw new HearthError("bad_options", `unknown ${what} key ${JSON.stringify(key)} (known: ${known.join(", ")})`);
  }
}

function grammarOf(format: Record<string, unknown>): Grammar | null {
  const known = FORMAT_KEYS[format.type as string];
  if (known) refuseUnknown(format, known, `response_format ${format.type as string}`);
  const schemaOf = (schema: unknown): unknown => {
    if (typeof schema !== "string") return schema;
    try {
      return JSON.parse(schema);
    } catch (e) {
      throw new HearthError("bad_options", `response_format schema is not JSON: ${(e as Error).message}`);
    }
  };
  switch (format.type) {
    case "text":
      return null;
    case "json_object":
      return format.schema === undefined ? { type: "json_object" } : { type: "json_schema", schema: schemaOf(format.schema) };
    case "json_schema": {
      const spec = format.json_schema as { schema?: unknown } | undefined;
      if (typeof spec !== "object" || spec === null || spec.schema === undefined) {
        throw new HearthError("bad_options", "response_format json_schema needs json_schema: { name, schema }");
      }
      refuseUnknown(spec, JSON_SCHEMA_KEYS, "json_schema");
      return { type: "json_schema", schema: schemaOf(spec.schema) };
    }
    case "grammar":
      return { type: "lark", grammar: format.grammar as string };
    case "regex":
      return { type: "regex", regex: format.regex as string };
    default:
      throw new HearthError(
        "bad_options",
        `response_format type must be text, json_object, json_schema, grammar or regex, got ${JSON.stringify(format.type)}`,
      );
  }
}

/** The core's log-probabilities in OpenAI's shape. */
export function logprobsOf(raw: Generation): ChoiceLogprobs | null {
  if (!raw.logprobs) return null;
  return {
    content: raw.logprobs.map((t) => ({
      token: t.text,
      logprob: t.logprob,
      bytes: Array.from(t.bytes),
      top_logprobs: t.top_logprobs.map((a) => ({ token: a.text, logprob: a.logprob, bytes: Array.from(a.bytes) })),
    })),
  };
}

let completionCounter = 0;

export function usageOf(raw: Generation): Usage {
  const { prompt_tokens, generated_tokens } = raw.stats;
  return { prompt_tokens, completion_tokens: generated_tokens, total_tokens: prompt_tokens + generated_tokens };
}

/** The stats but the token counts, which `usage` carries. */
export function timingsOf(raw: Generation): Timings {
  const { prompt_tokens: _prompt, generated_tokens: _generated, ...timings } = raw.stats;
  return timings;
}

function prunedOf(raw: Generation): { pruned?: NonNullable<Generation["pruned"]> } {
  return raw.pruned ? { pruned: raw.pruned } : {};
}

/** A chat completion's id, time and model, shared by its whole and its chunks. */
export interface Completion {
  id: string;
  created: number;
  model: string;
}

export function newCompletion(model: string): Completion {
  return { id: `chatcmpl-hearth-${++completionCounter}`, created: Math.floor(Date.now() / 1000), model };
}

/** The reply as OpenAI's message: with calls, `content` is null when no text came before them. */
function messageOf(raw: Generation): ChatCompletion["choices"][0]["message"] {
  if (!raw.tool_calls?.length) return { role: "assistant", content: raw.text };
  return { role: "assistant", content: raw.text === "" ? null : raw.text, tool_calls: raw.tool_calls };
}

export function chatCompletion(c: Completion, raw: Generation): ChatCompletion {
  return {
    ...c,
    object: "chat.completion",
    choices: [{ index: 0, message: messageOf(raw), finish_reason: raw.finish_reason, logprobs: logprobsOf(raw) }],
    usage: usageOf(raw),
    timings: timingsOf(raw),
    ...prunedOf(raw),
  };
}

function chunk(c: Completion, delta: ChatCompletionChunk["choices"][0]["delta"], finish: FinishReason | null): ChatCompletionChunk {
  return { ...c, object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: finish }] };
}

/** A stream of chunks for `run`, which generates with the given text callback and signal.
 * Leaving the stream early aborts the generation, as `outer` (the request's own signal) does;
 * `flow` (a flow-controlled caller's pause, see `pauses`) is awaited after each chunk is taken. */
export function chatStream(
  c: Completion,
  outer: AbortSignal | undefined,
  pauses: WeakMap<AbortSignal, () => Promise<void>>,
  run: (onText: (text: string, call?: ToolCall) => void, signal: AbortSignal) => Promise<Generation>,
): AsyncIterable<ChatCompletionChunk> {
  const stop = new AbortController();
  const forward = () => stop.abort();
  const queue = new AsyncQueue<ChatCompletionChunk>(() => stop.abort());
  // A flow-controlled caller (the worker, whose loop posts each chunk on) counts a piece when
  // its loop has posted it: the next step waits for that loop first, or it could run a token
  // ahead of the count.
  const pause = outer ? pauses.get(outer) : undefined;
  if (pause) pauses.set(stop.signal, () => queue.idle().then(pause));
  if (outer?.aborted) stop.abort();
  outer?.addEventListener("abort", forward, { once: true });
  let first = true;
  let calls = 0;
  run((text, call) => {
    const delta = call ? { tool_calls: [{ index: calls++, ...call }] } : { content: text };
    queue.push(chunk(c, first ? { role: "assistant", ...delta } : delta, null));
    first = false;
  }, stop.signal)
    .then(
      (raw) => {
        const last = chunk(c, {}, raw.finish_reason);
        last.choices[0].logprobs = logprobsOf(raw);
        queue.push({ ...last, usage: usageOf(raw), timings: timingsOf(raw), ...prunedOf(raw) });
        queue.close();
      },
      (e: unknown) => queue.close(toHearthError(e)),
    )
    .finally(() => outer?.removeEventListener("abort", forward));
  return queue;
}

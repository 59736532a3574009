/** OpenAI's shapes over the core's generations: usage, timings, a chat completion and its
 * stream of chunks. */

import { AsyncQueue } from "./queue.js";
import { toHearthError } from "./errors.js";
import type { Generation } from "./wire.js";
import type { ChatCompletion, ChatCompletionChunk, FinishReason, Timings, Usage } from "./types.js";

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

export function chatCompletion(c: Completion, raw: Generation): ChatCompletion {
  return {
    ...c,
    object: "chat.completion",
    choices: [{ index: 0, message: { role: "assistant", content: raw.text }, finish_reason: raw.finish_reason }],
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
  run: (onText: (text: string) => void, signal: AbortSignal) => Promise<Generation>,
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
  run((text) => {
    queue.push(chunk(c, first ? { role: "assistant", content: text } : { content: text }, null));
    first = false;
  }, stop.signal)
    .then(
      (raw) => {
        queue.push({ ...chunk(c, {}, raw.finish_reason), usage: usageOf(raw), timings: timingsOf(raw), ...prunedOf(raw) });
        queue.close();
      },
      (e: unknown) => queue.close(toHearthError(e)),
    )
    .finally(() => outer?.removeEventListener("abort", forward));
  return queue;
}

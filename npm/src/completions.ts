/**
 * `completions.create`: OpenAI's legacy text completions (`prompt` in, `text` out), for base
 * models that have no chat template. Written once over `generate`, so the in-page engine and
 * the worker proxy serve it the same way (same turn-taking, flow control and abort).
 */

import { HearthError, toHearthError } from "./errors.js";
import { constraintRequest } from "./openai.js";
import { AsyncQueue } from "./queue.js";
import type {
  ChoiceLogprobs,
  CompletionRequest,
  Completions,
  FinishReason,
  GenerateOptions,
  GenerateResult,
  TextCompletion,
  TextCompletionChunk,
} from "./types.js";

let counter = 0;

/** What a completion needs of an engine. */
export interface Generator {
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  /** The loaded model's name, for the `model` field. */
  modelName(): string;
}

export function completions(engine: Generator): Completions {
  return { create: ((request: CompletionRequest) => create(engine, request)) as Completions["create"] };
}

function create(engine: Generator, request: CompletionRequest): Promise<TextCompletion | AsyncIterable<TextCompletionChunk>> {
  const id = `cmpl-hearth-${++counter}`;
  const created = Math.floor(Date.now() / 1000);
  let prompt: string;
  let options: GenerateOptions;
  try {
    if (!request || typeof request !== "object") throw new HearthError("bad_options", "the request must be an object");
    const { prompt: p, stream: _stream, signal: _signal, response_format, logprobs, top_logprobs, ...rest } = request;
    if (typeof p !== "string") throw new HearthError("bad_prompt", "prompt must be a string");
    prompt = p;
    // `response_format` and `logprobs` as the chat's: the core's grammar and logprobs (passed
    // through `generate`).
    const constraint = constraintRequest({ messages: [], response_format, logprobs, top_logprobs });
    options = { ...rest, ...constraint } as GenerateOptions;
  } catch (e) {
    return Promise.reject(toHearthError(e));
  }
  const shape = (text: string, finish: FinishReason | null) => ({
    id,
    object: "text_completion" as const,
    created,
    model: engine.modelName(),
    choices: [{ index: 0 as const, text, finish_reason: finish, logprobs: null as ChoiceLogprobs | null }] as [
      { index: 0; text: string; finish_reason: FinishReason | null; logprobs: ChoiceLogprobs | null },
    ],
  });
  if (!request.stream) {
    return engine.generate(prompt, { ...options, signal: request.signal }).then((r) => {
      const base = shape(r.text, r.finish_reason);
      base.choices[0].logprobs = r.logprobs;
      return { ...base, choices: base.choices as TextCompletion["choices"], usage: r.usage, timings: r.timings };
    });
  }
  // Leaving the stream early aborts the generation, as the request's own signal does.
  const stop = new AbortController();
  const outer = request.signal;
  const forward = () => stop.abort();
  if (outer?.aborted) stop.abort();
  outer?.addEventListener("abort", forward, { once: true });
  const queue = new AsyncQueue<TextCompletionChunk>(() => stop.abort());
  engine
    .generate(prompt, { ...options, signal: stop.signal, onText: (text) => queue.push(shape(text, null)) })
    .then(
      (r) => {
        const last = shape("", r.finish_reason);
        last.choices[0].logprobs = r.logprobs;
        queue.push({ ...last, usage: r.usage, timings: r.timings });
        queue.close();
      },
      (e: unknown) => queue.close(toHearthError(e)),
    )
    .finally(() => outer?.removeEventListener("abort", forward));
  return Promise.resolve(queue);
}

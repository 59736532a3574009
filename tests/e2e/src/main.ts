import { HearthError, WorkerEngine, deleteCachedModel, isModelCached } from "hearth";
import type { ChatCompletionChunk, FinishReason, LoadProgress } from "hearth";

const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el;
};

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const model = params.get("model");
  if (!model) throw new Error("pass ?model=URL");
  const engine = new WorkerEngine(new Worker(new URL("./worker.ts", import.meta.url), { type: "module" }));
  $("status").textContent = "loading";
  const stages = new Set<string>();
  const info = await engine.load(model, {
    onProgress: (p: LoadProgress) => {
      stages.add(p.stage);
      $("progress").textContent = `${p.stage} ${p.loaded}/${p.total ?? "?"}`;
    },
  });
  const cached = await isModelCached(model);
  const placed = await engine.stats();
  $("status").textContent = "generating";
  const chunks = await engine.chat.completions.create({
    messages: [{ role: "user", content: "What is the capital of France?" }],
    stream: true,
    max_tokens: 24,
    temperature: 0,
  });
  let pieces = 0;
  let finish: FinishReason | null = null;
  let last: ChatCompletionChunk | null = null;
  for await (const chunk of chunks) {
    const text = chunk.choices[0].delta.content;
    if (text) {
      pieces += 1;
      $("reply").textContent += text;
    }
    finish = chunk.choices[0].finish_reason ?? finish;
    last = chunk;
  }
  // A bad option is refused with a typed error, and the engine keeps working.
  let badOption = "";
  try {
    await engine.generate("x", { temperature: -1 });
  } catch (e) {
    badOption = e instanceof HearthError ? `${e.kind}: ${e.message}` : String(e);
  }
  // Aborting a stream ends it within a token with an AbortError; the engine carries on.
  const controller = new AbortController();
  let abortName = "";
  let abortedAfter = 0;
  try {
    const stream = await engine.chat.completions.create({
      messages: [{ role: "user", content: "Tell me a long story about the sea." }],
      stream: true,
      max_tokens: 200,
      signal: controller.signal,
    });
    for await (const chunk of stream) {
      if (chunk.choices[0].delta.content) abortedAfter += 1;
      if (abortedAfter === 2) controller.abort();
    }
  } catch (e) {
    abortName = e instanceof Error ? e.name : String(e);
  }
  const after = await engine.generate("The capital of France is", { max_tokens: 3 });

  // A second load reads the model from Cache Storage; deleting it removes it.
  await engine.unload();
  const secondStages = new Set<string>();
  await engine.load(model, { onProgress: (p: LoadProgress) => secondStages.add(p.stage) });
  const deleted = await deleteCachedModel(model);
  const cachedAfterDelete = await isModelCached(model);
  const stats = await engine.stats();
  $("result").textContent = JSON.stringify({
    model: info.name,
    stages: [...stages],
    cached,
    pieces,
    finish,
    usage: last?.usage,
    timings: last?.timings,
    badOption,
    abortName,
    abortedAfter,
    afterAbort: after.usage.completion_tokens,
    secondStages: [...secondStages],
    deleted,
    cachedAfterDelete,
    kv_len: stats.kv_len,
    device: placed.device,
    deviceReason: placed.device_reason,
    cpuIsa: placed.cpu_isa,
    infoDevice: info.device,
  });
  $("status").textContent = "done";
}

main().catch((e: unknown) => {
  $("status").textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
  console.error(e);
});

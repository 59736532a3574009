// Type-checked (tsc --noEmit), never run: the package's types are complete enough that an
// outside project gets every name and shape right without `any`.
import { CACHE_NAME, HearthEngine, HearthError, WorkerEngine, deleteCachedModel } from "hearth";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  DroppedSpan,
  KvPolicy,
  PruneReport,
  EngineApi,
  EngineStats,
  ErrorKind,
  GenerateResult,
  ModelInfo,
  Timings,
  Usage,
} from "hearth";

export async function consumer(worker: Worker, file: File): Promise<void> {
  const engines: EngineApi[] = [new HearthEngine(), new WorkerEngine(worker)];
  for (const engine of engines) {
    const info: ModelInfo = await engine.load(file, {
      weights: "int4",
      kv_capacity: 1024,
      kv_policy: "sinks-window",
      kv_sinks: 4,
      onProgress: (p) => p.loaded,
    });
    const done: ChatCompletion = await engine.chat.completions.create({
      messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }],
      max_tokens: 8,
      stop: ["\n"],
      seed: 1,
      prune_budget: 512,
      prune_method: "self-information",
    });
    const dropped: DroppedSpan[] = done.pruned?.dropped ?? [];
    const report: PruneReport | undefined = done.pruned;
    const policy: KvPolicy = info.kv_policy;
    void [dropped, report, policy, done.timings.evicted_tokens, done.timings.pruned_tokens];
    // OpenAI types it `string | null` (null when the reply is only tool calls).
    const text: string = done.choices[0].message.content ?? "";
    const usage: Usage = done.usage;
    const stream: AsyncIterable<ChatCompletionChunk> = await engine.chat.completions.create({
      messages: [{ role: "user", content: text }],
      stream: true,
      signal: AbortSignal.timeout(1000),
    });
    for await (const chunk of stream) {
      const t: Timings | undefined = chunk.timings;
      void t;
    }
    const g: GenerateResult = await engine.generate("Once", { onText: (s: string) => s.length, top_k: 4 });
    const ids: number[] = await engine.tokenize(g.text, { parseSpecial: true });
    const back: string = await engine.detokenize(ids);
    const stats: EngineStats = await engine.stats();
    void [info.weight_bytes, usage.total_tokens, back, stats.adapter?.features, stats.kv_evicted, stats.kv_policy];
    await engine.resetChat();
    await engine.unload();
  }
  try {
    await deleteCachedModel("/model.gguf");
  } catch (e) {
    if (e instanceof HearthError) {
      const kind: ErrorKind = e.kind;
      void [kind, CACHE_NAME];
    }
  }
}

// The threaded artifact through the worker engine: the same greedy text at 1, 2 and 4 threads,
// an abort, unload and load, a pool thread's crash and recovery; on a page served without
// cross-origin isolation (`?isolate=0`), the fallback to one thread and its reason.
import { HearthError, WorkerEngine } from "hearth";

const params = new URLSearchParams(location.search);
const model = params.get("model") ?? "";
const counts = (params.get("threads") ?? "1,2,4").split(",").map(Number);
const prompt = "The capital of France is";
const result: Record<string, unknown> = { isolated: globalThis.crossOriginIsolated === true, runs: [] };
const show = () => (document.getElementById("result")!.textContent = JSON.stringify(result, null, 2));
const step = (what: string) => (document.getElementById("status")!.textContent = what);
const engine = new WorkerEngine(() => new Worker(new URL("./worker.ts", import.meta.url), { type: "module" }));
const greedy = { max_tokens: 24, temperature: 0 };

async function kindOf(work: Promise<unknown>): Promise<string> {
  try {
    await work;
    return "resolved";
  } catch (e) {
    if (e instanceof Error && e.name === "AbortError") return "AbortError";
    return e instanceof HearthError ? e.kind : e instanceof Error ? e.name : String(e);
  }
}

async function main(): Promise<void> {
  for (const threads of counts) {
    await engine.load(model, { device: "cpu", threads });
    const g = await engine.generate(prompt, greedy);
    const s = await engine.stats();
    (result.runs as unknown[]).push({
      threads, text: g.text, tokens: g.tokens, stats_threads: s.threads, reason: s.device_reason,
      decode_tokens_per_s: g.timings.decode_tokens_per_s, prefill_tokens_per_s: g.timings.prefill_tokens_per_s,
    });
    show();
  }
  if (params.get("isolate") === "0") return;
  step("abort");
  // An abort lands on the threaded engine, and it goes on.
  const controller = new AbortController();
  let pieces = 0;
  result.abort = await kindOf(engine.generate(prompt, {
    ...greedy, signal: controller.signal, onText: () => { if (++pieces === 2) controller.abort(); },
  }));
  result.afterAbort = (await engine.generate(prompt, greedy)).text;
  step("unload");
  // Unload, then load again.
  await engine.unload();
  result.unloaded = !(await engine.stats()).loaded;
  await engine.load(model, { device: "cpu", threads: 2 });
  result.afterReload = (await engine.generate(prompt, greedy)).text;
  step("pool panic");
  // A pool thread panics: the call fails with engine_crashed, and the next load starts fresh.
  await engine.testPoolPanic();
  result.crash = await kindOf(engine.generate(prompt, greedy));
  result.crashedStats = (await engine.stats()).crashed;
  await engine.load(model, { device: "cpu", threads: 2 });
  result.afterCrash = (await engine.generate(prompt, greedy)).text;
  result.afterCrashThreads = (await engine.stats()).threads;
  step("engine panic");
  // The engine thread itself panics.
  result.enginePanic = await kindOf(engine.testPanic());
  result.afterEnginePanicCall = await kindOf(engine.generate(prompt, greedy));
  await engine.load(model, { device: "cpu", threads: 2 });
  result.afterEnginePanic = (await engine.generate(prompt, greedy)).text;
  step("bad threads");
  result.badThreads = await kindOf(engine.load(model, { device: "cpu", threads: 0 }));
  result.afterBadThreads = (await engine.generate(prompt, greedy)).text;
}

main().then(
  () => { show(); document.getElementById("status")!.textContent = "done"; },
  (e: unknown) => { show(); document.getElementById("status")!.textContent = `error: ${e instanceof Error ? e.stack ?? e.message : String(e)}`; },
);

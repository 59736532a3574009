// What a page can do to the engine, through the packed package as any outside project uses
// it: every call resolves or rejects with a typed error, nothing hangs or traps for good,
// nothing is lost. Each check names the defect it guards against; run-hardening.mjs drives
// the page and fails on any failed check. The models are tiny random ones written by
// `cargo run --example test_models` and served under ?fixtures=URL.
import { ERROR_KINDS, HearthEngine, HearthError, WorkerEngine, __testBreakGpuSelfCheck, __testPanic, isModelCached } from "hearth";
import type { ChatCompletionChunk, ChatMessage, EngineApi, EngineStats, LoadOptions, ModelFiles } from "hearth";

interface Check {
  name: string;
  ok: boolean;
  ms: number;
  detail: string;
}

const $ = (id: string): HTMLElement => document.getElementById(id)!;
const params = new URLSearchParams(location.search);
const fixtures = params.get("fixtures") ?? "/fixtures";
const only = params.get("only");
const results: Check[] = [];

function fail(message: string): never {
  throw new Error(message);
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) fail(message);
}

function describe(e: unknown): string {
  if (e instanceof HearthError) return `HearthError(${e.kind}): ${e.message}`;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/** `promise` or a failure after `ms`: a hang is a failure, not a stuck page. */
function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms (hung)`)), ms);
    promise.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (e: unknown) => (clearTimeout(timer), reject(e)),
    );
  });
}

/** Awaits `promise`, which must reject with `kind`. */
async function rejects(promise: Promise<unknown>, kind: string, what: string): Promise<HearthError> {
  try {
    await within(60_000, promise, what);
  } catch (e) {
    if (e instanceof HearthError && e.kind === kind) return e;
    fail(`${what}: expected a HearthError of kind ${kind}, got ${describe(e)}`);
  }
  fail(`${what}: expected a HearthError of kind ${kind}, it resolved`);
}

async function check(name: string, run: () => Promise<void>): Promise<void> {
  if (only && !name.includes(only)) return;
  const start = performance.now();
  $("status").textContent = `running ${name}`;
  try {
    await within(Number(params.get("limit") ?? 240) * 1000, run(), name);
    results.push({ name, ok: true, ms: Math.round(performance.now() - start), detail: "" });
  } catch (e) {
    const detail = e instanceof Error ? `${describe(e)}\n${e.stack ?? ""}` : describe(e);
    results.push({ name, ok: false, ms: Math.round(performance.now() - start), detail });
  }
  $("result").textContent = JSON.stringify(results, null, 1);
}

async function fetchBytes(name: string): Promise<Uint8Array> {
  const response = await fetch(`${fixtures}/${name}`);
  assert(response.ok, `fixture ${name}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Every GPU device the engines in this page create, captured (before any engine exists) so
 * that a check can destroy one, as a driver reset or a backgrounded phone tab would. */
const devices: { destroy(): void }[] = [];
const adapterClass = (globalThis as unknown as { GPUAdapter?: { prototype: { requestDevice: (...a: unknown[]) => Promise<{ destroy(): void }> } } }).GPUAdapter;
if (adapterClass) {
  const requestDevice = adapterClass.prototype.requestDevice;
  adapterClass.prototype.requestDevice = async function (this: unknown, ...args: unknown[]) {
    const device = await requestDevice.apply(this, args);
    devices.push(device);
    return device;
  };
}

const tiny = await fetchBytes("tiny.gguf");
const tinyPack = await fetchBytes("tiny.bpk");
const otherVocab = await fetchBytes("other-vocab.gguf");
/** A copy for each load: the worker proxy transfers (detaches) the buffers it is given. */
const copy = (bytes: Uint8Array) => bytes.slice();

function inPage(): HearthEngine {
  return new HearthEngine();
}

function inWorker(): WorkerEngine {
  return new WorkerEngine(() => new Worker(new URL("./worker-hardening.ts", import.meta.url), { type: "module" }));
}

const engines: [string, () => EngineApi][] = [
  ["page", inPage],
  ["worker", inWorker],
];

const hello: ChatMessage[] = [{ role: "user", content: "hello there" }];

async function chat(engine: EngineApi, messages: ChatMessage[], max_tokens = 4, signal?: AbortSignal) {
  return engine.chat.completions.create({ messages, max_tokens, temperature: 0, signal });
}

/** Polls `stats()` until `test` holds. */
async function until(engine: EngineApi, test: (s: EngineStats) => boolean, what: string): Promise<EngineStats> {
  for (let i = 0; i < 400; i++) {
    const s = await engine.stats();
    if (test(s)) return s;
    await new Promise((r) => setTimeout(r, 25));
  }
  fail(`${what}: never happened`);
}

/** A text the tiny byte-level tokenizer makes about `n` tokens of. */
const longText = (n: number) => "abcdefghij klmnopqrs tuvwxyz. ".repeat(Math.ceil(n / 30)).slice(0, n);

// A split model (gguf-split shards): loads from its shards' URLs, from the first shard's URL
// alone, and from their bytes in any order, with one progress over the downloads, and answers
// as the whole file does; an incomplete or mixed set is refused and leaves the model loaded.
const shardNames = [1, 2, 3].map((i) => `tiny-split-0000${i}-of-00003.gguf`);
const shards = await Promise.all(shardNames.map(fetchBytes));
for (const [where, make] of engines) {
  await check(`a split model loads from its shards (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const want = (await chat(engine, hello)).choices[0].message.content;
    const urls = shardNames.map((n) => new URL(`${fixtures}/${n}`, location.href).href);
    const sources: [string, ModelFiles][] = [
      ["the shards' URLs", urls],
      ["the first shard's URL", urls[0]],
      ["the shards' bytes, out of order", [copy(shards[2]), copy(shards[0]), copy(shards[1])]],
    ];
    for (const [what, source] of sources) {
      const seen: number[] = [];
      const info = await engine.load(source, { cache: false, onProgress: (p) => { if (p.stage === "fetch") seen.push(p.loaded); } });
      assert(info.n_layers > 0, what);
      const got = (await chat(engine, hello)).choices[0].message.content;
      assert(got === want, `${what}: ${JSON.stringify(got)} vs the whole file's ${JSON.stringify(want)}`);
      if (typeof source === "string" || (Array.isArray(source) && typeof source[0] === "string")) {
        const total = shards.reduce((a, b) => a + b.length, 0);
        assert(seen.at(-1) === total, `${what}: progress ended at ${seen.at(-1)} of ${total}`);
      }
    }
    const bad: [ModelFiles, string][] = [
      [[copy(shards[0]), copy(shards[2])], "a missing shard"],
      [[copy(shards[0]), copy(shards[1]), copy(tiny)], "a whole model among shards"],
      [[copy(shards[0]), copy(shards[1]), copy(shards[1])], "a shard twice"],
      [copy(shards[1]), "a later shard alone"],
      [[], "no file"],
    ];
    for (const [source, what] of bad) {
      await rejects(engine.load(source), Array.isArray(source) && source.length === 0 ? "bad_options" : "model_load", what);
      const still = (await chat(engine, hello)).choices[0].message.content;
      assert(still === want, `${what}: the loaded model changed`);
    }
  });
}

// 2. A load that fails its checks leaves the model loaded before, and its conversation.
for (const [where, make] of engines) {
  await check(`failed load keeps the working model (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const first = await chat(engine, hello);
    const cut = tiny.slice(0, 3000);
    const renamed = copy(tiny);
    const at = new TextDecoder("latin1").decode(renamed).indexOf("blk.0.ffn_up.weight");
    renamed[at + 4] = "X".charCodeAt(0);
    for (const [bytes, what] of [
      [cut, "a truncated file"],
      [new TextEncoder().encode("definitely not a model"), "garbage"],
      [renamed, "a file missing a tensor"],
    ] as const) {
      await rejects(engine.load(copy(bytes)), "model_load", what);
    }
    await rejects(engine.load(copy(tiny), { kv_capacity: 0 }), "bad_options", "a zero KV capacity");
    // Values that are not strings where the core takes a string never reach its memory (the
    // glue would write an object as a zero-sized string and corrupt the heap).
    await rejects(engine.load(copy(tiny), { weights: {} as never }), "bad_options", "weights that are not a string");
    await rejects(engine.load(copy(tiny), { activations: {} as never }), "bad_options", "activations that are not a string");
    await rejects(engine.load(copy(tiny), { activations: "q4" as never }), "bad_options", "unknown activations");
    await rejects(engine.tokenize({} as never), "bad_prompt", "text that is not a string");
    const stats = await engine.stats();
    assert(stats.loaded && stats.kv_len !== null && stats.kv_len > 0, `still loaded, with its cache: ${JSON.stringify(stats)}`);
    const again = await chat(engine, [...hello, { role: "assistant", content: first.choices[0].message.content }, { role: "user", content: "and?" }]);
    assert(again.timings.reused_tokens > 0, `the conversation continues from the cache: ${JSON.stringify(again.timings)}`);
  });
}

// 3. One generation at a time: the others queue in order; load, reset and unload refuse with
// `busy` and change nothing; `stats().generating` is true exactly while one runs.
for (const [where, make] of engines) {
  await check(`load, reset and unload during a generation are busy (${where})`, async () => {
    const engine = make();
    const info = await engine.load(copy(tiny));
    let texts = 0;
    let release!: () => void;
    const started = new Promise<void>((r) => (release = r));
    const running = engine.generate(longText(20), {
      max_tokens: 40,
      onText: () => {
        texts += 1;
        release();
      },
    });
    await started;
    assert((await engine.stats()).generating, "generating while it runs");
    await rejects(engine.load(copy(tiny)), "busy", "load during a generation");
    await rejects(engine.resetChat(), "busy", "reset during a generation");
    await rejects(engine.unload(), "busy", "unload during a generation");
    const done = await running;
    assert(done.finish_reason === "length" && done.usage.completion_tokens === 40, `it ran to the end: ${done.finish_reason}`);
    const stats = await engine.stats();
    assert(!stats.generating && stats.loaded && stats.model === info.name, `after: ${JSON.stringify(stats)}`);
    assert(texts > 0, "text came");
  });

  await check(`two generations at once are served together, each as alone (${where})`, async () => {
    const engine = make();
    const info = await engine.load(copy(tiny));
    assert(info.max_streams >= 2, `serves several at once: max_streams ${info.max_streams}`);
    const order: string[] = [];
    const [a, b] = await Promise.all([
      engine.generate("one two three", { max_tokens: 12, onText: () => order.push("a") }),
      engine.generate("four five six", { max_tokens: 12, onText: () => order.push("b") }),
    ]);
    assert(a.usage.completion_tokens === 12 && b.usage.completion_tokens === 12, "both ran to the end");
    const runs = order.join("").match(/a+|b+/g) ?? [];
    assert(runs.length > 4, `decoded together, their pieces interleave: ${order.join("")}`);
    for (const [prompt, together] of [["one two three", a], ["four five six", b]] as const) {
      await engine.resetChat();
      const alone = await engine.generate(prompt, { max_tokens: 12 });
      assert(alone.text === together.text, `${prompt}: the same text as alone: ${JSON.stringify([alone.text, together.text])}`);
    }
    // Past max_streams a request waits its turn; aborted while it waits, it leaves at once
    // and the running ones are untouched.
    const running = Array.from({ length: info.max_streams }, (_, i) => engine.generate(`word ${i}`, { max_tokens: 20 }));
    const controller = new AbortController();
    const waiting = engine.generate("eight", { max_tokens: 20, signal: controller.signal });
    const stats = await engine.stats();
    assert(stats.queued === 1 && stats.generating, `one waits while ${info.max_streams} run: ${JSON.stringify(stats)}`);
    controller.abort();
    const err = await rejects(waiting, "aborted", "a queued generation aborted while waiting");
    assert(err.name === "AbortError", "named AbortError");
    for (const r of await Promise.all(running)) assert(r.usage.completion_tokens === 20, "the running ones finished");
  });

  await check(`two streamed chats at once: each as alone, an abort ends only its own (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const questions = ["hello there", "what is the time"];
    const ask = (content: string, signal?: AbortSignal) =>
      engine.chat.completions.create({ messages: [{ role: "user", content }], max_tokens: 30, temperature: 0, stream: true, signal });
    /** Reads a stream; `during(n)` runs after its n-th piece of text. */
    const read = async (stream: AsyncIterable<ChatCompletionChunk>, during: (n: number) => void = () => {}) => {
      let text = "";
      let pieces = 0;
      let finish: string | null = null;
      for await (const chunk of stream) {
        const piece = chunk.choices[0].delta.content;
        if (piece) {
          text += piece;
          during(++pieces);
        }
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      return { text, pieces, finish };
    };
    const alone = [];
    for (const q of questions) {
      await engine.resetChat();
      alone.push(await read(await ask(q)));
    }
    await engine.resetChat();
    const both = await Promise.all(questions.map(async (q) => read(await ask(q))));
    for (const [i, r] of both.entries()) {
      assert(r.text === alone[i].text && r.finish === alone[i].finish, `${questions[i]}: as alone: ${JSON.stringify([r, alone[i]])}`);
    }
    // The second is aborted after its third piece; the first goes on to its end.
    const controller = new AbortController();
    const [first, second] = await Promise.all([ask(questions[0]), ask(questions[1], controller.signal)]);
    let firstPieces = 0;
    let piecesAtAbort = -1;
    const aborted = read(second, (n) => {
      if (n === 3) {
        piecesAtAbort = firstPieces;
        controller.abort();
      }
    }).then(
      (r) => `ended: ${JSON.stringify(r)}`,
      (e: unknown) => describe(e),
    );
    const kept = await read(first, (n) => (firstPieces = n));
    const outcome = await aborted;
    assert(/aborted/.test(outcome), `the aborted stream ends with its abort: ${outcome}`);
    assert(kept.text === alone[0].text && kept.finish === alone[0].finish, `the other is as alone: ${JSON.stringify([kept, alone[0]])}`);
    assert(piecesAtAbort >= 0 && kept.pieces > piecesAtAbort, `the other ran on after the abort: ${piecesAtAbort} of ${kept.pieces} pieces before it`);
    assert((await engine.stats()).streams === 0, "nothing runs after");
  });

  await check(`a draft model, or the model's first layers, draft for speculative decoding; another vocabulary is refused (${where})`, async () => {
    const engine = make();
    const model = await engine.load(copy(tiny));
    const prompt = "one two three four";
    const draft = { method: "draft" } as const;
    await rejects(engine.generate(prompt, { max_tokens: 8, speculative: draft }), "bad_options", "the draft method without a draft");
    await rejects(engine.loadDraft(copy(otherVocab)), "bad_options", "a draft with another vocabulary");
    // The model as its own draft: every guess is the model's own token.
    const info = await engine.loadDraft(copy(tiny));
    assert(info !== null && info.n_layers > 0, `draft info: ${JSON.stringify(info)}`);
    const plain = await engine.generate(prompt, { max_tokens: 24, temperature: 0 });
    await engine.resetChat();
    const fast = await engine.generate(prompt, { max_tokens: 24, temperature: 0, speculative: { ...draft, max_draft: 4 } });
    const t = fast.timings;
    assert(fast.text === plain.text, `the same text: ${JSON.stringify([fast.text, plain.text])}`);
    assert(t.draft_tokens > 0 && t.accepted_tokens === t.draft_tokens, `every guess kept: ${t.accepted_tokens} of ${t.draft_tokens}`);
    // The model's own first layer drafts for it (self-speculative): the same text.
    await engine.resetChat();
    const self = await engine.generate(prompt, { max_tokens: 24, temperature: 0, speculative: { method: "self", draft_layers: 1 } });
    assert(self.text === plain.text && self.timings.draft_tokens > 0, `self: ${JSON.stringify([self.text, self.timings.draft_tokens])}`);
    await rejects(
      engine.generate(prompt, { max_tokens: 4, speculative: { method: "self", draft_layers: model.n_layers } }),
      "bad_options",
      "self-speculation with every layer drafting",
    );
    // The draft stays through a reset (now measured as costly as the model itself, it may
    // not be asked) and goes with null.
    await engine.resetChat();
    const again = await engine.generate(prompt, { max_tokens: 24, temperature: 0, speculative: draft });
    assert(again.text === plain.text, `after a reset: ${JSON.stringify([again.text, plain.text])}`);
    assert((await engine.loadDraft(null)) === null, "removed");
    await rejects(engine.generate(prompt, { max_tokens: 8, speculative: draft }), "bad_options", "the draft method after removing the draft");
  });

  await check(`early exit: an unreachable threshold is the whole model, bad options are refused (${where})`, async () => {
    const engine = make();
    const info = await engine.load(copy(tiny));
    const prompt = "one two three four";
    const plain = await engine.generate(prompt, { max_tokens: 16, temperature: 0 });
    assert(plain.timings.mean_layers === info.n_layers, `every layer: ${plain.timings.mean_layers}`);
    await engine.resetChat();
    const never = await engine.generate(prompt, { max_tokens: 16, temperature: 0, early_exit: { layers: [1], threshold: 1 } });
    assert(never.text === plain.text && never.timings.mean_layers === info.n_layers, `threshold 1: ${JSON.stringify([never.text, plain.text, never.timings.mean_layers])}`);
    await engine.resetChat();
    const always = await engine.generate(prompt, { max_tokens: 16, temperature: 0, early_exit: { layers: [1], threshold: 0 } });
    assert(always.timings.mean_layers === 1, `threshold 0 exits every step after layer 1: ${always.timings.mean_layers}`);
    for (const [early_exit, what] of [
      [{ layers: [info.n_layers] }, "an exit layer past the model"],
      [{ layers: [] }, "no exit layer"],
      [{ layers: [1], threshold: 2 }, "a threshold past 1"],
      [{ layers: [1], measure: "entropy" }, "an unknown measure"],
      [{ layers: [1], depth: 3 }, "an unknown key"],
      [{ threshold: 0.5 }, "no layers"],
    ] as const) {
      await rejects(engine.generate(prompt, { max_tokens: 4, early_exit: early_exit as never }), "bad_options", what);
    }
    await rejects(
      engine.generate(prompt, { max_tokens: 4, early_exit: { layers: [1] }, speculative: { method: "prompt-lookup" } }),
      "bad_options",
      "early exit with speculative decoding",
    );
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "usable after");
  });

  await check(`pruning at load: a smaller model that generates on the CPU and WebGPU; bad cuts are refused and keep the model before (${where})`, async () => {
    const engine = make();
    const whole = await engine.load(copy(tiny));
    const prompt = "one two three";
    const before = await engine.generate(prompt, { max_tokens: 6, temperature: 0 });
    for (const [prune, what] of [
      [{ layers: whole.n_layers }, "dropping every layer"],
      [{ layers: [0, 7] }, "a layer the model lacks"],
      [{ heads: 1 }, "heads not a multiple of the key/value heads"],
      [{ ffn: 1 }, "every FFN channel"],
      [{ ffn: "half" }, "a share that is not a number"],
      [{ depth: 1 }, "an unknown key"],
      [{ calibration: "" }, "an empty calibration text"],
    ] as const) {
      await rejects(engine.load(copy(tiny), { prune_weights: prune as never }), "bad_options", what);
    }
    await engine.resetChat();
    const kept = await engine.generate(prompt, { max_tokens: 6, temperature: 0 });
    assert(kept.text === before.text, `the model before stays: ${JSON.stringify([kept.text, before.text])}`);
    const pruned = await engine.load(copy(tiny), {
      prune_weights: { layers: [0], heads: 2, ffn: 1 / 3, calibration: longText(600) },
    });
    assert(pruned.n_layers === whole.n_layers - 1, `layers: ${pruned.n_layers} of ${whole.n_layers}`);
    assert(pruned.weight_bytes < whole.weight_bytes, `smaller: ${pruned.weight_bytes} of ${whole.weight_bytes} bytes`);
    assert(/2 of 4 heads/.test(pruned.name) && /64 of 96 FFN channels/.test(pruned.name), `named for the cut: ${pruned.name}`);
    const out = await engine.generate(prompt, { max_tokens: 6, temperature: 0 });
    assert(out.tokens.length > 0, `the pruned model generates: ${JSON.stringify(out)}`);
    // On WebGPU the calibration runs there (its reads asynchronous): the same cut's shapes.
    const cut = { layers: [0], heads: 2, ffn: 1 / 3, calibration: longText(600) };
    const gpu = await engine.load(copy(tiny), { device: "webgpu", prune_weights: cut });
    assert(gpu.device === "webgpu" && gpu.name === pruned.name, `on WebGPU: ${gpu.device}, ${gpu.name}`);
    const onGpu = await engine.generate(prompt, { max_tokens: 6, temperature: 0 });
    assert(onGpu.tokens.length > 0, `the pruned model generates on WebGPU: ${JSON.stringify(onGpu)}`);
    // The built-in calibration text when none is given; a plain load after gives the whole model back.
    const builtin = await engine.load(copy(tiny), { prune_weights: { ffn: 1 / 3 } });
    assert(/64 of 96 FFN channels/.test(builtin.name), `built-in calibration: ${builtin.name}`);
    const back = await engine.load(copy(tiny));
    assert(back.weight_bytes === whole.weight_bytes, "the whole model again");
  });

  await check(`two loads as an engine's first calls: one runs, the other is busy (${where})`, async () => {
    const engine = make();
    const [x, y] = await Promise.allSettled([engine.load(copy(tiny)), engine.load(copy(tiny))]);
    const outcomes = [x, y].map((r) => (r.status === "fulfilled" ? "ok" : describe(r.reason)));
    assert(outcomes.filter((o) => o === "ok").length === 1, `exactly one load runs: ${outcomes}`);
    assert(outcomes.some((o) => o.startsWith("HearthError(busy)")), `the other is busy: ${outcomes}`);
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "the engine works after");
  });

  await check(`a load, stats and tokenize at once (${where})`, async () => {
    const engine = make();
    const [stats, info] = await Promise.all([engine.stats(), engine.load(copy(tiny))]);
    assert(!stats.generating && info.n_layers > 0, "both answered");
    const [t1, t2] = await Promise.all([engine.tokenize("the the"), engine.tokenize("the the")]);
    assert(t1.join() === t2.join(), "same tokens");
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "the loaded model is the one that answers");
  });
}

/** How long `run` takes, for aborting it part-way whatever the machine's speed. */
async function time(run: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await run();
  return performance.now() - start;
}

// 4. An abort is heard during the prefill (between chunks), while text is held back, and
// during pruning's scoring, not only when text comes out.
for (const [where, make] of engines) {
  await check(`abort stops the prefill between chunks (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny), { kv_capacity: 4096 });
    const prompt = longText(1200);
    const full = await time(() => engine.generate(prompt, { max_tokens: 1 }));
    await engine.resetChat();
    const controller = new AbortController();
    const texts: string[] = [];
    setTimeout(() => controller.abort(), full / 3);
    const err = await rejects(
      engine.generate(prompt, { max_tokens: 5, signal: controller.signal, onText: (t) => texts.push(t) }),
      "aborted",
      "a generation aborted during its prefill",
    );
    assert(err.name === "AbortError", "named AbortError");
    assert(texts.length === 0, `no text after an abort during the prefill: ${texts.length} pieces`);
    const stats = await engine.stats();
    assert(stats.kv_len !== null && stats.kv_len < 1100, `the prefill stopped part-way: ${stats.kv_len} of ~1200 slots`);
  });

  await check(`abort is heard while text is held back (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    // The abort comes a sixth of the way through 60 tokens' time, into a generation of 600:
    // only a machine 60 times faster on the second run than the first would finish it first.
    const full = await engine.generate("held back", { max_tokens: 600 });
    assert(full.usage.completion_tokens === 600, `600 tokens without an end: ${full.usage.completion_tokens}`);
    const took = await time(() => engine.generate("held back", { max_tokens: 60 }));
    // Every piece could begin this stop string, so no text is ever emitted.
    const stop = [`${full.text}\u0001`];
    const controller = new AbortController();
    const texts: string[] = [];
    setTimeout(() => controller.abort(), took / 6);
    await rejects(
      engine.generate("held back", { max_tokens: 600, stop, signal: controller.signal, onText: (t) => texts.push(t) }),
      "aborted",
      "held back",
    );
    assert(texts.length === 0, `nothing was emitted: ${texts.length} pieces`);
    const stats = await engine.stats();
    assert(stats.kv_len !== null && stats.kv_len < 300, `stopped part-way: ${stats.kv_len} slots`);
  });

  await check(`abort is heard during pruning's scoring, and the conversation stays (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny), { kv_capacity: 4096 });
    const before = await chat(engine, hello);
    const kv = (await engine.stats()).kv_len;
    const note = longText(600);
    const messages: ChatMessage[] = [
      { role: "user", content: note },
      { role: "assistant", content: "ok" },
      { role: "user", content: note },
      { role: "assistant", content: "ok" },
      { role: "user", content: "and?" },
    ];
    const options = { prune_budget: 800, prune_method: "self-information" as const };
    const probe = make();
    await probe.load(copy(tiny), { kv_capacity: 4096 });
    const took = await time(() => probe.chat.completions.create({ messages, max_tokens: 1, ...options }));
    const controller = new AbortController();
    setTimeout(() => controller.abort(), took / 4);
    await rejects(
      engine.chat.completions.create({ messages, max_tokens: 1, signal: controller.signal, ...options }),
      "aborted",
      "a pruned chat aborted while scoring",
    );
    assert((await engine.stats()).kv_len === kv, "the conversation's cache is as it was");
    assert(before.usage.completion_tokens > 0, "sanity");
  });
}

// 5. A prune that fails leaves the session as it was.
for (const [where, make] of engines) {
  await check(`a failed prune leaves the conversation (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny), { kv_capacity: 4096 });
    await chat(engine, hello);
    const kv = (await engine.stats()).kv_len;
    const messages: ChatMessage[] = [
      { role: "user", content: longText(600) },
      { role: "assistant", content: "ok" },
      { role: "user", content: "and?" },
    ];
    await rejects(
      engine.chat.completions.create({ messages, max_tokens: 2, prune_budget: 8 }),
      "bad_options",
      "a budget smaller than the protected part",
    );
    assert((await engine.stats()).kv_len === kv, `the cache is as it was (${kv})`);
  });
}

// 6. A throwing onText is an error, not an abort.
for (const [where, make] of engines) {
  await check(`a throwing onText rejects with kind callback (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const thrown = new Error("the page's bug");
    const err = await rejects(
      engine.generate("one", {
        max_tokens: 10,
        onText: () => {
          throw thrown;
        },
      }),
      "callback",
      "a throwing onText",
    );
    assert(err.message.includes("the page's bug"), err.message);
    if (where === "page") assert(err.cause === thrown, "the thrown error is the cause");
    assert((await engine.generate("one", { max_tokens: 3 })).usage.completion_tokens === 3, "usable after");
  });
}

// 7. Leaving a stream early aborts the generation behind it within a token; the worker proxy
// removes its abort listeners and never leaves a request pending when it cannot be sent.
for (const [where, make] of engines) {
  await check(`break out of a stream stops the generation (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const probe = await chat(engine, hello, 4);
    const prompt = probe.usage.prompt_tokens;
    // Some tokens bring no text (a character's first bytes, held-back text): find how many
    // tokens the second piece takes, from greedy streams cut at 1, 2, ... tokens (pieces on
    // the final chunk are the flush at the cut, not a token's own).
    const piecesWithin = async (k: number) => {
      await engine.resetChat();
      let n = 0;
      for await (const chunk of await engine.chat.completions.create({ messages: hello, max_tokens: k, temperature: 0, stream: true })) {
        if (chunk.choices[0].delta.content && chunk.choices[0].finish_reason === null) n += 1;
      }
      return n;
    };
    let tokens = 1;
    while ((await piecesWithin(tokens)) < 2) tokens += 1;
    await engine.resetChat();
    const stream = await engine.chat.completions.create({ messages: hello, max_tokens: 200, temperature: 0, stream: true });
    let pieces = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0].delta.content) pieces += 1;
      if (pieces === 2) break;
    }
    const stats = await until(engine, (s) => !s.generating, "the generation stops");
    // The cache holds the prompt and the tokens fed back up to the one during which the break
    // is heard. The worker counts a piece as sent when its own stream has posted it, and the
    // proxy acknowledges a chunk only once its reader asks for the next (or a task later), so
    // a break's abort reaches the worker before that chunk's acknowledgement: the worker stops
    // where the page does (measured: 26 + 2 tokens gave 30 slots in both; the worker gave 31
    // before, and once 32 under load, when it counted pieces as they were posted).
    const slack = 2;
    assert(
      stats.kv_len !== null && stats.kv_len <= prompt + tokens + slack,
      `stopped within ${slack} tokens: ${stats.kv_len} slots for ${prompt} + ${tokens} tokens (2 pieces)`,
    );
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "usable after");
  });
}

// Scoring is teacher-forced and exact: the greedy token is the most likely of the whole
// vocabulary, the probabilities of every next token sum to one, a prefix scores as the start
// of the whole, the conversation is untouched, and bad ids are refused.
for (const [where, make] of engines) {
  await check(`score gives each token's log-probability and keeps the conversation (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const prompt = await engine.tokenize("one two");
    const greedy = await engine.generate("one two", { max_tokens: 3, temperature: 0 });
    await engine.resetChat();
    await chat(engine, hello);
    const before = (await engine.stats()).kv_len;
    const ids = [...prompt, ...greedy.tokens];
    const lp = await engine.score(ids);
    assert(lp.length === ids.length - 1 && lp.every((v) => Number.isFinite(v) && v <= 0), `log-probabilities: ${lp}`);
    const head = await engine.score(ids.slice(0, 4));
    assert(head.every((v, i) => Math.abs(v - lp[i]) < 1e-4), `a prefix scores the same: ${head} vs ${lp}`);
    const vocab = 262;
    const next: number[] = [];
    for (let v = 0; v < vocab; v++) next.push((await engine.score([...prompt, v]))[prompt.length - 1]);
    const best = next.indexOf(Math.max(...next));
    assert(best === greedy.tokens[0], `the greedy token ${greedy.tokens[0]} is the most likely, not ${best}`);
    const total = next.reduce((a, v) => a + Math.exp(v), 0);
    assert(Math.abs(total - 1) < 1e-3, `the next token's probabilities sum to ${total}`);
    assert(Math.abs(next[greedy.tokens[0]] - lp[prompt.length - 1]) < 1e-4, "the same position scores the same");
    assert((await engine.stats()).kv_len === before, "the conversation's cache is untouched");
    for (const [bad, kind, what] of [
      [[], "bad_prompt", "no tokens"],
      [[5], "bad_prompt", "one token"],
      [[5, 99999], "bad_prompt", "an id outside the vocabulary"],
      [[5, -1], "bad_options", "a negative id"],
      [[5, 1.5], "bad_options", "a fraction"],
      ["x", "bad_options", "not an array"],
    ] as const) {
      await rejects(engine.score(bad as never), kind, what);
    }
    const aborted = new AbortController();
    aborted.abort();
    await rejects(engine.score(ids, { signal: aborted.signal }), "aborted", "an aborted signal");
    const again = await chat(engine, [...hello, { role: "assistant", content: "x" }, { role: "user", content: "and?" }]);
    assert(again.usage.completion_tokens > 0, "usable after");
  });
}

// Structured output through the OpenAI surface: response_format (OpenAI's and WebLLM's
// spellings, Lark, regex), logprobs with top_logprobs, logit_bias; bad ones refused.
for (const [where, make] of engines) {
  await check(`response_format, logprobs and logit_bias (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const schema = {
      type: "object",
      properties: { color: { enum: ["red", "green"] }, n: { type: "integer", minimum: 0, maximum: 9 } },
      required: ["color", "n"],
      additionalProperties: false,
    };
    const formats = [
      { type: "json_schema", json_schema: { name: "pick", schema, strict: true } },
      { type: "json_object", schema: JSON.stringify(schema) },
    ] as const;
    for (const [i, response_format] of formats.entries()) {
      const request = { messages: hello, response_format, temperature: 1, seed: 7 + i, max_tokens: 60 };
      const whole = await engine.chat.completions.create(request);
      const content = whole.choices[0].message.content ?? "";
      assert(whole.choices[0].finish_reason === "stop", `finished: ${whole.choices[0].finish_reason} ${content}`);
      const value = JSON.parse(content) as { color: string; n: number };
      assert(["red", "green"].includes(value.color) && Number.isInteger(value.n) && value.n >= 0 && value.n <= 9, content);
      let streamed = "";
      for await (const c of await engine.chat.completions.create({ ...request, stream: true })) streamed += c.choices[0].delta.content ?? "";
      assert(streamed === content, `streamed ${streamed} vs whole ${content}`);
    }
    const regex = await engine.chat.completions.create({ messages: hello, response_format: { type: "regex", regex: "[0-9]{3}" }, temperature: 1, seed: 1 });
    assert(/^[0-9]{3}$/.test(regex.choices[0].message.content ?? ""), `regex: ${regex.choices[0].message.content}`);
    const lark = await engine.chat.completions.create({ messages: hello, response_format: { type: "grammar", grammar: 'start: "yes" | "no"' }, temperature: 1, seed: 2 });
    assert(["yes", "no"].includes(lark.choices[0].message.content ?? ""), `lark: ${lark.choices[0].message.content}`);

    const recorded = await engine.chat.completions.create({ messages: hello, max_tokens: 5, logprobs: true, top_logprobs: 2 });
    const lps = recorded.choices[0].logprobs?.content ?? [];
    assert(lps.length === recorded.usage.completion_tokens, `one record per token: ${lps.length}`);
    for (const t of lps) {
      assert(t.top_logprobs.length === 2 && Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6, "greedy takes the likeliest");
      assert(Number.isFinite(t.logprob) && t.logprob <= 0 && Array.isArray(t.bytes), JSON.stringify(t));
    }
    assert(lps.map((t) => t.token).join("") === recorded.choices[0].message.content, "the tokens spell the reply");
    const plain = await engine.chat.completions.create({ messages: hello, max_tokens: 5 });
    assert(plain.choices[0].logprobs === null && plain.choices[0].message.content === recorded.choices[0].message.content, "recording changes nothing");

    const greedy = await engine.generate("one two", { max_tokens: 3, temperature: 0 });
    const banned = greedy.tokens[0];
    const biased = await engine.generate("one two", { max_tokens: 3, temperature: 0, logit_bias: { [banned]: -100 } });
    assert(!biased.tokens.includes(banned), `token ${banned} banned: ${biased.tokens}`);

    const bad: [object, string][] = [
      [{ response_format: { type: "xml" } }, "an unknown format"],
      [{ response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: 5 } } } }, "a schema that does not compile"],
      [{ response_format: { type: "regex", regex: "(" } }, "a regex that does not compile"],
      [{ response_format: { type: "json_object", extra: 1 } }, "an unknown key"],
      [{ response_format: { type: "json_schema", json_schema: { schema, extra: 1 } } }, "an unknown json_schema key"],
      [{ top_logprobs: 2 }, "top_logprobs without logprobs"],
      [{ logprobs: true, top_logprobs: 21 }, "too many top_logprobs"],
      [{ logit_bias: { "1": 101 } }, "a bias past 100"],
      [{ logit_bias: { x: 1 } }, "a key that is not an id"],
    ];
    for (const [extra, what] of bad) {
      await rejects(engine.chat.completions.create({ messages: hello, ...extra } as never), "bad_options", what);
    }
    // A schema nested thousands deep is refused, not a stack overflow that traps the engine.
    let deep: object = { type: "integer" };
    for (let i = 0; i < 3000; i++) deep = { type: "object", properties: { a: deep } };
    await rejects(engine.chat.completions.create({ messages: hello, response_format: { type: "json_schema", json_schema: { name: "deep", schema: deep } } }), "bad_options", "a schema 6000 levels deep");
    // The core's own check of a grammar's keys (generate passes options through to it).
    await rejects(engine.generate("one", { grammar: { type: "regex", regex: "a", extra: 1 } } as never), "bad_options", "a grammar key");
    const after = await engine.chat.completions.create({ messages: hello, max_tokens: 5 });
    assert(after.choices[0].message.content === plain.choices[0].message.content, "the engine is as before");
  });
}

// Tool calls through the OpenAI surface, on a model whose template has no tools (they go into
// its system prompt): required and named choices give calls that follow the schema, streamed
// as whole; none gives text; calls and results are accepted back; bad tools are refused.
for (const [where, make] of engines) {
  await check(`tools, tool_choice and tool_calls (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const pick = { type: "function" as const, function: { name: "pick", description: "Pick a number", parameters: { type: "object", properties: { n: { type: "integer", minimum: 0, maximum: 9 } }, required: ["n"], additionalProperties: false } } };
    const color = { type: "function" as const, function: { name: "color", parameters: { type: "object", properties: { c: { enum: ["red", "green"] } }, required: ["c"], additionalProperties: false } } };
    const tools = [pick, color];
    // Hostile sets first: each is served or refused with a type, never a trap.
    const wide = { type: "function" as const, function: { name: "wide", parameters: { type: "object", properties: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`p${i}`, { type: "integer" }])) } } };
    for (const [label, hostileTools] of [["a bad name", [{ type: "function", function: { name: "bad name" } }]], ["1000 properties", [wide]]] as const) {
      for (const tool_choice of ["auto", "required", undefined] as const) {
        await engine.chat.completions.create({ messages: hello, max_tokens: 4, tools: hostileTools as never, tool_choice }).then(
          () => {},
          (e: unknown) => assert(e instanceof HearthError && e.kind === "bad_options", `${label} (${tool_choice}): ${describe(e)}`),
        );
      }
    }
    const wideFormat = { type: "json_schema", json_schema: { name: "wide", schema: wide.function.parameters } };
    for (const [label, extra] of [
      ["bad sampling, a bad name and a choice naming no tool", { max_tokens: 4, top_k: 5, top_p: 4294967296, prune_budget: 1, tools: [{ type: "function", function: { name: "bad name" } }], tool_choice: { type: "function", function: { name: "pick" } } }],
      ["a wide schema with a null tool", { max_tokens: 4, min_p: 0.1, seed: 7, response_format: wideFormat, tools: [null] }],
      ["a null tool", { max_tokens: 4, tools: [null] }],
      ["a bad name with a tiny prune budget", { max_tokens: 4, prune_budget: 1, tools: [{ type: "function", function: { name: "bad name" } }] }],
    ] as const) {
      await engine.chat.completions.create({ messages: hello, ...(extra as object) } as never).then(
        () => {},
        (e: unknown) => assert(e instanceof HearthError && e.kind === "bad_options", `${label}: ${describe(e)}`),
      );
    }
    const valid = (call: { type: string; id: string; function: { name: string; arguments: string } }) => {
      const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
      const ok = call.function.name === "pick"
        ? Number.isInteger(args.n) && (args.n as number) >= 0 && (args.n as number) <= 9
        : call.function.name === "color" && ["red", "green"].includes(args.c as string);
      return ok && call.type === "function" && call.id.startsWith("call_");
    };
    for (const [i, tool_choice] of (["required", { type: "function", function: { name: "color" } }] as const).entries()) {
      const request = { messages: hello, tools, tool_choice, parallel_tool_calls: false, temperature: 1, seed: 3 + i, max_tokens: 200 };
      const whole = await engine.chat.completions.create(request);
      const choice = whole.choices[0];
      assert(choice.finish_reason === "tool_calls" && choice.message.content === null, `calls only: ${JSON.stringify(choice)}`);
      const calls = choice.message.tool_calls ?? [];
      assert(calls.length === 1 && calls.every(valid), `one valid call: ${JSON.stringify(calls)}`);
      if (i === 1) assert(calls[0].function.name === "color", `the named function: ${calls[0].function.name}`);
      const streamed: unknown[] = [];
      let finish: string | null = null;
      for await (const c of await engine.chat.completions.create({ ...request, stream: true })) {
        for (const call of c.choices[0].delta.tool_calls ?? []) streamed.push(call);
        assert(!c.choices[0].delta.content, `no text in a calls-only stream: ${JSON.stringify(c)}`);
        finish = c.choices[0].finish_reason ?? finish;
      }
      const want = JSON.stringify(calls.map((call, index) => ({ index, ...call })));
      assert(JSON.stringify(streamed) === want && finish === "tool_calls", `streamed ${JSON.stringify(streamed)} vs whole ${want}`);
    }
    const plain = await engine.chat.completions.create({ messages: hello, max_tokens: 6 });
    const none = await engine.chat.completions.create({ messages: hello, max_tokens: 6, tools, tool_choice: "none" });
    assert(none.choices[0].message.content === plain.choices[0].message.content && !none.choices[0].message.tool_calls, "none: the tools are not shown");
    const call = { id: "call_1", type: "function" as const, function: { name: "pick", arguments: '{"n": 4}' } };
    const followUp = await engine.chat.completions.create({
      messages: [...hello, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: "call_1", content: "4" }],
      tools,
      max_tokens: 6,
    });
    assert(followUp.usage.prompt_tokens > plain.usage.prompt_tokens, "the call and its result are in the prompt");
    let deep: object = { type: "integer" };
    for (let i = 0; i < 3000; i++) deep = { type: "object", properties: { a: deep } };
    const bad: [object, string][] = [
      [{ tools, tool_choice: { type: "function", function: { name: "nope" } } }, "a choice naming no tool"],
      [{ tools, tool_choice: "sometimes" }, "an unknown choice"],
      [{ tool_choice: "required" }, "required without tools"],
      [{ tools: [pick, pick] }, "a name twice"],
      [{ tools: [{ type: "function", function: { name: "a b" } }] }, "a bad name"],
      [{ tools: [{ type: "function", function: { name: "x", parameters: { type: "nonsense" } } }] }, "parameters that do not compile"],
      [{ tools: [{ type: "function", function: { name: "x", parameters: deep } }] }, "parameters 6000 levels deep"],
      [{ tools, response_format: { type: "json_object" } }, "tools with a response_format"],
      [{ tools: [{ type: "function", function: { name: "x", description: "<|im_start|>system" } }] }, "special-token text in a tool"],
    ];
    for (const [extra, what] of bad) {
      await rejects(engine.chat.completions.create({ messages: hello, max_tokens: 4, ...extra } as never), "bad_options", what);
    }
    const after = await engine.chat.completions.create({ messages: hello, max_tokens: 6 });
    assert(after.choices[0].message.content === plain.choices[0].message.content, "the engine is as before");
  });
}

// completions.create (OpenAI's legacy shape, for base models): the same text as generate,
// streamed or whole, with usage; a stream left early aborts; bad requests are refused.
for (const [where, make] of engines) {
  await check(`completions.create continues a prompt as generate does (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const want = await engine.generate("one two", { max_tokens: 6, temperature: 0 });
    const whole = await engine.completions.create({ prompt: "one two", max_tokens: 6, temperature: 0 });
    assert(whole.object === "text_completion" && whole.choices[0].text === want.text, `whole: ${JSON.stringify(whole)}`);
    assert(whole.choices[0].finish_reason === want.finish_reason && whole.usage.completion_tokens === want.usage.completion_tokens, "usage");
    const stream = await engine.completions.create({ prompt: "one two", max_tokens: 6, temperature: 0, stream: true });
    let text = "";
    let last: { finish_reason: string | null; usage?: unknown } | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0].text;
      last = { finish_reason: chunk.choices[0].finish_reason, usage: chunk.usage };
    }
    assert(text === want.text && last?.finish_reason === want.finish_reason && last.usage, `streamed ${JSON.stringify(text)}`);
    // Leaving early aborts; the engine serves the next call.
    const long = await engine.completions.create({ prompt: "one", max_tokens: 200, temperature: 1, seed: 3, stream: true });
    for await (const _ of long) break;
    const after = await engine.completions.create({ prompt: "one two", max_tokens: 6, temperature: 0 });
    assert(after.choices[0].text === want.text, "usable after a stream left early");
    // response_format holds a continuation as it holds a chat reply, streamed or whole.
    const held = { prompt: "one two", max_tokens: 20, temperature: 1, seed: 4, response_format: { type: "regex", regex: "[0-9]{3}" } } as const;
    const digits = await engine.completions.create(held);
    assert(/^[0-9]{3}$/.test(digits.choices[0].text) && digits.choices[0].finish_reason === "stop", `regex: ${JSON.stringify(digits.choices[0])}`);
    let heldText = "";
    for await (const chunk of await engine.completions.create({ ...held, stream: true })) heldText += chunk.choices[0].text;
    assert(heldText === digits.choices[0].text, `streamed ${heldText} vs whole ${digits.choices[0].text}`);
    // logprobs in the chat's shape, whole and streamed (on the last chunk) alike.
    const scored = { prompt: "one two", max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 } as const;
    const lpWhole = await engine.completions.create(scored);
    const records = lpWhole.choices[0].logprobs?.content ?? [];
    assert(lpWhole.choices[0].text === want.text.slice(0, lpWhole.choices[0].text.length), "recording changes nothing");
    assert(records.length === lpWhole.usage.completion_tokens && records.map((t) => t.token).join("") === lpWhole.choices[0].text,
      `one record per token: ${JSON.stringify(records)}`);
    assert(records.every((t) => t.top_logprobs.length === 2 && Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6), "greedy takes the likeliest");
    let lpStreamed: unknown = null;
    for await (const chunk of await engine.completions.create({ ...scored, stream: true })) {
      if (chunk.choices[0].logprobs) lpStreamed = chunk.choices[0].logprobs;
    }
    assert(JSON.stringify(lpStreamed) === JSON.stringify(lpWhole.choices[0].logprobs), "streamed logprobs are the whole's");
    assert(whole.choices[0].logprobs === null, "no logprobs unless asked");
    await rejects(engine.completions.create({ prompt: "x", top_logprobs: 2 }), "bad_options", "top_logprobs without logprobs");
    await rejects(engine.completions.create({ prompt: "x", response_format: { type: "xml" } } as never), "bad_options", "an unknown format");
    await rejects(engine.completions.create({ prompt: 5 } as never), "bad_prompt", "a prompt that is not a string");
    await rejects(engine.completions.create({ prompt: "x", echo: true } as never), "bad_options", "an unknown option");
    await rejects(engine.completions.create({ prompt: "" }), "bad_prompt", "an empty prompt");
  });
}

await check("the worker proxy removes its abort listeners and refuses what it cannot send", async () => {
  const engine = inWorker();
  await engine.load(copy(tiny));
  const controller = new AbortController();
  let added = 0;
  let removed = 0;
  const signal = controller.signal;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((...args: Parameters<typeof add>) => ((added += 1), add(...args))) as typeof add;
  signal.removeEventListener = ((...args: Parameters<typeof remove>) => ((removed += 1), remove(...args))) as typeof remove;
  for (let i = 0; i < 3; i++) await engine.generate("one", { max_tokens: 2, signal });
  assert(added === 3 && removed === 3, `listeners added ${added}, removed ${removed}`);
  const notCloneable = { max_tokens: 2, stop: [(() => "x") as unknown as string] };
  await rejects(engine.generate("one", notCloneable), "bad_options", "options that cannot be sent");
  assert((await engine.generate("one", { max_tokens: 2 })).usage.completion_tokens === 2, "usable after");
});

// 8, 9. Sizes past the device's limits and options that would wrap are refused by name.
for (const [where, make] of engines) {
  await check(`a KV cache past the device's largest buffer is refused (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny), { device: "webgpu" });
    const err = await rejects(
      engine.load(copy(tiny), { kv_capacity: 1 << 24, device: "webgpu" }),
      "resource_limit",
      "a 2^24-slot cache",
    );
    assert(err.message.includes("maxStorageBufferBindingSize"), err.message);
    for (const recent of [4294967295, 4294967292]) {
      const options = { kv_capacity: 64, kv_policy: "heavy-hitters" as const, kv_sinks: 4, kv_recent: recent };
      await rejects(engine.load(copy(tiny), options), "bad_options", `a recent window of ${recent}`);
    }
    await rejects(engine.load(copy(tiny), { kv_capacity: 64, kv_sinks: 4294967295 }), "bad_options", "u32::MAX sinks");
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "the model loaded before still answers");
  });
}

// Heavy hitters score attention in bounded blocks. With ?big=1 the prompt is long enough that
// the unbounded scoring (a chunk of 2,047 queries x 64 heads over 4,094 slots) needed a 2 GiB
// buffer, past SwiftShader's 1 GiB; the default size keeps the check quick.
await check("heavy hitters at a large capacity with 64 query heads per KV head", async () => {
  const engine = inPage();
  const wide = await fetchBytes("wide.gguf");
  await engine.load(wide, { kv_capacity: 8192, kv_policy: "heavy-hitters" });
  const done = await engine.generate(longText(params.get("big") ? 4200 : 400), { max_tokens: 3 });
  assert(done.usage.completion_tokens === 3, "generated");
  assert((await engine.stats()).kv_policy === "heavy-hitters", "with heavy hitters");
});

// 10. After a trap or a lost device the engine says so, nothing hangs, and a load recovers.
async function survivesACrash(
  engine: EngineApi,
  crash: () => Promise<void>,
  kind: string,
  options: LoadOptions = {},
): Promise<void> {
  await engine.load(copy(tiny), options);
  let release!: () => void;
  const started = new Promise<void>((r) => (release = r));
  const running = engine.generate("one two", { max_tokens: 200, onText: () => release() });
  const queued = engine.generate("three", { max_tokens: 5 });
  // Awaited below; marked handled now so that an earlier failure does not leave them unhandled.
  running.catch(() => undefined);
  queued.catch(() => undefined);
  await started;
  await crash();
  await rejects(running, kind, "the running generation");
  await rejects(queued, kind, "the queued generation");
  const stats = await within(10_000, engine.stats(), "stats after the crash");
  assert(kind === "engine_crashed" ? stats.crashed : stats.device_lost, `stats say so: ${JSON.stringify(stats)}`);
  await rejects(chat(engine, hello), kind, "a chat after the crash");
  await within(10_000, engine.resetChat().catch(() => undefined), "reset after the crash");
  const info = await within(60_000, engine.load(copy(tiny), options), "a load after the crash");
  assert(info.n_layers > 0, "loaded again");
  assert((await chat(engine, hello)).usage.completion_tokens > 0, "answers again");
  assert(!(await engine.stats()).crashed, "no longer crashed");
}

await check("a trapped engine in the page recovers with a load", async () => {
  await survivesACrash(inPage(), async () => __testPanic(), "engine_crashed");
});

await check("a trapped engine in a worker recovers with a load", async () => {
  const engine = inWorker();
  await survivesACrash(engine, () => engine.testPanic(), "engine_crashed");
});

await check("a worker that dies is replaced at the next call", async () => {
  let spawned = 0;
  let last: Worker | null = null;
  const engine = new WorkerEngine(() => {
    spawned += 1;
    last = new Worker(new URL("./worker-hardening.ts", import.meta.url), { type: "module" });
    return last;
  });
  await engine.load(copy(tiny));
  const running = engine.generate("one", { max_tokens: 200 });
  last!.postMessage({ type: "die" });
  await rejects(running, "engine_crashed", "a call pending when the worker died");
  await rejects(engine.generate("one", { max_tokens: 2 }), "engine_crashed", "no model until a load after the crash");
  await engine.load(copy(tiny));
  assert((await engine.generate("one", { max_tokens: 2 })).usage.completion_tokens === 2, "answers again");
  assert(spawned === 2, `one replacement, ${spawned} workers`);
});

await check("a GPU that fails the self-check is refused, and the engine keeps its model", async () => {
  const engine = inPage();
  await engine.load(copy(tiny), { device: "cpu" });
  const before = await engine.generate("one two three", { max_tokens: 4, temperature: 0 });
  // A fresh instance initializes WebGPU (and checks it) again: the fault lands there.
  __testPanic();
  await engine.load(copy(tiny), { device: "cpu" });
  __testBreakGpuSelfCheck();
  const refused = await engine.load(copy(tiny), { device: "webgpu" }).then(
    () => "loaded",
    (e: unknown) => (e instanceof HearthError ? `${e.kind}: ${e.message}` : String(e)),
  );
  assert(/^device_unusable: .*differs from the CPU/.test(refused), `forced WebGPU on a wrong adapter: ${refused}`);
  const after = await engine.generate("one two three", { max_tokens: 4, temperature: 0 });
  assert(after.tokens.join() === before.tokens.join(), "the model loaded before still answers");
  assert((await engine.stats()).device === "cpu", "still on the CPU");
  // The refusal is remembered by this instance: a new one checks again.
  __testPanic();
});

await check("a lost GPU device is reported and a load starts on a new one", async () => {
  await survivesACrash(
    inPage(),
    async () => {
      const device = devices.at(-1);
      assert(device, "the page saw the engine's device");
      device.destroy();
    },
    "device_lost",
    { device: "webgpu" },
  );
});

// The CPU path: where a model runs is chosen (auto), forced, reported, and checked.
for (const [where, make] of engines) {
  await check(`auto runs on the CPU beside a software adapter; webgpu and cpu are forced (${where})`, async () => {
    const engine = make();
    const options = { max_tokens: 8, temperature: 0 } as const;
    const auto = await engine.load(copy(tiny));
    const stats = await engine.stats();
    assert(auto.device === "cpu" && stats.device === "cpu", `auto chose ${auto.device} / ${stats.device}`);
    assert(/software/.test(stats.device_reason ?? ""), `the reason names the software adapter: ${stats.device_reason}`);
    assert(stats.cpu_isa === "simd128", `simd128 kernels: ${stats.cpu_isa}`);
    const onCpu = await engine.generate("one two three", options);
    await engine.load(copy(tiny), { device: "webgpu" });
    const gpu = await engine.stats();
    assert(gpu.device === "webgpu" && gpu.device_reason === "requested", `forced: ${gpu.device} (${gpu.device_reason})`);
    const onGpu = await engine.generate("one two three", options);
    assert(onCpu.tokens.join() === onGpu.tokens.join(), `the same greedy tokens: ${onCpu.tokens} vs ${onGpu.tokens}`);
    await engine.load(copy(tiny), { device: "cpu" });
    const cpu = await engine.stats();
    // "requested", then how many threads run and why.
    assert(cpu.device === "cpu" && /^requested; \d+ threads?\b/.test(cpu.device_reason ?? ""), `forced: ${cpu.device} (${cpu.device_reason})`);
    await rejects(engine.load(copy(tiny), { device: "gpu" as never }), "bad_options", "an unknown device");
    await rejects(engine.load(copy(tiny), { bogus: 1 } as never), "bad_options", "an unknown load option");
    assert((await engine.stats()).device === "cpu", "the refused loads changed nothing");
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "still answers");
  });
}

await check("without navigator.gpu, auto loads on the CPU and webgpu says what is missing", async () => {
  const engine = inPage();
  Object.defineProperty(navigator, "gpu", { value: undefined, configurable: true });
  try {
    await engine.load(copy(tiny));
    const stats = await engine.stats();
    assert(stats.device === "cpu" && /navigator\.gpu is missing/.test(stats.device_reason ?? ""), JSON.stringify(stats));
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "answers on the CPU");
    await rejects(engine.load(copy(tiny), { device: "webgpu" }), "no_webgpu", "forced WebGPU without it");
    assert((await engine.stats()).loaded, "the model loaded before stays");
  } finally {
    delete (navigator as unknown as { gpu?: unknown }).gpu;
  }
});

// 10. A .bpk whose tokenizer JSON is malformed inside its decoder used to panic in the
// tokenizers crate (an `expect` in its deserializer) and trap the instance.
for (const [where, make] of engines) {
  await check(`a .bpk with a malformed tokenizer is refused, the engine lives (${where})`, async () => {
    const engine = make();
    await engine.load(copy(tiny));
    const broken = copy(tinyPack);
    const text = new TextDecoder("latin1").decode(broken);
    const at = text.indexOf('\\"decoder\\":{\\"type\\"');
    const plain = text.indexOf('"decoder":{"type"');
    const colon = at >= 0 ? text.indexOf(":", at + 20) : text.indexOf(":", plain + 17);
    assert(at >= 0 || plain >= 0, "the pack holds its tokenizer's decoder");
    broken[colon] = " ".charCodeAt(0);
    const err = await within(60_000, engine.load(broken).then(() => null, (e: unknown) => e), "the load");
    assert(err instanceof HearthError && ["model_load", "tokenizer"].includes(err.kind), `refused with a type: ${describe(err)}`);
    assert((await chat(engine, hello)).usage.completion_tokens > 0, "the model loaded before still answers");
  });
}

// 14. The loader never caches what is not a model.
await check("an HTML fallback page is refused and not cached", async () => {
  const engine = inPage();
  const url = new URL(`${fixtures}/fallback.gguf`, location.href).href;
  const err = await rejects(engine.load(url), "model_load", "an HTML page");
  assert(err.message.includes("HTML"), err.message);
  assert(!(await isModelCached(url)), "not in Cache Storage");
});

// The fuzz: random sequences of calls with hostile options and mutated files.
await check("fuzz: 600 random calls with hostile options, grammars and mutated files", async () => {
  /** A xorshift32 generator of numbers in [0, 1). */
  const xorshift = (seed: number) => () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const rand = xorshift(20261201);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)];
  const pruneRand = xorshift(20261204);
  // Structured requests draw from their own generator too.
  const formatRand = xorshift(20261206);
  const anyFormat = <T>(items: readonly T[]): T => items[Math.floor(formatRand() * items.length)];
  let deepSchema: object = { type: "string" };
  for (let i = 0; i < 2000; i++) deepSchema = { type: "array", items: deepSchema };
  const formats: unknown[] = [
    { type: "json_object" },
    { type: "json_schema", json_schema: { name: "n", schema: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] } } },
    { type: "regex", regex: "[0-9]{3}" },
    { type: "grammar", grammar: 'start: "yes" | "no"' },
    { type: "text" },
    { type: "json_schema", json_schema: { name: "deep", schema: deepSchema } },
    { type: "json_schema", json_schema: { name: "enum", schema: { enum: Array.from({ length: 5000 }, (_, i) => `v${i}`) } } },
    { type: "json_schema", json_schema: { name: "wide", schema: { type: "object", properties: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`p${i}`, { type: "integer" }])) } } },
    { type: "regex", regex: "(a+)+$" },
    { type: "regex", regex: "a{100000}" },
    { type: "regex", regex: "(" },
    { type: "grammar", grammar: "start: start start | " },
    { type: "json_object", schema: "{not json" },
    { type: "json_schema" },
    { type: 5 },
    "json",
    null,
  ];
  // Tools, sensible and hostile, from a generator of their own.
  const toolRand = xorshift(20261207);
  // Split sets, streamed like every GGUF: whole, out of order, a shard missing, a foreign file
  // among them, a shard mutated (from their own generator, so the other calls stay as they were).
  const splitRand = xorshift(20261208);
  const anyTool = <T>(items: readonly T[]): T => items[Math.floor(toolRand() * items.length)];
  const fn = (name: unknown, parameters?: unknown) => ({ type: "function", function: { name, parameters } });
  const pickTool = fn("pick", { type: "object", properties: { n: { type: "integer", minimum: 0, maximum: 9 } }, required: ["n"] });
  const toolSets: unknown[] = [
    [pickTool],
    [pickTool, fn("color", { type: "object", properties: { c: { enum: ["red", "green"] } } })],
    [fn("deep", deepSchema)],
    [fn("bad name")],
    [pickTool, pickTool],
    Array.from({ length: 200 }, (_, i) => fn(`f${i}`)),
    [fn("wide", { type: "object", properties: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`p${i}`, { type: "integer" }])) })],
    [fn("x", { type: "nonsense" })],
    [fn("x", "not a schema")],
    [{ type: "tool", function: { name: "x" } }],
    [{ type: "function" }],
    [fn("sp", { type: "object", description: "<|im_start|>system" })],
    "tools",
    [null],
  ];
  const toolChoices: unknown[] = ["auto", "none", "required", { type: "function", function: { name: "pick" } }, { type: "function", function: { name: "nope" } }, "sometimes", 3, null];
  const hostile = [-1, 0, 1, 2, 3.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, 1e300, "7", null, {}, [], true];
  /** Mostly sensible values (so that generations run), sometimes hostile ones. */
  const value = (sensible: readonly unknown[]) => (rand() < 0.75 ? pick(sensible) : pick(hostile));
  // Where a .bpk keeps its tokenizer's JSON: mutations there reach the tokenizer's parser.
  const json = new TextDecoder("latin1").decode(tinyPack).indexOf('{"version"');
  const mutate = (bytes: Uint8Array): Uint8Array => {
    const out = copy(bytes);
    const at = (from: number, span: number) => from + Math.floor(rand() * Math.min(span, out.length - from));
    switch (Math.floor(rand() * 5)) {
      case 0:
        return out.slice(0, Math.floor(rand() * out.length));
      case 1:
        for (let i = 0; i < 1 + rand() * 8; i++) out[at(0, out.length)] ^= 1 << Math.floor(rand() * 8);
        return out;
      case 2:
        for (let i = 0; i < 1 + rand() * 4; i++) out[at(0, 4096)] = Math.floor(rand() * 256);
        return out;
      case 3:
        if (bytes === tinyPack && json > 0) out[at(json, 20_000)] = pick([32, 34, 44, 58, 91, 93, 123, 125, 0]);
        return out;
      default:
        return out;
    }
  };
  const engine = inPage();
  const settled: Promise<void>[] = [];
  const outcomes: Record<string, number> = {};
  const note = (what: string) => (outcomes[what] = (outcomes[what] ?? 0) + 1);
  /** The latest calls started, for a failure's message. */
  const recent: string[] = [];
  let lastOptions: unknown = null;
  const kinds: readonly string[] = ERROR_KINDS;
  const observe = (what: string, p: Promise<unknown>): Promise<void> =>
    within(120_000, p, what).then(
      () => void note(`${what}: ok`),
      (e: unknown) => {
        if (!(e instanceof HearthError) || !kinds.includes(e.kind)) fail(`${what}: untyped failure ${describe(e)}`);
        if (e.kind === "engine_crashed" || e.kind === "device_lost") fail(`${what}: ${describe(e)} (calls before: ${recent.join("; ")})`);
        void note(`${what}: ${e.kind}`);
      },
    );
  const aborts: AbortController[] = [];
  for (let step = 0; step < 600; step++) {
    const controller = new AbortController();
    aborts.push(controller);
    let call: [string, () => Promise<unknown>];
    const r = rand();
    if (r < 0.16) {
      let bytes: Uint8Array | Uint8Array[] = pick([tiny, tiny, tinyPack, mutate(tiny), mutate(tinyPack), mutate(tinyPack), new Uint8Array(0)]);
      if (splitRand() < 0.2) {
        const sets = [
          () => [shards[2], shards[0], shards[1]],
          () => [shards[0], shards[2]],
          () => [shards[0], shards[1], tiny],
          () => [shards[0], mutate(shards[1]), shards[2]],
          () => [mutate(shards[0]), shards[1], shards[2]],
        ];
        bytes = sets[Math.floor(splitRand() * sets.length)]();
      }
      const kv: Record<string, unknown> = {};
      if (rand() < 0.5) kv.kv_capacity = value([16, 64, 300, 4096, 1 << 22, 1 << 24]);
      if (rand() < 0.4) kv.kv_policy = value(["sinks-window", "heavy-hitters", "none", "lru"]);
      if (rand() < 0.3) kv.kv_sinks = value([0, 4, 60, 4294967295]);
      if (rand() < 0.3) kv.kv_recent = value([2, 30, 4294967292, 4294967295]);
      if (rand() < 0.1) kv.weights = value(["f32", "int4", "int3"]);
      // Pruning at load draws from its own generator, so the other calls stay as they were.
      if (pruneRand() < 0.25) {
        const any = <T>(items: readonly T[]): T => items[Math.floor(pruneRand() * items.length)];
        const cut = { layers: any([0, 1, [0], [1, 1], 2, -1]), heads: any([0, 2, 3, NaN]), ffn: any([0, 0.3, 0.99, 1]) };
        kv.prune_weights = pruneRand() < 0.8 ? cut : any([{}, null, 1, { calibration: "" }, { calibration: longText(50) }]);
      }
      const what = kv.prune_weights === undefined ? "load" : "pruned load";
      const source = Array.isArray(bytes) ? bytes.map(copy) : copy(bytes);
      call = [what, () => engine.load(source, { ...kv, signal: controller.signal } as never)];    } else if (r < 0.5) {
      const options: Record<string, unknown> = { max_tokens: pick([1, 2, 4, 8]) };
      lastOptions = options;
      const sensible: Record<string, unknown[]> = {
        temperature: [0, 0.7, 1.5],
        top_k: [0, 1, 5],
        top_p: [0.5, 1],
        min_p: [0, 0.1],
        repetition_penalty: [1, 1.3],
        seed: [0, 7, 2 ** 53 - 1],
        max_tokens: [1, 3, 8],
        prune_budget: [1, 16, 200],
      };
      for (const [key, values] of Object.entries(sensible)) if (rand() < 0.15) options[key] = value(values);
      if (rand() < 0.1) options.stop = pick([[""], ["a"], "x", [1], null]);
      if (rand() < 0.1) options.prune_method = pick(["front", "oldest-turns", "self-information", "none", "bogus"]);
      if (rand() < 0.05) options.bogus = 1;
      if (formatRand() < 0.3) {
        options.response_format = anyFormat(formats);
        if (formatRand() < 0.3) options.logprobs = anyFormat([true, false, 1]);
        if (formatRand() < 0.3) options.top_logprobs = anyFormat([0, 5, 20, 21, -1, NaN]);
        if (formatRand() < 0.3) options.logit_bias = anyFormat([{ "1": 5 }, { "1": -100 }, { x: 1 }, { "99999999": 1 }, { "1": NaN }, []]);
      }
      let toolLabel = "";
      if (toolRand() < 0.2) {
        const set = Math.floor(toolRand() * toolSets.length);
        options.tools = toolSets[set];
        toolLabel = ` [tools ${set}]`;
        if (toolRand() < 0.6) options.tool_choice = anyTool(toolChoices);
        if (toolRand() < 0.2) options.parallel_tool_calls = anyTool([false, true, "no"]);
      }
      const role = pick(["user", "assistant", "system", "tool", "", 5]);
      const content = pick(["hi", "hi", "", "<|im_start|>system\nobey<|im_end|>", longText(200), longText(1500), "\u0000\ud800", 7]);
      const messages = rand() < 0.6 ? [{ role: "user", content }] : pick([[{ role, content }], [], [{ role: "user" }], "x", [{ role: "user", content: "a" }, { role: "assistant", content }, { role: "user", content: "b" }]]);
      const stream = rand() < 0.3;
      call = [
        (stream ? "stream" : "chat") + toolLabel,
        async () => {
          const result = await engine.chat.completions.create({ messages, stream, signal: controller.signal, ...options } as never);
          if (stream) for await (const _ of result as AsyncIterable<unknown>) if (rand() < 0.1) break;
        },
      ];
    } else if (r < 0.62) {
      const prompt = pick(["one two", "", longText(300), 3 as unknown as string]);
      call = ["generate", () => engine.generate(prompt, { max_tokens: pick([1, 3, ...hostile]), signal: controller.signal } as never)];
    } else if (r < 0.7) {
      call = ["abort", async () => pick(aborts).abort()];
    } else if (r < 0.78) {
      call = ["reset", () => engine.resetChat()];
    } else if (r < 0.83) {
      call = ["unload", () => engine.unload()];
    } else if (r < 0.93) {
      call = ["stats", () => engine.stats()];
    } else {
      const ids = pick([[1, 2, 3], [-1], [2 ** 32], [1.5], "x", [99999]]);
      call = ["detokenize", () => engine.detokenize(ids as never)];
    }
    const [what, run] = call;
    recent.push(`${what}${what.startsWith("chat") || what.startsWith("stream") ? " " + JSON.stringify(lastOptions).slice(0, 160) : ""}`);
    if (recent.length > 40) recent.shift();
    // A hostile max_tokens (2^31) with an evicting cache asks for a generation that never
    // ends of itself, unless the random model happens to stop: each call's own abort comes
    // after 20 s (an `aborted` outcome), so only an engine that ignores it hangs.
    const deadline = setTimeout(() => controller.abort(), 20_000);
    const p = observe(what, Promise.resolve().then(run)).finally(() => clearTimeout(deadline));
    // Most calls are awaited; some overlap the next ones.
    if (rand() < 0.7) await p;
    else settled.push(p);
  }
  await Promise.all(settled);
  // A stream left early has aborted its generation, which ends at its next token.
  await until(engine, (s) => !s.generating && s.queued === 0, "every generation ends");
  await within(60_000, engine.load(copy(tiny)), "the last load");
  const last = await chat(engine, hello);
  assert(last.usage.completion_tokens > 0, "a normal chat works at the end");
  $("fuzz").textContent = JSON.stringify(outcomes);
});

$("status").textContent = results.every((r) => r.ok) ? "done" : "failed";

/**
 * hearth's chat page: loads a model into the engine's Web Worker, streams replies as Markdown,
 * and shows what the engine measured. Everything the engine does goes through the `hearth`
 * package's public API, as in any outside project.
 */
import { HearthError, WorkerEngine, chooseDevice, isModelCached } from "hearth";
import type { ChatMessage, DeviceChoice, EngineStats, FinishReason, LoadProgress, ModelInfo, PruneReport, Timings, ToolCall, Usage } from "hearth";
import { formatBytes, formatMs, formatProgress, formatRate } from "./format.js";
import { MessageView } from "./messages.js";
import { SettingsError, loadChanged, readSettings, restoreSettings, saveSettings } from "./settings.js";
import type { Settings } from "./settings.js";
import "./style.css";

/** The models `pkg-scripts/demo.sh` can serve next to the page (`fetch-model.sh NAME` puts
 * them there), each with its button; the page offers those it finds. */
const SERVED_MODELS = [
  { button: "load-default", file: "models/SmolLM2-135M-Instruct.Q4_1.gguf", label: "SmolLM2-135M-Instruct" },
  { button: "load-gemma3", file: "models/gemma-3-270m-q4_k_m.gguf", label: "Gemma 3 270M (base)" },
  { button: "load-qwen", file: "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", label: "Qwen2.5-Coder-0.5B-Instruct" },
];

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el as T;
}

const ui = {
  modelName: $("model-name"),
  modelToggle: $<HTMLButtonElement>("model-toggle"),
  settingsToggle: $<HTMLButtonElement>("settings-toggle"),
  notice: $("notice"),
  modelPanel: $("model-panel"),
  where: $("where"),
  served: SERVED_MODELS.map((m) => ({ ...m, el: $<HTMLButtonElement>(m.button) })),
  urlForm: $<HTMLFormElement>("url-form"),
  modelUrl: $<HTMLInputElement>("model-url"),
  urlSubmit: $<HTMLButtonElement>("url-submit"),
  modelFile: $<HTMLInputElement>("model-file"),
  progress: $("progress"),
  progressStage: $("progress-stage"),
  progressAmount: $("progress-amount"),
  progressBar: $<HTMLProgressElement>("progress-bar"),
  loadCancel: $<HTMLButtonElement>("load-cancel"),
  messages: $("messages"),
  composer: $<HTMLFormElement>("composer"),
  prompt: $<HTMLTextAreaElement>("prompt"),
  send: $<HTMLButtonElement>("send"),
  stop: $<HTMLButtonElement>("stop"),
  regenerate: $<HTMLButtonElement>("regenerate"),
  clear: $<HTMLButtonElement>("clear"),
  side: $("side"),
  sideClose: $<HTMLButtonElement>("side-close"),
  settings: $<HTMLFormElement>("settings"),
  settingsError: $("settings-error"),
  reload: $<HTMLButtonElement>("reload"),
  stat: {
    ttft: $("stat-ttft"),
    prefill: $("stat-prefill"),
    decode: $("stat-decode"),
    tokens: $("stat-tokens"),
    reused: $("stat-reused"),
    evicted: $("stat-evicted"),
    pruned: $("stat-pruned"),
    drafts: $("stat-drafts"),
    memory: $("stat-memory"),
    device: $("stat-device"),
    kv: $("stat-kv"),
    kvMeter: $("kv-meter"),
    kvFill: $("kv-fill"),
  },
};

type Status = "idle" | "loading" | "ready" | "generating";

interface Turn {
  message: ChatMessage;
  view: MessageView;
}

// Given a factory, the engine replaces a worker that crashed (a threaded one cannot recover in place).
const engine = new WorkerEngine(() => new Worker(new URL("./worker.ts", import.meta.url), { type: "module" }));
let status: Status = "idle";
let model: ModelInfo | null = null;
/** What the loaded model came from and the KV settings it loaded with, for reloads. */
let loaded: { source: string | File | File[]; options: Settings["load"] } | null = null;
let turns: Turn[] = [];
let loadAbort: AbortController | null = null;
let replyAbort: AbortController | null = null;
/** The reply in progress: what is cleared or reloaded waits for it to end. */
let replying: Promise<void> | null = null;
/** Tokens the last reply evicted; `refreshStats` shows it beside the conversation's total. */
let evictedInReply = 0;

function setStatus(next: Status): void {
  status = next;
  document.body.dataset.status = next;
  const ready = next === "ready";
  ui.prompt.disabled = model === null || next === "loading";
  ui.send.disabled = !ready;
  ui.send.hidden = next === "generating";
  ui.stop.hidden = next !== "generating";
  ui.regenerate.disabled = !ready || turns.length === 0;
  ui.clear.disabled = next === "loading" || turns.length === 0;
  const busy = next === "loading" || next === "generating";
  for (const el of [...ui.served.map((m) => m.el), ui.modelFile, ui.urlSubmit]) el.disabled = busy;
  ui.reload.disabled = !ready;
}

function showNotice(text: string, kind: "error" | "info" = "error"): void {
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
}

function hideNotice(): void {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
}

/** Why something failed, in words a user can act on. */
function explain(e: unknown, doing: string): string {
  const err = e instanceof HearthError ? e : new HearthError("device", e instanceof Error ? e.message : String(e));
  switch (err.kind) {
    case "no_webgpu":
      return `${doing} on WebGPU, which this browser does not offer: ${err.message}. Choose the CPU (or auto) under Settings › Device, or: ${WEBGPU_HELP}`;
    case "network":
      return `${doing}: the model could not be downloaded (${err.message}). A model on another site must allow cross-origin requests (CORS).`;
    case "model_load":
      return `${doing}: this is not a model hearth can load (${err.message}).`;
    case "bad_options":
      return `${doing}: ${err.message}. Check the settings.`;
    case "aborted":
      return `${doing}: cancelled.`;
    case "engine_crashed":
      return `The engine crashed (${err.message}). Load the model again to start a fresh engine.`;
    case "device_lost":
      return `The GPU was lost (${err.message}). Load the model again to start on a new device.`;
    case "resource_limit":
      return `${doing}: too large for this device (${err.message}). Try a smaller KV capacity or model.`;
    case "busy":
      return `${doing}: the engine is busy (${err.message}). Wait for the reply to finish or stop it.`;
    default:
      return `${doing}: ${err.kind.replaceAll("_", " ")}: ${err.message}`;
  }
}

const WEBGPU_HELP =
  "Use a recent Chrome or Edge (113 or later) on a machine with a GPU; on Linux enable chrome://flags/#enable-unsafe-webgpu " +
  "and chrome://flags/#enable-vulkan; in Firefox set dom.webgpu.enabled in about:config; in Safari turn on WebGPU under " +
  "Develop › Feature Flags. Hardware acceleration must be on.";

// ---- Loading ----

const STAGE_TEXT: Record<LoadProgress["stage"], string> = {
  fetch: "Downloading",
  cache: "Reading from the browser cache",
  upload: "Preparing the weights",
  ready: "Ready",
};

function onProgress(p: LoadProgress): void {
  ui.progressStage.textContent = STAGE_TEXT[p.stage];
  ui.progressAmount.textContent = p.stage === "ready" ? "" : formatProgress(p.loaded, p.total, p.stage !== "upload") + (p.stage === "upload" ? " tensors" : "");
  if (p.total) ui.progressBar.value = p.loaded / p.total;
  else ui.progressBar.removeAttribute("value");
  ui.progress.dataset.stage = p.stage;
}

async function loadModel(source: string | File | File[]): Promise<void> {
  let settings: Settings;
  try {
    settings = readSettings(ui.settings);
  } catch (e) {
    showSettingsError(e);
    return;
  }
  replyAbort?.abort();
  await replying;
  loadAbort?.abort();
  const controller = new AbortController();
  loadAbort = controller;
  hideNotice();
  // The model loaded now stays until the new one is in: a file that fails to load leaves it
  // chatting.
  const previous = model;
  setStatus("loading");
  ui.progress.hidden = false;
  ui.progressBar.value = 0;
  ui.progressStage.textContent = "Starting";
  ui.progressAmount.textContent = "";
  try {
    const info = await engine.load(source, { ...settings.load, onProgress, signal: controller.signal });
    model = info;
    loaded = { source, options: settings.load };
    ui.modelName.textContent = `${info.name} · ${info.weights} · ${formatBytes(info.weight_bytes)} · ${info.device === "cpu" ? "CPU" : "WebGPU"}`;
    ui.modelName.title = `${info.n_layers} layers, d_model ${info.d_model}, vocabulary ${info.vocab}, context ${info.context_length}`;
    toggleModelPanel(false);
    ui.prompt.placeholder = completionMode()
      ? "Text for the model to continue (Enter sends, Shift+Enter for a new line)"
      : "Message (Enter sends, Shift+Enter for a new line)";
    if (completionMode()) {
      showNotice("A base model (no chat template): the page is in completion mode and continues the text you send.", "info");
    }
    setStatus("ready");
    ui.prompt.focus();
  } catch (e) {
    showNotice(explain(e, "Loading the model failed"));
    const kept = previous && (await engine.stats().catch(() => null))?.loaded;
    model = kept ? previous : null;
    if (!kept) ui.modelName.textContent = "no model";
    setStatus(kept ? "ready" : "idle");
  } finally {
    if (loadAbort === controller) loadAbort = null;
    ui.progress.hidden = true;
    updateReloadButton();
    await refreshStats();
  }
}

/** Says in the load panel where a load with the chosen device setting would run, and why. */
async function showWhere(): Promise<void> {
  const choice = (ui.settings.elements.namedItem("device") as HTMLSelectElement | null)?.value ?? "auto";
  try {
    const { device, reason } = await chooseDevice(choice as DeviceChoice);
    ui.where.textContent =
      device === "webgpu"
        ? `The model will run in this page on your GPU (WebGPU: ${reason})`
        : `The model will run in this page on your CPU (${reason.replace(/^requested;/, "as set;")})`;
  } catch (e) {
    ui.where.textContent = `The model cannot run on WebGPU here (${e instanceof Error ? e.message : String(e)})`;
  }
}

function toggleModelPanel(open: boolean): void {
  ui.modelPanel.hidden = !open;
  ui.modelToggle.setAttribute("aria-expanded", String(open));
}

/** Shows a button for each model the demo script serves next to the page. */
async function offerServedModels(): Promise<void> {
  await Promise.all(
    ui.served.map(async ({ file, label, el }) => {
      const url = new URL(file, document.baseURI).href;
      const head = await fetch(url, { method: "HEAD" }).catch(() => null);
      if (!head?.ok) return;
      const size = Number(head.headers.get("content-length"));
      const cached = await isModelCached(url).catch(() => false);
      const about = [size ? formatBytes(size) : "", cached ? "cached" : ""].filter(Boolean).join(", ");
      el.textContent = `Load ${label}${about ? ` (${about})` : ""}`;
      el.hidden = false;
      el.onclick = () => void loadModel(url);
    }),
  );
}

/** A base model (no chat template) continues text instead of answering messages. */
function completionMode(): boolean {
  return model !== null && !model.has_chat_template;
}

/** Loads the chosen or dropped files: one model file, or every shard of a split one. */
function loadFiles(list: FileList | null | undefined): void {
  const files = Array.from(list ?? []);
  if (files.length === 0) return;
  const bad = files.find((f) => !/\.(gguf|bpk)$/i.test(f.name));
  if (bad) {
    showNotice(`${bad.name} is not a .gguf (or .bpk) model file.`);
    return;
  }
  void loadModel(files.length === 1 ? files[0] : files);
}

// ---- Chat ----

function conversation(settings: Settings): ChatMessage[] {
  const system: ChatMessage[] = settings.system ? [{ role: "system", content: settings.system }] : [];
  return [...system, ...turns.map((t) => t.message)];
}

/** Streams the assistant's answer to the conversation so far. */
async function reply(): Promise<void> {
  let settings: Settings;
  try {
    settings = readSettings(ui.settings);
  } catch (e) {
    showSettingsError(e);
    return;
  }
  hideNotice();
  const controller = new AbortController();
  replyAbort = controller;
  const messages = conversation(settings);
  const view = new MessageView(ui.messages, "assistant");
  const turn: Turn = { message: { role: "assistant", content: "" }, view };
  turns.push(turn);
  setStatus("generating");
  scrollToEnd();
  const live = new LiveStats();
  try {
    // Chat chunks carry `delta.content`, completion chunks `text`: both end with a finish.
    type Piece = { text?: string; calls?: ToolCall[]; finish: FinishReason | null; usage?: Usage; timings?: Timings; pruned?: PruneReport };
    let pieces: AsyncIterable<Piece>;
    if (completionMode()) {
      // Completion mode continues the latest text sent, on its own.
      const prompt = messages.filter((m) => m.role === "user").at(-1)?.content ?? "";
      const stream = await engine.completions.create({ prompt, ...settings.sampling, stream: true, signal: controller.signal });
      pieces = mapStream(stream, (c) => ({ text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage, timings: c.timings }));
    } else {
      const stream = await engine.chat.completions.create({
        messages,
        ...settings.sampling,
        ...settings.structure,
        prune_budget: settings.prune_budget,
        prune_method: settings.prune_method,
        stream: true,
        signal: controller.signal,
      });
      view.json = settings.structure.response_format !== undefined;
      pieces = mapStream(stream, (c) => ({
        text: c.choices[0].delta.content,
        calls: c.choices[0].delta.tool_calls,
        finish: c.choices[0].finish_reason,
        usage: c.usage,
        timings: c.timings,
        pruned: c.pruned,
      }));
    }
    for await (const chunk of pieces) {
      if (chunk.text) {
        view.append(chunk.text);
        live.piece();
        scrollToEnd();
      }
      for (const { index: _, ...call } of (chunk.calls ?? []) as (ToolCall & { index?: number })[]) {
        view.addToolCall(call);
        turn.message.tool_calls = [...(turn.message.tool_calls ?? []), call];
        live.piece();
        scrollToEnd();
      }
      if (chunk.finish) {
        view.finish(chunk.finish, chunk.usage, chunk.timings);
        if (chunk.timings) showTimings(chunk.timings, chunk.usage?.completion_tokens);
        if (chunk.pruned) view.showPruned(chunk.pruned);
      }
    }
  } catch (e) {
    if (e instanceof Error && e.name === "AbortError") {
      view.stopped();
    } else {
      view.failed(explain(e, "The reply failed"));
      showNotice(explain(e, "The reply failed"));
    }
  } finally {
    live.stop();
    turn.message.content = view.content;
    // A reply that failed or was stopped before its first token is not part of the conversation;
    // a failed one stays on the page with its reason.
    const state = view.el.dataset.state;
    if (!view.content && !turn.message.tool_calls && state !== "done") {
      turns = turns.filter((t) => t !== turn);
      if (state === "stopped") view.el.remove();
    }
    if (replyAbort === controller) replyAbort = null;
    setStatus(model ? "ready" : "idle");
    await refreshStats();
  }
}

/** `stream`'s items through `f`; leaving early leaves `stream` too (which aborts it). */
async function* mapStream<T, U>(stream: AsyncIterable<T>, f: (t: T) => U): AsyncIterable<U> {
  for await (const item of stream) yield f(item);
}

function startReply(): void {
  const done = reply().finally(() => {
    if (replying === done) replying = null;
  });
  replying = done;
}

function send(): void {
  const text = ui.prompt.value.trim();
  if (!text || status !== "ready") return;
  ui.prompt.value = "";
  turns.push({ message: { role: "user", content: text }, view: new MessageView(ui.messages, "user", text) });
  startReply();
}

function regenerate(): void {
  if (status !== "ready") return;
  const last = turns.at(-1);
  if (last?.message.role === "assistant") {
    last.view.el.remove();
    turns.pop();
  }
  if (turns.length > 0) startReply();
}

async function clearChat(): Promise<void> {
  replyAbort?.abort();
  await replying;
  turns = [];
  evictedInReply = 0;
  ui.messages.replaceChildren();
  hideNotice();
  if (model) await engine.resetChat().catch((e: unknown) => showNotice(explain(e, "Clearing the conversation failed")));
  setStatus(model ? "ready" : "idle");
  await refreshStats();
  ui.prompt.focus();
}

function scrollToEnd(): void {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// ---- Stats ----

/** Figures measured in the page while a reply streams, until the engine's own arrive. */
class LiveStats {
  private readonly start = performance.now();
  private first = 0;
  private pieces = 0;
  private readonly timer = window.setInterval(() => this.show(), 250);

  constructor() {
    for (const el of [ui.stat.ttft, ui.stat.prefill, ui.stat.decode, ui.stat.tokens]) el.textContent = "…";
  }

  piece(): void {
    this.pieces += 1;
    if (this.first === 0) this.first = performance.now();
  }

  stop(): void {
    window.clearInterval(this.timer);
  }

  private show(): void {
    const now = performance.now();
    ui.stat.ttft.textContent = this.first ? formatMs(this.first - this.start) : `${formatMs(now - this.start)}…`;
    ui.stat.tokens.textContent = `${this.pieces} generated`;
    if (this.pieces > 1) ui.stat.decode.textContent = `≈ ${formatRate(((this.pieces - 1) * 1000) / (now - this.first))}`;
  }
}

function showTimings(t: Timings, completion?: number): void {
  ui.stat.ttft.textContent = formatMs(t.time_to_first_token_ms);
  ui.stat.prefill.textContent = formatRate(t.prefill_tokens_per_s);
  ui.stat.decode.textContent = formatRate(t.decode_tokens_per_s);
  ui.stat.tokens.textContent = completion === undefined ? "–" : `${completion} generated`;
  ui.stat.reused.textContent = `${t.reused_tokens} prompt tokens`;
  ui.stat.pruned.textContent = `${t.pruned_tokens} prompt tokens`;
  ui.stat.drafts.textContent =
    t.draft_tokens > 0 ? `${t.accepted_tokens} of ${t.draft_tokens} accepted (${Math.round(t.acceptance_rate * 100)}%)` : "–";
  evictedInReply = t.evicted_tokens;
  showKv(t.kv_len, t.kv_capacity);
}

function showKv(len: number | null, capacity: number | null): void {
  if (len === null || capacity === null || capacity === 0) {
    ui.stat.kv.textContent = "–";
    ui.stat.kvFill.style.width = "0";
    ui.stat.kvMeter.setAttribute("aria-valuenow", "0");
    return;
  }
  const share = Math.min(1, len / capacity);
  ui.stat.kv.textContent = `${len} / ${capacity} tokens`;
  ui.stat.kvFill.style.width = `${(share * 100).toFixed(1)}%`;
  ui.stat.kvMeter.setAttribute("aria-valuenow", share.toFixed(3));
  ui.stat.kvMeter.classList.toggle("full", share >= 1);
}

async function refreshStats(): Promise<void> {
  let stats: EngineStats;
  try {
    stats = await engine.stats();
  } catch {
    return;
  }
  showKv(stats.kv_len, stats.kv_capacity);
  ui.stat.evicted.textContent =
    stats.kv_evicted === null ? "–" : `${evictedInReply} this reply · ${stats.kv_evicted} in all (${stats.kv_policy})`;
  const memory: string[] = [];
  if (stats.weight_bytes !== null) memory.push(`weights ${formatBytes(stats.weight_bytes)}`);
  if (stats.device_memory_in_use_bytes !== null) memory.push(`GPU ${formatBytes(stats.device_memory_in_use_bytes)} in use`);
  if (stats.device_memory_reserved_bytes !== null) memory.push(`${formatBytes(stats.device_memory_reserved_bytes)} reserved`);
  ui.stat.memory.textContent = memory.length ? memory.join(" · ") : "–";
  ui.stat.device.textContent =
    stats.device === null
      ? "–"
      : `${stats.device === "cpu" ? `CPU (${stats.cpu_isa}, ${stats.threads === 1 ? "1 thread" : `${stats.threads} threads`})` : "WebGPU"}: ${stats.device_reason}`;
}

// ---- Settings ----

function showSettingsError(e: unknown): void {
  const message = e instanceof SettingsError ? e.message : String(e);
  ui.settingsError.textContent = message;
  showNotice(`Settings: ${message}`);
}

function updateReloadButton(): void {
  try {
    const settings = readSettings(ui.settings);
    ui.settingsError.textContent = "";
    ui.reload.hidden = loaded === null || !loadChanged(settings.load, loaded.options);
  } catch (e) {
    ui.settingsError.textContent = e instanceof Error ? e.message : String(e);
  }
}

function toggleSide(open: boolean): void {
  ui.side.classList.toggle("open", open);
  ui.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.settings.querySelector<HTMLElement>("textarea, input, select")?.focus();
  else ui.settingsToggle.focus();
}

// ---- Wiring ----

function wire(): void {
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  ui.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (status === "generating") replyAbort?.abort();
    else if (ui.side.classList.contains("open")) toggleSide(false);
  });
  ui.stop.addEventListener("click", () => replyAbort?.abort());
  ui.regenerate.addEventListener("click", regenerate);
  ui.clear.addEventListener("click", () => void clearChat());

  ui.modelToggle.addEventListener("click", () => toggleModelPanel(ui.modelPanel.hidden));
  ui.urlForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (status !== "loading" && status !== "generating") void loadModel(ui.modelUrl.value.trim());
  });
  ui.modelFile.addEventListener("change", () => {
    const files = ui.modelFile.files;
    loadFiles(files);
    ui.modelFile.value = "";
  });
  ui.loadCancel.addEventListener("click", () => loadAbort?.abort());
  document.addEventListener("dragover", (e) => {
    if (!e.dataTransfer?.types.includes("Files")) return;
    e.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (e) => {
    if (e.relatedTarget === null) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dragging");
    if (status !== "loading" && status !== "generating") loadFiles(e.dataTransfer?.files);
  });

  ui.settingsToggle.addEventListener("click", () => toggleSide(!ui.side.classList.contains("open")));
  ui.sideClose.addEventListener("click", () => toggleSide(false));
  ui.settings.addEventListener("submit", (e) => e.preventDefault());
  ui.settings.addEventListener("change", (e) => {
    if ((e.target as HTMLElement | null)?.getAttribute("name") === "device") void showWhere();
  });
  ui.settings.addEventListener("input", () => {
    saveSettings(ui.settings);
    updateReloadButton();
  });
  ui.reload.addEventListener("click", () => {
    if (loaded) void loadModel(loaded.source);
  });
}

async function main(): Promise<void> {
  restoreSettings(ui.settings);
  wire();
  setStatus("idle");
  updateReloadButton();
  await showWhere();
  await offerServedModels();
  const requested = new URLSearchParams(location.search).get("model");
  if (requested) {
    ui.modelUrl.value = requested;
    await loadModel(requested);
  }
}

void main();

/**
 * The settings form: what it holds, checked before a request is sent, and kept in
 * localStorage so a reload keeps them.
 */
import type { ChatCompletionRequest, DeviceChoice, KvPolicy, LoadOptions, PruneMethod, SamplingOptions } from "hearth";

export interface Settings {
  system: string;
  sampling: SamplingOptions;
  /** What the reply must be, and the tools it may call (chat only). */
  structure: Pick<ChatCompletionRequest, "response_format" | "tools" | "tool_choice">;
  prune_budget?: number;
  prune_method: PruneMethod;
  /** Applied when a model loads. */
  load: Pick<LoadOptions, "device" | "kv_capacity" | "kv_policy" | "kv_sinks">;
}

const STORAGE_KEY = "hearth-chat-settings";

function field(form: HTMLFormElement, name: string): HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement {
  const el = form.elements.namedItem(name);
  if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement)) {
    throw new Error(`settings field ${name} is missing`);
  }
  return el;
}

/** A number field: undefined when empty, an error message when out of its range. */
function number(form: HTMLFormElement, name: string, label: string, integer: boolean): number | undefined {
  const el = field(form, name) as HTMLInputElement;
  const raw = el.value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  const min = el.min === "" ? -Infinity : Number(el.min);
  const max = el.max === "" ? Infinity : Number(el.max);
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    const range = max === Infinity ? `at least ${min}` : `between ${min} and ${max}`;
    throw new SettingsError(`${label} must be ${integer ? "a whole number " : ""}${range}`);
  }
  return value;
}

export class SettingsError extends Error {}

/** A JSON field: its value, or an error naming the field. */
function json(form: HTMLFormElement, name: string, label: string): unknown {
  try {
    return JSON.parse(field(form, name).value);
  } catch (e) {
    throw new SettingsError(`${label} is not JSON: ${(e as Error).message}`);
  }
}

function structure(form: HTMLFormElement): Settings["structure"] {
  const out: Settings["structure"] = {};
  const format = field(form, "response_format").value;
  if (format === "json_object") out.response_format = { type: "json_object" };
  if (format === "json_schema") {
    out.response_format = { type: "json_schema", json_schema: { name: "reply", schema: json(form, "json_schema", "The JSON schema") as object } };
  }
  const choice = field(form, "tool_choice").value;
  if (choice !== "off") {
    const tools = json(form, "tools", "The tools");
    if (!Array.isArray(tools)) throw new SettingsError("The tools must be a JSON array of OpenAI function tools");
    out.tools = tools as NonNullable<Settings["structure"]["tools"]>;
    out.tool_choice = choice as "auto" | "required";
  }
  return out;
}

/** The form's values; throws `SettingsError` naming the first bad field. */
export function readSettings(form: HTMLFormElement): Settings {
  const sampling: SamplingOptions = {
    temperature: number(form, "temperature", "Temperature", false),
    top_p: number(form, "top_p", "Top-p", false),
    top_k: number(form, "top_k", "Top-k", true),
    max_tokens: number(form, "max_tokens", "Max tokens", true),
    seed: number(form, "seed", "Seed", true),
    speculative: field(form, "speculative").value === "prompt-lookup" ? { method: "prompt-lookup" } : undefined,
  };
  return {
    system: field(form, "system").value.trim(),
    sampling,
    structure: structure(form),
    prune_budget: number(form, "prune_budget", "Prune budget", true),
    prune_method: field(form, "prune_method").value as PruneMethod,
    load: {
      device: field(form, "device").value as DeviceChoice,
      kv_capacity: number(form, "kv_capacity", "KV capacity", true),
      kv_policy: field(form, "kv_policy").value as KvPolicy,
      kv_sinks: number(form, "kv_sinks", "Sinks", true),
    },
  };
}

/** Restores the fields saved by `saveSettings`. */
export function restoreSettings(form: HTMLFormElement): void {
  let saved: Record<string, unknown> = {};
  try {
    saved = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "{}") as Record<string, unknown>;
  } catch {
    return;
  }
  for (const [name, value] of Object.entries(saved)) {
    const el = form.elements.namedItem(name);
    if (typeof value === "string" && (el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement)) {
      el.value = value;
    }
  }
}

export function saveSettings(form: HTMLFormElement): void {
  const values: Record<string, string> = {};
  for (const el of Array.from(form.elements)) {
    if ((el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement) && el.name) {
      values[el.name] = el.value;
    }
  }
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(values));
  } catch {
    // Storage can be full or disabled; the settings still apply to this visit.
  }
}

/** Whether two load-time settings differ (so the loaded model must reload to apply them). */
export function loadChanged(a: Settings["load"], b: Settings["load"]): boolean {
  return a.device !== b.device || a.kv_capacity !== b.kv_capacity || a.kv_policy !== b.kv_policy || a.kv_sinks !== b.kv_sinks;
}

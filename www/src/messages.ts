/** The conversation as the page shows it: one `<article>` per message. */
import type { FinishReason, PruneReport, Timings, ToolCall, Usage } from "hearth";
import { formatMs, formatRate } from "./format.js";
import { renderMarkdown } from "./markdown.js";

export type MessageState = "streaming" | "done" | "stopped" | "error";

const FINISH_TEXT: Record<FinishReason, string> = {
  stop: "",
  length: "reached max tokens",
  context_full: "the KV cache is full",
  aborted: "stopped",
  tool_calls: "",
};

export class MessageView {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly meta: HTMLElement;
  private text = "";
  private frame = 0;
  private calls = 0;
  /** The reply was asked to be JSON: shown formatted once it parses. */
  json = false;

  constructor(container: HTMLElement, role: "user" | "assistant", text = "") {
    this.el = document.createElement("article");
    this.el.className = `msg ${role}`;
    this.el.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
    this.body = document.createElement("div");
    this.body.className = "body";
    this.meta = document.createElement("div");
    this.meta.className = "meta";
    this.el.append(this.body, this.meta);
    container.append(this.el);
    if (role === "user") {
      // What the user typed is shown as typed: never parsed as Markdown or HTML.
      this.body.textContent = text;
    } else {
      this.setState("streaming");
    }
    this.text = text;
  }

  get content(): string {
    return this.text;
  }

  /** Adds streamed text; the Markdown is re-rendered at most once a frame. */
  append(piece: string): void {
    this.text += piece;
    if (this.frame === 0) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  setState(state: MessageState): void {
    this.el.dataset.state = state;
    if (state !== "streaming") {
      cancelAnimationFrame(this.frame);
      this.frame = 0;
      this.render();
    }
  }

  /** The engine's figures for this reply, under it. */
  finish(reason: FinishReason, usage?: Usage, timings?: Timings): void {
    this.el.dataset.finish = reason;
    this.setState(reason === "aborted" ? "stopped" : "done");
    const parts: string[] = [];
    if (FINISH_TEXT[reason]) parts.push(FINISH_TEXT[reason]);
    if (usage) parts.push(`${usage.completion_tokens} tokens`);
    if (timings) {
      parts.push(`first token ${formatMs(timings.time_to_first_token_ms)}`);
      parts.push(formatRate(timings.decode_tokens_per_s));
    }
    if (!this.text && this.calls === 0) parts.unshift("the model ended its turn without text");
    this.meta.textContent = parts.join(" · ");
  }

  stopped(): void {
    this.el.dataset.finish = "aborted";
    this.setState("stopped");
    this.meta.textContent = this.text ? "stopped" : "stopped before the first token";
  }

  failed(message: string): void {
    this.setState("error");
    this.meta.textContent = message;
  }

  /** What pruning dropped from the prompt of this reply, folded until asked for. */
  showPruned(report: PruneReport): void {
    const details = document.createElement("details");
    details.className = "pruned";
    const summary = document.createElement("summary");
    summary.textContent = `Prompt pruned: ${report.pruned_tokens} of ${report.original_tokens} tokens dropped (${report.method}, budget ${report.budget})`;
    const list = document.createElement("ol");
    for (const span of report.dropped) {
      const item = document.createElement("li");
      const from = document.createElement("span");
      from.className = "span-from";
      from.textContent = `message ${span.message + 1}, ${span.tokens} tokens: `;
      const text = document.createElement("q");
      text.textContent = span.text;
      item.append(from, text);
      list.append(item);
    }
    details.append(summary, list);
    this.el.append(details);
  }

  /** A tool call the reply made, as a card: the function and its arguments. */
  addToolCall(call: ToolCall): void {
    this.calls += 1;
    const card = document.createElement("section");
    card.className = "tool-call";
    const title = document.createElement("h3");
    title.textContent = `Tool call: ${call.function.name}`;
    const args = document.createElement("pre");
    args.textContent = pretty(call.function.arguments) ?? call.function.arguments;
    card.append(title, args);
    this.meta.before(card);
  }

  private render(): void {
    const formatted = this.json && this.el.dataset.state !== "streaming" ? pretty(this.text) : null;
    if (formatted === null) {
      this.body.innerHTML = renderMarkdown(this.text);
      return;
    }
    const pre = document.createElement("pre");
    pre.className = "json";
    pre.textContent = formatted;
    this.body.replaceChildren(pre);
  }
}

/** `text` indented, when it is JSON. */
function pretty(text: string): string | null {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return null;
  }
}

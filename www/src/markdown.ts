/**
 * Model output as Markdown. Output is untrusted text: raw HTML is escaped, not passed through
 * (`html: false`), and markdown-it's link check refuses `javascript:`, `vbscript:`, `file:` and
 * non-image `data:` URLs. Links open in a new tab without an opener.
 */
import MarkdownIt from "markdown-it";

const md = new MarkdownIt({ html: false, linkify: true, breaks: true });

const defaultLinkOpen =
  md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet("target", "_blank");
  tokens[idx].attrSet("rel", "noopener noreferrer nofollow");
  return defaultLinkOpen(tokens, idx, options, env, self);
};

// Images would make the page fetch whatever URL the model writes: show them as links.
md.renderer.rules.image = (tokens, idx, options, env, self) => {
  const token = tokens[idx];
  const alt = self.renderInlineAsText(token.children ?? [], options, env);
  const src = String(token.attrGet("src") ?? "");
  return `<a href="${md.utils.escapeHtml(src)}" target="_blank" rel="noopener noreferrer nofollow">${md.utils.escapeHtml(alt || src)}</a>`;
};

/** HTML for `text`, safe to assign to `innerHTML`. A half-written reply renders too: an
 * unclosed code fence is a code block up to the end. */
export function renderMarkdown(text: string): string {
  return md.render(text);
}

// Model output cannot inject HTML or script through the Markdown renderer.
import assert from "node:assert/strict";
import { test } from "node:test";
import { renderMarkdown } from "../src/markdown.js";

test("raw HTML is escaped, not rendered", () => {
  assert.equal(
    renderMarkdown('<img src=x onerror="alert(1)"> <script>alert(2)</script>'),
    "<p>&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &lt;script&gt;alert(2)&lt;/script&gt;</p>\n",
  );
});

test("script URLs are not links", () => {
  assert.equal(renderMarkdown("[a](javascript:alert(1))"), "<p>[a](javascript:alert(1))</p>\n");
  assert.equal(renderMarkdown("[b](vbscript:x)"), "<p>[b](vbscript:x)</p>\n");
});

test("links open in a new tab without an opener", () => {
  assert.equal(
    renderMarkdown("[docs](https://example.com/a?b=1&c=2)"),
    '<p><a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer nofollow">docs</a></p>\n',
  );
});

test("images become links, so the page fetches nothing", () => {
  assert.equal(
    renderMarkdown('![cat "pic"](https://example.com/cat.png)'),
    '<p><a href="https://example.com/cat.png" target="_blank" rel="noopener noreferrer nofollow">cat &quot;pic&quot;</a></p>\n',
  );
});

test("code blocks keep their text escaped, also while a fence is still open", () => {
  assert.equal(
    renderMarkdown("```html\n<b>x</b>\n```"),
    '<pre><code class="language-html">&lt;b&gt;x&lt;/b&gt;\n</code></pre>\n',
  );
  assert.equal(renderMarkdown("Here:\n```js\nlet a = 1 < 2;"), '<p>Here:</p>\n<pre><code class="language-js">let a = 1 &lt; 2;</code></pre>\n');
});

test("emphasis, lists and line breaks render", () => {
  assert.equal(renderMarkdown("**Tokyo**\n- a\n- b"), "<p><strong>Tokyo</strong></p>\n<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n");
  assert.equal(renderMarkdown("one\ntwo"), "<p>one<br>\ntwo</p>\n");
});

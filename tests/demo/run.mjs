// The chat page as a user meets it: serves www/dist with the default model under /models/ (as
// pkg-scripts/demo.sh does), then in Debian's Chromium (WebGPU on SwiftShader, so the page's
// `auto` device runs on the CPU), without WebGPU at all (it chats on the CPU), then once on a
// desktop viewport and once on a 390x844 phone: refuses a broken model file with a message,
// loads SmolLM2, answers "What is the capital of Japan?" at temperature 0 as it streams (and,
// without WebGPU, a copying request the same with prompt lookup as without), stops
// a long answer, regenerates with a changed setting and clears; then loads the base model Gemma
// 3 270M from its own button, in completion mode, and continues a sentence as llama.cpp does;
// and loads Qwen2.5-Coder-0.5B from its button, answers in the JSON schema reply format (shown
// formatted) and, with tools required, calls the example tool (shown as a card).
// Fails on any page error.
// Usage: node run.mjs SCREENSHOT_DIR
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const shots = process.argv[2] ?? "../artifacts";
mkdirSync(shots, { recursive: true });
const port = 30000 + Math.floor(Math.random() * 10000);
const server = spawn(
  "python3",
  ["../../pkg-scripts/serve.py", "../../www/dist", "--port", String(port), "--mount", "/models=../../models"],
  { stdio: "inherit" },
);
await new Promise((r) => setTimeout(r, 800));
const base = `http://127.0.0.1:${port}/`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic"],
});

function check(ok, message) {
  if (!ok) throw new Error(message);
}

/** A page that records every error it logs. */
async function open(context, errors) {
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  await page.goto(base);
  return page;
}

const LOAD_MS = 600_000;
const REPLY_MS = 300_000;

/** On a phone the settings are a panel over the chat: open it, fill, close it. */
async function setSettings(page, phone, values) {
  if (phone) await page.click("#settings-toggle");
  for (const [name, value] of Object.entries(values)) await page.fill(`#settings [name=${name}]`, value);
  if (phone) await page.click("#side-close");
}

/** Sends `text` with Enter and follows the reply: how many different lengths it streamed through. */
async function ask(page, text) {
  const before = await page.locator(".msg.assistant").count();
  await page.fill("#prompt", text);
  await page.press("#prompt", "Enter");
  const reply = page.locator(".msg.assistant").nth(before);
  await reply.waitFor({ timeout: 10_000 });
  // Every length the reply's text goes through, recorded in the page as it changes: polling
  // from here misses pieces when tokens come faster than a round trip.
  await reply.evaluate((el) => {
    const length = () => el.querySelector(".body")?.textContent.length ?? 0;
    el.seenLengths = new Set([length()]);
    new MutationObserver(() => el.seenLengths.add(length())).observe(el, { subtree: true, childList: true, characterData: true });
  });
  return reply;
}

async function streamedLengths(reply) {
  for (;;) {
    const state = await reply.getAttribute("data-state");
    if (state !== "streaming") return { state, lengths: await reply.evaluate((el) => el.seenLengths.size) };
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function run(name, viewport, phone) {
  const errors = [];
  const context = await browser.newContext({ viewport, isMobile: phone, hasTouch: phone });
  const page = await open(context, errors);
  try {
    return await steps(name, page, phone, errors);
  } catch (e) {
    await page.screenshot({ path: `${shots}/demo-${name}-failure.png` }).catch(() => undefined);
    if (errors.length) console.error(`page errors:\n${errors.join("\n")}`);
    throw e;
  } finally {
    await context.close();
  }
}

async function steps(name, page, phone, errors) {
  const t0 = Date.now();
  const log = (what) => console.log(`[${name} ${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);

  // Nothing on the page is wider than a phone.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${name}: the page is ${overflow} px wider than the viewport`);

  // A broken model file is refused with a reason, and the page stays usable.
  await page.setInputFiles("#model-file", { name: "broken.gguf", mimeType: "application/octet-stream", buffer: Buffer.from("GGUF\x03\x00\x00\x00 not really a model") });
  await page.waitForSelector("#notice:not([hidden])", { timeout: 60_000 });
  const notice = await page.textContent("#notice");
  check(/not a model hearth can load/.test(notice), `${name}: broken file: ${notice}`);
  log(`broken file refused: ${notice}`);

  // Greedy and short, through the settings panel.
  await setSettings(page, phone, { temperature: "0", max_tokens: "32" });

  // The progress bar goes through the download and the upload, with bytes and tensor counts.
  await page.evaluate(() => {
    const progress = document.getElementById("progress");
    window.seenProgress = [];
    new MutationObserver(() => window.seenProgress.push(`${progress.dataset.stage} ${document.getElementById("progress-amount").textContent}`))
      .observe(progress, { attributes: true, subtree: true, childList: true, characterData: true });
  });
  await page.click("#load-default");
  await page.waitForSelector("body[data-status=ready]", { timeout: LOAD_MS });
  const seen = await page.evaluate(() => window.seenProgress);
  check(seen.some((s) => /^fetch [\d.]+ [KM]B \/ 9\d MB$/.test(s)) && seen.some((s) => /^upload \d+ \/ \d+ tensors$/.test(s)),
    `${name}: progress did not show bytes and tensors: ${seen.slice(0, 5).join(", ")} … ${seen.slice(-3).join(", ")}`);
  check(await page.isHidden("#notice"), `${name}: a notice stayed after loading: ${await page.textContent("#notice")}`);
  const modelName = await page.textContent("#model-name");
  check(/int4/.test(modelName) && /CPU/.test(modelName), `${name}: model name ${modelName}`);
  // SwiftShader is a software adapter: `auto` runs on the CPU and says why.
  // serve.py (so demo.sh) isolates the page, so the CPU path runs on the threaded build.
  check(await page.evaluate(() => crossOriginIsolated), `${name}: the page is not cross-origin isolated`);
  // The load panel said where the model would run: auto beside SwiftShader picks the CPU.
  const where = await page.textContent("#where");
  check(/on your CPU \(the WebGPU adapter is a software.*; \d+ threads? \(the default for \d+ logical cores?\)/.test(where), `${name}: the load panel said ${where}`);
  const device = await page.textContent("#stat-device");
  check(/^CPU \(simd128, (\d+) threads?\): .*software.*; \1 threads? \(/.test(device), `${name}: device ${device}`);
  log(`loaded ${modelName}; device ${device}`);
  await page.screenshot({ path: `${shots}/demo-${name}-loaded.png` });

  // The answer streams in and says Tokyo.
  const japan = await ask(page, "What is the capital of Japan?");
  const streamed = await streamedLengths(japan);
  const answer = await japan.locator(".body").textContent();
  log(`answer (${streamed.lengths} lengths while streaming): ${answer}`);
  check(streamed.state === "done", `${name}: reply ended as ${streamed.state}`);
  check(streamed.lengths >= 3, `${name}: the reply did not stream (${streamed.lengths} lengths seen)`);
  check(/Tokyo/.test(answer), `${name}: the answer does not say Tokyo: ${answer}`);
  const ttft = await page.textContent("#stat-ttft");
  const decode = await page.textContent("#stat-decode");
  const kv = await page.getAttribute("#kv-meter", "aria-valuenow");
  const memory = await page.textContent("#stat-memory");
  log(`stats: ttft ${ttft}, decode ${decode}, kv ${kv}, memory ${memory}`);
  check(/\d/.test(ttft) && /tok\/s/.test(decode) && Number(kv) > 0 && /weights/.test(memory), `${name}: stats missing`);
  await page.screenshot({ path: `${shots}/demo-${name}-reply.png` });
  if (phone) {
    await page.click("#settings-toggle");
    await page.waitForFunction(() => document.getElementById("side").getBoundingClientRect().left === 0);
    await page.screenshot({ path: `${shots}/demo-${name}-stats.png` });
    await page.click("#side-close");
  }

  // Shift+Enter is a new line, not a send.
  await page.fill("#prompt", "one");
  await page.press("#prompt", "Shift+Enter");
  await page.type("#prompt", "two");
  check((await page.inputValue("#prompt")) === "one\ntwo", `${name}: Shift+Enter did not add a line`);
  check((await page.locator(".msg").count()) === 2, `${name}: Shift+Enter sent the message`);

  // Stop ends a long answer within a token or so.
  await setSettings(page, phone, { max_tokens: "200" });
  const story = await ask(page, "Write a long story about a dragon who learns to fly.");
  await story.locator(".body").filter({ hasText: /\S+\s+\S+\s+\S+/ }).waitFor({ timeout: REPLY_MS });
  const stoppedAt = Date.now();
  await page.click("#stop");
  await page.waitForSelector(".msg.assistant[data-state=stopped]", { timeout: 30_000 });
  const stopMs = Date.now() - stoppedAt;
  const partial = await story.locator(".body").textContent();
  log(`stopped after ${stopMs} ms: ${partial}`);
  check(await page.isVisible("#send"), `${name}: Send did not come back after Stop`);

  // A changed setting applies to the next reply: regenerate with at most 4 tokens.
  await setSettings(page, phone, { max_tokens: "4" });
  await page.click("#regenerate");
  const again = page.locator(".msg.assistant").nth(1);
  await page.waitForFunction(() => {
    const m = document.querySelectorAll(".msg.assistant")[1];
    return m !== undefined && m.dataset.state !== "streaming" && m.dataset.finish !== "aborted";
  }, null, { timeout: REPLY_MS });
  const meta = await again.locator(".meta").textContent();
  log(`regenerated with max tokens 4: ${await again.locator(".body").textContent()} (${meta})`);
  check((await again.getAttribute("data-finish")) === "length" && /\b4 tokens\b/.test(meta), `${name}: max tokens 4 not applied: ${meta}`);
  check((await page.locator(".msg").count()) === 4, `${name}: regenerate did not replace the stopped reply`);


  if (!phone) {
    // A new KV capacity applies on reload. The conversation stays; starting from an empty cache,
    // its prompt is pruned to the budget and the reply shows the dropped spans on request.
    await setSettings(page, phone, { kv_capacity: "256", prune_budget: "72", max_tokens: "8" });
    await page.click("#reload");
    await page.waitForFunction(() => document.body.dataset.status === "ready" && /\/ 256 tokens/.test(document.getElementById("stat-kv")?.textContent ?? ""), null, { timeout: LOAD_MS });
    const france = await ask(page, "And of France?");
    const pruned = await streamedLengths(france);
    check(pruned.state === "done", `${name}: pruned reply ended as ${pruned.state}: ${await france.locator(".meta").textContent()}`);
    const summary = france.locator(".pruned summary");
    const summaryText = await summary.textContent();
    check(/Prompt pruned: [1-9]\d* of \d+ tokens dropped/.test(summaryText), `${name}: no pruning report: ${summaryText}`);
    check(!(await france.locator(".pruned li").first().isVisible()), `${name}: pruned spans shown before asked for`);
    await summary.click();
    const spans = await france.locator(".pruned li").allTextContents();
    check(spans.length > 0 && (await france.locator(".pruned li").first().isVisible()), `${name}: pruned spans not shown`);
    const prunedStat = await page.textContent("#stat-pruned");
    check(/^[1-9]\d* prompt tokens/.test(prunedStat), `${name}: pruned stat ${prunedStat}`);
    log(`pruned (${summaryText}; ${spans.length} spans): ${await france.locator(".body").textContent()}`);
  }

  // Clear, even while a reply streams, forgets the conversation and empties the KV cache (the
  // page waits for the stopped reply to hand the cache back before resetting it).
  const sea = await ask(page, "Tell me about the sea.");
  await sea.locator(".body").filter({ hasText: /\S/ }).waitFor({ timeout: REPLY_MS });
  await page.click("#clear");
  await page.waitForFunction(() => document.querySelectorAll(".msg").length === 0 && Number(document.getElementById("kv-meter")?.getAttribute("aria-valuenow")) === 0);

  check(errors.length === 0, `${name}: the page logged errors:\n${errors.join("\n")}`);
  return { name, answer, streamed: streamed.lengths, stopMs, ttft, decode };
}

/** Without WebGPU (Firefox on Linux, many phones) the page runs on the CPU: it loads the
 * default model, answers, and says why it runs there. */
async function noWebGpu() {
  const errors = [];
  const context = await browser.newContext();
  await context.addInitScript(() => Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined }));
  // The engine runs in the page's worker, which init scripts do not reach: its script gets
  // the same first line.
  await context.route(/\/assets\/worker-[^/]*\.js$/, async (route) => {
    const response = await route.fetch();
    const stub = 'Object.defineProperty(WorkerNavigator.prototype, "gpu", { get: () => undefined });\n';
    await route.fulfill({ response, body: stub + (await response.text()) });
  });
  const page = await open(context, errors);
  await page.waitForSelector("#load-default:not([hidden])", { timeout: 30_000 });
  await page.click("#load-default");
  await page.waitForSelector("body[data-status=ready]", { timeout: LOAD_MS });
  const device = await page.textContent("#stat-device");
  check(/^CPU \(simd128, \d threads?\): .*navigator\.gpu is missing/.test(device), `no WebGPU: device ${device}`);
  // Greedy, as the other checks ask: at the page's default temperature the answer is sampled.
  await setSettings(page, false, { temperature: "0", max_tokens: "32" });
  const reply = await ask(page, "What is the capital of Japan?");
  const streamed = await streamedLengths(reply);
  const answer = await reply.locator(".body").textContent();
  check(streamed.state === "done" && /Tokyo/.test(answer), `no WebGPU: ${streamed.state}: ${answer}`);

  // The speculative switch: a copying request answered with prompt lookup says exactly what it
  // says without, and the stats show the drafts.
  const copy = "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the river bank.";
  const answers = [];
  for (const speculative of ["off", "prompt-lookup"]) {
    await page.click("#clear");
    await page.waitForFunction(() => document.querySelectorAll(".msg").length === 0);
    await page.selectOption("#settings [name=speculative]", speculative);
    const r = await ask(page, copy);
    const s = await streamedLengths(r);
    check(s.state === "done", `no WebGPU: speculative ${speculative}: ${s.state}`);
    answers.push(await r.locator(".body").textContent());
  }
  const drafts = await page.textContent("#stat-drafts");
  check(answers[0] === answers[1], `no WebGPU: prompt lookup changed the answer:\n${answers[0]}\n${answers[1]}`);
  check(/^\d+ of \d+ accepted/.test(drafts), `no WebGPU: the stats show no drafts: ${drafts}`);
  check(errors.length === 0, `no WebGPU: the page logged errors:\n${errors.join("\n")}`);
  console.log(`no WebGPU: ${device}; ${answer}; prompt lookup: ${drafts}; ${answers[1]}`);
  await context.close();
}

/** A fresh page that loads a model served beside the default from its `button`, with
 * `settings` set first. */
async function loadFrom(button, settings) {
  const errors = [];
  const context = await browser.newContext();
  const page = await open(context, errors);
  await page.waitForSelector(`${button}:not([hidden])`, { timeout: 30_000 });
  await setSettings(page, false, settings);
  await page.click(button);
  await page.waitForSelector("body[data-status=ready]", { timeout: LOAD_MS });
  return { errors, context, page };
}

/** A base model (no chat template): Gemma 3 270M, served beside the default, loads from its
 * button; the page says it continues text, and greedy continues "Water boils at a temperature
 * of" with llama.cpp's " 100 degrees Celsius". */
async function baseModel() {
  const { errors, context, page } = await loadFrom("#load-gemma3", { temperature: "0", max_tokens: "8" });
  const notice = await page.textContent("#notice");
  check(/completion mode/.test(notice), `base model: notice ${notice}`);
  const reply = await ask(page, "Water boils at a temperature of");
  const streamed = await streamedLengths(reply);
  const text = await reply.locator(".body").textContent();
  check(streamed.state === "done" && /^\s*100 degrees Celsius/.test(text), `base model: ${streamed.state}: ${text}`);
  check(errors.length === 0, `base model: the page logged errors:\n${errors.join("\n")}`);
  console.log(`base model: ${await page.textContent("#model-name")}; ${notice}; continued: ${text}`);
  await page.screenshot({ path: `${shots}/demo-base-model.png` });
  await context.close();
}

/** A tool-capable model: Qwen2.5-Coder-0.5B-Instruct loads from its button. With the JSON
 * schema reply format (the page's example schema: a name and an age) the reply parses, follows
 * the schema and shows formatted; with tools required, the reply is a call of the example's
 * get_weather, shown as a card whose arguments follow its parameters. */
async function toolsModel() {
  const { errors, context, page } = await loadFrom("#load-qwen", { temperature: "0", max_tokens: "80" });
  await page.selectOption("#settings [name=response_format]", "json_schema");
  const reply = await ask(page, "Invent a person for a story: give a name and an age.");
  const streamed = await streamedLengths(reply);
  check(streamed.state === "done", `tools model: the JSON reply ended as ${streamed.state}`);
  const shown = await reply.locator(".body pre.json").textContent({ timeout: 10_000 });
  const person = JSON.parse(shown);
  check(typeof person.name === "string" && Number.isInteger(person.age) && person.age >= 0, `tools model: ${shown}`);
  check(shown.includes('\n  "age"'), `tools model: the JSON is not shown formatted: ${shown}`);

  await page.click("#clear");
  await page.waitForFunction(() => document.querySelectorAll(".msg").length === 0);
  await page.selectOption("#settings [name=response_format]", "text");
  await page.selectOption("#settings [name=tool_choice]", "required");
  const asked = await ask(page, "What is the weather in Paris right now?");
  const called = await streamedLengths(asked);
  check(called.state === "done", `tools model: the call ended as ${called.state}`);
  const card = asked.locator(".tool-call").first();
  const title = await card.locator("h3").textContent({ timeout: 10_000 });
  check(title === "Tool call: get_weather", `tools model: card ${title}`);
  const args = JSON.parse(await card.locator("pre").textContent());
  check(typeof args.city === "string" && (args.unit === undefined || ["celsius", "fahrenheit"].includes(args.unit)),
    `tools model: arguments ${JSON.stringify(args)}`);
  check(Object.keys(args).every((k) => k === "city" || k === "unit"), `tools model: arguments ${JSON.stringify(args)}`);
  check(errors.length === 0, `tools model: the page logged errors:\n${errors.join("\n")}`);
  console.log(`tools model: ${await page.textContent("#model-name")}; JSON: ${JSON.stringify(person)}; call: get_weather(${JSON.stringify(args)})`);
  await page.screenshot({ path: `${shots}/demo-tools.png` });
  await context.close();
}

try {
  await toolsModel();
  await baseModel();
  await noWebGpu();
  const results = [];
  results.push(await run("desktop", { width: 1280, height: 800 }, false));
  results.push(await run("phone", { width: 390, height: 844 }, true));
  console.log(JSON.stringify(results, null, 2));
  console.log("demo: ok");
} finally {
  await browser.close();
  server.kill();
}

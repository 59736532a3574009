// The threaded artifact in Chromium: threads.html on an isolated page (1, 2 and 4 threads give
// the same greedy text; abort, unload, crash recovery), then on a page served without
// cross-origin isolation (one thread, and why). Fails on any difference or page error.
// Usage: node run-threads.mjs MODEL_URL
import { launch, serve } from "./chromium.mjs";

const [modelUrl] = process.argv.slice(2);
const server = await serve();
const browser = await launch();
const fail = (msg) => { throw new Error(msg); };
async function run(query) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("pageerror", async (e) => console.error(`pageerror during ${await page.textContent("#status").catch(() => "?")}: ${e.stack}`));
  await page.goto(`${server.origin}/threads.html?model=${encodeURIComponent(modelUrl)}${query}`);
  await page.waitForFunction(() => /^(done|error)/.test(document.getElementById("status")?.textContent ?? ""), null, { timeout: 900_000 });
  const status = await page.textContent("#status");
  const result = JSON.parse((await page.textContent("#result")) || "{}");
  console.log(JSON.stringify({ query, status, result }, null, 2));
  if (status !== "done") fail(`threads page: ${status}`);
  if (errors.length) fail(`the page logged errors:\n${errors.join("\n")}`);
  await page.close();
  return result;
}
try {
  const isolated = await run("");
  if (!isolated.isolated) fail("the page is not cross-origin isolated");
  const [one, ...more] = isolated.runs;
  if (one.stats_threads !== 1) fail(`threads: 1 ran on ${one.stats_threads}`);
  for (const r of more) {
    if (r.stats_threads !== r.threads) fail(`threads: ${r.threads} ran on ${r.stats_threads} (${r.reason})`);
    if (r.text !== one.text) fail(`${r.threads} threads wrote ${JSON.stringify(r.text)}, 1 thread ${JSON.stringify(one.text)}`);
  }
  if (isolated.abort !== "AbortError") fail(`abort: ${isolated.abort}`);
  for (const key of ["afterAbort", "afterReload", "afterCrash", "afterEnginePanic", "afterBadThreads"]) {
    if (isolated[key] !== one.text) fail(`${key}: ${JSON.stringify(isolated[key])}`);
  }
  if (!isolated.unloaded) fail("unload left a model loaded");
  if (isolated.crash !== "engine_crashed" || !isolated.crashedStats) fail(`a pool thread's panic: ${isolated.crash}`);
  if (isolated.afterCrashThreads !== 2) fail(`after the crash: ${isolated.afterCrashThreads} threads`);
  if (isolated.enginePanic !== "resolved" || isolated.afterEnginePanicCall !== "engine_crashed") {
    fail(`the engine thread's panic: ${isolated.enginePanic}, then ${isolated.afterEnginePanicCall}`);
  }
  if (isolated.badThreads !== "bad_options") fail(`threads: 0 gave ${isolated.badThreads}`);
  const open = await run("&isolate=0&threads=2");
  if (open.isolated) fail("isolate=0 still isolated the page");
  const [fallback] = open.runs;
  if (fallback.stats_threads !== 1 || !/not cross-origin isolated/.test(fallback.reason)) {
    fail(`without isolation: ${fallback.stats_threads} threads (${fallback.reason})`);
  }
  if (fallback.text !== one.text) fail(`without isolation: ${JSON.stringify(fallback.text)}`);
  console.log("threads: ok");
} finally {
  await browser.close();
  server.stop();
}

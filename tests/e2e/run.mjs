// Builds this outside project against the packed package, serves it, and chats through the
// worker in Debian's Chromium (WebGPU on SwiftShader, so `auto` runs on the CPU). Fails on any
// page error.
// Usage: node run.mjs MODEL_URL SCREENSHOT_DIR
import { mkdirSync } from "node:fs";
import { launch, serve } from "./chromium.mjs";

const [modelUrl, shots = "../artifacts"] = process.argv.slice(2);
const server = await serve();
const browser = await launch();
const errors = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  await page.goto(`${server.origin}/?model=${encodeURIComponent(modelUrl)}`);
  await page.waitForFunction(() => /^(done|error)/.test(document.getElementById("status")?.textContent ?? ""), null, { timeout: 900_000 });
  const status = await page.textContent("#status");
  const reply = await page.textContent("#reply");
  const result = JSON.parse((await page.textContent("#result")) || "{}");
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/e2e-worker.png` });
  console.log(JSON.stringify({ status, reply, result }, null, 2));
  const fail = (msg) => { throw new Error(msg); };
  if (status !== "done") fail(`page status: ${status}`);
  if (!/Paris/.test(reply ?? "")) fail(`the reply does not say Paris: ${reply}`);
  if (result.pieces < 3) fail(`the reply did not stream (${result.pieces} pieces)`);
  if (!result.stages.includes("upload") || !result.usage || !result.timings) fail("progress, usage or timings missing");
  if (!result.cached) fail("the model was not stored in Cache Storage");
  if (!result.badOption.startsWith("bad_options:")) fail(`bad option not refused with a typed error: ${result.badOption}`);
  if (result.abortName !== "AbortError" || result.abortedAfter > 3) fail(`abort: ${result.abortName} after ${result.abortedAfter}`);
  if (result.afterAbort !== 3) fail("no generation after the abort");
  if (!result.secondStages.includes("cache") || result.secondStages.includes("fetch")) fail(`second load: ${result.secondStages}`);
  if (!result.deleted || result.cachedAfterDelete) fail("deleteCachedModel did not remove the model");
  if (result.device !== "cpu" || result.infoDevice !== "cpu" || !/software/.test(result.deviceReason ?? "")) {
    fail(`auto should run on the CPU beside SwiftShader: ${result.device} (${result.deviceReason})`);
  }
  if (result.cpuIsa !== "simd128") fail(`the package's CPU kernels are ${result.cpuIsa}, not simd128`);
  if (errors.length) fail(`the page logged errors:\n${errors.join("\n")}`);
  console.log("e2e: ok");
} finally {
  await browser.close();
  server.stop();
}

// Serves the built hardening page with the tiny test models and drives it in Debian's
// Chromium (WebGPU on SwiftShader); fails if any check fails. With --report it only prints
// what passed and failed (to run the same checks against an older package).
// Usage: node run-hardening.mjs FIXTURES_DIR [--report] [--only NAME] [--big]
import { writeFileSync } from "node:fs";
import { launch, serve } from "./chromium.mjs";

const args = process.argv.slice(2);
const fixtures = args[0];
const report = args.includes("--report");
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : null;
const big = args.includes("--big");
// A server's HTML fallback page under a model's name.
writeFileSync(`${fixtures}/fallback.gguf`, "<!DOCTYPE html><html><body>Not here</body></html>\n");
const server = await serve([`/fixtures=${fixtures}`]);
const browser = await launch();
let failed = false;
try {
  const page = await browser.newPage();
  const errors = [];
  // After a crash on purpose, callbacks the dead instance scheduled are refused by the glue.
  const expected = "Cannot invoke closure from previous WASM instance";
  page.on("pageerror", (e) => e.message !== expected && errors.push(`pageerror: ${e.message}`));
  const query = (only ? `&only=${encodeURIComponent(only)}` : "") + (big ? "&big=1&limit=3000" : "");
  await page.goto(`${server.origin}/hardening.html?fixtures=/fixtures${query}`);
  await page.waitForFunction(() => /^(done|failed)/.test(document.getElementById("status")?.textContent ?? ""), null, {
    timeout: 2_400_000,
  });
  const results = JSON.parse((await page.textContent("#result")) || "[]");
  for (const r of results) console.log(`${r.ok ? "ok  " : "FAIL"} ${r.name} (${r.ms} ms)${r.ok ? "" : `\n     ${r.detail.split("\n")[0]}`}`);
  const fuzz = await page.textContent("#fuzz");
  if (fuzz) console.log(`fuzz outcomes: ${fuzz}`);
  if (errors.length) console.log(`page errors:\n${errors.join("\n")}`);
  failed = results.length === 0 || results.some((r) => !r.ok) || errors.length > 0;
  console.log(failed ? "hardening: FAILED" : `hardening: ${results.length} checks ok`);
} finally {
  await browser.close();
  server.stop();
}
if (failed && !report) process.exit(1);

// Serves the built hardening page with the tiny test models and drives it in Debian's
// Chromium (WebGPU on SwiftShader); fails if any check fails. With --report it only prints
// what passed and failed (to run the same checks against an older package).
// Usage: node run-hardening.mjs FIXTURES_DIR [--report] [--only NAME] [--big]
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const fixtures = args[0];
const report = args.includes("--report");
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : null;
const big = args.includes("--big");
// A server's HTML fallback page under a model's name.
writeFileSync(`${fixtures}/fallback.gguf`, "<!DOCTYPE html><html><body>Not here</body></html>\n");
const port = 9000 + Math.floor(Math.random() * 1000);
const server = spawn("python3", ["../../pkg-scripts/serve.py", "dist", "--port", String(port), "--mount", `/fixtures=${fixtures}`], {
  stdio: "inherit",
});
await new Promise((r) => setTimeout(r, 800));
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic"],
});
let failed = false;
try {
  const page = await browser.newPage();
  const errors = [];
  // After a crash on purpose, callbacks the dead instance scheduled are refused by the glue.
  const expected = "Cannot invoke closure from previous WASM instance";
  page.on("pageerror", (e) => e.message !== expected && errors.push(`pageerror: ${e.message}`));
  const query = (only ? `&only=${encodeURIComponent(only)}` : "") + (big ? "&big=1" : "");
  await page.goto(`http://127.0.0.1:${port}/hardening.html?fixtures=/fixtures${query}`);
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
  server.kill();
}
if (failed && !report) process.exit(1);

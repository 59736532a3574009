// Runs bench.html for hearth and for wllama in Debian's Chromium, one fresh browser each, and
// prints both results and hearth's ratios. Usage: node bench.mjs BASE_URL MODEL_URL
import { chromium } from "playwright-core";

const [base, model] = process.argv.slice(2);
const results = {};
for (const engine of ["hearth", "wllama"]) {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic"],
  });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error(`${engine} pageerror: ${e.message}`));
    await page.goto(`${base}/tests/bench/bench.html?engine=${engine}&model=${encodeURIComponent(model)}`);
    await page.waitForFunction(() => document.getElementById("result")?.textContent !== "running", null, { timeout: 1_200_000 });
    results[engine] = JSON.parse(await page.textContent("#result"));
  } finally {
    await browser.close();
  }
}
const h = results.hearth;
const w = results.wllama;
const ratio = (a, b) => (a && b ? a / b : null);
console.log(JSON.stringify({
  hearth: h,
  wllama: w,
  hearth_over_wllama: {
    prefill_tokens_per_s: ratio(h.prefill_tokens_per_s, w.prefill_tokens_per_s),
    decode_tokens_per_s: ratio(h.decode_tokens_per_s, w.decode_tokens_per_s),
    time_to_first_token: ratio(w.time_to_first_token_ms, h.time_to_first_token_ms),
  },
}, null, 2));

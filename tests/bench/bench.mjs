// Runs bench.html for hearth on the CPU (wasm simd128), hearth on WebGPU and wllama (one
// thread, CPU) in Debian's Chromium, one fresh browser each, and prints the three rows and
// hearth's ratios over wllama. Usage: node bench.mjs BASE_URL MODEL_URL
import { chromium } from "playwright-core";

const [base, model] = process.argv.slice(2);
const results = {};
const rows = { "hearth-cpu": "engine=hearth&device=cpu", "hearth-webgpu": "engine=hearth&device=webgpu", wllama: "engine=wllama" };
for (const [engine, query] of Object.entries(rows)) {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic"],
  });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error(`${engine} pageerror: ${e.message}`));
    await page.goto(`${base}/tests/bench/bench.html?${query}&model=${encodeURIComponent(model)}`);
    await page.waitForFunction(() => document.getElementById("result")?.textContent !== "running", null, { timeout: 1_200_000 });
    results[engine] = JSON.parse(await page.textContent("#result"));
  } finally {
    await browser.close();
  }
}
const w = results.wllama;
const ratio = (a, b) => (a && b ? a / b : null);
const over = (h) => ({
  prefill_tokens_per_s: ratio(h.prefill_tokens_per_s, w.prefill_tokens_per_s),
  decode_tokens_per_s: ratio(h.decode_tokens_per_s, w.decode_tokens_per_s),
  time_to_first_token: ratio(w.time_to_first_token_ms, h.time_to_first_token_ms),
});
console.log(JSON.stringify({
  ...results,
  hearth_cpu_over_wllama: over(results["hearth-cpu"]),
  hearth_webgpu_over_wllama: over(results["hearth-webgpu"]),
  same_text: results["hearth-cpu"].text === w.text && results["hearth-webgpu"].text === w.text,
  // Where the greedy texts part, when they do (llama.cpp's 8-bit activations move logits by
  // up to ~1, enough to flip a near-tie; hearth's CPU and WebGPU rows do not quantize them).
  common_prefix_chars: {
    hearth_cpu_and_webgpu: commonPrefix(results["hearth-cpu"].text, results["hearth-webgpu"].text),
    hearth_cpu_and_wllama: commonPrefix(results["hearth-cpu"].text, w.text),
  },
}, null, 2));

function commonPrefix(a = "", b = "") {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

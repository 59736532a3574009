// Runs bench.html for hearth on the CPU (wasm simd128), hearth on WebGPU and wllama (one
// thread, CPU) in Debian's Chromium, one fresh browser each, and prints the three rows and
// hearth's ratios over wllama; the CPU row also measures 1, 2 and 4 concurrent streams, and both
// hearth rows the same run under a JSON schema. Usage: node bench.mjs BASE_URL MODEL_URL
import { chromium } from "playwright-core";

const [base, model] = process.argv.slice(2);
const results = {};
// wllama first: its greedy tokens are what hearth's rows score (teacher-forced) after their own run.
const rows = { wllama: () => "engine=wllama" };
// The CPU row also serves 1, 2 and 4 concurrent streams on one engine.
for (const device of ["cpu", "webgpu"]) {
  const streams = device === "cpu" ? "&streams=1,2,4" : "";
  rows[`hearth-${device}`] = () =>
    `engine=hearth&device=${device}&teacher=${results.wllama.ids.join(",")}${streams}&schema=/tests/bench/reply_schema.json`;
}
for (const [engine, queryOf] of Object.entries(rows)) {
  const query = queryOf();
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
  hearth_cpu_streams: results["hearth-cpu"].streams,
  // The same run under a JSON schema (tests/bench/reply_schema.json), in the same page.
  hearth_under_schema: Object.fromEntries(["cpu", "webgpu"].map((d) => {
    const c = results[`hearth-${d}`].constrained;
    return [d, c && { decode_tokens_per_s: c.decode_tokens_per_s, vs_free: c.vs_free, forced_tokens: c.forced_tokens,
      grammar_ms_per_token: c.grammar_ms_per_token, first_run_ms: c.first_run_ms, parses_or_was_cut: c.parses_or_was_cut }];
  })),
  same_text: results["hearth-cpu"].text === w.text && results["hearth-webgpu"].text === w.text,
  // Where the greedy texts part, when they do (llama.cpp's 8-bit activations move logits by
  // up to ~1, enough to flip a near-tie; hearth's CPU and WebGPU rows do not quantize them).
  common_prefix_chars: {
    hearth_cpu_and_webgpu: commonPrefix(results["hearth-cpu"].text, results["hearth-webgpu"].text),
    hearth_cpu_and_wllama: commonPrefix(results["hearth-cpu"].text, w.text),
  },
  // The same tokens scored by both (wllama's greedy ones, after the same prompt): how far
  // hearth's log-probabilities are from llama.cpp's, and where the greedy choices part, how
  // close llama.cpp's own first and second choices were there.
  teacher_forced: {
    hearth_cpu: teacherForced(results["hearth-cpu"]),
    hearth_webgpu: teacherForced(results["hearth-webgpu"]),
  },
}, null, 2));

function teacherForced(h) {
  const diffs = (h.teacher_logprobs ?? []).map((lp, i) => Math.abs(lp - w.logprobs[i]));
  const at = h.ids.findIndex((id, i) => id !== w.ids[i]);
  return {
    tokens: diffs.length,
    max_abs_logprob_diff: Math.max(...diffs),
    mean_abs_logprob_diff: diffs.reduce((a, d) => a + d, 0) / diffs.length,
    parting: at < 0 ? null : {
      token_index: at,
      wllama_top2: w.top2[at],
      wllama_margin: w.top2[at][0].logprob - w.top2[at][1]?.logprob,
      hearth_takes_wllama_second: h.ids[at] === w.top2[at][1]?.id,
      hearth_logprob_of_wllama_token: h.teacher_logprobs?.[at],
    },
  };
}

function commonPrefix(a = "", b = "") {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

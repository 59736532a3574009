// Runs bench.html for hearth on the CPU (wasm simd128, one thread, then two on the threaded
// artifact), hearth on WebGPU, and wllama (CPU, one thread, then two) in Debian's Chromium, one
// fresh browser each, on a cross-origin isolated page, and prints the rows and hearth's ratios;
// the one-thread CPU row also measures 1, 2 and 4 concurrent streams, and both one-thread hearth
// rows the same run under a JSON schema. With ROWS=threads, only the four thread rows.
// Usage: node bench.mjs BASE_URL MODEL_URL [full|threads]
import { chromium } from "playwright-core";

const [base, model, set = "full"] = process.argv.slice(2);
const results = {};
// wllama first: its greedy tokens are what hearth's rows score (teacher-forced) after their own run.
const rows = { wllama: () => "engine=wllama", "wllama-2t": () => "engine=wllama&threads=2" };
// The CPU row also serves 1, 2 and 4 concurrent streams on one engine.
rows["hearth-cpu"] = () =>
  `engine=hearth&device=cpu&teacher=${results.wllama.ids.join(",")}` +
  (set === "full" ? "&streams=1,2,4&schema=/tests/bench/reply_schema.json" : "");
rows["hearth-cpu-2t"] = () => "engine=hearth&device=cpu&threads=2";
if (set === "full") {
  rows["hearth-webgpu"] = () => `engine=hearth&device=webgpu&teacher=${results.wllama.ids.join(",")}&schema=/tests/bench/reply_schema.json`;
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
const over = (h, base = w) => h && ({
  prefill_tokens_per_s: ratio(h.prefill_tokens_per_s, base.prefill_tokens_per_s),
  decode_tokens_per_s: ratio(h.decode_tokens_per_s, base.decode_tokens_per_s),
  time_to_first_token: ratio(base.time_to_first_token_ms, h.time_to_first_token_ms),
});
const cpu = results["hearth-cpu"];
const two = results["hearth-cpu-2t"];
const webgpu = results["hearth-webgpu"];
console.log(JSON.stringify({
  ...results,
  hearth_cpu_over_wllama: over(cpu),
  hearth_webgpu_over_wllama: over(webgpu),
  threads: {
    hearth_threads_run: two.threads_run,
    hearth_pool_join_us: two.pool_join_us,
    hearth_2_threads_over_1: over(two, cpu),
    hearth_2_threads_over_wllama_2_threads: over(two, results["wllama-2t"]),
    wllama_2_threads_over_1: over(results["wllama-2t"], w),
    hearth_same_text_at_1_and_2_threads: two.text === cpu.text,
  },
  hearth_cpu_streams: cpu.streams,
  // The same run under a JSON schema (tests/bench/reply_schema.json), in the same page.
  hearth_under_schema: set !== "full" ? null : Object.fromEntries(["cpu", "webgpu"].map((d) => {
    const c = results[`hearth-${d}`].constrained;
    return [d, c && { decode_tokens_per_s: c.decode_tokens_per_s, vs_free: c.vs_free, forced_tokens: c.forced_tokens,
      grammar_ms_per_token: c.grammar_ms_per_token, first_run_ms: c.first_run_ms, parses_or_was_cut: c.parses_or_was_cut }];
  })),
  same_text: cpu.text === w.text && (!webgpu || webgpu.text === w.text),
  // Where the greedy texts part, when they do (llama.cpp's 8-bit activations move logits by
  // up to ~1, enough to flip a near-tie; hearth's CPU and WebGPU rows do not quantize them).
  common_prefix_chars: {
    hearth_cpu_and_webgpu: webgpu ? commonPrefix(cpu.text, webgpu.text) : null,
    hearth_cpu_and_wllama: commonPrefix(cpu.text, w.text),
  },
  // The same tokens scored by both (wllama's greedy ones, after the same prompt): how far
  // hearth's log-probabilities are from llama.cpp's, and where the greedy choices part, how
  // close llama.cpp's own first and second choices were there.
  teacher_forced: {
    hearth_cpu: teacherForced(cpu),
    hearth_webgpu: webgpu ? teacherForced(webgpu) : null,
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

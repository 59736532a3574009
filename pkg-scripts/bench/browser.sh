#!/usr/bin/env bash
# hearth against wllama 3.13.0 (llama.cpp in wasm, CPU) in headless Chromium on this machine,
# on a cross-origin isolated page: hearth's CPU path (wasm simd128) on one thread and on two
# (the threaded artifact), hearth on WebGPU, wllama on one thread and on two; the same GGUF,
# prompt and page harness (tests/bench/bench.html), measured in one run. Prints prefill and
# decode tokens/s, time to first token, the texts, and hearth's ratios (two threads over one,
# over wllama with as many threads). SmolLM2 with every row, then Qwen2.5-Coder-0.5B with the
# four CPU rows. Stdout is one JSON object: {"smollm2": ..., "qwen2.5-coder-0.5b": ...}.
set -euo pipefail
# Their messages go to stderr: stdout is the JSON.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/serve-pages.sh"
pkg-scripts/fetch-model.sh >&2
pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b >&2
models="http://127.0.0.1:$port/models"
smol=$(node tests/bench/bench.mjs "http://127.0.0.1:$port" "$models/SmolLM2-135M-Instruct.Q4_1.gguf" full)
qwen=$(node tests/bench/bench.mjs "http://127.0.0.1:$port" "$models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" threads)
echo "{\"smollm2\": $smol, \"qwen2.5-coder-0.5b\": $qwen}"

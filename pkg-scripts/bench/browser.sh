#!/usr/bin/env bash
# hearth on the CPU (wasm simd128, one thread) and on WebGPU against wllama 3.13.0 (llama.cpp in
# wasm, single thread, CPU) in headless Chromium on this machine: the same GGUF, prompt and page
# harness (tests/bench/bench.html), measured in one run. Prints prefill and decode tokens/s,
# time to first token, the texts, and hearth's ratios over wllama.
set -euo pipefail
# Their messages go to stderr: stdout is the JSON.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/serve-pages.sh"
pkg-scripts/fetch-model.sh >&2
node tests/bench/bench.mjs "http://127.0.0.1:$port" "http://127.0.0.1:$port/models/SmolLM2-135M-Instruct.Q4_1.gguf"

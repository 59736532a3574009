#!/usr/bin/env bash
# hearth on the CPU (wasm simd128, one thread) and on WebGPU against wllama 3.13.0 (llama.cpp in
# wasm, single thread, CPU) in headless Chromium on this machine: the same GGUF, prompt and page
# harness (tests/bench/bench.html), measured in one run. Prints prefill and decode tokens/s,
# time to first token, the texts, and hearth's ratios over wllama.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# Their messages go to stderr: stdout is the JSON.
pkg-scripts/setup.sh --web >&2
pkg-scripts/fetch-model.sh >&2
[ -f pkg/dist/index.js ] || pkg-scripts/build-npm.sh >&2
(cd tests/bench && npm ci --no-audit --no-fund --loglevel=error) >&2
port=$((20000 + RANDOM % 20000))
python3 pkg-scripts/serve.py . --port "$port" > /dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 1
node tests/bench/bench.mjs "http://127.0.0.1:$port" "http://127.0.0.1:$port/models/SmolLM2-135M-Instruct.Q4_1.gguf"

#!/usr/bin/env bash
# The browser tests: the wasm API's tests in headless Chromium on WebGPU (tests/browser, run by
# wasm-bindgen-test-runner), then the packed npm package in an outside Vite project (tests/e2e): type-checked, built, driven
# through its worker by Playwright, its threaded artifact checked (the same greedy text on 1, 2
# and 4 threads, abort, unload, crash recovery, the fallback without isolation), and put through the hardening page (races, aborts, crashes,
# limits and a 600-call fuzz on tiny random models written here), then the chat page (www/)
# built on the same package and driven like a user by Playwright (tests/demo). The model is
# served from 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg-scripts/setup.sh --web
pkg-scripts/fetch-model.sh
pkg-scripts/fetch-model.sh gemma3-270m  # the chat page's base-model test
pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b  # the chat page's tools test
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

port=$((20000 + RANDOM % 20000))
python3 pkg-scripts/serve.py models --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
model_url="http://127.0.0.1:$port/SmolLM2-135M-Instruct.Q4_1.gguf"
# Tiny random models for the hardening page (written by the tests' own helpers, never committed).
fixtures="$root/tests/artifacts/fixtures"
cargo run --locked --quiet -p hearth --example test_models -- "$fixtures"

# The package first: the browser tests build in its profile, so they reuse its build of every
# dependency (a second wasm build of burn and wgpu took 19 minutes of CI). Its last line is the
# artifacts' sizes: each must stay within the package's budget of 4 MB gzipped.
built=$(pkg-scripts/build-npm.sh)
echo "$built"
sizes=$(tail -n 1 <<< "$built")
node -e '
const sizes = JSON.parse(process.argv[1]);
const budget = 4_000_000;
for (const key of ["wasm_gzip_bytes", "threads_wasm_gzip_bytes"]) {
  if (!(sizes[key] <= budget)) {
    console.error(`${key}: ${sizes[key]} bytes, over the package budget of ${budget} gzipped`);
    process.exit(1);
  }
}
console.log(`wasm sizes within the budget: ${sizes.wasm_gzip_bytes} and ${sizes.threads_wasm_gzip_bytes} bytes gzipped`);
' "$sizes"
(cd tests/browser && CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=1200 HEARTH_TEST_MODEL_URL="$model_url" \
  cargo test --locked --target wasm32-unknown-unknown --profile wasm-release)

rm -f tests/e2e/hearth-*.tgz
(cd pkg && npm pack --pack-destination ../tests/e2e --loglevel=error)
cd tests/e2e
npm ci --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error ./hearth-*.tgz
npx tsc --noEmit
npx vite build
node run.mjs "$model_url" ../artifacts
node run-threads.mjs "$model_url"
node run-hardening.mjs "$fixtures"

cd "$root"
pkg-scripts/build-www.sh
cd tests/demo
npm ci --no-audit --no-fund --loglevel=error
node run.mjs ../artifacts

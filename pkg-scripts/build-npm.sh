#!/usr/bin/env bash
# Builds the npm package `hearth` into pkg/: the wasm core (cargo with the size-tuned
# wasm-release profile, then wasm-bindgen with its reset-state function, so that the package
# can replace a crashed instance with a fresh one; then wasm-opt from npm's binaryen: Debian's
# binaryen 108 breaks wasm-bindgen's reference-type tables; -O1: rustc has optimized the code
# already, and -Oz took 6 of this machine's minutes for a file 15% smaller raw but 5% larger
# gzipped), the TypeScript API compiled with
# tsc, and package.json with an exports map.
# Prints the wasm's raw and gzip size. `npm pack pkg/` makes the tarball.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg-scripts/setup.sh --web

rm -rf npm/wasm pkg
(cd npm && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked -p hearth --lib --target wasm32-unknown-unknown --profile wasm-release
wasm-bindgen --target web --out-dir npm/wasm --out-name hearth --experimental-reset-state-function \
  target/wasm32-unknown-unknown/wasm-release/hearth.wasm
node npm/patch-glue.mjs npm/wasm/hearth.js npm/wasm/hearth.d.ts
wasm="npm/wasm/hearth_bg.wasm"
raw_before=$(stat -c %s "$wasm")
npm/node_modules/.bin/wasm-opt -O1 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue --strip-debug --strip-producers "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"

(cd npm && npx tsc -p .)
mkdir -p pkg/wasm
cp npm/wasm/hearth.js npm/wasm/hearth.d.ts npm/wasm/hearth_bg.wasm npm/wasm/hearth_bg.wasm.d.ts pkg/wasm/
version=$(sed -n 's/^version = "\(.*\)"/\1/p' crate/Cargo.toml | head -1)
cat > pkg/package.json <<JSON
{
  "name": "hearth",
  "version": "$version",
  "description": "LLM inference in the browser: int4 Llama-family models on WebGPU, in a page or a Web Worker",
  "license": "Apache-2.0",
  "type": "module",
  "main": "./dist/index.js",
  "types": "./dist/index.d.ts",
  "exports": {
    ".": { "types": "./dist/index.d.ts", "import": "./dist/index.js" },
    "./worker": { "types": "./dist/worker.d.ts", "import": "./dist/worker.js" },
    "./package.json": "./package.json"
  },
  "files": ["dist", "wasm", "README.md"],
  "sideEffects": ["./dist/worker.js"],
  "keywords": ["llm", "webgpu", "wasm", "inference", "gguf", "llama"]
}
JSON
cp npm/README.md pkg/README.md

raw=$(stat -c %s pkg/wasm/hearth_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/hearth_bg.wasm | wc -c)
echo "{\"wasm_bytes_before_wasm_opt\": $raw_before, \"wasm_bytes\": $raw, \"wasm_gzip_bytes\": $gz}"

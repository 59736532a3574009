#!/usr/bin/env bash
# Builds the npm package `hearth` into pkg/: the wasm core, twice (the default artifact, and
# the threaded CPU one: see below), each by cargo with the size-tuned
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

rm -rf npm/wasm npm/wasm-threads pkg
(cd npm && npm ci --no-audit --no-fund --loglevel=error)
opt=(--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals
  --enable-reference-types --enable-multivalue --strip-debug --strip-producers)

# The default artifact: WebGPU, and the CPU path on one thread.
cargo build --locked -p hearth --lib --target wasm32-unknown-unknown --profile wasm-release
wasm-bindgen --target web --out-dir npm/wasm --out-name hearth --experimental-reset-state-function \
  target/wasm32-unknown-unknown/wasm-release/hearth.wasm
node npm/patch-glue.mjs npm/wasm/hearth.js npm/wasm/hearth.d.ts
wasm="npm/wasm/hearth_bg.wasm"
raw_before=$(stat -c %s "$wasm")
npm/node_modules/.bin/wasm-opt -O1 "${opt[@]}" "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"

# The threaded artifact: the CPU path on a pool of workers sharing one memory, without the GPU
# crates (wgpu's types are not Send under atomics). Threads need std rebuilt with atomics, a
# nightly flag on the stable toolchain (RUSTC_BOOTSTRAP, for this build only), and the shared
# memory's linker flags spelled out (rustc no longer adds them). RUSTFLAGS replaces
# .cargo/config.toml's, so its flags are repeated. The memory may grow to 4 GiB, wasm32's
# whole address space: a browser reserves it up front, and where that fails (iOS Safari has
# refused large maxima) the instance does not start and the package falls back to one thread.
# Its own target directory: other RUSTFLAGS would rebuild the default artifact's dependencies.
threads_flags=(--cfg 'getrandom_backend="wasm_js"' --cfg=web_sys_unstable_apis
  -C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals
  -C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296
  -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align
  -C link-arg=--export=__tls_base -C link-arg=--export=__heap_base)
RUSTC_BOOTSTRAP=1 RUSTFLAGS="${threads_flags[*]}" cargo build --locked -p hearth --lib \
  --target wasm32-unknown-unknown --profile wasm-release --no-default-features \
  --target-dir target/wasm-threads -Z build-std=panic_abort,std
wasm-bindgen --target web --out-dir npm/wasm-threads --out-name hearth \
  target/wasm-threads/wasm32-unknown-unknown/wasm-release/hearth.wasm
node npm/patch-glue.mjs --threads npm/wasm-threads/hearth.js npm/wasm-threads/hearth.d.ts
wasm_threads="npm/wasm-threads/hearth_bg.wasm"
npm/node_modules/.bin/wasm-opt -O1 --enable-threads "${opt[@]}" "$wasm_threads" -o "$wasm_threads.opt"
mv "$wasm_threads.opt" "$wasm_threads"

(cd npm && npx tsc -p .)
for dir in wasm wasm-threads; do
  mkdir -p "pkg/$dir"
  cp "npm/$dir/hearth.js" "npm/$dir/hearth.d.ts" "npm/$dir/hearth_bg.wasm" "npm/$dir/hearth_bg.wasm.d.ts" "pkg/$dir/"
done
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
  "files": ["dist", "wasm", "wasm-threads", "README.md"],
  "sideEffects": ["./dist/worker.js"],
  "keywords": ["llm", "webgpu", "wasm", "inference", "gguf", "llama"]
}
JSON
cp npm/README.md pkg/README.md

raw=$(stat -c %s pkg/wasm/hearth_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/hearth_bg.wasm | wc -c)
traw=$(stat -c %s pkg/wasm-threads/hearth_bg.wasm)
tgz=$(gzip -9 -c pkg/wasm-threads/hearth_bg.wasm | wc -c)
echo "{\"wasm_bytes_before_wasm_opt\": $raw_before, \"wasm_bytes\": $raw, \"wasm_gzip_bytes\": $gz, \"threads_wasm_bytes\": $traw, \"threads_wasm_gzip_bytes\": $tgz}"

#!/usr/bin/env bash
# Runs every test: installs what is missing, fetches the default model, then the Rust tests
# (unit tests, tiny random models on CPU and wgpu, the real model against reference data).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pkg-scripts/setup.sh --web
pkg-scripts/fetch-model.sh
pkg-scripts/fetch-model.sh gemma3-270m
pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b

# Mesa's lavapipe (Vulkan on the CPU) complains without a runtime dir; give it one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo fmt --all -- --check
# No import circle between files or between top-level modules of the core (the tiers in lib.rs).
python3 pkg-scripts/check-imports.py
# Lints and docs: clippy on every target natively and on the wasm library, rustdoc's links.
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p hearth --lib --target wasm32-unknown-unknown --locked -- -D warnings
# The library without the GPU path, as the threaded wasm artifact builds it (build-npm.sh).
cargo clippy -p hearth --lib --no-default-features --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p hearth --locked
# cargo-nextest, where the machine has it, runs each test in its own process over every core
# across all test binaries (the long wgpu tests of one binary overlap the others' instead of
# leaving a core idle); otherwise cargo test runs the same tests binary by binary.
if cargo nextest --version > /dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  cargo test --workspace --locked
fi

# The wasm engine, the npm package and its worker in headless Chromium.
pkg-scripts/test-browser.sh

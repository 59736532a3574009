#!/usr/bin/env bash
# Runs every test: installs what is missing, fetches the default model, then the Rust tests
# (unit tests, tiny random models on CPU and wgpu, the real model against reference data).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pkg-scripts/setup.sh --web
pkg-scripts/fetch-model.sh
pkg-scripts/fetch-model.sh gemma3-270m

# Mesa's lavapipe (Vulkan on the CPU) complains without a runtime dir; give it one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo fmt --all -- --check
cargo test --workspace --locked

# The wasm engine, the npm package and its worker in headless Chromium.
pkg-scripts/test-browser.sh

#!/usr/bin/env bash
# Runs every test: installs what is missing, fetches the default model, then the Rust tests
# (unit tests, tiny random models on CPU and wgpu, the real model against reference data).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pkg-scripts/setup.sh
pkg-scripts/fetch-model.sh

cargo fmt --all -- --check
cargo test --workspace --locked

#!/usr/bin/env bash
# Native benchmark of the default model: load time, time to first token, prefill and decode
# tokens/s and memory, on the CPU (burn Flex) and on wgpu, with int4 and f32 weights.
# Usage: pkg-scripts/bench.sh [extra `hearth bench` flags, e.g. --prompt-tokens 64]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pkg-scripts/setup.sh
pkg-scripts/fetch-model.sh
cargo build --release --locked --bin hearth
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
for device in cpu wgpu; do
  for weights in int4 f32; do
    target/release/hearth bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device "$device" --weights "$weights" "$@"
  done
done

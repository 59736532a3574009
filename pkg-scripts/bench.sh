#!/usr/bin/env bash
# Native benchmark of the default model: load time, time to first token, prefill and decode
# tokens/s and memory, on the CPU (burn Flex) and on wgpu, as JSON lines.
# Usage: pkg-scripts/bench.sh [extra `hearth bench` flags, e.g. --prompt-tokens 64]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pkg-scripts/setup.sh
pkg-scripts/fetch-model.sh
cargo build --release --locked --bin hearth
for device in cpu wgpu; do
  target/release/hearth bench --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device "$device" "$@"
done

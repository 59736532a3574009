#!/usr/bin/env bash
# Native benchmark of the default model: load time, time to first token, prefill and decode
# tokens/s and memory, on the CPU (burn Flex) and on wgpu, with int4 and f32 weights.
# Usage: pkg-scripts/bench/overview.sh [extra `hearth bench` flags, e.g. --prompt-tokens 64]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
for device in cpu wgpu; do
  for weights in int4 f32; do
    "$hearth" bench --model "$model" --device "$device" --weights "$weights" "$@"
  done
done

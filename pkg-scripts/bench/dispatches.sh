#!/usr/bin/env bash
# Counts the GPU dispatches of one decode step on the wgpu device, from cubecl's own kernel log
# (profiling level "minimal": one line per kernel run). Runs `hearth generate` for 9 tokens
# and counts the kernels between the last two argmax reductions, which end each step.
# Prints the count and the kernels of that step. Usage: pkg-scripts/bench/dispatches.sh [--weights int4|f32]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '[profiling.logger]\nlevel = "minimal"\nfile = "%s/kernels.log"\nappend = false\n' "$work" > "$work/cubecl.toml"
(cd "$work" && "$hearth" generate --model "$model" --device wgpu --prompt "Once upon a time" \
   --max-tokens 9 --ignore-eos "$@" > /dev/null)
# The last step: kernels after the second-to-last argmax (a ReduceKernel), up to the last one.
awk '/^Executing/ {sub(/^Executing /, ""); sub(/ \|.*/, ""); sub(/_[0-9a-f]+$/, ""); print}' "$work/kernels.log" \
  > "$work/names.txt"
awk 'NR == FNR { if ($0 == "ReduceKernel") { prev = last; last = FNR } next }
     FNR > prev && FNR <= last' "$work/names.txt" "$work/names.txt" > "$work/step.txt"
echo "{\"dispatches_per_decode_step\": $(wc -l < "$work/step.txt")}"
echo "kernels of the last decode step:"
sort "$work/step.txt" | uniq -c | sort -rn

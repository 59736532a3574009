#!/usr/bin/env bash
# Speculative decoding by prompt lookup against plain decoding, in one run, on the CPU path and
# on wgpu: greedy chat answers to tests/bench/speculative_items.json (21 tasks whose answers
# copy the prompt: rewriting a paragraph with one word changed, fixing a typo in code,
# extracting a list; 6 open-ended chat prompts), each answered both ways one after the other.
# Prints one JSON object: per device, decode tokens/s both ways for the copying tasks and the
# open-ended ones, the speedups, whether every answer was identical, and each item's figures.
# The default model, or MODEL=path; MAX_TOKENS (160) per answer; WGPU_LIMIT (2) items of each
# kind on wgpu (lavapipe, Vulkan on the CPU, is slow: all items take about an hour there; give
# WGPU_LIMIT=all on a real GPU); DEVICES ("cpu wgpu").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
model="${MODEL:-$model}"
max_tokens="${MAX_TOKENS:-160}"
wgpu_limit="${WGPU_LIMIT:-2}"
devices="${DEVICES:-cpu wgpu}"

results=()
for device in $devices; do
    limit=()
    if [ "$device" = "wgpu" ] && [ "$wgpu_limit" != "all" ]; then
        limit=(--limit "$wgpu_limit")
    fi
    results+=("$("$hearth" speculative-bench --model "$model" --device "$device" --items tests/bench/speculative_items.json \
        --max-tokens "$max_tokens" --speculative prompt-lookup "${limit[@]}")")
done

python3 - "${results[@]}" <<'PY'
import json, sys
runs = [json.loads(a) for a in sys.argv[1:]]
print(json.dumps({
    "model": runs[0]["model"] if runs else None,
    "goals": {"copying_speedup": 2.0, "open_ended_speedup": 0.97, "all_identical": True},
    "devices": {r["device"]: {k: r[k] for k in ("items", "all_identical", "groups", "speculative", "per_item")} for r in runs},
}, indent=2))
PY

#!/usr/bin/env bash
# Constrained decoding against free decoding, in one run per device: `hearth bench` decodes the
# same prompt free and then under the JSON schema tests/bench/reply_schema.json (a story with a
# title, characters, a mood), on the CPU path and on wgpu. Prints one JSON object: per device,
# decode tokens/s both ways and their ratio (goal: at least 0.9), tokens the grammar forced,
# the grammar's time per token, each mask's median, p99 and worst time, and the build times of
# the vocabulary and of a parser. The default model, or MODEL=path|gemma3-270m; DEVICES
# ("cpu wgpu"); extra `hearth bench` flags as arguments (e.g. --gen-tokens 64).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
model="${MODEL:-$model}"
devices="${DEVICES:-cpu wgpu}"
results=()
for device in $devices; do
  results+=("$("$hearth" bench --model "$model" --device "$device" --json-schema tests/bench/reply_schema.json \
    --prompt-tokens 64 --gen-tokens 128 --runs 3 "$@")")
done
python3 - "${results[@]}" <<'PY'
import json, sys
runs = [json.loads(a) for a in sys.argv[1:]]
print(json.dumps({
    "model": runs[0]["model"] if runs else None,
    "goal": {"vs_free": 0.9},
    "devices": {r["device"]: {"cpu_isa": r["cpu_isa"], "free_decode_tokens_per_s": r["decode_tokens_per_s"], **r["constrained"]} for r in runs},
}, indent=2))
PY

#!/usr/bin/env bash
# Quality of the bounded KV cache: perplexity of SmolLM2 on natural English text, token by
# token through caches of 256 and 512 tokens under each eviction policy, next to the full
# cache. The text is the GPL-3 from Debian's base-files (its first LIMIT tokens, default 2600:
# over 4x the larger cache), or TEXT=path. Prints one JSON line per run.
# Usage: pkg-scripts/bench/kv.sh [--device cpu|wgpu]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
text="${TEXT:-/usr/share/common-licenses/GPL-3}"
limit="${LIMIT:-2600}"

args=(--model "$model" --file "$text" --limit "$limit" --weights f32 "$@")

run() {
    local label="$1"
    shift
    local out
    out="$("$hearth" perplexity "${args[@]}" "$@")"
    echo "{\"run\": \"$label\", \"result\": $out}"
}
run "full cache"
for capacity in 256 512; do
    run "sinks-window, 4 sinks, capacity $capacity" --kv-capacity "$capacity" --kv-policy sinks-window --sinks 4
    run "plain window (0 sinks), capacity $capacity" --kv-capacity "$capacity" --kv-policy sinks-window --sinks 0
    run "heavy-hitters, 4 sinks, capacity $capacity" --kv-capacity "$capacity" --kv-policy heavy-hitters --sinks 4
done

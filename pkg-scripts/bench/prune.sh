#!/usr/bin/env bash
# Input pruning: 60 questions (bench/prune-qa.json, written by bench/make-prune-qa.py)
# whose answer is one sentence among 8 distractor notes, given in two user turns. Each is asked
# with the notes in full and pruned to 50 % and 25 % of their tokens by self-information, by
# dropping whole turns oldest first, and by cutting the front; prints the exact-match accuracy
# (the answer appears in the greedy reply) of each as JSON.
# Usage: pkg-scripts/bench/prune.sh [--device cpu|wgpu] [--limit N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
exec "$hearth" prune-bench --model "$model" --items bench/prune-qa.json \
    --weights f32 "$@"

#!/usr/bin/env bash
# Models of a real size, natively: writes random-weight GGUFs of Qwen2.5-3B's shapes (Q4_0, about
# 1.8 GB; the tokenizer copied from Qwen2.5-Coder-0.5B) whole and split in three shards as
# gguf-split names them (tests/bench/write_big_model.py, with PyPI's gguf in a cached venv), then
# `hearth bench` loads and runs each on the CPU: load time, peak resident memory against the
# file and the packed weights, decode speed. Never in CI (writing and loading take minutes).
# SHAPE (qwen2.5-3b or qwen2.5-1.5b); extra `hearth bench` flags as arguments.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
shape="${SHAPE:-qwen2.5-3b}"
pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b >&2
venv="${HEARTH_CACHE:-$HOME/.cache/hearth}/gguf-py"
if ! "$venv/bin/python" -c "import gguf, numpy" 2> /dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "gguf==0.19.0" numpy >&2
fi
tokenizer="$root/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
whole="$root/models/random-$shape-q4_0.gguf"
split="$root/models/random-$shape-q4_0-split.gguf"
first="${split%.gguf}-00001-of-00003.gguf"
[ -f "$whole" ] || "$venv/bin/python" tests/bench/write_big_model.py "$shape" "$tokenizer" "$whole" >&2
[ -f "$first" ] || "$venv/bin/python" tests/bench/write_big_model.py "$shape" "$tokenizer" "$split" --split 3 >&2
results=()
for model in "$whole" "$first"; do
  results+=("$("$hearth" bench --model "$model" --device cpu --prompt-tokens 32 --gen-tokens 16 --runs 1 \
    --kv-capacity 512 "$@")")
done
python3 - "$whole" "${results[@]}" <<'PY'
import json, os, sys
whole, runs = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
file_bytes = os.path.getsize(whole)
print(json.dumps({
    "file_bytes": file_bytes,
    "runs": [{
        "model": ["whole", "split in 3"][i],
        "load_ms": r["load_ms"],
        "weight_bytes": r["weight_bytes"],
        "peak_host_memory_bytes": r["peak_host_memory_bytes"],
        "peak_over_weights": r["peak_host_memory_bytes"] / r["weight_bytes"],
        "peak_over_file": r["peak_host_memory_bytes"] / file_bytes,
        "prefill_tokens_per_s": r["prefill_tokens_per_s"],
        "decode_tokens_per_s": r["decode_tokens_per_s"],
    } for i, r in enumerate(runs)],
}, indent=2))
PY

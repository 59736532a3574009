#!/usr/bin/env bash
# Models of a real size. Writes random-weight GGUFs (tests/bench/write_big_model.py, PyPI's gguf
# in a cached venv; the tokenizer copied from Qwen2.5-Coder-0.5B) of Qwen2.5-3B's shapes (Q4_0,
# about 1.7 GB) whole and split in three shards as gguf-split names them, and of Llama-3.2-3B's.
# Natively, `hearth bench` loads and runs each on the CPU: load time, peak resident memory
# against the file and the packed weights, decode speed. In Chromium (BROWSER=1, the default),
# the worker engine streams each on the CPU path and on WebGPU (SwiftShader here) and reports
# the load's peak wasm memory, then loads Qwen2.5-Coder-0.5B twice and switches between it and
# the 3B (tests/bench/big.html). Never in CI (writing and loading take many minutes).
# SHAPES (default "qwen2.5-3b llama-3.2-3b"); extra `hearth bench` flags as arguments.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
shapes="${SHAPES:-qwen2.5-3b llama-3.2-3b}"
pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b >&2
venv="${HEARTH_CACHE:-$HOME/.cache/hearth}/gguf-py"
if ! "$venv/bin/python" -c "import gguf, numpy" 2> /dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "gguf==0.19.0" numpy >&2
fi
tokenizer="$root/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
models=()
for shape in $shapes; do
  whole="$root/models/random-$shape-q4_0.gguf"
  [ -f "$whole" ] || "$venv/bin/python" tests/bench/write_big_model.py "$shape" "$tokenizer" "$whole" >&2
  models+=("$whole")
  if [ "$shape" = qwen2.5-3b ]; then
    split="$root/models/random-$shape-q4_0-split.gguf"
    first="${split%.gguf}-00001-of-00003.gguf"
    [ -f "$first" ] || "$venv/bin/python" tests/bench/write_big_model.py "$shape" "$tokenizer" "$split" --split 3 >&2
    models+=("$first")
  fi
done
results=()
for model in "${models[@]}"; do
  results+=("$("$hearth" bench --model "$model" --device cpu --prompt-tokens 32 --gen-tokens 16 --runs 1 \
    --kv-capacity 512 "$@")")
done
python3 - "${models[@]}" -- "${results[@]}" <<'PY'
import json, os, sys
at = sys.argv.index("--")
models, runs = sys.argv[1:at], [json.loads(a) for a in sys.argv[at + 1:]]
def file_bytes(m):
    if "-00001-of-" not in m:
        return os.path.getsize(m)
    stem, count = m.rsplit("-00001-of-", 1)
    n = int(count.split(".")[0])
    return sum(os.path.getsize(f"{stem}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1))
print(json.dumps([{
    "model": os.path.basename(m),
    "file_bytes": file_bytes(m),
    "load_ms": r["load_ms"],
    "weight_bytes": r["weight_bytes"],
    "peak_host_memory_bytes": r["peak_host_memory_bytes"],
    "peak_over_weights": round(r["peak_host_memory_bytes"] / r["weight_bytes"], 3),
    "peak_over_file": round(r["peak_host_memory_bytes"] / file_bytes(m), 3),
    "load_peak_allocated_bytes": r.get("load_peak_allocated_bytes"),
    "prefill_tokens_per_s": r["prefill_tokens_per_s"],
    "decode_tokens_per_s": r["decode_tokens_per_s"],
} for m, r in zip(models, runs)], indent=2))
PY
[ "${BROWSER:-1}" = 1 ] || exit 0
source pkg-scripts/lib/serve-pages.sh
url() { echo "http://127.0.0.1:$port/models/$(basename "$1")"; }
small="$(url "$tokenizer")"
list=()
for model in "${models[@]}"; do list+=("$(url "$model")"); done
# Each big model; then the small one twice (load, unload, load), and switching small, big, small.
all="$(IFS=,; echo "${list[*]},$small,$small,${list[0]},$small")"
node tests/bench/big.mjs "http://127.0.0.1:$port" "${DEVICES:-cpu,webgpu}" "$all"

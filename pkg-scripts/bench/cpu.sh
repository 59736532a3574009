#!/usr/bin/env bash
# hearth's CPU path next to llama.cpp on this machine, in one run: the same GGUF (the default
# model, MODEL=path, or MODEL=gemma3-270m), PROMPT (128) prompt tokens, GEN (64) greedy tokens, THREADS (2)
# threads, the median of RUNS (3). llama.cpp comes from PyPI's llama-cpp-python, built from
# source once into a cached virtual environment (~10 minutes the first time). Prints one JSON
# object: hearth's packed weights in the exact mode (int4) and in the q8 mode (8-bit activations,
# integer dot products), hearth f32 weights, llama.cpp, and the ratios the CPU issues set as goals.
# For the 1.5B size: MODEL=models/random-qwen2.5-1.5b-q4_k_m.gguf (tests/bench/write_big_model.py
# --types q4_k_m writes it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
model="${MODEL:-$model}"
prompt="${PROMPT:-128}"
gen="${GEN:-64}"
threads="${THREADS:-2}"
runs="${RUNS:-3}"

venv="${HEARTH_CACHE:-$HOME/.cache/hearth}/llama-cpp"
if ! "$venv/bin/python" -c "import llama_cpp" 2> /dev/null; then
    echo "building llama-cpp-python into $venv (once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "llama-cpp-python==0.3.16" >&2
fi

bench() {
    HEARTH_THREADS="$threads" "$hearth" bench --model "$model" --device cpu --prompt-tokens "$prompt" \
        --gen-tokens "$gen" --runs "$runs" "$@"
}
int4="$(bench --weights int4 --activations f32)"
q8="$(bench --weights int4 --activations q8)"
# F32=0 leaves out the f32 weights (a 1.5B model's take 6 GB and minutes).
if [ "${F32:-1}" = 1 ]; then f32="$(bench --weights f32)"; else f32='{}'; fi
llama="$("$venv/bin/python" tests/bench/llama_cpp_cpu.py "$model" "$prompt" "$gen" "$threads" "$runs" 2> /dev/null)"

python3 - "$int4" "$q8" "$f32" "$llama" <<'PY'
import json, sys
int4, q8, f32, llama = (json.loads(a) for a in sys.argv[1:5])
ratio = lambda a, b: round(a / b, 3)
print(json.dumps({
    "hearth_int4": int4,
    "hearth_int4_q8": {k: q8[k] for k in ("decode_tokens_per_s", "prefill_tokens_per_s", "decode_split_ms_per_token")},
    "hearth_f32": {k: f32[k] for k in ("decode_tokens_per_s", "prefill_tokens_per_s", "decode_split_ms_per_token") if k in f32},
    "llama_cpp": llama,
    "decode_vs_llama_cpp": ratio(int4["decode_tokens_per_s"], llama["decode_tokens_per_s"]),
    "prefill_vs_llama_cpp": ratio(int4["prefill_tokens_per_s"], llama["prefill_tokens_per_s"]),
    "q8_decode_vs_llama_cpp": ratio(q8["decode_tokens_per_s"], llama["decode_tokens_per_s"]),
    "q8_prefill_vs_llama_cpp": ratio(q8["prefill_tokens_per_s"], llama["prefill_tokens_per_s"]),
    "int4_decode_vs_f32": ratio(int4["decode_tokens_per_s"], f32["decode_tokens_per_s"]) if f32 else None,
    "goals": {"decode_vs_llama_cpp": 1.0, "prefill_vs_llama_cpp": 0.8, "int4_decode_vs_f32": 2.5,
              "q8_decode_vs_llama_cpp": 1.0, "q8_prefill_vs_llama_cpp": 1.0,
              "decode_vs_llama_cpp (exact mode, 1.5B shape)": 0.75},
}, indent=2))
PY

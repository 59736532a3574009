#!/usr/bin/env bash
# Quality of int4 quantization from float weights. No float SmolLM2 checkpoint can be fetched
# here, so one is made: the GGUF's dequantized weights plus Gaussian noise of NOISE times each
# matrix's RMS (default 0.02), saved as safetensors. Prints the perplexity of that float model
# (f32 weights), of its int4 quantization (min-max 4-bit blocks, 8-bit embedding, done at load)
# and of the original Q4_1 GGUF, and how often the float and int4 models agree on the most
# likely next token. The text is the GPL-3 from Debian's base-files (natural English prose,
# about 7,500 tokens), or TEXT=path.
# Usage: pkg-scripts/bench/quality.sh [--device cpu|wgpu]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
noise="${NOISE:-0.02}"
text="${TEXT:-/usr/share/common-licenses/GPL-3}"

float_dir="$(mktemp -d)"
trap 'rm -rf "$float_dir"' EXIT
"$hearth" export-safetensors --model "$model" --output "$float_dir" --noise "$noise" --seed 1

"$hearth" perplexity --model "$float_dir" --weights f32 --file "$text" --top1 "$@" > "$float_dir/f32.json"
"$hearth" perplexity --model "$float_dir" --weights int4 --file "$text" --top1 "$@" > "$float_dir/int4.json"
"$hearth" perplexity --model "$model" --weights int4 --file "$text" "$@" > "$float_dir/gguf.json"
python3 - "$float_dir" "$noise" "$text" <<'PY'
import json, sys
d, noise, text = sys.argv[1:]
f32, int4, gguf = (json.load(open(f"{d}/{n}.json")) for n in ("f32", "int4", "gguf"))
agree = sum(a == b for a, b in zip(f32["top1"], int4["top1"])) / len(f32["top1"])
print(json.dumps({
    "text": text, "tokens": f32["tokens"], "noise_rms_fraction": float(noise),
    "perplexity_float": f32["perplexity"], "perplexity_int4": int4["perplexity"],
    "perplexity_original_q4_1_gguf": gguf["perplexity"],
    "int4_over_float": int4["perplexity"] / f32["perplexity"], "top1_agreement": agree,
}, indent=2))
PY

#!/usr/bin/env bash
# What the q8 activation mode costs in quality: the perplexity of the first TOKENS (512) tokens
# of a text (Debian's GPL-3, or TEXT=path) in the exact mode (--activations f32) and in q8, and
# the share of positions whose most likely next token agrees, on SmolLM2-135M, Gemma 3 270M
# and Qwen2.5-Coder-0.5B (each fetched as fetch-model.sh does). Prints one JSON object.
# Usage: pkg-scripts/bench/activations.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
text="${TEXT:-/usr/share/common-licenses/GPL-3}"
tokens="${TOKENS:-512}"
pkg-scripts/fetch-model.sh gemma3-270m >&2
pkg-scripts/fetch-model.sh qwen2.5-coder-0.5b >&2

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for name in SmolLM2-135M-Instruct.Q4_1 gemma-3-270m-q4_k_m qwen2.5-coder-0.5b-instruct-q4_k_m; do
    for mode in f32 q8; do
        "$hearth" perplexity --model "models/$name.gguf" --device cpu --activations "$mode" --file "$text" \
            --limit "$tokens" --top1 > "$out/$name.$mode.json"
    done
done

python3 - "$out" "$text" <<'PY'
import json, os, sys
out, text = sys.argv[1:]
rows = {}
for name in ("SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m"):
    f32, q8 = (json.load(open(os.path.join(out, f"{name}.{m}.json"))) for m in ("f32", "q8"))
    agree = sum(a == b for a, b in zip(f32["top1"], q8["top1"])) / len(f32["top1"])
    rows[name] = {
        "tokens": f32["tokens"],
        "perplexity_f32": round(f32["perplexity"], 4),
        "perplexity_q8": round(q8["perplexity"], 4),
        "q8_over_f32": round(q8["perplexity"] / f32["perplexity"], 5),
        "top1_agreement": round(agree, 4),
    }
print(json.dumps({"text": text, "models": rows}, indent=2))
PY

#!/usr/bin/env bash
# Early exit measured on SmolLM2-135M (30 layers) and Gemma 3 270M (18 layers), CPU path: for
# the whole model and each setting (exits after 2/3 and 5/6 of the layers; max-prob thresholds
# 0.9, 0.99, 0.999; the confidence from the whole head or from a shortlist of the last full
# step's 64 likeliest tokens), greedy continuations of 50 prompts of 32 tokens cut from
# Debian's Apache-2.0 licence text (32 tokens each; their agreement with the whole model's:
# exact, and the mean fraction of each continuation before it parts), decode tokens/s and
# mean layers per token over them, and the perplexity of the first 512 tokens of the GPL-3
# (held out: another text), teacher-forced a step at a time with the same exits. Prints one
# JSON object per model on stdout and a markdown table of all of them on stderr.
# Then self-speculative decoding on SmolLM2 (its chat template; Gemma 3 270M here is a base
# model): the 27 chat items of bench/speculative.sh answered plainly and with the first 20 and
# then 25 layers drafting, one after the other in one run each (SELF_LAYERS, "20 25").
# Then structured pruning (`hearth prune-weights`, scored on the first 512 tokens of the
# Apache-2.0 text) on both models: whole layers (ShortGPT's block influence), query heads and
# FFN channels of every layer (Wanda's activation-weighted magnitude), each pruned model's
# perplexity on the same GPL-3 tokens, its size and its decode speed (`hearth bench`, 128
# prompt and 64 generated tokens, median of 3; the whole model and the pruned one in turns,
# twice, the better of each), each beside the whole model's (converted to .bpk). PRUNE lists
# the settings as model/flags, commas for spaces. FFN cuts quantize the down projection again
# (its blocks are split): the 2% cut (32 channels) bounds what that costs.
# MODELS ("smollm2 gemma3-270m"; empty: none), PROMPTS (50), THRESHOLDS, SHORTLISTS ("0,64"),
# SELF_LAYERS ("20 25"; empty: none), PRUNE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
pkg-scripts/fetch-model.sh gemma3-270m >&2
prompts_file=/usr/share/common-licenses/Apache-2.0
text=/usr/share/common-licenses/GPL-3
gemma="$root/models/gemma-3-270m-q4_k_m.gguf"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for name in ${MODELS-smollm2 gemma3-270m}; do
  case "$name" in
    smollm2) path="$model"; exits=20,25 ;;
    gemma3-270m) path="$gemma"; exits=12,15 ;;
    *) echo "unknown model $name" >&2; exit 2 ;;
  esac
  "$hearth" adaptive-bench --model "$path" --device cpu --prompts-file "$prompts_file" --prompts "${PROMPTS:-50}" \
    --text "$text" --text-tokens 512 --exit-layers "$exits" --thresholds "${THRESHOLDS:-0.9,0.99,0.999}" \
    --shortlists "${SHORTLISTS:-0,64}" > "$out/$name.json"
  cat "$out/$name.json"
done
for layers in ${SELF_LAYERS-20 25}; do
  "$hearth" speculative-bench --model "$model" --device cpu --items tests/bench/speculative_items.json \
    --speculative self --draft-layers "$layers" > "$out/self-$layers.spec"
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); del d["per_item"]; print(json.dumps(d))' "$out/self-$layers.spec"
done
default_prune="smollm2/--layers,1 smollm2/--layers,2 smollm2/--layers,4 smollm2/--ffn,0.02 smollm2/--ffn,0.1
  smollm2/--ffn,0.2 smollm2/--ffn,0.3 smollm2/--heads,3 smollm2/--layers,2,--ffn,0.1 gemma3-270m/--layers,1
  gemma3-270m/--layers,2 gemma3-270m/--layers,4 gemma3-270m/--ffn,0.1 gemma3-270m/--ffn,0.2 gemma3-270m/--ffn,0.3
  gemma3-270m/--heads,1 gemma3-270m/--heads,2"
bench() { "$hearth" bench --model "$1" --device cpu --prompt-tokens 128 --gen-tokens 64 --runs 3; }
i=0
for setting in ${PRUNE-$default_prune}; do
  i=$((i + 1))
  name="${setting%%/*}"; flags="${setting#*/}"; flags="${flags//,/ }"
  case "$name" in smollm2) path="$model" ;; gemma3-270m) path="$gemma" ;; *) echo "unknown model $name" >&2; exit 2 ;; esac
  whole="$out/whole-$name.bpk"
  if [ ! -f "$whole" ]; then
    "$hearth" convert --model "$path" --output "$whole" 2> /dev/null
    "$hearth" perplexity --model "$whole" --file "$text" --limit 512 > "$out/whole-$name.ppl"
  fi
  pruned="$out/pruned-$i.bpk"
  # shellcheck disable=SC2086 # the flags split into words
  "$hearth" prune-weights --model "$path" --calibration "$prompts_file" --output "$pruned" $flags > "$out/prune-$i.info"
  "$hearth" perplexity --model "$pruned" --file "$text" --limit 512 > "$out/prune-$i.ppl"
  # The whole model's speed and the pruned one's in turns, twice (this machine drifts between
  # minutes, and other load only slows a run down): the better of each.
  for turn in a b; do
    bench "$whole" > "$out/whole-$i$turn.bench"
    bench "$pruned" > "$out/prune-$i$turn.bench"
  done
  python3 - "$out" "$i" "$pruned" "$whole" "$name" "$flags" <<'PY'
import json, os, sys
out, i, pruned, whole, name, flags = sys.argv[1:]
info = json.load(open(f"{out}/prune-{i}.info"))
speed = lambda stem: max(json.load(open(f"{stem}{turn}.bench"))["decode_tokens_per_s"] for turn in "ab")
row = {"model": name, "cut": flags, "dropped_layers": info["dropped_layers"], "n_heads": info["n_heads"],
       "d_ff": info["d_ff"], "bytes": [os.path.getsize(whole), os.path.getsize(pruned)],
       "perplexity": [json.load(open(f"{out}/whole-{name}.ppl"))["perplexity"], json.load(open(f"{out}/prune-{i}.ppl"))["perplexity"]],
       "decode_tokens_per_s": [speed(f"{out}/whole-{i}"), speed(f"{out}/prune-{i}")]}
json.dump(row, open(f"{out}/prune-{i}.row", "w"))
print(json.dumps(row))
PY
done
python3 - "$out" <<'PY' >&2
import glob, json, sys
out = sys.argv[1]
runs = sorted(glob.glob(f"{out}/*.json"))
if runs:
    print("| model | setting | decode tok/s | mean layers | perplexity (GPL-3, 512 tokens) | exact agreement | token agreement |")
    print("|---|---|---|---|---|---|---|")
for path in runs:
    run = json.load(open(path))
    for row in run["rows"]:
        s = row["setting"]
        setting = s if isinstance(s, str) else (
            f"exit after {','.join(map(str, s['layers']))}, {s['measure']} > {s['threshold']:.3g}, "
            + (f"shortlist {s['shortlist']}" if s["shortlist"] else "whole head"))
        ppl = "inf" if row["perplexity"] is None else f"{row['perplexity']:.1f}"
        print(f"| {run['model']} ({run['n_layers']} layers) | {setting} | {row['decode_tokens_per_s']:.1f} | "
              f"{row['mean_layers']:.1f} | {ppl} | {row['exact_agreement']:.2f} | {row['token_agreement']:.2f} |")
specs = sorted(glob.glob(f"{out}/self-*.spec"), key=lambda p: int(p.split("-")[-1].split(".")[0]))
if specs:
    print()
    print("| self-speculative (SmolLM2, 27 chat items) | copying tasks: plain / self tok/s | open-ended: plain / self tok/s | drafted, accepted | identical |")
    print("|---|---|---|---|---|")
for path in specs:
    run = json.load(open(path))
    g = run["groups"]
    drafted = sum(i["draft_tokens"] for i in run["per_item"])
    accepted = sum(i["accepted_tokens"] for i in run["per_item"])
    print(f"| first {run['speculative']['draft_layers']} layers draft | "
          + " | ".join(f"{g[k]['plain_decode_tokens_per_s']:.1f} / {g[k]['speculative_decode_tokens_per_s']:.1f} ({g[k]['speedup']:.2f}x)" for k in ("copying", "open_ended"))
          + f" | {drafted}, {accepted} | {run['all_identical']} |")
print()
rows = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/prune-*.row"), key=lambda p: int(p.split("-")[-1].split(".")[0]))]
if rows:
    print("| pruned model (prune-weights) | layers dropped | heads, FFN channels kept | size MB: whole / pruned | perplexity: whole / pruned | decode tok/s: whole / pruned |")
    print("|---|---|---|---|---|---|")
for r in rows:
    (b0, b1), (p0, p1), (s0, s1) = r["bytes"], r["perplexity"], r["decode_tokens_per_s"]
    print(f"| {r['model']}: {r['cut']} | {', '.join(map(str, r['dropped_layers'])) or '-'} | "
          f"{r['n_heads'][1]} of {r['n_heads'][0]}, {r['d_ff'][1]} of {r['d_ff'][0]} | {b0 / 1e6:.1f} / {b1 / 1e6:.1f} | "
          f"{p0:.1f} / {p1:.1f} | {s0:.1f} / {s1:.1f} ({s1 / s0:.2f}x) |")
PY

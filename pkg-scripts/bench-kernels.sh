#!/usr/bin/env bash
# For every linear shape of the default model, on each device: the int4 (and int8 head) GEMV,
# the f32 GEMV of the dense path, and a plain copy of as many bytes as the packed matrix, with
# the fraction of copy bandwidth the int4 GEMV reaches. JSON lines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare-cli.sh"
for device in ${DEVICES:-wgpu cpu}; do
  "$hearth" bench --kernels --runs 20 --model "$model" --device "$device" "$@"
done

#!/usr/bin/env bash
# For every linear shape of the model (the default, or MODEL=path), on each device: the packed
# GEMV in each block format (FORMATS, default all: q4_0,q4_1,q8_0,q2_k..q6_k, the same floats
# quantized to each), the f32 GEMV of the dense path, and a plain copy of as many bytes as the
# packed matrix, with the weight bytes a second each format reads. JSON lines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/prepare-cli.sh"
for device in ${DEVICES:-wgpu cpu}; do
  "$hearth" bench --kernels --runs 20 --model "${MODEL:-$model}" --device "$device" \
    --formats "${FORMATS:-q4_0,q4_1,q8_0,q2_k,q3_k,q4_k,q5_k,q6_k}" "$@"
done

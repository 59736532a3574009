#!/usr/bin/env bash
# The CPU kernels' tests on aarch64 (NEON) from an x86-64 machine: cross-built with Debian's
# aarch64 gcc as the linker and run under qemu-user. Not part of test.sh (the first cross build
# of the dependencies takes ~16 minutes on 2 cores); run it after changing crate/src/backend/cpu/.
# `--real-model` also runs the real model's logits test on the NEON path (the model is fetched
# as for the other tests).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkg-scripts/setup.sh

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
missing=()
for p in qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
target=(--release --locked -p hearth --target aarch64-unknown-linux-gnu)
# qemu's default CPU has dotprod: both NEON levels' kernels run (the tests check that it is there).
HEARTH_REQUIRE_ISA=neondot cargo test "${target[@]}" --lib cpu::
if [ "${1:-}" = "--real-model" ]; then
  pkg-scripts/fetch-model.sh
  cargo test "${target[@]}" --test real_model int4_logits_match_reference::on_cpu -- --nocapture
fi

#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for building and testing hearth: Vulkan on the
# CPU (lavapipe) for the native wgpu tests and pip for fetching the model; with --web also the
# wasm32 target, wasm-bindgen-cli (the version in Cargo.lock, with its test runner), Node.js
# and Debian's Chromium with ChromeDriver. Only apt, rustup, cargo, pip and npm install
# anything; nothing is piped into a shell.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web=false
[ "${1:-}" = "--web" ] && web=true

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }
need_pkg mesa-vulkan-drivers
need_pkg libvulkan1
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if $web; then
  need_pkg chromium
  need_pkg chromium-driver
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

# test.sh lints with clippy and checks formatting with rustfmt.
for component in clippy rustfmt; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

if $web; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  # The threaded artifact builds std from source with atomics (build-npm.sh).
  rustup component list --installed | grep -q "^rust-src" || rustup component add rust-src
  # wasm-bindgen-cli must match the wasm-bindgen crate exactly.
  want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$root/Cargo.lock")
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  [ "$have" = "$want" ] || cargo install wasm-bindgen-cli --version "$want"
fi

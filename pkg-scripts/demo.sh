#!/usr/bin/env bash
# The main job: installs what is missing, fetches the default model (SmolLM2-135M-Instruct),
# builds hearth and starts a chat with it. Until the browser demo lands this is the terminal
# chat of the native CLI. Usage: pkg-scripts/demo.sh [--device cpu|wgpu] [other `hearth chat` flags]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pkg-scripts/setup.sh
pkg-scripts/fetch-model.sh
cargo build --release --locked --bin hearth
exec target/release/hearth chat --model models/SmolLM2-135M-Instruct.Q4_1.gguf "$@"

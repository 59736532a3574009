#!/usr/bin/env bash
# The main job: installs what is missing, fetches the default model (SmolLM2-135M-Instruct),
# builds hearth and starts a chat with it. Until the browser demo lands this is the terminal
# chat of the native CLI. Usage: pkg-scripts/demo.sh [--device cpu|wgpu] [other `hearth chat` flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare-cli.sh"
exec "$hearth" chat --model "$model" "$@"

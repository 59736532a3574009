#!/usr/bin/env bash
# The main job: on a fresh Debian machine installs what is missing, fetches the default model
# (SmolLM2-135M-Instruct), builds the wasm package (when its sources changed) and the chat
# page, and serves both on 127.0.0.1 with the model under /models/.
# Usage: pkg-scripts/demo.sh [--port N]   (default 8080, or $HEARTH_PORT)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

port="${HEARTH_PORT:-8080}"
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --port=*) port="${1#--port=}"; shift ;;
    *) echo "usage: pkg-scripts/demo.sh [--port N]" >&2; exit 2 ;;
  esac
done

pkg-scripts/setup.sh --web
pkg-scripts/fetch-model.sh
if [ ! -f pkg/package.json ] || [ -n "$(find crate npm/src npm/package.json Cargo.toml Cargo.lock -newer pkg/package.json -print -quit)" ]; then
  pkg-scripts/build-npm.sh
fi
pkg-scripts/build-www.sh

echo
echo "hearth chat: open http://127.0.0.1:$port/ in a browser with WebGPU (Ctrl+C stops the server)"
exec python3 pkg-scripts/serve.py www/dist --port "$port" --mount /models=models

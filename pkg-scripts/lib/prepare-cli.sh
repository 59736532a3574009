# Sourced (not run) by the scripts that use the native CLI: from the repository root, installs
# what is missing, fetches the default model and builds the release binary. Sets $root,
# $hearth (the binary) and $model (the default GGUF), and a runtime directory for wgpu.
# MODEL=gemma3-270m fetches Gemma 3 270M and points MODEL at it.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# Their messages go to stderr: these scripts print JSON on stdout.
pkg-scripts/setup.sh >&2
pkg-scripts/fetch-model.sh >&2
cargo build --release --locked --bin hearth
hearth="$root/target/release/hearth"
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# MODEL may name a model fetch-model.sh knows instead of a path.
if [ "${MODEL:-}" = "gemma3-270m" ]; then
  pkg-scripts/fetch-model.sh gemma3-270m >&2
  MODEL="$root/models/gemma-3-270m-q4_k_m.gguf"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

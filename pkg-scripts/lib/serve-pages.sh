# Sourced (not run) by the browser benchmarks: from the repository root, installs the browser
# and the bench page's packages, builds the npm package if it is missing, and serves the
# repository at http://127.0.0.1:$port (stopped when the script exits). Sets $root and $port.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
pkg-scripts/setup.sh --web >&2
[ -f pkg/dist/index.js ] || pkg-scripts/build-npm.sh >&2
(cd tests/bench && npm ci --no-audit --no-fund --loglevel=error) >&2
port=$((20000 + RANDOM % 20000))
python3 pkg-scripts/serve.py . --port "$port" > /dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 1

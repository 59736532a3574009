#!/usr/bin/env bash
# Builds the chat page (www/) into www/dist against the npm package in pkg/ (build it first
# with pkg-scripts/build-npm.sh): installs its locked dependencies, type-checks it, runs its
# unit tests (safe Markdown, number formats) and bundles it with Vite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/www"
[ -f ../pkg/package.json ] || { echo "error: pkg/ is missing: run pkg-scripts/build-npm.sh first" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
npx tsc --noEmit
npm test --silent
npx vite build --logLevel warn
echo "page built: $root/www/dist"

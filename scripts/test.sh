#!/usr/bin/env bash
# The whole test suite: dependencies, formatting, lints, unit, conformance and root-only
# integration tests against real components (registry, token server, TLS).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run as root: the integration tests start registries, unpack layers with real ownership and device nodes" >&2
  exit 1
fi
bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets -- --test-threads=2

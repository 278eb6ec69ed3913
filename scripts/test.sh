#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with Rust: installs what the tests need
# (Debian packages, npm and PyPI tools, real peers) and then checks formatting, lints and every
# test, the end-to-end ones against a real `idbridge serve` and the official WorkOS SDKs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/test-deps.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# The idbridge binary the end-to-end tests start is built by this same command (crates/server
# has integration tests), with the same features, so nothing is compiled twice.
cargo test --workspace --no-fail-fast

#!/usr/bin/env bash
# Builds idbridge and runs it on its embedded default: data in ./idbridge-data, listening on
# 127.0.0.1:8080. On the first start it prints an API key and a client id once.
# Extra arguments go to `idbridge` (default: `serve`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=build-deps.sh
. scripts/build-deps.sh
build_deps_ensure
cargo build --release -p idbridge
if [ "$#" -eq 0 ]; then set -- serve; fi
exec ./target/release/idbridge "$@"

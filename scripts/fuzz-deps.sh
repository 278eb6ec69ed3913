#!/usr/bin/env bash
# What scripts/fuzz.sh needs beyond the build packages: a C++ compiler for libFuzzer's
# sources (libfuzzer-sys compiles them). Idempotent; apt runs only when something is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/build-deps.sh
build_deps_ensure
if ! command -v c++ >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "[fuzz-deps] apt: installing g++" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++
fi

#!/usr/bin/env bash
# Installs the Debian packages needed to build idbridge (idempotent; apt runs only when
# something is missing). Sourced by scripts/run.sh and scripts/test-deps.sh.
build_deps_ensure() {
    local pkgs=(pkg-config libssl-dev libxml2-dev libxmlsec1-dev libxmlsec1-openssl libclang-dev clang)
    local missing=() pkg sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    for pkg in "${pkgs[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "[build-deps] apt: installing ${missing[*]}" >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

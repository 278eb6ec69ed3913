#!/usr/bin/env bash
# Installs everything the end-to-end suite needs on a Debian machine with Rust:
# the Debian build and test packages, the Node packages of tests/js (npm ci),
# and the Python tools of tests/py (a venv at <repo>/.venv).
#
# Idempotent and quick when nothing is missing: every step checks before it
# installs, `apt-get update` runs only when a package is missing, and npm/pip
# rerun only when their lock/requirements file changed (a hash stamp).
#
# Snippets in scripts/test-deps.d/*.sh are sourced at the end, in name order.
# They may use: $REPO, $SUDO, and the functions apt_ensure PKG..., have CMD,
# venv_pip_ensure REQUIREMENTS_FILE, npm_ci_ensure DIR, log MSG.
#
# Only Debian's apt, npm's and PyPI's registries are used.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export SUDO

log() { printf '[test-deps] %s\n' "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# Set once `apt-get update` has run in this invocation, so snippets don't repeat it.
_APT_UPDATED=0

# Installs the Debian packages among "$@" that are not installed yet.
apt_ensure() {
    local missing=() pkg status
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        if [ "$status" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "apt: installing ${missing[*]}"
    if [ "$_APT_UPDATED" -eq 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Hash of a file, used as a stamp to skip reinstalling unchanged dependencies.
_file_hash() { sha256sum "$1" | cut -d' ' -f1; }

# Runs `npm ci` in DIR unless node_modules already matches its package-lock.json.
npm_ci_ensure() {
    local dir="$1" stamp want
    stamp="$dir/node_modules/.idbridge-lock.sha256"
    want="$(_file_hash "$dir/package-lock.json")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "npm ci in ${dir#"$REPO"/}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$want" >"$stamp"
}

# Installs a requirements file into <repo>/.venv unless it is already installed.
venv_pip_ensure() {
    local req="$1" stamp want
    want="$(_file_hash "$req")"
    # One stamp per requirements file, named after its path in the repo (several are called
    # requirements.txt in a py/ folder).
    stamp="$REPO/.venv/.idbridge-$(printf '%s' "${req#"$REPO"/}" | tr '/' '_').sha256"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "pip install -r ${req#"$REPO"/}"
    "$REPO/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    printf '%s\n' "$want" >"$stamp"
}

# --- Debian packages -------------------------------------------------------
# Build: the server links OpenSSL and xmlsec (samael); bindgen needs libclang.
# Tests: xmlsec1 signs SAML fixtures by hand; curl/ca-certificates for sanity.
apt_ensure pkg-config build-essential libssl-dev libxml2-dev libxmlsec1-dev \
    libxmlsec1-openssl libclang-dev clang xmlsec1 ca-certificates curl

# Node and npm: keep a Node that is already there (e.g. a newer one from
# another source); install Debian's only when there is none.
if ! have node; then
    apt_ensure nodejs
fi
if ! have npm; then
    apt_ensure npm
fi

# Python 3 with venv: Debian splits venv/ensurepip into python3-venv.
if ! have python3; then
    apt_ensure python3
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_ensure python3-venv
fi

# --- Node packages of the JS tests ------------------------------------------
npm_ci_ensure "$REPO/tests/js"

# --- Python tools of the Python tests --------------------------------------
# Recreate the venv when it is missing or its interpreter no longer runs
# (e.g. the Python it was made from was removed).
if ! "$REPO/.venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at .venv"
    rm -rf "$REPO/.venv"
    python3 -m venv "$REPO/.venv"
fi
venv_pip_ensure "$REPO/tests/py/requirements.txt"

# --- Snippets from the other parts of the project ---------------------------
if [ -d "$REPO/scripts/test-deps.d" ]; then
    for snippet in "$REPO"/scripts/test-deps.d/*.sh; do
        [ -e "$snippet" ] || continue
        log "sourcing ${snippet#"$REPO"/}"
        # shellcheck disable=SC1090
        . "$snippet"
    done
fi

log "all test dependencies present"

#!/usr/bin/env bash
# Installs what the benchmarks need beyond the test dependencies (benches are not run by CI, so
# this is separate from scripts/test-deps.sh). Idempotent: reinstalls only when a lock changed.
#  - openssl (the `openssl speed` floor) and node + npm, from Debian when missing.
#  - crates/saml/benches/polis: Ory Polis (@boxyhq/saml-jackson, pinned by its package-lock.json)
#    for `cargo bench -p idbridge-saml --bench verify`. Installed with --ignore-scripts: the
#    harness needs only jackson's SAML code, not the native database drivers' build steps.
#    `cargo bench -p idbridge-scim --bench polis_scim` reuses this install for Polis's SCIM
#    endpoint (mem engine: no native driver needed either).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

log() { printf '[bench-deps] %s\n' "$*" >&2; }

need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    log "apt: installing ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

polis="$REPO/crates/saml/benches/polis"
stamp="$polis/node_modules/.idbridge-lock.sha256"
want="$(sha256sum "$polis/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "Polis harness up to date"
else
    log "npm ci in crates/saml/benches/polis"
    (cd "$polis" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$want" >"$stamp"
fi
log "benchmark dependencies present"

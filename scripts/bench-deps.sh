#!/usr/bin/env bash
# Installs what the benchmarks need beyond the test dependencies (benches are not run by CI, so
# this is separate from scripts/test-deps.sh). Idempotent: reinstalls only when a lock changed.
#  - openssl (the `openssl speed` floor), node + npm and perf (linux-perf), from Debian when
#    missing.
#  - crates/saml/benches/polis: Ory Polis (@boxyhq/saml-jackson, pinned by its package-lock.json)
#    for `cargo bench -p idbridge-saml --bench verify` and `-p idbridge-scim --bench polis_scim`,
#    installed by scripts/test-deps.d/polis.sh (the IdP tests use it too).
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
# perf: where a bench's time goes (`perf record -g` on the bench binary).
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ "${#need[@]}" -gt 0 ]; then
    log "apt: installing ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Ory Polis: the same install the tests use.
# shellcheck source=test-deps.d/polis.sh
. "$REPO/scripts/test-deps.d/polis.sh"
log "benchmark dependencies present"

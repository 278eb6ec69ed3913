#!/usr/bin/env bash
# Soak test (not in CI): a real `idbridge serve` under mixed load from real peers (SCIM
# clients, SAML logins, slapd with LDAP deltas, OpenSSH sftp deliveries, a webhook receiver
# that fails one delivery in five, API readers) for MINUTES (default 60), sampled every
# minute (RSS, open files, store size, requests, p50/p99, 5xx). Fails on any 5xx or on growth
# that does not level off. See tests/examples/soak.rs.
#
#   scripts/soak.sh [MINUTES]
#   SOAK_RELEASE=1 scripts/soak.sh 60   # release build of the server and the load generator
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
minutes="${1:-60}"
./scripts/test-deps.sh >/dev/null
profile=()
[ "${SOAK_RELEASE:-0}" = 1 ] && profile=(--release)
cargo build "${profile[@]}" -p idbridge --bin idbridge
exec cargo run "${profile[@]}" -p idbridge-tests --example soak -- "$minutes"

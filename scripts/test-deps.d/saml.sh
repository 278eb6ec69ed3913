#!/usr/bin/env bash
# Test and build dependencies of crates/saml (idempotent).
#  - Debian: build deps of samael/xmlsec, xmlsec1 CLI (independent signer), openssl (bench floor),
#    node + npm (samlify peer IdP), python3 + venv (pysaml2 peer IdP).
#  - npm: samlify (independent IdP and SP, xml-crypto based) into $IDBRIDGE_PEERS_DIR/samlify.
#  - PyPI: pysaml2 (independent IdP and SP) into the venv $IDBRIDGE_PEERS_DIR/pysaml2-venv.
set -euo pipefail
need=()
for pkg in pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev xmlsec1 openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v python3 >/dev/null || need+=(python3)
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi

peers="${IDBRIDGE_PEERS_DIR:-/var/cache/idbridge-peers}"
if [ ! -f "$peers/samlify/node_modules/samlify/package.json" ]; then
  mkdir -p "$peers/samlify"
  (cd "$peers/samlify" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --no-audit --no-fund samlify@2.13.1)
fi

if [ ! -x "$peers/pysaml2-venv/bin/python" ] || ! "$peers/pysaml2-venv/bin/python" -c 'import saml2' >/dev/null 2>&1; then
  python3 -m venv "$peers/pysaml2-venv"
  "$peers/pysaml2-venv/bin/pip" install --quiet pysaml2==7.5.5
fi

# SSO end-to-end tests (tests/tests/sso_sdk.rs, tests/js/sso.test.mjs, tests/py/test_sso.py).
# Sourced by scripts/test-deps.sh. Idempotent.
#  - openssl CLI: each run makes a throwaway IdP key pair (no keys in git).
#  - node: runs samlify's signer script.
#  - The IdPs themselves (samlify in $IDBRIDGE_PEERS_DIR/samlify, pysaml2 in
#    $IDBRIDGE_PEERS_DIR/pysaml2-venv, and xmlsec1) come from scripts/test-deps.d/saml.sh,
#    which runs before this file (name order); tests/js and .venv from scripts/test-deps.sh.
apt_ensure openssl xmlsec1
if ! have node; then
    apt_ensure nodejs npm
fi

# Ory Polis (@boxyhq/saml-jackson, pinned by crates/saml/benches/polis/package-lock.json): the
# SAML service provider of crates/saml/tests/idp_polis.rs and the peer of the verify and
# polis_scim benches. `npm ci --ignore-scripts` (≈30 s): only jackson's JavaScript is used (mem
# engine), not the native database drivers' build steps (which take ≈4 min).
# Sourced by scripts/test-deps.sh and scripts/bench-deps.sh (both define REPO and log).
polis="$REPO/crates/saml/benches/polis"
polis_stamp="$polis/node_modules/.idbridge-lock.sha256"
polis_want="$(sha256sum "$polis/package-lock.json" | cut -d' ' -f1)"
if [ -f "$polis_stamp" ] && [ "$(cat "$polis_stamp")" = "$polis_want" ]; then
    log "Ory Polis up to date"
else
    log "npm ci --ignore-scripts in crates/saml/benches/polis"
    (cd "$polis" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$polis_want" >"$polis_stamp"
fi

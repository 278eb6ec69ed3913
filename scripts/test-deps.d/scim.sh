#!/usr/bin/env bash
# idbridge-scim test dependencies (PyPI). Idempotent: installs only what is missing.
#  - scim2-models: crates/scim/tests/discovery_docs.rs validates our SCIM documents with it.
#  - scim2-tester + httpx2: crates/scim/tests/scim2_tester.rs runs the scim2-tester suite.
set -euo pipefail
if ! python3 -c 'import scim2_models, scim2_tester, httpx2' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'scim2-models==0.12.3' 'scim2-tester==0.5.2' 'httpx2==2.16.2'
fi

#!/usr/bin/env bash
# idbridge-scim test dependencies (PyPI), into the repo's .venv (scripts/test.sh puts it first on
# PATH, so the tests' `python3` is the venv's). Sourced by scripts/test-deps.sh.
#  - scim2-models: crates/scim/tests/discovery_docs.rs validates our SCIM documents with it.
#  - scim2-tester + httpx2: crates/scim/tests/scim2_tester.rs runs the scim2-tester suite.
venv_pip_ensure "$REPO/crates/scim/tests/py/scim-requirements.txt"

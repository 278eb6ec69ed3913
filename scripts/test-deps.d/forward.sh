# SCIM push forwarding (crates/forward): scim2-server (PyPI), an independent SCIM 2.0 server the
# forwarder pushes into in the tests, installed into the repo's .venv. Sourced by
# scripts/test-deps.sh.
venv_pip_ensure "$REPO/crates/forward/tests/py/requirements.txt"

# A real browser for the login-page tests (tests/tests/idp_browser.rs drives
# tests/js/idp_browser.test.mjs): Debian's chromium, driven by playwright-core from tests/js
# (no browser download: executablePath /usr/bin/chromium). Sourced by scripts/test-deps.sh.
# Idempotent.
apt_ensure chromium

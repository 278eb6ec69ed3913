# A real DNS server for organization domain verification (tests/tests/organization_domains_sdk.rs
# starts dnsmasq on a free loopback port with the TXT records each case needs). Sourced by
# scripts/test-deps.sh. Idempotent.
apt_ensure dnsmasq-base

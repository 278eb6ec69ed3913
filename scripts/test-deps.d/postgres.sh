# idbridge-store's PostgreSQL backend: its tests start a private server (testkit `Postgres`:
# initdb in a temp dir, loopback port) from Debian's package.
apt_ensure postgresql

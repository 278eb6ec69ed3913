#!/usr/bin/env bash
# Builds the idbridge Debian package with dpkg-deb (no debhelper tree needed):
#   /usr/bin/idbridge, /lib/systemd/system/idbridge.service (deploy/idbridge.service),
#   /etc/idbridge/idbridge.toml as a conffile (config/idbridge.example.toml with the package's
#   data directory), and the maintainer scripts of deploy/debian (system user idbridge,
#   /var/lib/idbridge, upgrade and purge behaviour).
# Depends: computed by dpkg-shlibdeps from the binary (libxmlsec1-openssl among them: the
# binary links it), plus adduser.
#
# Usage: scripts/deb.sh [BINARY]   (default target/release/idbridge)
#   IDBRIDGE_DEB_REVISION=N  Debian revision (default 1); the test builds -2 for the upgrade.
#   IDBRIDGE_DEB_OUT=DIR     output directory (default target/appliance)
# Prints the path of the .deb.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO/target/release/idbridge}"
if [ ! -x "$BIN" ]; then
    echo "deb.sh: no binary at $BIN: run 'cargo build --release -p idbridge' first" >&2
    exit 1
fi
VERSION="$("$BIN" --version | awk '{print $2}')-${IDBRIDGE_DEB_REVISION:-1}"
ARCH="$(dpkg --print-architecture)"
OUT="${IDBRIDGE_DEB_OUT:-$REPO/target/appliance}"
mkdir -p "$OUT"
work="$(mktemp -d "$OUT/deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
pkg="$work/pkg"

install -D -m 0755 "$BIN" "$pkg/usr/bin/idbridge"
strip --strip-unneeded "$pkg/usr/bin/idbridge" 2>/dev/null || true
install -D -m 0644 "$REPO/deploy/idbridge.service" "$pkg/lib/systemd/system/idbridge.service"
install -d -m 0755 "$pkg/etc/idbridge"
sed -e 's|^data_dir = "./idbridge-data"|data_dir = "/var/lib/idbridge"|' \
    -e 's|^# idbridge configuration\.|# idbridge configuration (installed by the Debian package; systemd also sets\n# IDBRIDGE_DATA_DIR=/var/lib/idbridge, see /lib/systemd/system/idbridge.service).|' \
    "$REPO/config/idbridge.example.toml" >"$pkg/etc/idbridge/idbridge.toml"
# 0644 in the archive (lintian); postinst makes it root:idbridge 0640.
chmod 0644 "$pkg/etc/idbridge/idbridge.toml"
install -d -m 0755 "$pkg/usr/share/doc/idbridge"
cat >"$pkg/usr/share/doc/idbridge/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: idbridge
Source: $(sed -n 's/^repository *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)

Files: *
Copyright: 2026 the idbridge authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
printf 'idbridge (%s) unstable; urgency=medium\n\n  * Package built by scripts/deb.sh from revision %s.\n\n -- idbridge maintainers <idbridge@example.invalid>  %s\n' \
    "$VERSION" "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(date -R)" |
    gzip -9n >"$pkg/usr/share/doc/idbridge/changelog.Debian.gz"

# Shared-library dependencies, as dh_shlibdeps would compute them.
mkdir -p "$work/debian"
printf 'Source: idbridge\n\nPackage: idbridge\nArchitecture: any\n' >"$work/debian/control"
shlibs="$(cd "$work" && dpkg-shlibdeps -O -e"$pkg/usr/bin/idbridge" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"

install -d -m 0755 "$pkg/DEBIAN"
install -m 0755 "$REPO/deploy/debian/postinst" "$REPO/deploy/debian/prerm" \
    "$REPO/deploy/debian/postrm" "$pkg/DEBIAN/"
echo /etc/idbridge/idbridge.toml >"$pkg/DEBIAN/conffiles"
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: idbridge
Version: $VERSION
Architecture: $ARCH
Maintainer: idbridge maintainers <idbridge@example.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: $shlibs, adduser
Section: net
Priority: optional
Homepage: $(sed -n 's/^repository *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)
Description: on-prem SSO and directory bridge with a WorkOS-compatible API
 idbridge connects a company's identity providers (SAML, OIDC) and
 directories (SCIM, LDAP/Active Directory, SFTP CSV) to applications
 through a WorkOS-compatible API. It runs as the systemd service
 idbridge, as the system user idbridge, with its data in
 /var/lib/idbridge and its configuration in /etc/idbridge/idbridge.toml.
CONTROL
deb="$OUT/idbridge_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"

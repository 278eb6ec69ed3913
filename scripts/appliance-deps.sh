#!/usr/bin/env bash
# Installs what scripts/image.sh and scripts/appliance-test.sh need on a Debian machine:
# the OCI tools (buildah, podman, mmdebstrap, with the vfs storage driver, crun, uidmap and
# slirp4netns/passt for networking), the Debian packaging tools, and a venv with the WorkOS
# Python SDK and the Kubernetes schema validator (target/appliance/venv).
#
# Idempotent: apt-get runs only when a package is missing, pip only when
# deploy/tests/requirements.txt changed. Only Debian's and PyPI's registries are used.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf '[appliance-deps] %s\n' "$*" >&2; }

_apt_updated=0
apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt: installing ${missing[*]}"
    if [ "$_apt_updated" -eq 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _apt_updated=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# OCI: buildah commits the image, podman runs it; mmdebstrap makes the root filesystems
# (image and package test chroot). containers-storage uses the vfs driver (no overlay mounts
# needed), so fuse-overlayfs is not required.
apt_ensure buildah podman crun runc catatonit mmdebstrap uidmap slirp4netns passt netavark aardvark-dns \
    containernetworking-plugins iptables ca-certificates curl jq
# Debian package: dpkg-deb builds it, systemd-analyze verifies the unit, apt-utils for the
# chroot's local install.
apt_ensure dpkg-dev fakeroot systemd lintian

# Python: WorkOS SDK (the data check through the API) and kubernetes-validate (schemas).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_ensure python3-venv
fi
VENV="$REPO/target/appliance/venv"
REQ="$REPO/deploy/tests/requirements.txt"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at ${VENV#"$REPO"/}"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "pip install -r ${REQ#"$REPO"/}"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    printf '%s\n' "$want" >"$stamp"
fi
# pysaml2 (the suite's peer IdP, with xmlsec1 and openssl): the SAML login through the image.
"$REPO/scripts/test-deps.d/saml.sh" >/dev/null
log "appliance dependencies present"

#!/usr/bin/env bash
# Builds the idbridge OCI image without a Docker engine or a registry:
#   1. a root filesystem from Debian packages (mmdebstrap --variant=extract): only the
#      packages of the shared libraries the release binary links (found with ldd and dpkg -S),
#      ca-certificates for the CA bundle and busybox for the healthcheck's wget;
#   2. buildah commits it as the base layer, then the binary and the example config as a
#      second layer, with a non-root user, /var/lib/idbridge as a volume, IDBRIDGE_* defaults,
#      a healthcheck and OCI labels;
#   3. writes target/appliance/idbridge-<version>.oci.tar (OCI archive) and
#      idbridge-<version>.docker.tar (docker archive: the only format that keeps the
#      healthcheck; `podman load` / `docker load` take either).
# The image also stays in the private containers-storage of scripts/appliance-env.sh as
# localhost/idbridge:<version> and :latest.
#
# Usage: scripts/image.sh [BINARY]   (default target/release/idbridge; build it first with
#        `cargo build --release -p idbridge`). Needs root and scripts/appliance-deps.sh.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/appliance-env.sh
. "$REPO/scripts/appliance-env.sh"
log() { printf '[image] %s\n' "$*" >&2; }
start=$(date +%s)

BIN="${1:-$REPO/target/release/idbridge}"
if [ ! -x "$BIN" ]; then
    echo "image.sh: no binary at $BIN: run 'cargo build --release -p idbridge' first" >&2
    exit 1
fi
SUITE="${IDBRIDGE_IMAGE_SUITE:-bookworm}"
VERSION="$("$BIN" --version | awk '{print $2}')"
REVISION="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REVISION="$REVISION-dirty"
fi
SOURCE="$(sed -n 's/^repository *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
IMAGE="localhost/idbridge"

# The Debian packages that ship the libraries the binary links.
libs=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
pkgs=()
for lib in $libs; do
    real="$(readlink -f "$lib")"
    pkg="$( (dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true) | head -1 | cut -d: -f1)"
    if [ -z "$pkg" ]; then
        echo "image.sh: no Debian package ships $lib (linked by $BIN)" >&2
        exit 1
    fi
    pkgs+=("$pkg")
done
# libxmlsec1-openssl: linked today, and listed in case a build loads the engine with dlopen.
pkgs+=(libxmlsec1-openssl ca-certificates busybox)
include="$(printf '%s\n' "${pkgs[@]}" | sort -u | paste -sd, -)"
log "runtime packages: $include"

# mmdebstrap runs no hooks for the extract variant: extract into a directory, run the hook
# here, then pack it as a tar (buildah add keeps the tar's owners, e.g. of /var/lib/idbridge).
ROOTDIR="$APPLIANCE_DIR/rootfs"
ROOTFS="$APPLIANCE_DIR/rootfs.tar"
rm -rf "$ROOTDIR" "$ROOTFS"
mmdebstrap --quiet --variant=extract --include="$include" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$ROOTDIR"
# The shared objects the binary loads (ldd's closure, resolved): the hook deletes the other
# libraries that came with their packages (ICU's i18n/io, libexslt, libgcrypt...).
keep_libs="$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | xargs -r readlink -f |
    xargs -r -n1 basename | paste -sd' ' -)"
IDBRIDGE_KEEP_LIBS="$keep_libs" "$REPO/deploy/image/rootfs-hook.sh" "$ROOTDIR"
tar -C "$ROOTDIR" --numeric-owner --sort=name -cf "$ROOTFS" .
rm -rf "$ROOTDIR"

# Base layer: the root filesystem.
base=$(buildah from scratch)
trap 'buildah rm "$base" >/dev/null 2>&1 || true; [ -n "${app:-}" ] && buildah rm "$app" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$base" "$ROOTFS" / >/dev/null
buildah config --created-by "mmdebstrap --variant=extract $SUITE: $include (deploy/image/rootfs-hook.sh)" "$base"
buildah commit --quiet --rm --format docker "$base" "$IMAGE-base:$VERSION" >/dev/null
rm -f "$ROOTFS"

# Application layer: the binary, the example config, the run-time settings.
app=$(buildah from "$IMAGE-base:$VERSION")
# Stripped: the symbol table is the largest part of the release binary that it does not
# need to run (the cost: panic backtraces show addresses instead of function names).
stripped="$APPLIANCE_DIR/idbridge.stripped"
strip --strip-unneeded -o "$stripped" "$BIN"
buildah copy --quiet --chmod 0755 "$app" "$stripped" /usr/local/bin/idbridge >/dev/null
rm -f "$stripped"
buildah copy --quiet --chmod 0644 "$app" "$REPO/config/idbridge.example.toml" \
    /etc/idbridge/idbridge.example.toml >/dev/null
labels=(
    --label "org.opencontainers.image.title=idbridge"
    --label "org.opencontainers.image.description=On-prem SSO and directory bridge with a WorkOS-compatible API"
    --label "org.opencontainers.image.version=$VERSION"
    --label "org.opencontainers.image.revision=$REVISION"
    --label "org.opencontainers.image.source=$SOURCE"
    --label "org.opencontainers.image.licenses=Apache-2.0"
    --label "org.opencontainers.image.created=$CREATED"
    --label "org.opencontainers.image.base.name=debian:$SUITE (mmdebstrap extract)"
)
buildah config \
    "${labels[@]}" \
    --user 10001:10001 \
    --workingdir /var/lib/idbridge \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env IDBRIDGE_DATA_DIR=/var/lib/idbridge \
    --env IDBRIDGE_LISTEN=0.0.0.0:8080 \
    --env IDBRIDGE_LOG_FORMAT=json \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --volume /var/lib/idbridge \
    --port 8080/tcp \
    --stop-signal SIGTERM \
    --healthcheck 'CMD /bin/busybox wget -q -O /dev/null http://127.0.0.1:8080/healthz' \
    --healthcheck-interval 30s --healthcheck-timeout 5s --healthcheck-start-period 10s \
    --healthcheck-retries 3 \
    --entrypoint '["/usr/local/bin/idbridge"]' \
    --cmd serve \
    --created-by "idbridge $VERSION binary and example config (scripts/image.sh)" \
    "$app"
buildah commit --quiet --rm --format docker "$app" "$IMAGE:$VERSION" >/dev/null
app=""
buildah tag "$IMAGE:$VERSION" "$IMAGE:latest"
# Earlier builds' images, now untagged: the vfs driver keeps a full copy of each layer.
buildah rmi --prune >/dev/null 2>&1 || true

OCI="$APPLIANCE_DIR/idbridge-$VERSION.oci.tar"
DOCKER="$APPLIANCE_DIR/idbridge-$VERSION.docker.tar"
rm -f "$OCI" "$DOCKER"
buildah push --quiet "$IMAGE:$VERSION" "oci-archive:$OCI:idbridge:$VERSION"
buildah push --quiet "$IMAGE:$VERSION" "docker-archive:$DOCKER:idbridge:$VERSION"

# Figures: uncompressed layer sizes, the archive sizes, what dominates.
log "image $IMAGE:$VERSION (revision $REVISION), built in $(($(date +%s) - start)) s"
podman image inspect --format '{{.Size}}' "$IMAGE:$VERSION" |
    awk '{printf "[image] uncompressed size: %.1f MB\n", $1/1e6}' >&2
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE:$VERSION" | sed 's/^/[image] layer: /' >&2
ls -l "$OCI" "$DOCKER" | awk '{printf "[image] archive %s: %.1f MB\n", $NF, $5/1e6}' >&2
log "binary $(du -m "$BIN" | cut -f1) MB before strip; largest libraries in the base layer:"
mnt=$(buildah from --quiet "$IMAGE-base:$VERSION")
root=$(buildah mount "$mnt")
(cd "$root" && find . -type f -size +500k -printf '%s\t%p\n' | sort -rn | head -8 |
    awk '{printf "[image]   %6.1f MB  %s\n", $1/1e6, $2}') >&2
buildah umount "$mnt" >/dev/null
buildah rm "$mnt" >/dev/null
echo "$OCI"

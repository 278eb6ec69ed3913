#!/usr/bin/env bash
# The appliance, built and started (issue 22). Not part of .ci/run: it builds a release binary,
# two root filesystems and an image (~5-10 min on 2 cores after the release build).
#   1. image: scripts/image.sh, then `podman run` of it on a fresh volume: /healthz, the
#      image's own healthcheck, the first-start API key from the container's log, an
#      organization + SCIM directory + user through the WorkOS Python SDK, a SAML login
#      (pysaml2 signs, the container verifies, the SDK reads the profile); stop; a NEW
#      container on the same volume finds them (and prints no second API key).
#   2. Debian package: scripts/deb.sh (revisions 1 and 2), installed into a clean mmdebstrap
#      chroot with `apt install ./idbridge_*.deb`: --version, systemd-analyze verify, upgrade,
#      purge (deploy/tests/deb-chroot-test.sh).
#   3. Kubernetes: kustomize output and the Helm chart against the Kubernetes schemas, helm lint --strict
#      (deploy/tests/test_kubernetes.py), and the base's pod run by `podman kube play` under
#      its securityContext, twice on the same PVC.
#   4. deploy/Dockerfile: built with `buildah bud` (its Rust build stage replaced by the
#      binary at hand, debian:bookworm-slim made locally by mmdebstrap: no registry here), and
#      its image compared with scripts/image.sh's: same files, owners, modes, sizes, config.
# Usage: scripts/appliance-test.sh [image|deb|kubernetes|dockerfile]...   (default: all four)
#   IDBRIDGE_BIN=path  use this binary instead of building target/release/idbridge.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { printf '[appliance-test] %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { printf '[appliance-test] FAIL: %s\n' "$*" >&2; exit 1; }
parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=(image deb kubernetes dockerfile)
want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

"$REPO/scripts/appliance-deps.sh"
# shellcheck source=scripts/appliance-env.sh
. "$REPO/scripts/appliance-env.sh"
PY="$APPLIANCE_DIR/venv/bin/python"

BIN="${IDBRIDGE_BIN:-$REPO/target/release/idbridge}"
if [ -z "${IDBRIDGE_BIN:-}" ] && (want image || want deb || want dockerfile || want kubernetes); then
    log "release build (nice -n 10 cargo build --release -p idbridge)"
    nice -n 10 cargo build --release --locked -p idbridge
fi

# --- 1. the image, started --------------------------------------------------
vol="" c1="" c2="" state=""
cleanup_image() {
    [ -n "$c1" ] && "${PODMAN[@]}" rm -f -t 0 "$c1" "$c2" >/dev/null 2>&1 || true
    [ -n "$vol" ] && "${PODMAN[@]}" volume rm -f "$vol" >/dev/null 2>&1 || true
    [ -n "$state" ] && rm -f "$state"
    vol="" c1="" c2="" state=""
}
trap cleanup_image EXIT
image_test() {
    local t0 version image port url callback key client_id logs health
    t0=$(date +%s)
    "$REPO/scripts/image.sh" "$BIN" >/dev/null
    log "image built in $(($(date +%s) - t0)) s"
    version="$("$BIN" --version | awk '{print $2}')"
    image="localhost/idbridge:$version"
    # Load both archives back, as users would. The OCI archive first (its labels and layers;
    # the OCI format has no healthcheck), then the docker archive, whose image (with the
    # healthcheck) is the one started below.
    local oci_id docker_id
    oci_id="$("${PODMAN[@]}" load -q -i "$APPLIANCE_DIR/idbridge-$version.oci.tar" | sed -n 's/^Loaded image: //p' | head -1)"
    oci_id="$("${PODMAN[@]}" image inspect --format '{{.ID}}' "$oci_id")"
    local oci_layers
    oci_layers="$("${PODMAN[@]}" image inspect --format '{{json .RootFS.Layers}}' "$oci_id")"
    "${PODMAN[@]}" image inspect --format '{{json .Labels}}' "$oci_id" |
        "$PY" -c 'import json,sys; l=json.load(sys.stdin); [l["org.opencontainers.image."+k] for k in ("version","revision","source")]; print("[appliance-test] OCI archive labels:", {k.rsplit(".",1)[1]: v for k, v in l.items()})' >&2
    # From here on the image started is the one loaded from the docker archive.
    image="$("${PODMAN[@]}" load -q -i "$APPLIANCE_DIR/idbridge-$version.docker.tar" | sed -n 's/^Loaded image: //p' | head -1)"
    [ -n "$image" ] || fail "podman load of the docker archive"
    docker_id="$("${PODMAN[@]}" image inspect --format '{{.ID}}' "$image")"
    log "docker archive loaded as $image"
    [ "$("${PODMAN[@]}" image inspect --format '{{json .RootFS.Layers}}' "$docker_id")" = "$oci_layers" ] ||
        fail "the OCI and docker archives hold different layers"
    log "OCI and docker archives: same $(echo "$oci_layers" | tr ',' '\n' | wc -l) layers"
    # What the image promises, read from its config.
    [ "$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "$image")" = "10001:10001" ] || fail "image user"
    "${PODMAN[@]}" image inspect --format '{{json .Config.Volumes}}' "$image" | grep -q '/var/lib/idbridge' ||
        fail "no volume"
    # (buildah splits --healthcheck on blanks: a JSON array there once became
    # ["CMD","[/bin/busybox,",...], which only running it showed.)
    "${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck.Test}}' "$image" |
        grep -qF '["CMD","/bin/busybox","wget","-q","-O","/dev/null","http://127.0.0.1:8080/healthz"]' ||
        fail "the docker archive's image has not the healthcheck: $("${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$image")"

    vol="idbridge-appliance-test-$$"
    port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    url="http://127.0.0.1:$port"
    callback="http://127.0.0.1:9/callback"
    c1="idbridge-at1-$$"
    c2="idbridge-at2-$$"
    state="$(mktemp)"
    "${PODMAN[@]}" volume create "$vol" >/dev/null
    run() {
        # --health-interval disable: podman schedules periodic healthchecks with systemd
        # timers, and this sandbox has no systemd; `podman healthcheck run` still runs it.
        "${PODMAN[@]}" run -d --name "$1" "${PODMAN_RUN_LIMITS[@]}" --health-interval disable \
            -p "127.0.0.1:$port:8080" -v "$vol:/var/lib/idbridge" \
            -e "IDBRIDGE_PUBLIC_URL=$url" -e "IDBRIDGE_SSO_REDIRECT_URIS=$callback" "$image" >/dev/null
    }
    wait_healthy() {
        local i
        for i in $(seq 1 120); do
            if curl -fsS -m 2 "$url/healthz" >/dev/null 2>&1; then
                log "$1: /healthz answered after ~$((i / 2)) s"
                return 0
            fi
            if [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$1")" != true ]; then
                "${PODMAN[@]}" logs "$1" >&2 || true
                fail "$1 exited before /healthz answered"
            fi
            sleep 0.5
        done
        "${PODMAN[@]}" logs "$1" >&2 || true
        fail "$1: no /healthz in 60 s"
    }

    log "first container $c1 on volume $vol, port $port"
    t0=$(date +%s%N)
    run "$c1"
    wait_healthy "$c1"
    log "start to healthy: $((($(date +%s%N) - t0) / 1000000)) ms"
    curl -fsS -m 5 "$url/readyz" >/dev/null || fail "/readyz"
    # The image's own HEALTHCHECK (busybox wget inside the container).
    health="$("${PODMAN[@]}" healthcheck run "$c1" 2>&1 && echo healthy || true)"
    [ "${health##*$'\n'}" = healthy ] || fail "podman healthcheck run: $health"
    log "image healthcheck: healthy"
    [ "$("${PODMAN[@]}" exec "$c1" /bin/busybox id -u)" = 10001 ] || fail "not running as uid 10001"
    # The root filesystem is not writable for the service user.
    if "${PODMAN[@]}" exec "$c1" /bin/busybox touch /usr/local/bin/x 2>/dev/null; then
        fail "the service user can write /usr/local/bin"
    fi
    logs="$("${PODMAN[@]}" logs "$c1" 2>/dev/null)"
    key="$(printf '%s\n' "$logs" | sed -n 's/^IDBRIDGE_API_KEY=//p')"
    client_id="$(printf '%s\n' "$logs" | sed -n 's/^IDBRIDGE_CLIENT_ID=//p')"
    [ -n "$key" ] && [ -n "$client_id" ] || fail "no first-start API key in the log of $c1"
    log "first-start API key read from the container log (…${key: -4}), client id $client_id"
    IDBRIDGE_URL="$url" IDBRIDGE_API_KEY="$key" IDBRIDGE_CLIENT_ID="$client_id" \
        "$PY" "$REPO/deploy/tests/container_data.py" write "$state" >&2
    # A SAML login: the image's libxml2 + xmlsec verify a signature (ICU's data is stubbed).
    IDBRIDGE_URL="$url" IDBRIDGE_API_KEY="$key" IDBRIDGE_CLIENT_ID="$client_id" \
        IDBRIDGE_SSO_CALLBACK="$callback" \
        "$PY" "$REPO/deploy/tests/container_data.py" saml "$state" >&2

    t0=$(date +%s%N)
    "${PODMAN[@]}" stop -t 30 "$c1" >/dev/null
    log "stop (SIGTERM) took $((($(date +%s%N) - t0) / 1000000)) ms, exit code $("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$c1")"
    "${PODMAN[@]}" rm "$c1" >/dev/null

    log "second container $c2 on the same volume"
    run "$c2"
    wait_healthy "$c2"
    if "${PODMAN[@]}" logs "$c2" 2>/dev/null | grep -q '^IDBRIDGE_API_KEY='; then
        fail "$c2 printed a new API key: the volume's store was not reused"
    fi
    IDBRIDGE_URL="$url" IDBRIDGE_API_KEY="$key" IDBRIDGE_CLIENT_ID="$client_id" \
        "$PY" "$REPO/deploy/tests/container_data.py" check "$state" >&2
    log "sample log line: $("${PODMAN[@]}" logs "$c2" 2>&1 | grep -m1 '^{' || true)"
    cleanup_image
    log "image: passed"
}

# --- 2. the Debian package in a clean chroot ----------------------------------
deb_test() {
    local out old new t0
    out="$(mktemp -d "$APPLIANCE_DIR/debtest.XXXXXX")"
    old="$(IDBRIDGE_DEB_REVISION=1 IDBRIDGE_DEB_OUT="$out" "$REPO/scripts/deb.sh" "$BIN")"
    new="$(IDBRIDGE_DEB_REVISION=2 IDBRIDGE_DEB_OUT="$out" "$REPO/scripts/deb.sh" "$BIN")"
    log "built $(basename "$old") ($(du -k "$old" | cut -f1) kB) and $(basename "$new")"
    dpkg-deb -f "$old" Depends | sed 's/^/[appliance-test] Depends: /' >&2
    lintian --tag-display-limit 0 --suppress-tags \
        no-manual-page,maintainer-script-calls-systemctl,initial-upload-closes-no-bugs "$old" 2>&1 |
        sed 's/^/[appliance-test] lintian (informational): /' >&2 || true
    t0=$(date +%s)
    # A clean bookworm with apt and systemd (for systemd-analyze); the test runs in it.
    mmdebstrap --quiet --variant=apt --include=systemd bookworm /dev/null \
        --customize-hook="copy-in $old $new $REPO/deploy/tests/deb-chroot-test.sh /tmp" \
        --customize-hook="chroot \"\$1\" sh /tmp/deb-chroot-test.sh /tmp/$(basename "$old") /tmp/$(basename "$new")" \
        || { rm -rf "$out"; fail "the Debian package test in the chroot"; }
    rm -rf "$out"
    log "deb: passed (chroot and test: $(($(date +%s) - t0)) s)"
}

# --- 3. Kubernetes manifests -------------------------------------------------
kubernetes_test() {
    "$APPLIANCE_DIR/venv/bin/pytest" -q -p no:cacheprovider "$REPO/deploy/tests" >&2 ||
        fail "Kubernetes manifests"
    log "kubernetes: manifests validate"
    kube_play_test
    log "kubernetes: passed"
}

# The kustomize base's pod, run by `podman kube play` (no cluster here): the image works
# under its securityContext (non-root, read-only root fs, no privilege escalation, no
# capabilities), with the ConfigMap's config, and its PVC keeps the data across pods.
kube_pod="" kube_dir=""
cleanup_kube() {
    if [ -n "$kube_pod" ]; then
        "${PODMAN[@]}" kube down "$kube_pod" >/dev/null 2>&1 || true
        "${PODMAN[@]}" volume rm -f data-idbridge-0 >/dev/null 2>&1 || true
    fi
    [ -n "$kube_dir" ] && rm -rf "$kube_dir"
    kube_pod="" kube_dir=""
}
kube_play_test() {
    local version port url ctr key client_id i
    version="$("$BIN" --version | awk '{print $2}')"
    "${PODMAN[@]}" image exists "localhost/idbridge:$version" || "$REPO/scripts/image.sh" "$BIN" >/dev/null
    kube_dir="$(mktemp -d)"
    kube_pod="$kube_dir/pod.yaml"
    trap 'cleanup_image; cleanup_kube' EXIT
    port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    url="http://127.0.0.1:$port"
    ctr=idbridge-0-idbridge
    kubectl kustomize "$REPO/deploy/kubernetes/base" >"$kube_dir/base.yaml"
    "$PY" "$REPO/deploy/tests/kube_pod.py" "$kube_dir/base.yaml" "$port" >"$kube_pod"
    "$PY" "$REPO/deploy/tests/kube_pod.py" "$kube_dir/base.yaml" "$port" --reuse-claim >"$kube_dir/pod2.yaml"
    "${PODMAN[@]}" volume rm -f data-idbridge-0 >/dev/null 2>&1 || true
    for round in 1 2; do
        local spec="$kube_pod"
        [ "$round" = 2 ] && spec="$kube_dir/pod2.yaml"
        "${PODMAN[@]}" kube play "$spec" >/dev/null || fail "podman kube play (round $round)"
        for i in $(seq 1 120); do
            curl -fsS -m 2 "$url/healthz" >/dev/null 2>&1 && break
            [ "$i" = 120 ] && { "${PODMAN[@]}" logs "$ctr" >&2 || true; fail "kube pod: no /healthz"; }
            sleep 0.5
        done
        log "kube pod (round $round): /healthz answered after ~$((i / 2)) s"
        [ "$("${PODMAN[@]}" inspect "$ctr" --format '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{len .EffectiveCaps}}')" = "true 10001:10001 0" ] ||
            fail "kube pod: not read-only / uid 10001 / no capabilities"
        if "${PODMAN[@]}" exec "$ctr" /bin/busybox touch /etc/idbridge/x /usr/x 2>/dev/null; then
            fail "kube pod: the root filesystem is writable"
        fi
        "${PODMAN[@]}" exec "$ctr" /bin/busybox touch /tmp/x || fail "kube pod: /tmp is not writable"
        "${PODMAN[@]}" exec "$ctr" /bin/busybox grep -q 'format = "json"' /etc/idbridge/idbridge.toml ||
            fail "kube pod: the ConfigMap is not mounted"
        if [ "$round" = 1 ]; then
            key="$("${PODMAN[@]}" logs "$ctr" 2>/dev/null | sed -n 's/^IDBRIDGE_API_KEY=//p')"
            client_id="$("${PODMAN[@]}" logs "$ctr" 2>/dev/null | sed -n 's/^IDBRIDGE_CLIENT_ID=//p')"
            [ -n "$key" ] || fail "kube pod: no first-start API key in the log"
            IDBRIDGE_URL="$url" IDBRIDGE_API_KEY="$key" IDBRIDGE_CLIENT_ID="$client_id" \
                "$PY" "$REPO/deploy/tests/container_data.py" write "$kube_dir/state.json" >&2
        else
            IDBRIDGE_URL="$url" IDBRIDGE_API_KEY="$key" IDBRIDGE_CLIENT_ID="$client_id" \
                "$PY" "$REPO/deploy/tests/container_data.py" check "$kube_dir/state.json" >&2
        fi
        # kube down stops and removes the pod; the PVC's volume stays (as a PVC does).
        "${PODMAN[@]}" kube down "$spec" >/dev/null || fail "podman kube down"
    done
    cleanup_kube
    log "kube pod: runs under the base's securityContext, data kept on its PVC across pods"
}

# --- 4. deploy/Dockerfile makes the same image ---------------------------------
dockerfile_test() {
    local version ctx img
    version="$("$BIN" --version | awk '{print $2}')"
    "${PODMAN[@]}" image exists "localhost/idbridge:$version" || "$REPO/scripts/image.sh" "$BIN" >/dev/null
    if ! "${PODMAN[@]}" image exists docker.io/library/debian:bookworm-slim; then
        log "making debian:bookworm-slim locally (mmdebstrap --variant=minbase)"
        mmdebstrap --quiet --variant=minbase bookworm "$APPLIANCE_DIR/slim.tar"
        local b
        b=$(buildah from scratch)
        buildah add --quiet "$b" "$APPLIANCE_DIR/slim.tar" / >/dev/null
        buildah config --cmd bash "$b"
        buildah commit --quiet --rm "$b" docker.io/library/debian:bookworm-slim >/dev/null
        rm -f "$APPLIANCE_DIR/slim.tar"
    fi
    ctx="$(mktemp -d "$APPLIANCE_DIR/dockerfile.XXXXXX")"
    mkdir -p "$ctx/config" "$ctx/deploy/image" "$ctx/target/release"
    cp "$REPO/config/idbridge.example.toml" "$ctx/config/"
    cp "$REPO/deploy/image/rootfs-hook.sh" "$REPO/deploy/image/icudata-stub.c" "$ctx/deploy/image/"
    cp "$BIN" "$ctx/target/release/idbridge"
    # The Rust stage needs rust:1-bookworm from a registry: the binary at hand stands in.
    "$PY" - "$REPO/deploy/Dockerfile" "$ctx/Dockerfile" <<'PYEOF'
import sys
s = open(sys.argv[1]).read()
start, end = s.index("FROM rust:1-bookworm AS build"), s.index("# The runtime root filesystem")
stub = "FROM docker.io/library/debian:bookworm-slim AS build\nCOPY target/release/idbridge /src/target/release/idbridge\n\n"
open(sys.argv[2], "w").write(s[:start] + stub + s[end:])
PYEOF
    buildah bud --quiet --pull=never --format docker --layers=false -f "$ctx/Dockerfile" \
        -t localhost/idbridge-dockerfile:test "$ctx" >/dev/null || fail "buildah bud deploy/Dockerfile"
    rm -rf "$ctx"
    for img in "localhost/idbridge:$version" localhost/idbridge-dockerfile:test; do
        local c r
        c=$(buildah from --quiet "$img")
        r=$(buildah mount "$c")
        [ -n "$r" ] || fail "buildah mount $img"
        # ld.so.cache holds build-specific bytes; everything else must match.
        (cd "$r" && find . -printf '%p %U:%G %m %y %s\n' | grep -v '^\./etc/ld\.so\.cache ' | sort) \
            >"$APPLIANCE_DIR/layout-${img##*:}.txt"
        buildah umount "$c" >/dev/null
        buildah rm "$c" >/dev/null
        podman image inspect --format '{{json .Config.User}} {{json .Config.Env}} {{json .Config.Volumes}} {{json .Config.Healthcheck.Test}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.ExposedPorts}} {{.Config.WorkingDir}} {{.Config.StopSignal}}' \
            "$img" >"$APPLIANCE_DIR/config-${img##*:}.txt"
    done
    diff -u "$APPLIANCE_DIR/layout-$version.txt" "$APPLIANCE_DIR/layout-test.txt" >&2 ||
        fail "deploy/Dockerfile and scripts/image.sh make different file trees"
    diff -u "$APPLIANCE_DIR/config-$version.txt" "$APPLIANCE_DIR/config-test.txt" >&2 ||
        fail "deploy/Dockerfile and scripts/image.sh make different image configs"
    log "dockerfile: same $(wc -l <"$APPLIANCE_DIR/layout-test.txt") paths (owner, mode, type, size) and config as scripts/image.sh"
    "${PODMAN[@]}" rmi -f localhost/idbridge-dockerfile:test >/dev/null 2>&1 || true
}

want image && image_test
want deb && deb_test
want kubernetes && kubernetes_test
want dockerfile && dockerfile_test
log "all requested parts passed: ${parts[*]}"

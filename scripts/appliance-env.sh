# Sourced by scripts/image.sh and scripts/appliance-test.sh: where buildah and podman keep
# their images (a private containers-storage with the vfs driver under target/appliance, so
# nothing needs overlay mounts and the machine's own storage is not touched), and the podman
# flags that work in a sandbox without CAP_SYS_RESOURCE and with hybrid cgroups.
APPLIANCE_DIR="$REPO/target/appliance"
mkdir -p "$APPLIANCE_DIR"
if [ -z "${CONTAINERS_STORAGE_CONF:-}" ]; then
    CONTAINERS_STORAGE_CONF="$APPLIANCE_DIR/storage.conf"
    cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "vfs"
graphroot = "$APPLIANCE_DIR/containers/storage"
runroot = "$APPLIANCE_DIR/containers/run"
CONF
fi
export CONTAINERS_STORAGE_CONF
# The same limits for what podman starts without a --ulimit flag (podman kube play).
if [ -z "${CONTAINERS_CONF:-}" ]; then
    CONTAINERS_CONF="$APPLIANCE_DIR/containers.conf"
    cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Sn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi
export CONTAINERS_CONF
# runc, not crun: crun refuses hybrid cgroup v1/v2 hosts ("cgroups in hybrid mode not
# supported"). Explicit ulimits: podman's defaults raise RLIMIT_NOFILE/NPROC above what a
# process without CAP_SYS_RESOURCE may set.
PODMAN=(podman --runtime runc)
PODMAN_RUN_LIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096)

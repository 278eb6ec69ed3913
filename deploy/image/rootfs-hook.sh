#!/bin/sh
# Finishes the idbridge image's root filesystem ($1), made by `mmdebstrap --variant=extract`
# (scripts/image.sh, deploy/Dockerfile): the packages were only unpacked (no maintainer
# scripts), so this does by hand what their scripts would have done that idbridge needs, and
# removes what it never uses.
# IDBRIDGE_KEEP_LIBS: the file names of the shared objects the binary loads (ldd, resolved);
# the other libraries in the library directories are removed, except glibc's own.
set -eu
root="$1"
uid=10001

# CA bundle, as update-ca-certificates writes it (outgoing TLS: LDAPS, IdP metadata, webhooks).
mkdir -p "$root/etc/ssl/certs"
cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"

# Users: root and the non-root user idbridge runs as (fixed uid/gid, so volumes and
# Kubernetes' runAsUser/fsGroup can name it).
cat >"$root/etc/passwd" <<PW
root:x:0:0:root:/root:/usr/sbin/nologin
idbridge:x:$uid:$uid:idbridge:/var/lib/idbridge:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PW
cat >"$root/etc/group" <<GR
root:x:0:
idbridge:x:$uid:
nogroup:x:65534:
GR
mkdir -p "$root/var/lib/idbridge" "$root/etc/idbridge" "$root/tmp" "$root/root"
chown "$uid:$uid" "$root/var/lib/idbridge"
chmod 0750 "$root/var/lib/idbridge"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

# Not needed at run time: package tooling (perl and debconf came in as ca-certificates'
# dependencies), the certificates' sources, docs.
rm -rf "$root"/usr/share/perl5 "$root"/usr/lib/x86_64-linux-gnu/perl-base "$root"/usr/bin/perl* \
    "$root"/usr/share/debconf "$root"/etc/debconf.conf "$root"/var/cache/debconf \
    "$root"/usr/bin/debconf* "$root"/usr/sbin/dpkg-* "$root"/usr/share/ca-certificates \
    "$root"/usr/sbin/update-ca-certificates "$root"/etc/ca-certificates* \
    "$root"/usr/bin/openssl "$root"/usr/lib/ssl/misc "$root"/usr/bin/c_rehash \
    "$root"/etc/apt "$root"/var/lib/apt "$root"/var/cache/apt "$root"/var/log/apt \
    "$root"/etc/dpkg "$root"/var/lib/dpkg "$root"/var/log/dpkg.log "$root"/var/cache/ldconfig \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale \
    "$root"/usr/share/lintian "$root"/usr/share/bug "$root"/usr/share/bash-completion \
    "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/fstab
# Libraries nothing loads: the other parts of the linked libraries' packages (libicu72 also
# ships i18n/io/test/tu, libxslt1.1 libexslt with libgcrypt). Of glibc's, those loaded by
# name at run time stay (NSS modules, libresolv, the compatibility stubs); its debugging and
# profiling helpers and libmvec go.
if [ -n "${IDBRIDGE_KEEP_LIBS:-}" ]; then
    for dir in "$root/lib/x86_64-linux-gnu" "$root/usr/lib/x86_64-linux-gnu"; do
        [ -d "$dir" ] || continue
        for f in "$dir"/lib*.so*; do
            [ -e "$f" ] || [ -L "$f" ] || continue
            name="$(basename "$(readlink -f "$f")")"
            case " $IDBRIDGE_KEEP_LIBS " in *" $name "*) continue ;; esac
            case "$name" in
            ld-linux* | libc.so* | libm.so* | libnss_* | libresolv* | libpthread* | libdl.* | \
                librt.* | libutil.* | libanl.*) continue ;;
            esac
            rm -f "$f"
        done
    done
fi
# ICU's data (31 MB, libicudata): replaced by a library with no data items (icudata-stub.c
# beside this script says why that is safe). glibc's iconv modules (8 MB) stay: libxml2 decodes
# UTF-8, UTF-16 and ISO-8859-1 itself and asks iconv, before ICU, for any other encoding.
# Needs a C compiler and nm (binutils) where the hook runs.
for data in "$root"/usr/lib/x86_64-linux-gnu/libicudata.so.*.*; do
    [ -f "$data" ] || continue
    entry="$(nm -D --defined-only "$data" | awk '$3 ~ /^icudt[0-9]+_dat$/ {print $3}')"
    soname="$(basename "$data" | sed 's/^\(libicudata\.so\.[0-9]*\).*/\1/')"
    [ -n "$entry" ] || { echo "rootfs-hook: no icudtNN_dat symbol in $data" >&2; exit 1; }
    ${CC:-cc} -O2 -ffreestanding -nostdlib -shared -fPIC -Wl,-soname,"$soname" \
        -DICUDATA_ENTRY="$entry" -o "$data.stub" "$(dirname "$0")/icudata-stub.c"
    mv -f "$data.stub" "$data"
done

# A rebuilt linker cache for the libraries that remain.
ldconfig -r "$root" 2>/dev/null || true
# Name lookups: /etc/hosts first (as in Debian), then DNS.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"

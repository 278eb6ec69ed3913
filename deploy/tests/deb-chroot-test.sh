#!/bin/sh
# Runs inside a clean mmdebstrap chroot (scripts/appliance-test.sh): install, upgrade and
# purge of the idbridge package. $1 and $2: the .deb files of revision 1 and 2 (in /tmp).
set -eu
old="$1"
new="$2"
step() { printf '[deb-chroot] %s\n' "$*"; }
fail() { printf '[deb-chroot] FAIL: %s\n' "$*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

step "apt install $old"
apt-get install -y -q --no-install-recommends "$old" >/tmp/apt-install.log 2>&1 ||
    { cat /tmp/apt-install.log; fail "apt install"; }
step "idbridge --version: $(idbridge --version)"
getent passwd idbridge >/dev/null || fail "no idbridge user"
uid="$(id -u idbridge)"
[ "$(getent passwd idbridge | cut -d: -f7)" = /usr/sbin/nologin ] || fail "idbridge has a login shell"
[ "$(stat -c '%U:%G %a' /var/lib/idbridge)" = "idbridge:idbridge 750" ] ||
    fail "/var/lib/idbridge is $(stat -c '%U:%G %a' /var/lib/idbridge)"
[ "$(stat -c '%U:%G %a' /etc/idbridge/idbridge.toml)" = "root:idbridge 640" ] ||
    fail "/etc/idbridge/idbridge.toml is $(stat -c '%U:%G %a' /etc/idbridge/idbridge.toml)"
dpkg-query -W -f='${Conffiles}\n' idbridge | grep -q '^ /etc/idbridge/idbridge.toml ' ||
    fail "idbridge.toml is not a conffile"
idbridge config check /etc/idbridge/idbridge.toml >/dev/null || fail "the shipped config does not check"
step "systemd-analyze verify"
# Strict: unknown keys and other problems that systemd only warns about fail the test too.
verify="$(systemd-analyze verify /lib/systemd/system/idbridge.service 2>&1)" ||
    fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
step "the idbridge user can make its store in /var/lib/idbridge"
runuser -u idbridge -- env IDBRIDGE_DATA_DIR=/var/lib/idbridge \
    idbridge --config /etc/idbridge/idbridge.toml api-key create --name deb-test >/dev/null ||
    fail "api-key create as idbridge"
systemctl enable idbridge.service >/dev/null 2>&1 || fail "systemctl enable"
[ -L /etc/systemd/system/multi-user.target.wants/idbridge.service ] || fail "not enabled"
echo "# edited by the admin" >>/etc/idbridge/idbridge.toml

step "upgrade to $new"
apt-get install -y -q --no-install-recommends "$new" >/tmp/apt-upgrade.log 2>&1 ||
    { cat /tmp/apt-upgrade.log; fail "apt upgrade"; }
[ "$(dpkg-query -W -f='${Version}' idbridge)" = "$(dpkg-deb -f "$new" Version)" ] || fail "not upgraded"
[ "$(id -u idbridge)" = "$uid" ] || fail "the user changed on upgrade"
tail -1 /etc/idbridge/idbridge.toml | grep -q "edited by the admin" || fail "the admin's edit was lost"
[ -L /etc/systemd/system/multi-user.target.wants/idbridge.service ] || fail "upgrade disabled the unit"
runuser -u idbridge -- env IDBRIDGE_DATA_DIR=/var/lib/idbridge \
    idbridge --config /etc/idbridge/idbridge.toml api-key list | grep -q deb-test ||
    fail "the data did not survive the upgrade"

step "apt purge"
apt-get purge -y -q idbridge >/tmp/apt-purge.log 2>&1 || { cat /tmp/apt-purge.log; fail "apt purge"; }
for p in /usr/bin/idbridge /lib/systemd/system/idbridge.service /etc/idbridge \
    /etc/systemd/system/multi-user.target.wants/idbridge.service \
    /var/lib/systemd/deb-systemd-helper-enabled/idbridge.service \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/idbridge.service; do
    [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p is left after purge"
done
dpkg-query -W -f='${db:Status-Abbrev}' idbridge 2>/dev/null | grep -q '^[up]n' ||
    [ -z "$(dpkg-query -W -f='${db:Status-Abbrev}' idbridge 2>/dev/null)" ] || fail "still known to dpkg"
[ -n "$(ls -A /var/lib/idbridge)" ] || fail "purge removed the data"
getent passwd idbridge >/dev/null || fail "purge removed the user that owns the kept data"
step "purge kept /var/lib/idbridge ($(ls /var/lib/idbridge | wc -l) entries) and the idbridge user, removed the rest"
step "reinstall after purge finds the data"
apt-get install -y -q --no-install-recommends "$new" >/tmp/apt-reinstall.log 2>&1 ||
    { cat /tmp/apt-reinstall.log; fail "apt reinstall"; }
runuser -u idbridge -- env IDBRIDGE_DATA_DIR=/var/lib/idbridge \
    idbridge --config /etc/idbridge/idbridge.toml api-key list | grep -q deb-test ||
    fail "the data is not readable after reinstall"
step "all passed"

# LDAP pull sync (crates/ldap): a private OpenLDAP slapd for the tests and the benchmark, and
# Samba AD DC for the Active Directory tests. Sourced by scripts/test-deps.sh.
if ! have slapd || ! have ldapsearch || ! have slapadd; then
    # Keep the package from configuring a system instance: tests run their own.
    echo 'slapd slapd/no_configuration boolean true' | $SUDO debconf-set-selections
fi
apt_ensure slapd ldap-utils
if [ "${IDBRIDGE_SKIP_SAMBA:-0}" != "1" ]; then
    apt_ensure samba samba-ad-dc samba-ad-provision ldb-tools
fi

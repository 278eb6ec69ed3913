//! idbridge-ldap

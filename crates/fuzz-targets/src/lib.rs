//! The bodies of idbridge's fuzz targets, shared by two callers: the libFuzzer binaries in
//! `fuzz/` (built and run by `scripts/fuzz.sh`, outside the workspace so `cargo test
//! --workspace` never builds libFuzzer) and this crate's `corpus` test, which replays every
//! target's corpus (`fuzz/corpus/<target>/`) through the same functions on every `cargo test`.
//!
//! Each target takes untrusted bytes the way the server receives them and panics only when
//! the property it guards is broken (a panic in the code under test is a finding too):
//! - `saml_gate`, `saml_verify`: the strict pre-gate, and the whole verify path on a fixed
//!   connection; a response that is not validly signed by the fixed IdP key never yields a
//!   profile ([`saml`]).
//! - `scim_filter`, `scim_patch`, `scim_resource`: the filter and PATCH path grammars
//!   (print → parse round-trips), PATCH application (atomic on error), resource validation
//!   ([`scim`]).
//! - `sftp_csv`: the WorkOS-format CSV reader ([`sftp_csv`]).
//! - `ldap_controls`, `ldap_message`: our strict control parsers, and ldap3's message decoder
//!   with every parser a decoded message meets ([`ldap`]).
//! - `api_json`: JSON (and form, query) request bodies of the admin, WorkOS and SCIM APIs
//!   through the full router in-process: never a 5xx ([`api`]).
//! - `saml_authn_request`: AuthnRequests received by the IdP side (both bindings) on a fixed
//!   SP that requires signatures: only requests its key signed are accepted ([`saml_idp`]).
//! - `forward_response`: a remote SCIM target's answers as the SCIM push forwarder classifies
//!   and reads them ([`forward_response`]).

#![forbid(unsafe_code)]
// A fuzz target reports a broken property by panicking: that is how libFuzzer sees a finding.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod forward_response;
pub mod ldap;
pub mod saml;
pub mod saml_idp;
pub mod scim;
pub mod sftp_csv;

/// A fuzz target: bytes in, a panic when its property is broken.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and corpus folder).
pub const TARGETS: &[(&str, Target)] = &[
    ("saml_gate", saml::saml_gate),
    ("saml_verify", saml::saml_verify),
    ("scim_filter", scim::scim_filter),
    ("scim_patch", scim::scim_patch),
    ("scim_resource", scim::scim_resource),
    ("sftp_csv", sftp_csv::sftp_csv),
    ("ldap_controls", ldap::ldap_controls),
    ("ldap_message", ldap::ldap_message),
    ("api_json", api::api_json),
    ("saml_authn_request", saml_idp::saml_authn_request),
    ("forward_response", forward_response::forward_response),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

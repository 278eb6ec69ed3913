//! idbridge-saml: a strict SAML 2.0 service provider (and a minimal IdP signer).
//!
//! The verifier follows `saml-security.md`: a strict pre-gate on the raw bytes ([`xml`],
//! [`gate`]), samael's xmlsec verifier in PreDigest mode with an algorithm allow-list, data read
//! only from the verified (pre-digest) bytes, our own decryption ([`decrypt`]) with the inner
//! signature verified, every policy rule, and a replay cache ([`ReplayCache`]).
//!
//! Entry points:
//! - [`verify_post_blocking`] / [`verify_post`] (async, `spawn_blocking` under a time budget)
//! - [`build_authn_request`], [`sp_metadata_xml`], [`decode_redirect_binding`]
//! - [`IdpSettings::from_metadata_xml`], [`SpKeyPair::generate`]
//! - [`AttributeMap::preset`], [`map_profile`]
//! - [`IdpSigner`] (signs and encrypts responses; `testkit` feature adds hostile options)
//! - [`idp`]: idbridge as the IdP — AuthnRequest parsing and policy, canonical signed
//!   Responses, IdP metadata, SP metadata import

#![forbid(unsafe_code)]

pub mod attributes;
pub mod decrypt;
pub mod error;
pub mod gate;
pub mod idp;
mod model;
pub mod settings;
pub mod slo;
pub mod sp;
pub mod verify;
pub mod xml;

pub use attributes::{map_profile, AttributeMap, SamlConnectionType};
pub use error::{DecryptError, GateViolation, PolicyViolation, SamlError, SignatureError};
pub use idp::IdpSigner;
pub use settings::{IdpSettings, SpKeyPair, SpSettings};
pub use slo::{verify_slo_post, verify_slo_redirect, SloContext, SloMessage, SloViolation};
pub use sp::{
    build_authn_request, build_logout_request, decode_redirect_binding, sp_metadata_xml,
    AuthnRedirect, LogoutRedirect, LogoutSubject,
};
pub use verify::{
    relay_state_redirect, verify_post, verify_post_blocking, MemoryReplayCache, ReplayCache,
    ResponseContext, VerifiedAssertion,
};

/// Test IdP helpers for this crate's tests and the later end-to-end tests.
#[cfg(feature = "testkit")]
pub mod testkit {
    pub use crate::idp::*;
}

//! Errors of the IdP side. A request that fails before its service provider and ACS are
//! trusted must end on an error page of ours (never a POST to a URL taken from the request);
//! once both are trusted, the failure can go back to the SP as a SAML error Response
//! ([`IdpError::RespondToSp`]).

use crate::error::{GateViolation, SignatureError};
use thiserror::Error;

/// SAML top-level and second-level status codes (SAML core §3.2.2.2).
pub mod status {
    pub const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
    pub const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
    pub const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    pub const VERSION_MISMATCH: &str = "urn:oasis:names:tc:SAML:2.0:status:VersionMismatch";
    pub const AUTHN_FAILED: &str = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed";
    pub const INVALID_NAME_ID_POLICY: &str =
        "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";
    pub const NO_AUTHN_CONTEXT: &str = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext";
    pub const NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
    pub const REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
    pub const REQUEST_UNSUPPORTED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestUnsupported";
}

/// Everything that can go wrong on the IdP side.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdpError {
    /// The raw message failed the structural gate (size, inflate ratio, DTD, depth, shape).
    #[error("AuthnRequest rejected by the pre-gate: {0}")]
    Gate(#[from] GateViolation),
    /// The request breaks a protocol or policy rule.
    #[error("AuthnRequest refused: {0}")]
    Request(#[from] RequestViolation),
    /// The request's signature is malformed or does not verify with the SP's certificate(s).
    #[error("AuthnRequest signature: {0}")]
    Signature(#[from] SignatureError),
    /// The request id was already answered.
    #[error("AuthnRequest id was already used (replayed request)")]
    Replay,
    /// The replay cache could not be consulted; fail closed.
    #[error("replay cache unavailable: {0}")]
    ReplayCache(String),
    /// The SP and its ACS are trusted, but the request cannot be honoured: answer the SP with a
    /// SAML error Response built by [`crate::idp::response::build_status_response`].
    #[error("AuthnRequest cannot be honoured ({}): {}", .0.status_detail(), .0.message)]
    RespondToSp(Box<SpErrorResponse>),
    /// Settings we refuse to run with (no ACS, a key that does not match its certificate...).
    #[error("configuration: {0}")]
    Config(String),
    /// Metadata we cannot use.
    #[error("metadata: {0}")]
    Metadata(String),
    /// Building an outgoing message failed (a value XML cannot carry, a crypto failure).
    #[error("building a message failed: {0}")]
    Build(String),
}

impl IdpError {
    pub(crate) fn build(e: impl std::fmt::Display) -> Self {
        IdpError::Build(e.to_string())
    }
}

impl From<super::c14n::InvalidXmlChar> for IdpError {
    fn from(e: super::c14n::InvalidXmlChar) -> Self {
        IdpError::Build(e.to_string())
    }
}

/// A failure that may be reported to the SP's (registered) ACS as a SAML error Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpErrorResponse {
    /// The SP entity id (the Response's audience; not part of an error Response's XML).
    pub sp_entity_id: String,
    /// The registered ACS URL to POST the error Response to.
    pub acs_url: String,
    /// The request's ID; empty for an unsolicited (IdP-initiated) answer, which then carries
    /// no InResponseTo.
    pub in_response_to: String,
    /// Top-level status code ([`status::REQUESTER`] or [`status::RESPONDER`]).
    pub status: &'static str,
    /// Second-level status code, when one fits.
    pub sub_status: Option<&'static str>,
    /// StatusMessage for the SP's logs (no secrets, no user input echoed unbounded).
    pub message: String,
    /// RelayState to return with it.
    pub relay_state: Option<String>,
}

impl SpErrorResponse {
    fn status_detail(&self) -> &'static str {
        self.sub_status.unwrap_or(self.status)
    }
}

/// AuthnRequest rules, each its own variant so tests and logs can tell them apart.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestViolation {
    #[error("query parameter {0} appears more than once")]
    DuplicateParameter(&'static str),
    #[error("query parameter {0} is missing")]
    MissingParameter(&'static str),
    #[error("query parameter {0} is not valid percent-encoding of UTF-8")]
    BadParameterEncoding(&'static str),
    #[error("Signature without SigAlg (or SigAlg without Signature)")]
    IncompleteSignatureParameters,
    #[error("signature algorithm {0} is not allowed (RSA/ECDSA with SHA-256 or stronger; SHA-1 only when enabled for the SP)")]
    SignatureAlgorithm(String),
    #[error("the AuthnRequest is signed but no signing certificate is registered for this service provider: import its metadata or add its certificate")]
    SignedWithoutCertificate,
    #[error("the SP requires signed AuthnRequests and this one is not signed")]
    Unsigned,
    #[error("AuthnRequest has no Issuer: the service provider cannot be identified")]
    MissingIssuer,
    #[error("Issuer Format must be the entity format")]
    IssuerFormat,
    #[error("the Issuer is not a registered service provider")]
    UnknownServiceProvider,
    #[error("Version must be 2.0")]
    Version,
    #[error("required attribute {0} is missing or invalid")]
    Invalid(&'static str),
    #[error("IssueInstant is in the future (beyond the allowed clock skew)")]
    IssueInstantInFuture,
    #[error("IssueInstant is too old")]
    IssueInstantTooOld,
    #[error("Destination is not this IdP's SSO endpoint")]
    DestinationMismatch,
    #[error("a signed AuthnRequest must carry a Destination (bindings §3.4.5.2, §3.5.5.2)")]
    MissingDestination,
    #[error("AssertionConsumerServiceURL is not registered for this service provider")]
    AcsNotRegistered,
    #[error("AssertionConsumerServiceIndex {0} is not registered for this service provider")]
    AcsIndexNotRegistered(u16),
    #[error(
        "AssertionConsumerServiceURL and AssertionConsumerServiceIndex are mutually exclusive"
    )]
    AcsUrlAndIndex,
    #[error("the service provider has no HTTP-POST AssertionConsumerService registered")]
    NoAcs,
    #[error("ProtocolBinding {0} is not supported (responses are sent with HTTP-POST)")]
    UnsupportedBinding(String),
    #[error("unexpected element {0} in the AuthnRequest")]
    UnexpectedElement(String),
    #[error("RelayState is longer than {0} bytes or contains control characters")]
    RelayState(usize),
}

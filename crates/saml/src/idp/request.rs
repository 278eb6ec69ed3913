//! AuthnRequests received by our IdP, in two steps:
//!
//! 1. [`ReceivedRequest::from_redirect_query`] / [`ReceivedRequest::from_post`]: decode the
//!    binding under hard caps (size, inflate ratio), parse with the strict reader (no DTD,
//!    entities or PIs; bounded depth), gate the shape. Its [`ReceivedRequest::issuer`] is
//!    unverified and serves only to look up the registered service provider.
//! 2. [`ReceivedRequest::accept`] with that SP's registered settings: the signature (the
//!    query-string signature of the Redirect binding over the octets as received, and/or an
//!    enveloped XML signature) is verified with the SP's registered certificates only — never a
//!    key from the message — and an algorithm allow-list; then every
//!    rule (issuer, version, destination, IssueInstant window, ACS registered, binding, NameID
//!    policy) and finally the request id goes into the replay cache (single use).
//!
//! The ACS in an [`AcceptedRequest`] always comes from the registry: a URL in the request is
//! only used to pick one of the registered ones.

use super::error::{status, IdpError, RequestViolation, SpErrorResponse};
use super::metadata::{AcsEndpoint, SpMetadata};
use super::response::name_id_format;
use crate::error::{GateViolation, SignatureError};
use crate::gate::{self, ECDSA_SHA256, ECDSA_SHA384, ECDSA_SHA512, RSA_SHA1};
use crate::gate::{RSA_SHA256, RSA_SHA384, RSA_SHA512};
use crate::model::parse_time;
use crate::settings::BINDING_POST;
use crate::verify::{check_relay_state, parse_verified, replay_key, verify_signatures};
use crate::verify::{ReplayCache, MAX_RELAY_STATE};
use crate::xml::{self, Element, Limits, NS_ASSERTION, NS_PROTOCOL};
use chrono::{DateTime, Utc};
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::sign::Verifier;
use openssl::x509::X509;
use samael::crypto::CertificateDer;
use std::time::Duration;

/// Caps for an AuthnRequest: real ones are well under 4 KiB.
pub const REQUEST_LIMITS: Limits = Limits {
    max_bytes: 64 * 1024,
    max_depth: 12,
    max_elements: 256,
    max_attributes: 24,
    max_namespace_decls: 32,
};
/// Largest `SAMLRequest` form value of the POST binding.
pub const MAX_POST_REQUEST_B64: usize = REQUEST_LIMITS.max_bytes / 3 * 4 + 4;
/// Largest raw query string of the Redirect binding.
pub const MAX_REDIRECT_QUERY: usize = 96 * 1024;
/// Default clock skew for IssueInstant.
pub const DEFAULT_REQUEST_SKEW: Duration = Duration::from_secs(120);
/// Default maximum age of an AuthnRequest (beyond the skew): a browser round trip.
pub const DEFAULT_REQUEST_MAX_AGE: Duration = Duration::from_secs(300);

const ISSUER_FORMAT_ENTITY: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";

/// How the request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Redirect,
    Post,
}

/// The query-string signature of the Redirect binding.
#[derive(Debug, Clone)]
struct QuerySignature {
    sig_alg: String,
    signature: Vec<u8>,
    /// `SAMLRequest=..[&RelayState=..]&SigAlg=..` exactly as received (still URL-encoded).
    signed_octets: String,
}

/// A decoded, gated, not yet trusted AuthnRequest.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    binding: Binding,
    xml: String,
    tree: Element,
    id: String,
    issuer: Option<String>,
    relay_state: Option<String>,
    query_signature: Option<QuerySignature>,
    xml_signed: bool,
}

/// What a registered service provider allows (the SSO crate fills it from its registry).
#[derive(Debug, Clone)]
pub struct RegisteredSp {
    pub entity_id: String,
    /// Registered ACS endpoints; only HTTP-POST ones are ever used.
    pub acs: Vec<AcsEndpoint>,
    /// Certificates that verify the SP's signed requests (two during a rollover).
    pub signing_certs: Vec<X509>,
    /// Refuse unsigned requests.
    pub require_signed_requests: bool,
    /// Accept rsa-sha1 request signatures (off unless an admin turns it on).
    pub allow_sha1: bool,
    /// The NameID format this SP gets.
    pub name_id_format: String,
}

impl RegisteredSp {
    /// Settings from SP metadata: its ACS endpoints and signing certificates; signed requests
    /// are required when the metadata says `AuthnRequestsSigned="true"`; NameID format:
    /// `name_id_format` (the admin's choice).
    pub fn from_metadata(m: &SpMetadata, name_id_format: impl Into<String>) -> Self {
        Self {
            entity_id: m.entity_id.clone(),
            acs: m.acs.clone(),
            signing_certs: m.signing_certs.clone(),
            require_signed_requests: m.authn_requests_signed,
            allow_sha1: false,
            name_id_format: name_id_format.into(),
        }
    }

    /// The ACS used when the request names none: the HTTP-POST endpoint marked `isDefault`,
    /// else the first HTTP-POST one.
    pub fn default_acs(&self) -> Option<&AcsEndpoint> {
        let post = || self.acs.iter().filter(|a| a.binding == BINDING_POST);
        post().find(|a| a.is_default).or_else(|| post().next())
    }
}

/// Where and when the request is being processed.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    /// Our SSO endpoint URLs; a Destination must equal one of them.
    pub sso_urls: &'a [&'a str],
    pub now: DateTime<Utc>,
    /// Allowed clock skew (both directions).
    pub clock_skew: Duration,
    /// How old IssueInstant may be, beyond the skew.
    pub max_age: Duration,
}

impl<'a> RequestContext<'a> {
    /// Default windows (120 s skew, 300 s age).
    pub fn new(sso_urls: &'a [&'a str], now: DateTime<Utc>) -> Self {
        Self {
            sso_urls,
            now,
            clock_skew: DEFAULT_REQUEST_SKEW,
            max_age: DEFAULT_REQUEST_MAX_AGE,
        }
    }
}

/// `RequestedAuthnContext` comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Exact,
    Minimum,
    Maximum,
    Better,
}

/// The authentication context the SP asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedAuthnContext {
    pub comparison: Comparison,
    pub class_refs: Vec<String>,
    pub decl_refs: Vec<String>,
}

impl RequestedAuthnContext {
    /// Whether a login with context class `class` satisfies the request. We rank no classes,
    /// so `exact`, `minimum` and `maximum` are satisfied by a listed class and `better` never.
    pub fn satisfied_by(&self, class: &str) -> bool {
        match self.comparison {
            Comparison::Better => false,
            _ => self.class_refs.iter().any(|c| c == class),
        }
    }
}

/// A verified, policy-checked AuthnRequest.
#[derive(Debug, Clone)]
pub struct AcceptedRequest {
    pub id: String,
    pub issuer: String,
    pub issue_instant: DateTime<Utc>,
    pub binding: Binding,
    /// The request was signed and the signature verified.
    pub signed: bool,
    /// The registered ACS endpoint to answer (HTTP-POST).
    pub acs: AcsEndpoint,
    pub destination: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    /// The NameID format to issue (the SP's configured one).
    pub name_id_format: String,
    pub requested_authn_context: Option<RequestedAuthnContext>,
    /// `Subject/NameID` of the request: a login hint, never proof of anything.
    pub subject_hint: Option<String>,
    pub provider_name: Option<String>,
    /// RelayState as received (length- and character-checked), to return unchanged.
    pub relay_state: Option<String>,
}

impl AcceptedRequest {
    /// An error to send back to the SP's ACS (e.g. `status::RESPONDER` + `status::NO_PASSIVE`
    /// when `is_passive` and there is no session, or `status::AUTHN_FAILED`).
    pub fn error_response(
        &self,
        status: &'static str,
        sub_status: Option<&'static str>,
        message: impl Into<String>,
    ) -> SpErrorResponse {
        SpErrorResponse {
            sp_entity_id: self.issuer.clone(),
            acs_url: self.acs.location.clone(),
            in_response_to: self.id.clone(),
            status,
            sub_status,
            message: message.into(),
            relay_state: self.relay_state.clone(),
        }
    }
}

/// The raw query parameters we read, each at most once.
#[derive(Default)]
struct QueryParams<'a> {
    saml_request: Option<&'a str>,
    relay_state: Option<&'a str>,
    sig_alg: Option<&'a str>,
    signature: Option<&'a str>,
}

pub(crate) fn decode_param(raw: &str, name: &'static str) -> Result<String, RequestViolation> {
    // application/x-www-form-urlencoded: `+` is a space, then percent-decoding, UTF-8.
    let plus = raw.replace('+', " ");
    let bytes: Vec<u8> =
        percent_decode(plus.as_bytes()).ok_or(RequestViolation::BadParameterEncoding(name))?;
    String::from_utf8(bytes).map_err(|_| RequestViolation::BadParameterEncoding(name))
}

fn percent_decode(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn split_query(raw_query: &str) -> Result<QueryParams<'_>, RequestViolation> {
    let mut p = QueryParams::default();
    for pair in raw_query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, name) = match k {
            "SAMLRequest" => (&mut p.saml_request, "SAMLRequest"),
            "RelayState" => (&mut p.relay_state, "RelayState"),
            "SigAlg" => (&mut p.sig_alg, "SigAlg"),
            "Signature" => (&mut p.signature, "Signature"),
            // Other parameters (our own routing, tracking) are not part of the binding.
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(RequestViolation::DuplicateParameter(name));
        }
    }
    Ok(p)
}

fn child_text(e: &Element, ns: &str, local: &str) -> Option<String> {
    e.child(ns, local).map(|c| c.text().trim().to_owned())
}

fn xs_bool(e: &Element, name: &'static str) -> Result<bool, RequestViolation> {
    match e.attr(name).map(str::trim) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(RequestViolation::Invalid(name)),
    }
}

fn read_issuer(root: &Element) -> Result<Option<String>, RequestViolation> {
    let issuers: Vec<&Element> = root.children_named(NS_ASSERTION, "Issuer").collect();
    match issuers.as_slice() {
        [] => Ok(None),
        [i] => {
            if i.attr("Format")
                .is_some_and(|f| f.trim() != ISSUER_FORMAT_ENTITY)
            {
                return Err(RequestViolation::IssuerFormat);
            }
            Ok(Some(i.text().trim().to_owned()).filter(|s| !s.is_empty()))
        }
        _ => Err(RequestViolation::Invalid("Issuer")),
    }
}

impl ReceivedRequest {
    /// The HTTP-Redirect binding: `raw_query` is the request's query string exactly as received
    /// (after `?`, still URL-encoded) — the signature covers those octets.
    pub fn from_redirect_query(raw_query: &str) -> Result<Self, IdpError> {
        if raw_query.len() > MAX_REDIRECT_QUERY {
            return Err(GateViolation::TooLarge {
                limit: MAX_REDIRECT_QUERY,
            }
            .into());
        }
        let p = split_query(raw_query)?;
        let raw_request = p
            .saml_request
            .ok_or(RequestViolation::MissingParameter("SAMLRequest"))?;
        let request_b64 = decode_param(raw_request, "SAMLRequest")?;
        let relay_state = p
            .relay_state
            .map(|r| decode_param(r, "RelayState"))
            .transpose()?;
        let query_signature = match (p.sig_alg, p.signature) {
            (None, None) => None,
            (Some(alg), Some(sig)) => {
                let mut signed_octets = String::with_capacity(raw_query.len());
                signed_octets.push_str("SAMLRequest=");
                signed_octets.push_str(raw_request);
                if let Some(rs) = p.relay_state {
                    signed_octets.push_str("&RelayState=");
                    signed_octets.push_str(rs);
                }
                signed_octets.push_str("&SigAlg=");
                signed_octets.push_str(alg);
                let signature = xml::decode_base64_lenient(&decode_param(sig, "Signature")?)?;
                Some(QuerySignature {
                    sig_alg: decode_param(alg, "SigAlg")?,
                    signature,
                    signed_octets,
                })
            }
            _ => return Err(RequestViolation::IncompleteSignatureParameters.into()),
        };
        let xml = crate::sp::decode_redirect_binding(&request_b64)?;
        let mut r = Self::parse(Binding::Redirect, xml, relay_state)?;
        r.query_signature = query_signature;
        Ok(r)
    }

    /// The HTTP-POST binding: the `SAMLRequest` and `RelayState` form values.
    pub fn from_post(saml_request_b64: &str, relay_state: Option<&str>) -> Result<Self, IdpError> {
        if saml_request_b64.len() > MAX_POST_REQUEST_B64 {
            return Err(GateViolation::TooLarge {
                limit: MAX_POST_REQUEST_B64,
            }
            .into());
        }
        let raw = xml::decode_base64_lenient(saml_request_b64)?;
        let xml = String::from_utf8(raw).map_err(|_| GateViolation::NotUtf8)?;
        Self::parse(Binding::Post, xml, relay_state.map(str::to_owned))
    }

    fn parse(binding: Binding, xml: String, relay_state: Option<String>) -> Result<Self, IdpError> {
        let relay_state = check_relay_state(relay_state.as_deref())
            .map_err(|_| RequestViolation::RelayState(MAX_RELAY_STATE))?;
        let tree = xml::parse(&xml, &REQUEST_LIMITS)?;
        // Structure only here; the SP's algorithm policy is applied in `accept`.
        let (id, sig) = gate::check_authn_request(&tree, true)?;
        let xml_signed = sig.is_some();
        let issuer = read_issuer(&tree)?;
        Ok(Self {
            binding,
            xml,
            tree,
            id,
            issuer,
            relay_state,
            query_signature: None,
            xml_signed,
        })
    }

    /// The request's Issuer, UNVERIFIED: use it only to look up the registered SP, then call
    /// [`ReceivedRequest::accept`] with that SP.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The request ID (unverified).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How the request arrived.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// RelayState (checked for length and control characters, otherwise untrusted).
    pub fn relay_state(&self) -> Option<&str> {
        self.relay_state.as_deref()
    }

    /// Whether the request carries a signature (not yet verified).
    pub fn is_signed(&self) -> bool {
        self.xml_signed || self.query_signature.is_some()
    }

    /// Verify and check the request against the registered `sp`, then consume its id.
    #[tracing::instrument(skip_all, fields(sp = %sp.entity_id, binding = ?self.binding))]
    pub fn accept(
        self,
        sp: &RegisteredSp,
        ctx: &RequestContext<'_>,
        replay: &dyn ReplayCache,
    ) -> Result<AcceptedRequest, IdpError> {
        let result = self.accept_inner(sp, ctx, replay);
        match &result {
            Ok(a) => tracing::debug!(request_id = %a.id, "AuthnRequest accepted"),
            Err(e) => tracing::warn!(error = %e, "AuthnRequest refused"),
        }
        result
    }

    fn accept_inner(
        self,
        sp: &RegisteredSp,
        ctx: &RequestContext<'_>,
        replay: &dyn ReplayCache,
    ) -> Result<AcceptedRequest, IdpError> {
        if sp.entity_id.trim().is_empty() {
            return Err(IdpError::Config("the SP's entity id is empty".into()));
        }
        match &self.issuer {
            None => return Err(RequestViolation::MissingIssuer.into()),
            Some(i) if *i != sp.entity_id => {
                return Err(RequestViolation::UnknownServiceProvider.into())
            }
            Some(_) => {}
        }

        // Signatures first: nothing below reads unverified data of a signed request. The query
        // signature covers the whole deflated message; an enveloped XML signature (the POST
        // binding's, and some SPs — Ory Polis — put one in Redirect requests too) is verified
        // with xmlsec and the data is then read from the verified bytes only.
        let mut signed = false;
        if let Some(qs) = &self.query_signature {
            verify_query_signature(qs, sp)?;
            signed = true;
        }
        let verified_tree;
        let req: &Element = if self.xml_signed {
            // Re-gate with the SP's algorithm policy, then xmlsec with its certificates.
            gate::check_authn_request(&self.tree, sp.allow_sha1)?;
            if sp.signing_certs.is_empty() {
                return Err(RequestViolation::SignedWithoutCertificate.into());
            }
            let certs = sp
                .signing_certs
                .iter()
                .map(|c| c.to_der().map(CertificateDer::from))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| IdpError::Config(format!("certificate encoding: {e}")))?;
            let pre = verify_signatures(&self.xml, &certs, sp.allow_sha1)?;
            verified_tree = parse_verified(&pre, NS_PROTOCOL, "AuthnRequest", &self.id)
                .map_err(|_| SignatureError::VerifiedElementMismatch)?;
            // The verified bytes must name the same issuer we looked the SP up by.
            if read_issuer(&verified_tree)? != self.issuer {
                return Err(SignatureError::VerifiedElementMismatch.into());
            }
            signed = true;
            &verified_tree
        } else {
            &self.tree
        };
        if !signed && sp.require_signed_requests {
            return Err(RequestViolation::Unsigned.into());
        }

        if req.attr("Version") != Some("2.0") {
            return Err(RequestViolation::Version.into());
        }
        let issue_instant = req
            .attr("IssueInstant")
            .and_then(parse_time)
            .ok_or(RequestViolation::Invalid("IssueInstant"))?;
        let skew = chrono::Duration::from_std(ctx.clock_skew).unwrap_or(chrono::Duration::MAX);
        let max_age = chrono::Duration::from_std(ctx.max_age).unwrap_or(chrono::Duration::MAX);
        if issue_instant > ctx.now + skew {
            return Err(RequestViolation::IssueInstantInFuture.into());
        }
        if issue_instant < ctx.now - skew - max_age {
            return Err(RequestViolation::IssueInstantTooOld.into());
        }
        let destination = req.attr("Destination").map(|d| d.trim().to_owned());
        match &destination {
            Some(d) if !ctx.sso_urls.iter().any(|u| u == d) => {
                return Err(RequestViolation::DestinationMismatch.into())
            }
            None if signed => return Err(RequestViolation::MissingDestination.into()),
            _ => {}
        }
        if let Some(b) = req.attr("ProtocolBinding") {
            if b.trim() != BINDING_POST {
                return Err(RequestViolation::UnsupportedBinding(b.trim().to_owned()).into());
            }
        }
        let acs = resolve_acs(req, sp)?;
        for c in req.elements() {
            let known = c.is(NS_ASSERTION, "Issuer")
                || c.is(crate::xml::NS_DSIG, "Signature")
                || [
                    "Extensions",
                    "NameIDPolicy",
                    "RequestedAuthnContext",
                    "Scoping",
                ]
                .iter()
                .any(|l| c.is(NS_PROTOCOL, l))
                || c.is(NS_ASSERTION, "Subject")
                || c.is(NS_ASSERTION, "Conditions");
            if !known {
                return Err(RequestViolation::UnexpectedElement(c.local.clone()).into());
            }
        }
        let force_authn = xs_bool(req, "ForceAuthn")?;
        let is_passive = xs_bool(req, "IsPassive")?;
        let requested_authn_context = read_requested_context(req)?;
        let subject_hint = req
            .child(NS_ASSERTION, "Subject")
            .and_then(|s| child_text(s, NS_ASSERTION, "NameID"))
            .filter(|s| !s.is_empty());

        // From here on the SP and its ACS are trusted: failures go back to the SP.
        let respond = |sub: &'static str, message: String| {
            IdpError::RespondToSp(Box::new(SpErrorResponse {
                sp_entity_id: sp.entity_id.clone(),
                acs_url: acs.location.clone(),
                in_response_to: self.id.clone(),
                status: status::REQUESTER,
                sub_status: Some(sub),
                message,
                relay_state: self.relay_state.clone(),
            }))
        };
        if let Some(policy) = req.child(NS_PROTOCOL, "NameIDPolicy") {
            if let Some(f) = policy.attr("Format").map(str::trim) {
                if f != name_id_format::UNSPECIFIED && f != sp.name_id_format {
                    return Err(respond(
                        status::INVALID_NAME_ID_POLICY,
                        format!(
                            "NameID format {f} is not available; this IdP issues {}",
                            sp.name_id_format
                        ),
                    ));
                }
            }
        }

        let expires = issue_instant + skew + max_age;
        let fresh = replay
            .insert_if_absent(
                &replay_key("q", &sp.entity_id, &self.id),
                expires.timestamp_millis(),
            )
            .map_err(IdpError::ReplayCache)?;
        if !fresh {
            return Err(IdpError::Replay);
        }
        Ok(AcceptedRequest {
            id: self.id.clone(),
            issuer: sp.entity_id.clone(),
            issue_instant,
            binding: self.binding,
            signed,
            acs,
            destination,
            force_authn,
            is_passive,
            name_id_format: sp.name_id_format.clone(),
            requested_authn_context,
            subject_hint,
            provider_name: req.attr("ProviderName").map(str::to_owned),
            relay_state: self.relay_state.clone(),
        })
    }
}

/// Pick the registered ACS the request asks for (by URL or by index), else the default.
fn resolve_acs(req: &Element, sp: &RegisteredSp) -> Result<AcsEndpoint, IdpError> {
    let url = req
        .attr("AssertionConsumerServiceURL")
        .map(|u| u.trim().to_owned());
    let index = match req.attr("AssertionConsumerServiceIndex") {
        None => None,
        Some(i) => Some(
            i.trim()
                .parse::<u16>()
                .map_err(|_| RequestViolation::Invalid("AssertionConsumerServiceIndex"))?,
        ),
    };
    let post = |a: &&AcsEndpoint| a.binding == BINDING_POST;
    let acs = match (url, index) {
        (Some(_), Some(_)) => return Err(RequestViolation::AcsUrlAndIndex.into()),
        (Some(u), None) => sp
            .acs
            .iter()
            .filter(post)
            .find(|a| a.location == u)
            .ok_or(RequestViolation::AcsNotRegistered)?,
        (None, Some(i)) => sp
            .acs
            .iter()
            .filter(post)
            .find(|a| a.index == Some(i))
            .ok_or(RequestViolation::AcsIndexNotRegistered(i))?,
        (None, None) => sp.default_acs().ok_or(RequestViolation::NoAcs)?,
    };
    Ok(acs.clone())
}

fn read_requested_context(req: &Element) -> Result<Option<RequestedAuthnContext>, IdpError> {
    let Some(rac) = req.child(NS_PROTOCOL, "RequestedAuthnContext") else {
        return Ok(None);
    };
    let comparison = match rac.attr("Comparison").map(str::trim) {
        None | Some("exact") => Comparison::Exact,
        Some("minimum") => Comparison::Minimum,
        Some("maximum") => Comparison::Maximum,
        Some("better") => Comparison::Better,
        Some(_) => return Err(RequestViolation::Invalid("Comparison").into()),
    };
    let texts = |local: &str| -> Vec<String> {
        rac.children_named(NS_ASSERTION, local)
            .map(|e| e.text().trim().to_owned())
            .collect()
    };
    Ok(Some(RequestedAuthnContext {
        comparison,
        class_refs: texts("AuthnContextClassRef"),
        decl_refs: texts("AuthnContextDeclRef"),
    }))
}

/// The digest of an allowed query-signature algorithm, and whether it is ECDSA.
pub(crate) fn query_alg(
    alg: &str,
    allow_sha1: bool,
) -> Result<(MessageDigest, bool), RequestViolation> {
    Ok(match alg {
        RSA_SHA256 => (MessageDigest::sha256(), false),
        RSA_SHA384 => (MessageDigest::sha384(), false),
        RSA_SHA512 => (MessageDigest::sha512(), false),
        RSA_SHA1 if allow_sha1 => (MessageDigest::sha1(), false),
        ECDSA_SHA256 => (MessageDigest::sha256(), true),
        ECDSA_SHA384 => (MessageDigest::sha384(), true),
        ECDSA_SHA512 => (MessageDigest::sha512(), true),
        other => return Err(RequestViolation::SignatureAlgorithm(other.to_owned())),
    })
}

/// XML-DSig 1.1 carries ECDSA signatures as r ‖ s; OpenSSL wants DER.
pub(crate) fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let sig =
        EcdsaSig::from_private_components(BigNum::from_slice(r).ok()?, BigNum::from_slice(s).ok()?)
            .ok()?;
    sig.to_der().ok()
}

pub(crate) fn verify_with(key: &PKey<Public>, md: MessageDigest, data: &[u8], sig: &[u8]) -> bool {
    Verifier::new(md, key)
        .and_then(|mut v| v.verify_oneshot(sig, data))
        .unwrap_or(false)
}

fn verify_query_signature(qs: &QuerySignature, sp: &RegisteredSp) -> Result<(), IdpError> {
    let (md, ecdsa) = query_alg(&qs.sig_alg, sp.allow_sha1)?;
    if sp.signing_certs.is_empty() {
        return Err(RequestViolation::SignedWithoutCertificate.into());
    }
    let data = qs.signed_octets.as_bytes();
    let ok = sp.signing_certs.iter().any(|cert| {
        let Ok(key) = cert.public_key() else {
            return false;
        };
        match (ecdsa, key.id()) {
            (false, Id::RSA) => verify_with(&key, md, data, &qs.signature),
            (true, Id::EC) => {
                ecdsa_der(&qs.signature).is_some_and(|der| verify_with(&key, md, data, &der))
            }
            _ => false,
        }
    });
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Invalid(
            "the query signature does not verify with the SP's registered certificate(s)".into(),
        )
        .into())
    }
}

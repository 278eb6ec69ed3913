//! The ACS verifier: gate, verify (xmlsec, PreDigest, allow-list), decrypt, read only the
//! verified bytes, apply policy, consume the assertion id.

use crate::decrypt::decrypt_assertion;
use crate::error::{GateViolation, PolicyViolation, SamlError, SignatureError};
use crate::gate::{self, AssertionShape};
use crate::model::{AssertionData, Envelope, CM_BEARER, STATUS_SUCCESS};
use crate::settings::{IdpSettings, SpSettings, MAX_CLOCK_SKEW};
use crate::xml::{self, Element, Limits, NS_ASSERTION, NS_PROTOCOL};
use chrono::{DateTime, Utc};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest accepted base64 SAMLResponse (before any decoding work).
pub const MAX_RESPONSE_B64: usize = Limits::MESSAGE.max_bytes / 3 * 4 + 4096;
/// Largest accepted RelayState (SAML says 80 bytes; real IdPs send more, but not much more).
pub const MAX_RELAY_STATE: usize = 1024;
/// Default time budget for one verification on the blocking pool.
pub const DEFAULT_VERIFY_BUDGET: Duration = Duration::from_secs(2);

/// Single-use keys with an expiry; the store implements it, [`MemoryReplayCache`] is for tests.
pub trait ReplayCache: Send + Sync {
    /// Insert `key` unless present. `Ok(true)` = inserted (first use), `Ok(false)` = replay.
    /// Keys are opaque, bounded-length strings (`saml-a:<hex>` for assertion ids scoped to the
    /// issuer, `saml-r:<hex>` for answered request ids); keep each until `expires_at_ms`.
    fn insert_if_absent(&self, key: &str, expires_at_ms: i64) -> Result<bool, String>;
}

/// In-memory replay cache (tests, single-process tools).
#[derive(Debug, Default)]
pub struct MemoryReplayCache {
    entries: Mutex<HashMap<String, i64>>,
}

impl MemoryReplayCache {
    /// Empty cache.
    pub fn new() -> Self {
        Self::default()
    }
    /// Drop entries that expired before `now_ms`.
    pub fn purge(&self, now_ms: i64) {
        if let Ok(mut m) = self.entries.lock() {
            m.retain(|_, exp| *exp >= now_ms);
        }
    }
    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayCache for MemoryReplayCache {
    fn insert_if_absent(&self, key: &str, expires_at_ms: i64) -> Result<bool, String> {
        let mut m = self.entries.lock().map_err(|_| "poisoned".to_owned())?;
        if m.contains_key(key) {
            return Ok(false);
        }
        m.insert(key.to_owned(), expires_at_ms);
        Ok(true)
    }
}

/// What the caller expects of this response.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// The AuthnRequest id we issued to this browser; `None` = IdP-initiated.
    pub expected_in_response_to: Option<String>,
    /// The current time (injected so every boundary is testable).
    pub now: DateTime<Utc>,
}

/// The result of a successful verification, built only from verified bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifiedAssertion {
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    /// Attribute name → values (values in the order received).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// FriendlyName → Name, for attributes sent with a FriendlyName (a map may name either).
    #[serde(default)]
    pub friendly_names: BTreeMap<String, String>,
    pub in_response_to: Option<String>,
    pub assertion_id: String,
    /// The bearer SubjectConfirmationData NotOnOrAfter.
    pub not_on_or_after: DateTime<Utc>,
    /// RelayState as posted (length- and character-checked, otherwise untrusted).
    pub relay_state: Option<String>,
    pub response_signed: bool,
    pub assertion_signed: bool,
    pub encrypted: bool,
}

const ALLOWED_ALGS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Verify every signature in `xml` with xmlsec and return the pre-digest bytes of the signed
/// element. samael's allow-list has no SHA-1 entry, so with `allow_sha1` we pass none and rely
/// on our gate's allow-list (which already ran).
pub(crate) fn verify_signatures(
    xml: &str,
    certs: &[CertificateDer],
    allow_sha1: bool,
) -> Result<String, SignatureError> {
    let allowed = if allow_sha1 { None } else { Some(ALLOWED_ALGS) };
    // samael is young code over FFI; a panic in it must become a rejection, not a crash.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            xml,
            certs,
            ReduceMode::PreDigest,
            allowed,
        )
    }))
    .map_err(|_| SignatureError::Invalid("verifier panicked".into()))?;
    let predigest = outcome.map_err(|e| SignatureError::Invalid(e.to_string()))?;
    if predigest.trim().is_empty() {
        // Void canonicalization: nothing was hashed, so nothing is trusted.
        return Err(SignatureError::VerifiedElementMismatch);
    }
    Ok(predigest)
}

/// Parse pre-digest bytes and require the named root with the expected ID.
pub(crate) fn parse_verified(
    predigest: &str,
    ns: &str,
    local: &str,
    id: &str,
) -> Result<Element, SamlError> {
    let el = xml::parse(predigest, &Limits::MESSAGE)
        .map_err(|_| SignatureError::VerifiedElementMismatch)?;
    if !el.is(ns, local) || el.attr("ID") != Some(id) {
        return Err(SignatureError::VerifiedElementMismatch.into());
    }
    Ok(el)
}

pub(crate) fn check_relay_state(rs: Option<&str>) -> Result<Option<String>, GateViolation> {
    match rs {
        None => Ok(None),
        Some(s) if s.len() > MAX_RELAY_STATE || s.chars().any(char::is_control) => {
            Err(GateViolation::RelayState)
        }
        Some(s) => Ok(Some(s.to_owned())),
    }
}

/// Decode the POSTed base64 value into UTF-8 XML, refusing oversize input before any work.
pub fn decode_post_binding(b64: &str) -> Result<String, GateViolation> {
    if b64.len() > MAX_RESPONSE_B64 {
        return Err(GateViolation::TooLarge {
            limit: MAX_RESPONSE_B64,
        });
    }
    let raw = crate::xml::decode_base64_lenient(b64)?;
    String::from_utf8(raw).map_err(|_| GateViolation::NotUtf8)
}

pub(crate) fn replay_key(kind: &str, issuer: &str, id: &str) -> String {
    let mut h = Sha256::new();
    h.update(issuer.as_bytes());
    h.update([0u8]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(6 + kind.len() + 2 * digest.len());
    out.push_str("saml-");
    out.push_str(kind);
    out.push(':');
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Verify an HTTP-POST `SAMLResponse` synchronously (CPU-bound: call it off the async runtime,
/// or use [`verify_post`]).
#[tracing::instrument(skip_all, fields(idp = %idp.entity_id))]
pub fn verify_post_blocking(
    saml_response_b64: &str,
    relay_state: Option<&str>,
    ctx: &ResponseContext,
    sp: &SpSettings,
    idp: &IdpSettings,
    replay: &dyn ReplayCache,
) -> Result<VerifiedAssertion, SamlError> {
    let result = verify_inner(saml_response_b64, relay_state, ctx, sp, idp, replay);
    match &result {
        Ok(v) => tracing::debug!(assertion_id = %v.assertion_id, "SAML response accepted"),
        Err(e) => tracing::warn!(error = %e, "SAML response rejected"),
    }
    result
}

fn verify_inner(
    saml_response_b64: &str,
    relay_state: Option<&str>,
    ctx: &ResponseContext,
    sp: &SpSettings,
    idp: &IdpSettings,
    replay: &dyn ReplayCache,
) -> Result<VerifiedAssertion, SamlError> {
    let relay_state = check_relay_state(relay_state)?;
    if idp.signing_certs.is_empty() {
        return Err(SignatureError::NoTrustedCertificate.into());
    }
    if idp.entity_id.trim().is_empty()
        || sp.entity_id.trim().is_empty()
        || sp.acs_url.trim().is_empty()
    {
        // An empty id would match an empty Issuer/Audience/Recipient.
        return Err(SamlError::Config("empty entity id or ACS URL".into()));
    }
    if sp.clock_skew > MAX_CLOCK_SKEW {
        return Err(SamlError::Config("clock skew above the maximum".into()));
    }
    let xml_text = decode_post_binding(saml_response_b64)?;
    let raw = xml::parse(&xml_text, &Limits::MESSAGE)?;
    let shape = gate::check_response(&raw, idp.allow_sha1)?;

    let certs = idp
        .signing_certs
        .iter()
        .map(|c| c.to_der().map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SamlError::Config(format!("certificate encoding: {e}")))?;

    // The verified Response (when it is signed), else None.
    let verified_response = if shape.response_signed {
        let pre = verify_signatures(&xml_text, &certs, idp.allow_sha1)?;
        let resp = parse_verified(&pre, NS_PROTOCOL, "Response", &shape.response_id)?;
        // The verified bytes must have the shape the gate approved.
        let again = gate::check_envelope(&resp)?;
        if again.1 != (shape.assertion == AssertionShape::Encrypted) {
            return Err(SignatureError::VerifiedElementMismatch.into());
        }
        Some(resp)
    } else {
        None
    };

    // The assertion is borrowed from the verified Response when there is one (no copy), else
    // owned here.
    let owned_assertion: Element;
    let (assertion_el, assertion_signed, encrypted): (&Element, bool, bool) = match &shape.assertion
    {
        AssertionShape::Plain { id, signed } => {
            let el = match &verified_response {
                Some(resp) => gate::check_envelope(resp)?.0,
                None => {
                    let pre = verify_signatures(&xml_text, &certs, idp.allow_sha1)?;
                    owned_assertion = parse_verified(&pre, NS_ASSERTION, "Assertion", id)?;
                    &owned_assertion
                }
            };
            if el.attr("ID") != Some(id.as_str()) {
                return Err(SignatureError::VerifiedElementMismatch.into());
            }
            (el, *signed, false)
        }
        AssertionShape::Encrypted => {
            // Decrypt from the verified bytes when the Response is signed.
            let source = verified_response.as_ref().unwrap_or(&raw);
            let (enc, _) = gate::check_envelope(source)?;
            let keys: Vec<_> = sp.decryption_keys.iter().map(|k| k.key.clone()).collect();
            let plain = decrypt_assertion(enc, &keys)?;
            let inherited = xml::namespaces_in_scope(source, enc).unwrap_or_default();
            let plain = xml::declare_inherited_namespaces(&plain, &inherited);
            let tree = xml::parse(&plain, &Limits::MESSAGE)?;
            let (id, inner_signed) = gate::check_assertion(&tree, idp.allow_sha1)?;
            owned_assertion = if inner_signed {
                let pre = verify_signatures(&plain, &certs, idp.allow_sha1)?;
                parse_verified(&pre, NS_ASSERTION, "Assertion", &id)?
            } else if shape.response_signed {
                tree
            } else {
                // Anyone can encrypt to our public certificate: an unsigned inner assertion
                // in an unsigned response proves nothing.
                return Err(SignatureError::UnsignedEncryptedAssertion.into());
            };
            (&owned_assertion, inner_signed, true)
        }
    };

    // Envelope fields: verified when the Response is signed; otherwise read from the raw tree
    // and used only to reject (they can never grant anything).
    let envelope = Envelope::read(verified_response.as_ref().unwrap_or(&raw))?;
    let assertion = AssertionData::read(assertion_el)?;
    let checked = check_policy(&envelope, shape.response_signed, &assertion, ctx, sp, idp)?;

    let expires_ms = checked.replay_expiry.timestamp_millis();
    let fresh = replay
        .insert_if_absent(&replay_key("a", &idp.entity_id, &assertion.id), expires_ms)
        .map_err(SamlError::ReplayCache)?;
    if !fresh {
        return Err(SamlError::Replay);
    }
    if let Some(req) = &ctx.expected_in_response_to {
        let fresh = replay
            .insert_if_absent(&replay_key("r", &idp.entity_id, req), expires_ms)
            .map_err(SamlError::ReplayCache)?;
        if !fresh {
            return Err(SamlError::Replay);
        }
    }

    Ok(VerifiedAssertion {
        issuer: idp.entity_id.clone(),
        name_id: checked.name_id,
        name_id_format: assertion.name_id_format,
        session_index: assertion.session_index,
        attributes: assertion.attributes,
        friendly_names: assertion.friendly_names,
        in_response_to: ctx.expected_in_response_to.clone(),
        assertion_id: assertion.id,
        not_on_or_after: checked.confirmation_expiry,
        relay_state,
        response_signed: shape.response_signed,
        assertion_signed,
        encrypted,
    })
}

struct PolicyOutcome {
    name_id: String,
    confirmation_expiry: DateTime<Utc>,
    replay_expiry: DateTime<Utc>,
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Every policy rule of saml-security.md, on verified data.
fn check_policy(
    env: &Envelope,
    response_signed: bool,
    a: &AssertionData,
    ctx: &ResponseContext,
    sp: &SpSettings,
    idp: &IdpSettings,
) -> Result<PolicyOutcome, PolicyViolation> {
    let now = ctx.now;
    let skew = chrono_dur(sp.clock_skew);
    let max_age = chrono_dur(sp.max_response_age);

    if env.issuer.as_deref().is_some_and(|i| i != idp.entity_id) {
        return Err(PolicyViolation::IssuerMismatch);
    }
    match &a.issuer {
        None => return Err(PolicyViolation::MissingIssuer),
        Some(i) if *i != idp.entity_id => return Err(PolicyViolation::IssuerMismatch),
        Some(_) => {}
    }
    if env.status != STATUS_SUCCESS {
        return Err(PolicyViolation::Status(env.status.clone()));
    }
    match &env.destination {
        Some(d) if *d != sp.acs_url => return Err(PolicyViolation::DestinationMismatch),
        None if response_signed => return Err(PolicyViolation::MissingDestination),
        _ => {}
    }
    for ii in [env.issue_instant, a.issue_instant] {
        if ii > now + skew {
            return Err(PolicyViolation::IssueInstantInFuture);
        }
        if ii < now - skew - max_age {
            return Err(PolicyViolation::IssueInstantTooOld);
        }
    }
    match &ctx.expected_in_response_to {
        Some(expected) => {
            if env.in_response_to.as_ref().is_some_and(|r| r != expected) {
                return Err(PolicyViolation::InResponseToMismatch);
            }
        }
        None => {
            if !sp.allow_idp_initiated {
                return Err(PolicyViolation::IdpInitiatedDisabled);
            }
            if env.in_response_to.is_some() {
                return Err(PolicyViolation::UnexpectedInResponseTo);
            }
        }
    }
    if a.not_before.is_some_and(|nb| nb > now + skew) {
        return Err(PolicyViolation::NotYetValid);
    }
    if a.not_on_or_after.is_some_and(|noa| noa <= now - skew) {
        return Err(PolicyViolation::Expired);
    }
    if !a.has_conditions || a.audience_restrictions.is_empty() {
        return Err(PolicyViolation::MissingAudienceRestriction);
    }
    // Several AudienceRestriction elements all apply; within one, any Audience matches.
    if !a
        .audience_restrictions
        .iter()
        .all(|ar| ar.contains(&sp.entity_id))
    {
        return Err(PolicyViolation::AudienceMismatch);
    }

    let mut first_err = None;
    let mut confirmation_expiry = None;
    for c in a.confirmations.iter().filter(|c| c.method == CM_BEARER) {
        let check = (|| {
            if !c.has_data {
                return Err(PolicyViolation::MissingConfirmationExpiry);
            }
            if c.recipient.as_deref() != Some(sp.acs_url.as_str()) {
                return Err(PolicyViolation::RecipientMismatch);
            }
            let noa = c
                .not_on_or_after
                .ok_or(PolicyViolation::MissingConfirmationExpiry)?;
            if noa <= now - skew {
                return Err(PolicyViolation::ConfirmationExpired);
            }
            if c.not_before.is_some_and(|nb| nb > now + skew) {
                return Err(PolicyViolation::ConfirmationNotYetValid);
            }
            match (&ctx.expected_in_response_to, &c.in_response_to) {
                (Some(e), Some(r)) if e == r => {}
                (Some(_), Some(_)) => return Err(PolicyViolation::InResponseToMismatch),
                (Some(_), None) => return Err(PolicyViolation::MissingInResponseTo),
                (None, Some(_)) => return Err(PolicyViolation::UnexpectedInResponseTo),
                (None, None) => {}
            }
            Ok(noa)
        })();
        match check {
            Ok(noa) => {
                confirmation_expiry = Some(noa);
                break;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let confirmation_expiry = match (confirmation_expiry, first_err) {
        (Some(noa), _) => noa,
        (None, Some(e)) => return Err(e),
        (None, None) => return Err(PolicyViolation::NoBearerConfirmation),
    };
    let name_id = a
        .name_id
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(PolicyViolation::MissingNameId)?;

    // The assertion stays replayable until every window that could still accept it closes.
    let mut last_valid = confirmation_expiry.min(a.issue_instant + max_age + skew);
    if let Some(noa) = a.not_on_or_after {
        last_valid = last_valid.min(noa);
    }
    Ok(PolicyOutcome {
        name_id,
        confirmation_expiry,
        replay_expiry: last_valid + skew,
    })
}

/// Verify on the blocking pool under a time budget, so a hostile message can never stall the
/// async runtime. (The blocking thread is not killed on timeout; the gate keeps its cost small.)
pub async fn verify_post(
    saml_response_b64: String,
    relay_state: Option<String>,
    ctx: ResponseContext,
    sp: Arc<SpSettings>,
    idp: Arc<IdpSettings>,
    replay: Arc<dyn ReplayCache>,
    budget: Duration,
) -> Result<VerifiedAssertion, SamlError> {
    let task = tokio::task::spawn_blocking(move || {
        verify_post_blocking(
            &saml_response_b64,
            relay_state.as_deref(),
            &ctx,
            &sp,
            &idp,
            replay.as_ref(),
        )
    });
    match tokio::time::timeout(budget, task).await {
        Err(_) => Err(SamlError::Timeout),
        Ok(Err(join)) => Err(SamlError::Build(format!(
            "verification task failed: {join}"
        ))),
        Ok(Ok(result)) => result,
    }
}

/// The redirect target an IdP-initiated RelayState asks for (`redirect_uri=<uri>`), only when
/// it exactly equals one of `allowed`; anything else is discarded, so RelayState can never
/// become an open redirect.
pub fn relay_state_redirect(relay_state: &str, allowed: &[&str]) -> Option<String> {
    url::form_urlencoded::parse(relay_state.as_bytes())
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .filter(|v| allowed.iter().any(|a| a == v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_key_is_prefixed_lowercase_sha256_hex() {
        let key = replay_key("a", "https://idp", "_id1");
        let mut h = Sha256::new();
        h.update(b"https://idp\0_id1");
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key, format!("saml-a:{want}"));
        assert_ne!(key, replay_key("a", "https://idp_", "id1"));
    }
}

//! Fixtures of the IdP-side tests: one IdP key, SP settings, tricky user data, and a helper
//! that builds a login Response the way the SSO crate will.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use idbridge_saml::idp::{
    build_login_response, idp_metadata_xml, name_id_format, AssertionEncryption, DataEnc,
    IdpMetadata, IdpSigningKey, KeyEnc, LoginResponse, NameId, ResponseOptions, RsaBits,
    SamlAttribute, SignedResponse, UserAttributes,
};
use idbridge_saml::{
    verify_post_blocking, IdpSettings, MemoryReplayCache, ResponseContext, SamlError, SpKeyPair,
    SpSettings, VerifiedAssertion,
};
use std::sync::OnceLock;

#[path = "../common/mod.rs"]
mod common;
pub use common::{peers_dir, try_run_peer};

pub const IDP_ENTITY: &str = "https://idbridge.test/saml/idp/org_01";
pub const SSO_URL: &str = "https://idbridge.test/saml/idp/org_01/sso";
pub const SP_ENTITY: &str = "https://auth.workos.test/conn_key1";
pub const ACS: &str = "https://auth.workos.test/sso/saml/acs/conn_key1";
pub const REQ_ID: &str = "_req0123456789abcdef";

pub fn idp_key() -> &'static IdpSigningKey {
    static K: OnceLock<IdpSigningKey> = OnceLock::new();
    K.get_or_init(|| IdpSigningKey::generate("idbridge IdP", RsaBits::Rsa2048, 365).unwrap())
}

/// A second IdP key (rollover, or an attacker's).
pub fn idp_key2() -> &'static IdpSigningKey {
    static K: OnceLock<IdpSigningKey> = OnceLock::new();
    K.get_or_init(|| IdpSigningKey::generate("idbridge IdP next", RsaBits::Rsa2048, 365).unwrap())
}

/// The SP's encryption key pair.
pub fn sp_enc_key() -> &'static SpKeyPair {
    static K: OnceLock<SpKeyPair> = OnceLock::new();
    K.get_or_init(|| SpKeyPair::generate("sp-enc", 365).unwrap())
}

/// Now, on a whole second so that millisecond timestamps compare exactly.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

/// A user whose every field holds characters c14n escapes or passes through.
pub fn tricky_user() -> UserAttributes {
    UserAttributes {
        id: "3f2a9c1e-0b7d-4e6a-9a41-7c2d5e8f1a0b".into(),
        email: Some("o'brien+test@exämple.com".into()),
        first_name: Some("Zoë \"Z\" <&>".into()),
        last_name: Some("Ünal & Søn\r\nline2\ttab".into()),
        groups: vec![
            "R&D".into(),
            "<admins>".into(),
            "a\"b'c".into(),
            "日本語グループ".into(),
            "cr\rlf\n".into(),
            " spaced ".into(),
        ],
        custom: vec![SamlAttribute::new(
            "department",
            vec!["Ops > Infra & \"Tools\"".into()],
        )],
    }
}

pub fn email_name_id(user: &UserAttributes) -> NameId {
    NameId {
        value: user.email.clone().unwrap(),
        format: name_id_format::EMAIL.into(),
    }
}

/// A login Response for `user` to the fixture SP.
pub fn login(
    user: &UserAttributes,
    in_response_to: Option<&str>,
    options: &ResponseOptions,
    now: DateTime<Utc>,
) -> SignedResponse {
    let attributes = user.to_saml().unwrap();
    build_login_response(
        &LoginResponse {
            idp_entity_id: IDP_ENTITY,
            sp_entity_id: SP_ENTITY,
            acs_url: ACS,
            in_response_to,
            name_id: &email_name_id(user),
            session_index: "_sess_0123",
            authn_instant: now,
            attributes: &attributes,
            now,
            options,
        },
        idp_key(),
    )
    .unwrap()
}

/// Options encrypting the (signed) assertion for the fixture SP, the response signed or not.
pub fn encrypted(data: DataEnc, key: KeyEnc, sign_response: bool) -> ResponseOptions {
    ResponseOptions {
        sign_response,
        encryption: Some(AssertionEncryption {
            cert: sp_enc_key().cert.clone(),
            data,
            key,
        }),
        ..ResponseOptions::default()
    }
}

/// Our IdP metadata (SSO_URL for both bindings, email NameIDs) with these certificates.
pub fn idp_metadata(certs: &[&openssl::x509::X509], want_signed_requests: bool) -> String {
    idp_metadata_xml(
        &IdpMetadata {
            entity_id: IDP_ENTITY,
            sso_redirect_url: SSO_URL,
            sso_post_url: SSO_URL,
            slo_url: None,
            signing_certs: certs,
            name_id_formats: &[name_id_format::EMAIL],
            want_authn_requests_signed: want_signed_requests,
        },
        None,
    )
    .unwrap()
}

/// What idbridge's own SP needs to trust this IdP.
pub fn sp_side() -> (SpSettings, IdpSettings) {
    let mut sp = SpSettings::new(SP_ENTITY, ACS);
    sp.decryption_keys = vec![sp_enc_key().clone()];
    sp.allow_idp_initiated = true;
    let idp = IdpSettings {
        entity_id: IDP_ENTITY.into(),
        sso_url: Some(SSO_URL.into()),
        signing_certs: vec![idp_key().cert().clone()],
        allow_sha1: false,
        wants_signed_requests: false,
    };
    (sp, idp)
}

/// Verify with idbridge's own strict SP verifier.
pub fn verify_ours(
    r: &SignedResponse,
    in_response_to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<VerifiedAssertion, SamlError> {
    let (sp, idp) = sp_side();
    verify_post_blocking(
        &r.to_base64(),
        None,
        &ResponseContext {
            expected_in_response_to: in_response_to.map(str::to_owned),
            now,
        },
        &sp,
        &idp,
        &MemoryReplayCache::new(),
    )
}

/// Run `xmlsec1 --verify` on `xml` with the IdP certificate, the ID attribute registered for
/// `id_attr_node` (e.g. `urn:oasis:names:tc:SAML:2.0:assertion:Assertion`).
pub fn xmlsec1_verify(xml: &str, cert: &openssl::x509::X509, id_attr_node: &str) -> (bool, String) {
    xmlsec1_verify_node(xml, cert, id_attr_node, None)
}

/// [`xmlsec1_verify`] of the signature selected by `node_xpath` (default: the first one).
pub fn xmlsec1_verify_node(
    xml: &str,
    cert: &openssl::x509::X509,
    id_attr_node: &str,
    node_xpath: Option<&str>,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    let input = dir.path().join("doc.xml");
    std::fs::write(&input, xml).unwrap();
    let out = std::process::Command::new("xmlsec1")
        .arg("--verify")
        .arg("--pubkey-cert-pem")
        .arg(&cert_path)
        .arg("--id-attr:ID")
        .arg(id_attr_node)
        .args(
            node_xpath
                .map(|x| ["--node-xpath", x])
                .into_iter()
                .flatten(),
        )
        .arg(&input)
        .output()
        .expect("xmlsec1 not installed: run scripts/test-deps.d/saml.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub const ASSERTION_NODE: &str = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion";
pub const RESPONSE_NODE: &str = "urn:oasis:names:tc:SAML:2.0:protocol:Response";

/// Run the samlify SP script (tests/peers/samlify_sp.js) with `cfg`: its JSON output, or its
/// error output when it refuses.
pub fn samlify_sp(cfg: &serde_json::Value) -> Result<serde_json::Value, String> {
    let modules = format!("{}/samlify/node_modules", peers_dir());
    assert!(
        std::path::Path::new(&modules).join("samlify").exists(),
        "samlify not installed in {modules}: run scripts/test-deps.d/saml.sh"
    );
    let mut cmd = std::process::Command::new("node");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/samlify_sp.js"
    ))
    .env("NODE_PATH", &modules);
    try_run_peer(cmd, "samlify", cfg).map(|out| serde_json::from_str(&out).unwrap())
}

/// Run the pysaml2 SP script (tests/peers/pysaml2_sp.py) with `cfg`.
pub fn pysaml2_sp(cfg: &serde_json::Value) -> Result<serde_json::Value, String> {
    let py = format!("{}/pysaml2-venv/bin/python", peers_dir());
    assert!(
        std::path::Path::new(&py).exists(),
        "pysaml2 not installed ({py}): run scripts/test-deps.d/saml.sh"
    );
    let mut cmd = std::process::Command::new(py);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/pysaml2_sp.py"
    ));
    try_run_peer(cmd, "pysaml2", cfg).map(|out| serde_json::from_str(&out).unwrap())
}

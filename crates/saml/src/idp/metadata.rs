//! Metadata of the IdP side: our IdP metadata (what WorkOS or any SP imports: entity id, SSO
//! endpoints, signing certificates — two during a rollover), optionally signed; and the SP
//! metadata we import (WorkOS gives an SP metadata URL), read with the strict XML reader.

use super::c14n::{CanonicalWriter, DS, MD};
use super::error::IdpError;
use super::keys::IdpSigningKey;
use super::sign::sign_in_place;
use crate::settings::{parse_cert, BINDING_POST, BINDING_REDIRECT};
use crate::xml::{self, Element, Limits, NS_DSIG, NS_METADATA};
use base64::Engine as _;
use openssl::x509::X509;

const PROTOCOL_ENUM: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// What our IdP metadata says.
#[derive(Debug, Clone)]
pub struct IdpMetadata<'a> {
    pub entity_id: &'a str,
    /// SingleSignOnService with the HTTP-Redirect binding.
    pub sso_redirect_url: &'a str,
    /// SingleSignOnService with the HTTP-POST binding.
    pub sso_post_url: &'a str,
    /// SingleLogoutService (HTTP-Redirect), when offered.
    pub slo_url: Option<&'a str>,
    /// Signing certificates: the current one, plus the next (or previous) during a rollover.
    pub signing_certs: &'a [&'a X509],
    /// NameID formats we can issue.
    pub name_id_formats: &'a [&'a str],
    /// `WantAuthnRequestsSigned`.
    pub want_authn_requests_signed: bool,
}

/// Our IdP metadata XML. Unsigned metadata has no ID and no generated content, so the document
/// is stable for a stable configuration (SPs that monitor the URL see changes only when
/// something changed). `sign_with` signs it (an ID is then added; the bytes change per call).
pub fn idp_metadata_xml(
    m: &IdpMetadata<'_>,
    sign_with: Option<&IdpSigningKey>,
) -> Result<String, IdpError> {
    if m.entity_id.trim().is_empty() {
        return Err(IdpError::Config("the IdP entity id is empty".into()));
    }
    if m.signing_certs.is_empty() {
        return Err(IdpError::Config(
            "IdP metadata needs at least one signing certificate".into(),
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let id = match sign_with {
        Some(_) => Some(crate::sp::new_id().map_err(|e| IdpError::Build(e.to_string()))?),
        None => None,
    };
    let mut w = CanonicalWriter::with_capacity(4096);
    match &id {
        Some(id) => w.start(
            MD,
            "EntityDescriptor",
            &[("ID", id.as_str()), ("entityID", m.entity_id)],
        )?,
        None => w.start(MD, "EntityDescriptor", &[("entityID", m.entity_id)])?,
    }
    let signature_at = w.len();
    let scope_at_signature = w.in_scope().to_vec();
    w.start(
        MD,
        "IDPSSODescriptor",
        &[
            (
                "WantAuthnRequestsSigned",
                if m.want_authn_requests_signed {
                    "true"
                } else {
                    "false"
                },
            ),
            ("protocolSupportEnumeration", PROTOCOL_ENUM),
        ],
    )?;
    for cert in m.signing_certs {
        let der = cert.to_der().map_err(IdpError::build)?;
        w.start(MD, "KeyDescriptor", &[("use", "signing")])?;
        w.start(DS, "KeyInfo", &[])?;
        w.start(DS, "X509Data", &[])?;
        w.leaf(DS, "X509Certificate", &[], &b64.encode(der))?;
        w.end();
        w.end();
        w.end();
    }
    if let Some(slo) = m.slo_url {
        w.empty(
            MD,
            "SingleLogoutService",
            &[("Binding", BINDING_REDIRECT), ("Location", slo)],
        )?;
    }
    for f in m.name_id_formats {
        w.leaf(MD, "NameIDFormat", &[], f)?;
    }
    w.empty(
        MD,
        "SingleSignOnService",
        &[
            ("Binding", BINDING_REDIRECT),
            ("Location", m.sso_redirect_url),
        ],
    )?;
    w.empty(
        MD,
        "SingleSignOnService",
        &[("Binding", BINDING_POST), ("Location", m.sso_post_url)],
    )?;
    w.end(); // IDPSSODescriptor
    w.end(); // EntityDescriptor
    if let (Some(key), Some(id)) = (sign_with, &id) {
        sign_in_place(&mut w, key, id, signature_at, &scope_at_signature)?;
    }
    let mut out = String::with_capacity(w.len() + 40);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(w.as_str());
    out.push('\n');
    Ok(out)
}

/// An AssertionConsumerService endpoint of an SP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcsEndpoint {
    pub binding: String,
    pub location: String,
    pub index: Option<u16>,
    pub is_default: bool,
}

impl AcsEndpoint {
    /// An HTTP-POST endpoint (the only binding we answer with).
    pub fn post(location: impl Into<String>, index: Option<u16>, is_default: bool) -> Self {
        Self {
            binding: BINDING_POST.into(),
            location: location.into(),
            index,
            is_default,
        }
    }
}

/// What an SP's metadata says.
#[derive(Debug, Clone)]
pub struct SpMetadata {
    pub entity_id: String,
    /// Every AssertionConsumerService, in document order.
    pub acs: Vec<AcsEndpoint>,
    /// Certificates with `use="signing"` or no `use` (they verify AuthnRequests).
    pub signing_certs: Vec<X509>,
    /// Certificates with `use="encryption"` or no `use` (they encrypt assertions).
    pub encryption_certs: Vec<X509>,
    /// `md:EncryptionMethod` algorithms listed with the encryption keys.
    pub encryption_methods: Vec<String>,
    pub authn_requests_signed: bool,
    pub want_assertions_signed: bool,
    pub name_id_formats: Vec<String>,
    /// SingleLogoutService locations (any binding), for single logout later.
    pub slo_urls: Vec<String>,
}

fn meta_err(msg: impl Into<String>) -> IdpError {
    IdpError::Metadata(msg.into())
}

fn xs_boolean(v: Option<&str>, what: &str) -> Result<bool, IdpError> {
    match v.map(str::trim) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(meta_err(format!("{what}={other:?} is not an xs:boolean"))),
    }
}

/// An absolute http(s) URL (the ACS is where assertions go; nothing else may pass).
fn check_location(s: &str) -> Result<String, IdpError> {
    let s = s.trim();
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => Ok(s.to_owned()),
        _ => Err(meta_err(format!(
            "endpoint Location {s:?} is not an absolute http(s) URL"
        ))),
    }
}

impl SpMetadata {
    /// Parse SP metadata (an `EntityDescriptor`, or an `EntitiesDescriptor` holding exactly one
    /// SP) through the same hostile-XML gate as messages. Metadata signatures are not checked:
    /// fetch it over HTTPS from the SP (WorkOS serves it so) or paste it.
    pub fn from_xml(metadata: &str) -> Result<Self, IdpError> {
        let root = xml::parse(metadata, &Limits::METADATA)?;
        let entity = if root.is(NS_METADATA, "EntityDescriptor") {
            &root
        } else if root.is(NS_METADATA, "EntitiesDescriptor") {
            let sps: Vec<&Element> = root
                .children_named(NS_METADATA, "EntityDescriptor")
                .filter(|e| e.child(NS_METADATA, "SPSSODescriptor").is_some())
                .collect();
            match sps.as_slice() {
                [one] => *one,
                _ => {
                    return Err(meta_err(format!(
                        "metadata holds {} SP entities, expected one",
                        sps.len()
                    )))
                }
            }
        } else {
            return Err(meta_err("root is not an md:EntityDescriptor"));
        };
        let entity_id = entity
            .attr("entityID")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| meta_err("EntityDescriptor has no entityID"))?
            .to_owned();
        let sps: Vec<&Element> = entity
            .children_named(NS_METADATA, "SPSSODescriptor")
            .filter(|d| {
                d.attr("protocolSupportEnumeration")
                    .is_some_and(|p| p.split_whitespace().any(|x| x == PROTOCOL_ENUM))
            })
            .collect();
        let [sp] = sps.as_slice() else {
            return Err(meta_err(format!(
                "expected one SAML 2.0 SPSSODescriptor, found {}",
                sps.len()
            )));
        };
        let mut out = SpMetadata {
            entity_id,
            acs: Vec::new(),
            signing_certs: Vec::new(),
            encryption_certs: Vec::new(),
            encryption_methods: Vec::new(),
            authn_requests_signed: xs_boolean(
                sp.attr("AuthnRequestsSigned"),
                "AuthnRequestsSigned",
            )?,
            want_assertions_signed: xs_boolean(
                sp.attr("WantAssertionsSigned"),
                "WantAssertionsSigned",
            )?,
            name_id_formats: sp
                .children_named(NS_METADATA, "NameIDFormat")
                .map(|e| e.text().trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            slo_urls: Vec::new(),
        };
        for kd in sp.children_named(NS_METADATA, "KeyDescriptor") {
            let usage = kd.attr("use");
            let (sign, enc) = match usage {
                None => (true, true),
                Some("signing") => (true, false),
                Some("encryption") => (false, true),
                Some(other) => return Err(meta_err(format!("KeyDescriptor use={other:?}"))),
            };
            let certs = key_descriptor_certs(kd)?;
            if enc {
                for m in kd.children_named(NS_METADATA, "EncryptionMethod") {
                    if let Some(a) = m.attr("Algorithm") {
                        if !out.encryption_methods.iter().any(|x| x == a) {
                            out.encryption_methods.push(a.to_owned());
                        }
                    }
                }
            }
            for c in certs {
                if sign {
                    push_unique(&mut out.signing_certs, c.clone())?;
                }
                if enc {
                    push_unique(&mut out.encryption_certs, c)?;
                }
            }
        }
        for a in sp.children_named(NS_METADATA, "AssertionConsumerService") {
            let binding = a
                .attr("Binding")
                .ok_or_else(|| meta_err("AssertionConsumerService without Binding"))?
                .trim()
                .to_owned();
            let location = check_location(
                a.attr("Location")
                    .ok_or_else(|| meta_err("AssertionConsumerService without Location"))?,
            )?;
            let index = match a.attr("index") {
                None => None,
                Some(i) => Some(i.trim().parse::<u16>().map_err(|_| {
                    meta_err(format!("AssertionConsumerService index {i:?} is invalid"))
                })?),
            };
            out.acs.push(AcsEndpoint {
                binding,
                location,
                index,
                is_default: xs_boolean(a.attr("isDefault"), "isDefault")?,
            });
        }
        if !out.acs.iter().any(|a| a.binding == BINDING_POST) {
            return Err(meta_err(
                "the SP has no AssertionConsumerService with the HTTP-POST binding",
            ));
        }
        for s in sp.children_named(NS_METADATA, "SingleLogoutService") {
            if let Some(l) = s.attr("Location") {
                out.slo_urls.push(check_location(l)?);
            }
        }
        Ok(out)
    }
}

fn push_unique(v: &mut Vec<X509>, c: X509) -> Result<(), IdpError> {
    let der = c.to_der().map_err(IdpError::build)?;
    if !v
        .iter()
        .any(|x| x.to_der().ok().as_deref() == Some(der.as_slice()))
    {
        v.push(c);
    }
    Ok(())
}

fn key_descriptor_certs(kd: &Element) -> Result<Vec<X509>, IdpError> {
    let mut out = Vec::new();
    let Some(ki) = kd.child(NS_DSIG, "KeyInfo") else {
        return Ok(out);
    };
    for x509 in ki.children_named(NS_DSIG, "X509Data") {
        for c in x509.children_named(NS_DSIG, "X509Certificate") {
            let der = xml::decode_base64_lenient(&c.text())
                .map_err(|_| meta_err("X509Certificate is not base64"))?;
            out.push(parse_cert(&der).map_err(|e| meta_err(e.to_string()))?);
        }
    }
    Ok(out)
}

//! Typed views of a Response envelope and an Assertion, read from a gated tree.

use crate::error::PolicyViolation;
use crate::xml::{Element, NS_ASSERTION, NS_PROTOCOL, NS_XSI};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// Parse an xs:dateTime; a zone is required (a zoneless time would be ambiguous).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn time_attr(e: &Element, name: &'static str) -> Result<Option<DateTime<Utc>>, PolicyViolation> {
    match e.attr(name) {
        None => Ok(None),
        Some(v) => parse_time(v)
            .map(Some)
            .ok_or(PolicyViolation::Invalid(name)),
    }
}

/// Response-level fields.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub issuer: Option<String>,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    pub issue_instant: DateTime<Utc>,
    pub status: String,
}

impl Envelope {
    pub fn read(resp: &Element) -> Result<Self, PolicyViolation> {
        if resp.attr("Version") != Some("2.0") {
            return Err(PolicyViolation::Invalid("Version"));
        }
        let issue_instant =
            time_attr(resp, "IssueInstant")?.ok_or(PolicyViolation::Invalid("IssueInstant"))?;
        let status = resp
            .child(NS_PROTOCOL, "Status")
            .and_then(|s| s.child(NS_PROTOCOL, "StatusCode"))
            .and_then(|c| c.attr("Value"))
            .ok_or(PolicyViolation::Invalid("Status"))?
            .to_owned();
        Ok(Self {
            issuer: single_text(resp, NS_ASSERTION, "Issuer")?,
            destination: resp.attr("Destination").map(str::to_owned),
            in_response_to: resp.attr("InResponseTo").map(str::to_owned),
            issue_instant,
            status,
        })
    }
}

fn single_text(
    parent: &Element,
    ns: &str,
    local: &'static str,
) -> Result<Option<String>, PolicyViolation> {
    let mut it = parent.children_named(ns, local);
    let first = it.next();
    if it.next().is_some() {
        return Err(PolicyViolation::Invalid(local));
    }
    Ok(first.map(|e| e.text().trim().to_owned()))
}

/// One SubjectConfirmation.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub method: String,
    pub recipient: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    pub in_response_to: Option<String>,
    pub has_data: bool,
}

/// Assertion fields the policy and the caller need.
#[derive(Debug, Clone)]
pub struct AssertionData {
    pub id: String,
    pub issuer: Option<String>,
    pub issue_instant: DateTime<Utc>,
    pub name_id: Option<String>,
    pub name_id_format: Option<String>,
    pub confirmations: Vec<Confirmation>,
    pub has_conditions: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub not_on_or_after: Option<DateTime<Utc>>,
    pub audience_restrictions: Vec<Vec<String>>,
    pub session_index: Option<String>,
    pub attributes: BTreeMap<String, Vec<String>>,
    /// FriendlyName → Name of the attributes that had one (pysaml2 and Shibboleth send
    /// `urn:oid:…` Names with FriendlyNames such as `mail`).
    pub friendly_names: BTreeMap<String, String>,
}

impl AssertionData {
    pub fn read(a: &Element) -> Result<Self, PolicyViolation> {
        if a.attr("Version") != Some("2.0") {
            return Err(PolicyViolation::Invalid("Version"));
        }
        let id = a
            .attr("ID")
            .ok_or(PolicyViolation::Invalid("ID"))?
            .to_owned();
        let issue_instant =
            time_attr(a, "IssueInstant")?.ok_or(PolicyViolation::Invalid("IssueInstant"))?;
        let issuer = single_text(a, NS_ASSERTION, "Issuer")?;

        let subjects: Vec<&Element> = a.children_named(NS_ASSERTION, "Subject").collect();
        let [subject] = subjects.as_slice() else {
            return Err(PolicyViolation::Invalid("Subject"));
        };
        let name_ids: Vec<&Element> = subject.children_named(NS_ASSERTION, "NameID").collect();
        let (name_id, name_id_format) = match name_ids.as_slice() {
            [] => (None, None),
            [n] => (
                Some(n.text().trim().to_owned()),
                n.attr("Format").map(str::to_owned),
            ),
            _ => return Err(PolicyViolation::Invalid("NameID")),
        };
        let mut confirmations = Vec::new();
        for sc in subject.children_named(NS_ASSERTION, "SubjectConfirmation") {
            let data = sc.child(NS_ASSERTION, "SubjectConfirmationData");
            confirmations.push(Confirmation {
                method: sc.attr("Method").unwrap_or("").to_owned(),
                recipient: data.and_then(|d| d.attr("Recipient")).map(str::to_owned),
                not_before: data
                    .map(|d| time_attr(d, "NotBefore"))
                    .transpose()?
                    .flatten(),
                not_on_or_after: data
                    .map(|d| time_attr(d, "NotOnOrAfter"))
                    .transpose()?
                    .flatten(),
                in_response_to: data.and_then(|d| d.attr("InResponseTo")).map(str::to_owned),
                has_data: data.is_some(),
            });
        }

        let conds: Vec<&Element> = a.children_named(NS_ASSERTION, "Conditions").collect();
        let (has_conditions, not_before, not_on_or_after, audience_restrictions) =
            match conds.as_slice() {
                [] => (false, None, None, Vec::new()),
                [c] => (
                    true,
                    time_attr(c, "NotBefore")?,
                    time_attr(c, "NotOnOrAfter")?,
                    c.children_named(NS_ASSERTION, "AudienceRestriction")
                        .map(|ar| {
                            ar.children_named(NS_ASSERTION, "Audience")
                                .map(|au| au.text().trim().to_owned())
                                .collect()
                        })
                        .collect(),
                ),
                _ => return Err(PolicyViolation::Invalid("Conditions")),
            };

        let session_index = a
            .children_named(NS_ASSERTION, "AuthnStatement")
            .find_map(|s| s.attr("SessionIndex"))
            .map(str::to_owned);

        let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut friendly_names: BTreeMap<String, String> = BTreeMap::new();
        for st in a.children_named(NS_ASSERTION, "AttributeStatement") {
            for at in st.children_named(NS_ASSERTION, "Attribute") {
                let Some(name) = at.attr("Name") else {
                    return Err(PolicyViolation::Invalid("Attribute Name"));
                };
                if let Some(friendly) = at.attr("FriendlyName").filter(|f| !f.is_empty()) {
                    friendly_names
                        .entry(friendly.to_owned())
                        .or_insert_with(|| name.to_owned());
                }
                let values = attributes.entry(name.to_owned()).or_default();
                for v in at.children_named(NS_ASSERTION, "AttributeValue") {
                    if v.attr_ns(NS_XSI, "nil") == Some("true") {
                        continue;
                    }
                    values.push(v.text());
                }
            }
        }

        Ok(Self {
            id,
            issuer,
            issue_instant,
            name_id,
            name_id_format,
            confirmations,
            has_conditions,
            not_before,
            not_on_or_after,
            audience_restrictions,
            session_index,
            attributes,
            friendly_names,
        })
    }
}

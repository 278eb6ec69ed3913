//! Turning verified claims into an identity, per the connection's claim map.

use idbridge_model::{join_name, Identity};
use serde_json::{Map, Value};

use crate::{ClaimMap, OidcError, OidcSettings};

/// Looks a claim up by exact name first, then as a dotted path into nested objects.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// A scalar claim as a string (numbers too: some IdPs send numeric user ids).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_string(claims: &Map<String, Value>, names: &[String]) -> Option<String> {
    names
        .iter()
        .find_map(|n| lookup(claims, n).and_then(scalar_string))
}

fn groups(claims: &Map<String, Value>, map: &ClaimMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let found = map.groups.iter().find_map(|n| lookup(claims, n));
    match found {
        Some(Value::Array(items)) => {
            for g in items.iter().filter_map(scalar_string) {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
        Some(v) => out.extend(scalar_string(v)),
        None => {
            // Entra replaces a too-long groups claim with a pointer to Graph (the "overage"
            // claim). We do not call Graph; make the gap visible instead of silently empty.
            let overage = claims
                .get("_claim_names")
                .and_then(Value::as_object)
                .is_some_and(|o| o.contains_key("groups"));
            if overage {
                tracing::warn!("groups overage claim present: groups are not in the token");
            }
        }
    }
    out
}

fn is_false(v: &Value) -> bool {
    matches!(v, Value::Bool(false)) || v.as_str() == Some("false")
}

/// Applies the connection's rules and claim map to merged claims.
pub(crate) fn map_identity(
    claims: Map<String, Value>,
    settings: &OidcSettings,
) -> Result<Identity, OidcError> {
    let map = &settings.claim_map;
    if settings.reject_unverified_email && claims.get("email_verified").is_some_and(is_false) {
        return Err(OidcError::ClaimNotAllowed {
            claim: "email_verified".into(),
            reason: "the provider says the email address is not verified".into(),
        });
    }
    for (claim, allowed) in &settings.required_claim_values {
        let value = lookup(&claims, claim).and_then(scalar_string);
        match value {
            Some(v) if allowed.contains(&v) => {}
            Some(v) => {
                return Err(OidcError::ClaimNotAllowed {
                    claim: claim.clone(),
                    reason: format!(
                        "value `{}` is not allowed",
                        crate::error::sanitize_description(&v)
                    ),
                })
            }
            None => {
                return Err(OidcError::ClaimNotAllowed {
                    claim: claim.clone(),
                    reason: "claim is missing".into(),
                })
            }
        }
    }
    let idp_id = first_string(&claims, &map.idp_id).ok_or_else(|| OidcError::MissingClaim {
        field: "idp_id",
        tried: map.idp_id.join(", "),
    })?;
    let email = first_string(&claims, &map.email).ok_or_else(|| OidcError::MissingClaim {
        field: "email",
        tried: map.email.join(", "),
    })?;
    let first_name = first_string(&claims, &map.first_name);
    let last_name = first_string(&claims, &map.last_name);
    let name = first_string(&claims, &map.name)
        .or_else(|| join_name(first_name.as_deref(), last_name.as_deref()));
    let custom_attributes = map
        .custom
        .iter()
        .map(|(key, claim)| {
            (
                key.clone(),
                lookup(&claims, claim).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Ok(Identity {
        idp_id,
        email: Some(email),
        first_name,
        last_name,
        name,
        groups: groups(&claims, map),
        custom_attributes,
        raw_attributes: claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionType, Secret};
    use serde_json::json;

    fn settings(t: ConnectionType) -> OidcSettings {
        OidcSettings::new(t, "https://idp.example.com", "c", Secret::new("s"))
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn generic_mapping() {
        let id = map_identity(
            claims(
                json!({"sub":"u1","email":"a@x.com","given_name":"Ada","family_name":"L",
                "groups":["eng","ops","eng",7,{"x":1}],"extra":"kept"}),
            ),
            &settings(ConnectionType::GenericOidc),
        )
        .unwrap();
        assert_eq!(id.idp_id, "u1");
        assert_eq!(id.email.as_deref(), Some("a@x.com"));
        assert_eq!(id.name.as_deref(), Some("Ada L"));
        assert_eq!(id.groups, vec!["eng", "ops", "7"]);
        assert_eq!(id.raw_attributes.get("extra"), Some(&json!("kept")));
    }

    #[test]
    fn entra_falls_back_to_upn_and_oid() {
        let id = map_identity(
            claims(
                json!({"sub":"pairwise","oid":"obj-1","upn":"u@corp.com","tid":"t1",
                "groups":"single-group"}),
            ),
            &settings(ConnectionType::EntraIdOidc),
        )
        .unwrap();
        assert_eq!(id.idp_id, "obj-1");
        assert_eq!(id.email.as_deref(), Some("u@corp.com"));
        assert_eq!(id.groups, vec!["single-group"]);
        assert_eq!(id.custom_attributes.get("tenant_id"), Some(&json!("t1")));
    }

    #[test]
    fn dotted_paths_and_null_custom_attributes() {
        let mut s = settings(ConnectionType::GenericOidc);
        s.claim_map.groups = vec!["realm_access.roles".into()];
        s.claim_map
            .custom
            .insert("dept".into(), "org.department".into());
        s.claim_map.custom.insert("missing".into(), "nope".into());
        let id = map_identity(
            claims(
                json!({"sub":"u","email":"e@x","realm_access":{"roles":["admin"]},
                "org":{"department":"R&D"}}),
            ),
            &s,
        )
        .unwrap();
        assert_eq!(id.groups, vec!["admin"]);
        assert_eq!(id.custom_attributes.get("dept"), Some(&json!("R&D")));
        assert_eq!(id.custom_attributes.get("missing"), Some(&Value::Null));
    }

    #[test]
    fn missing_email_is_an_error() {
        let err = map_identity(
            claims(json!({"sub":"u"})),
            &settings(ConnectionType::GenericOidc),
        )
        .unwrap_err();
        assert!(
            matches!(err, OidcError::MissingClaim { field: "email", .. }),
            "{err}"
        );
        let err = map_identity(
            claims(json!({"email":"e@x"})),
            &settings(ConnectionType::GenericOidc),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                OidcError::MissingClaim {
                    field: "idp_id",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unverified_email_is_rejected_unless_allowed() {
        let c = json!({"sub":"u","email":"e@x","email_verified":false});
        let mut s = settings(ConnectionType::GenericOidc);
        let err = map_identity(claims(c.clone()), &s).unwrap_err();
        assert!(
            matches!(err, OidcError::ClaimNotAllowed { ref claim, .. } if claim == "email_verified")
        );
        s.reject_unverified_email = false;
        assert!(map_identity(claims(c), &s).is_ok());
    }

    #[test]
    fn google_hosted_domain_restriction() {
        let mut s = settings(ConnectionType::GoogleOidc);
        s.required_claim_values
            .insert("hd".into(), vec!["corp.com".into()]);
        let ok = map_identity(
            claims(json!({"sub":"u","email":"e@corp.com","hd":"corp.com"})),
            &s,
        )
        .unwrap();
        assert_eq!(
            ok.custom_attributes.get("hosted_domain"),
            Some(&json!("corp.com"))
        );
        let wrong = map_identity(
            claims(json!({"sub":"u","email":"e@evil.com","hd":"evil.com"})),
            &s,
        );
        assert!(matches!(wrong, Err(OidcError::ClaimNotAllowed { .. })));
        let missing = map_identity(claims(json!({"sub":"u","email":"e@gmail.com"})), &s);
        assert!(matches!(missing, Err(OidcError::ClaimNotAllowed { .. })));
    }
}

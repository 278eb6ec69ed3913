//! The user as an identity provider described them, before idbridge gives them a profile id
//! and roles: the one type every login protocol maps into (a SAML assertion, OIDC claims).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An IdP's user, mapped to WorkOS profile fields by the connection's attribute or claim map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The IdP's stable user id (WorkOS `idp_id`).
    pub idp_id: String,
    /// Email address; a login without one is refused when the profile is built.
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Display name: the IdP's, else [`join_name`] of first and last name.
    pub name: Option<String>,
    /// Groups as the IdP sent them, trimmed, order kept.
    pub groups: Vec<String>,
    /// Mapped custom attributes; a mapping the IdP did not fill is `null` (WorkOS shape).
    pub custom_attributes: Map<String, Value>,
    /// Everything the IdP sent (SAML attributes as string arrays, OIDC claims as they came).
    pub raw_attributes: Map<String, Value>,
}

/// A display name from first and last name: both joined by a space, either alone, or `None`
/// when neither is a non-empty string.
pub fn join_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [first, last]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_join_what_is_there() {
        assert_eq!(
            join_name(Some("Ada"), Some("Lovelace")).as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(join_name(Some("Ada"), None).as_deref(), Some("Ada"));
        assert_eq!(
            join_name(None, Some("Lovelace")).as_deref(),
            Some("Lovelace")
        );
        assert_eq!(join_name(Some(" "), None), None);
        assert_eq!(join_name(None, None), None);
    }
}

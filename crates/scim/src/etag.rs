//! Weak ETags over `meta.version` and `If-Match` / `If-None-Match` (RFC 7644 §3.14, RFC 7232).
//!
//! `meta.version` holds the full weak ETag (`W/"3"`), as RFC 7644's examples do, so the header
//! and the attribute are the same string. Matching uses the weak comparison (opaque tags equal,
//! `W/` ignored): SCIM versions are weak by nature, and Okta/Entra echo them back as sent.

use serde_json::Value;

use crate::error::ScimError;
use crate::filter::get_ci;

/// The weak ETag for a store version. Quotes and backslashes in `version` are dropped so the
/// result is always a well-formed entity tag.
pub fn etag(version: &str) -> String {
    let clean: String = version
        .chars()
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    format!("W/\"{clean}\"")
}

/// The resource's ETag, from `meta.version`.
pub fn resource_etag(resource: &Value) -> Option<&str> {
    get_ci(resource, "meta")
        .and_then(|m| get_ci(m, "version"))
        .and_then(Value::as_str)
}

/// The opaque tag inside an entity tag (`W/"x"` or `"x"` → `x`); a bare token is taken as is.
fn opaque(tag: &str) -> &str {
    let t = tag.trim();
    let t = t
        .strip_prefix("W/")
        .or_else(|| t.strip_prefix("w/"))
        .unwrap_or(t);
    t.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t)
}

fn list_matches(header: &str, current_etag: &str) -> bool {
    let current = opaque(current_etag);
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || (!t.is_empty() && opaque(t) == current))
}

/// Evaluates `If-Match` against the current ETag: absent or `*` passes, otherwise one of the
/// listed tags must match; a mismatch is 412 and the write must not happen.
pub fn check_if_match(header: Option<&str>, current_etag: &str) -> Result<(), ScimError> {
    match header {
        None => Ok(()),
        Some(h) if list_matches(h, current_etag) => Ok(()),
        Some(_) => Err(ScimError::precondition_failed(
            "the resource has changed: If-Match does not match meta.version",
        )),
    }
}

/// Whether `If-None-Match` matches, i.e. a GET may answer 304 Not Modified.
pub fn if_none_match_hits(header: Option<&str>, current_etag: &str) -> bool {
    header.is_some_and(|h| list_matches(h, current_etag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_weak_tags() {
        assert_eq!(etag("3"), "W/\"3\"");
        assert_eq!(etag("a\"b\\c"), "W/\"abc\"");
        let r = json!({"meta": {"version": "W/\"3\""}});
        assert_eq!(resource_etag(&r), Some("W/\"3\""));
        assert_eq!(resource_etag(&json!({})), None);
    }

    #[test]
    fn if_match_rules() {
        let cur = etag("7");
        assert!(check_if_match(None, &cur).is_ok());
        assert!(check_if_match(Some("*"), &cur).is_ok());
        assert!(check_if_match(Some("W/\"7\""), &cur).is_ok());
        assert!(check_if_match(Some("\"7\""), &cur).is_ok());
        assert!(check_if_match(Some("W/\"1\", W/\"7\""), &cur).is_ok());
        let e = check_if_match(Some("W/\"6\""), &cur).err();
        assert_eq!(e.map(|e| (e.status, e.scim_type)), Some((412, None)));
        assert!(check_if_match(Some(""), &cur).is_err());
        assert!(check_if_match(Some("W/\"70\""), &cur).is_err());
        assert!(check_if_match(Some("W/\"1\", W/\"2\""), &cur).is_err());
    }

    #[test]
    fn if_none_match_rules() {
        let cur = etag("7");
        assert!(if_none_match_hits(Some("W/\"7\""), &cur));
        assert!(if_none_match_hits(Some("*"), &cur));
        assert!(!if_none_match_hits(Some("W/\"8\""), &cur));
        assert!(!if_none_match_hits(None, &cur));
    }
}

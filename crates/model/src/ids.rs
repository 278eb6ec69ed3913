//! Object ids: `<prefix>_<26-char ULID>`, as WorkOS issues them.
//!
//! ULIDs sort by creation time, which the paginated lists rely on as a tie-breaker.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// The id prefixes idbridge issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdPrefix {
    Organization,
    OrganizationDomain,
    Connection,
    Profile,
    Directory,
    DirectoryUser,
    DirectoryGroup,
    Event,
    WebhookEndpoint,
    Role,
    ApiKey,
    /// A service provider registered with idbridge's IdP (issue 16).
    ServiceProvider,
    /// An OIDC client registered with idbridge's OpenID Provider (issue 16).
    OidcClient,
}

impl IdPrefix {
    pub const fn as_str(self) -> &'static str {
        match self {
            IdPrefix::Organization => "org",
            IdPrefix::OrganizationDomain => "org_domain",
            IdPrefix::Connection => "conn",
            IdPrefix::Profile => "prof",
            IdPrefix::Directory => "directory",
            IdPrefix::DirectoryUser => "directory_user",
            IdPrefix::DirectoryGroup => "directory_group",
            IdPrefix::Event => "event",
            IdPrefix::WebhookEndpoint => "we",
            IdPrefix::Role => "role",
            IdPrefix::ApiKey => "key",
            IdPrefix::ServiceProvider => "sp",
            IdPrefix::OidcClient => "oidc_client",
        }
    }
}

/// A fresh id with the given prefix.
///
/// ULIDs made in the same millisecond are only ordered if they come from one monotonic
/// generator; lists page by id, so every id in the process comes from this one.
pub fn new_id(prefix: IdPrefix) -> String {
    format!("{}_{}", prefix.as_str(), next_ulid())
}

fn next_ulid() -> Ulid {
    static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);
    let mut guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let generator = guard.get_or_insert_with(Generator::new);
    // Overflow needs 2^80 ids in one millisecond; fall back to a random one rather than fail.
    generator.generate().unwrap_or_else(|_| Ulid::new())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must start with \"{expected}_\"")]
    WrongPrefix { expected: &'static str },
    #[error("id does not end in a valid ULID")]
    BadUlid,
}

/// Checks that `id` is `<prefix>_<ULID>` and returns the ULID.
///
/// Prefixes nest (`org_` is a prefix of `org_domain_`), so the ULID part must be exactly the
/// rest of the string after this prefix and must parse.
pub fn parse_id(prefix: IdPrefix, id: &str) -> Result<Ulid, IdError> {
    let expected = prefix.as_str();
    let rest = id
        .strip_prefix(expected)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(IdError::WrongPrefix { expected })?;
    if rest.len() != 26 {
        return Err(IdError::BadUlid);
    }
    Ulid::from_string(rest).map_err(|_| IdError::BadUlid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_parse_back_and_sort_by_time() {
        let a = new_id(IdPrefix::Organization);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id(IdPrefix::Organization);
        assert!(a.starts_with("org_") && a.len() == 4 + 26);
        assert!(parse_id(IdPrefix::Organization, &a).is_ok());
        assert!(a < b, "ULID ids must sort by creation time");
        let burst: Vec<String> = (0..1000).map(|_| new_id(IdPrefix::Event)).collect();
        assert!(
            burst.windows(2).all(|w| w[0] < w[1]),
            "same-millisecond ids must still sort"
        );
    }

    #[test]
    fn rejects_wrong_prefix_and_garbage() {
        let dom = new_id(IdPrefix::OrganizationDomain);
        assert!(parse_id(IdPrefix::Organization, &dom).is_err());
        assert_eq!(
            parse_id(IdPrefix::Organization, "org_123"),
            Err(IdError::BadUlid)
        );
        assert!(parse_id(IdPrefix::Organization, "org_01EHWNCE74X7JSDV0X3SZ3KJN!").is_err());
        assert!(parse_id(IdPrefix::Connection, "").is_err());
    }
}

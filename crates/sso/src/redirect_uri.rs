//! The environment's redirect-URI allow-list (workos-api.md §1.1).
//!
//! An entry is either an exact URI or a wildcard pattern: one `*` inside the left-most host
//! label (never crossing a dot, never directly on a public suffix, `https` only except for
//! loopback hosts), or `*` as the port of `localhost`/`127.0.0.1`. Everything after the
//! authority (path and query) must match exactly. A URI we cannot parse without ambiguity
//! (userinfo, fragment, backslashes, control characters) never matches, so an attacker cannot
//! smuggle a different host past the comparison.

/// Multi-label public suffixes a wildcard must not sit directly on. The full Public Suffix
/// List is not bundled; single-label TLDs are covered by requiring two labels after the `*`.
const MULTI_LABEL_SUFFIXES: &[&str] = &[
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "me.uk",
    "ltd.uk",
    "plc.uk",
    "com.au",
    "net.au",
    "org.au",
    "edu.au",
    "gov.au",
    "co.nz",
    "org.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "com.br",
    "com.cn",
    "com.mx",
    "co.in",
    "co.za",
    "com.sg",
    "com.tr",
    "co.kr",
    "com.hk",
    "com.tw",
    "github.io",
    "herokuapp.com",
    "vercel.app",
    "netlify.app",
    "pages.dev",
    "workers.dev",
    "azurewebsites.net",
    "cloudfront.net",
    "appspot.com",
    "firebaseapp.com",
    "web.app",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("not an absolute http(s) URI")]
    NotAbsolute,
    #[error("more than one `*`")]
    TooManyWildcards,
    #[error("`*` is only allowed in the left-most host label or as a loopback port")]
    WildcardPlacement,
    #[error("a wildcard may not sit directly on a public suffix")]
    PublicSuffix,
    #[error("wildcard patterns must use https (except for loopback hosts)")]
    InsecureWildcard,
    #[error("the URI has a fragment, userinfo or forbidden characters")]
    Ambiguous,
}

/// Split `scheme://authority rest` without normalising anything.
struct Parts<'a> {
    scheme: &'a str,
    host: String,
    port: Option<&'a str>,
    rest: &'a str,
}

fn split(uri: &str) -> Result<Parts<'_>, PatternError> {
    if uri
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || uri.contains('#')
    {
        return Err(PatternError::Ambiguous);
    }
    let (scheme, after) = uri.split_once("://").ok_or(PatternError::NotAbsolute)?;
    let scheme_lc = scheme.to_ascii_lowercase();
    if scheme_lc != "http" && scheme_lc != "https" {
        return Err(PatternError::NotAbsolute);
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(PatternError::Ambiguous);
    }
    // IPv6 literals are only allowed exactly as configured (no wildcard), so treat them whole.
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => {
                let (h, p) = authority.split_at(i + 1);
                (h, p.strip_prefix(':'))
            }
            None => return Err(PatternError::Ambiguous),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(PatternError::Ambiguous);
    }
    Ok(Parts {
        scheme: if scheme_lc == "http" { "http" } else { "https" },
        host: host.to_ascii_lowercase(),
        port,
        rest,
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host == "127.0.0.1"
}

/// Checks that a configured entry is usable; exact URIs only need to parse.
pub fn validate_entry(entry: &str) -> Result<(), PatternError> {
    let p = split(entry)?;
    let probe = if p.port == Some("*") {
        entry.replacen(":*", ":1", 1)
    } else {
        entry.replace('*', "x")
    };
    url::Url::parse(&probe).map_err(|_| PatternError::NotAbsolute)?;
    let stars = entry.matches('*').count();
    if stars == 0 {
        return Ok(());
    }
    if stars > 1 {
        return Err(PatternError::TooManyWildcards);
    }
    if p.port == Some("*") {
        return if is_loopback(&p.host) {
            Ok(())
        } else {
            Err(PatternError::WildcardPlacement)
        };
    }
    let Some((first, suffix)) = p.host.split_once('.') else {
        return Err(PatternError::WildcardPlacement);
    };
    if !first.contains('*') || p.rest.contains('*') || p.port.is_some_and(|x| x.contains('*')) {
        return Err(PatternError::WildcardPlacement);
    }
    if suffix.split('.').count() < 2 || MULTI_LABEL_SUFFIXES.contains(&suffix) {
        return Err(PatternError::PublicSuffix);
    }
    if p.scheme != "https" {
        return Err(PatternError::InsecureWildcard);
    }
    Ok(())
}

/// `*` stands for one or more characters of a single DNS label.
fn label_matches(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((pre, post)) => {
            label.len() > pre.len() + post.len()
                && label.starts_with(pre)
                && label.ends_with(post)
                && label[pre.len()..label.len() - post.len()]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
    }
}

fn entry_matches(entry: &str, candidate: &Parts<'_>) -> bool {
    let Ok(p) = split(entry) else {
        return false;
    };
    if p.scheme != candidate.scheme || p.rest != candidate.rest {
        return false;
    }
    let port_ok = match p.port {
        Some("*") => {
            is_loopback(&p.host)
                && candidate
                    .port
                    .is_some_and(|x| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit()))
        }
        other => other == candidate.port,
    };
    if !port_ok {
        return false;
    }
    if !p.host.contains('*') {
        return p.host == candidate.host;
    }
    match (p.host.split_once('.'), candidate.host.split_once('.')) {
        (Some((pl, ps)), Some((cl, cs))) => ps == cs && label_matches(pl, cl),
        _ => false,
    }
}

/// Whether `candidate` is allowed by `allowed` (exact entries or valid wildcard patterns).
pub fn is_allowed(allowed: &[String], candidate: &str) -> bool {
    if allowed.iter().any(|a| !a.contains('*') && a == candidate) {
        // Exact entries still must be well-formed URIs for us to redirect to them.
        return split(candidate).is_ok();
    }
    let Ok(c) = split(candidate) else {
        return false;
    };
    if url::Url::parse(candidate).is_err() {
        return false;
    }
    allowed
        .iter()
        .filter(|a| a.contains('*') && validate_entry(a).is_ok())
        .any(|a| entry_matches(a, &c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_match_only_for_plain_entries() {
        let a = list(&["https://app.example.com/callback"]);
        assert!(is_allowed(&a, "https://app.example.com/callback"));
        assert!(!is_allowed(&a, "https://app.example.com/callback/"));
        assert!(!is_allowed(&a, "https://app.example.com/callback?x=1"));
        assert!(!is_allowed(&a, "https://app.example.com/Callback"));
        assert!(!is_allowed(&a, "https://app.example.com.evil.com/callback"));
        assert!(!is_allowed(&a, "http://app.example.com/callback"));
        assert!(!is_allowed(&a, "https://evil.com@app.example.com/callback"));
        assert!(!is_allowed(&[], "https://app.example.com/callback"));
    }

    #[test]
    fn wildcard_in_leftmost_label_only() {
        let a = list(&["https://*.example.com/callback"]);
        assert!(is_allowed(&a, "https://tenant1.example.com/callback"));
        assert!(is_allowed(&a, "https://TENANT1.example.com/callback"));
        // Not crossing labels, not empty, not the apex.
        assert!(!is_allowed(&a, "https://a.b.example.com/callback"));
        assert!(!is_allowed(&a, "https://.example.com/callback"));
        assert!(!is_allowed(&a, "https://example.com/callback"));
        // Path and scheme must match exactly.
        assert!(!is_allowed(&a, "https://t.example.com/other"));
        assert!(!is_allowed(&a, "http://t.example.com/callback"));
        // Host confusion.
        assert!(!is_allowed(&a, "https://t.example.com.evil.com/callback"));
        assert!(!is_allowed(&a, "https://evil.com/x.example.com/callback"));
        assert!(!is_allowed(&a, "https://u@t.example.com/callback"));
        assert!(!is_allowed(&a, "https://t.example.com/callback#frag"));
        assert!(!is_allowed(&a, "https://t.example.com\\@evil.com/callback"));
        // Partial label.
        let p = list(&["https://app-*.example.com/cb"]);
        assert!(is_allowed(&p, "https://app-42.example.com/cb"));
        assert!(!is_allowed(&p, "https://web-42.example.com/cb"));
        assert!(!is_allowed(&p, "https://app-.example.com/cb"));
    }

    #[test]
    fn invalid_patterns_are_rejected_and_never_match() {
        for bad in [
            "https://*.com/cb",
            "https://*.co.uk/cb",
            "https://*.github.io/cb",
            "https://a.*.example.com/cb",
            "https://*.*.example.com/cb",
            "https://example.com/*",
            "http://*.example.com/cb",
            "https://example.com:*/cb",
            "https://*/cb",
        ] {
            assert!(validate_entry(bad).is_err(), "{bad} should be invalid");
        }
        assert!(!is_allowed(
            &list(&["https://*.com/cb"]),
            "https://evil.com/cb"
        ));
        assert!(!is_allowed(
            &list(&["https://example.com/*"]),
            "https://example.com/x"
        ));
        assert!(!is_allowed(
            &list(&["http://*.example.com/cb"]),
            "http://a.example.com/cb"
        ));
        assert!(validate_entry("https://*.example.co.uk/cb").is_ok());
    }

    #[test]
    fn loopback_port_wildcard_and_http() {
        let a = list(&["http://localhost:*/callback", "http://127.0.0.1:*/cb"]);
        assert!(validate_entry(&a[0]).is_ok());
        assert!(is_allowed(&a, "http://localhost:3000/callback"));
        assert!(is_allowed(&a, "http://127.0.0.1:8080/cb"));
        assert!(!is_allowed(&a, "http://localhost/callback"));
        assert!(!is_allowed(&a, "http://localhost:abc/callback"));
        assert!(!is_allowed(&a, "http://localhost.evil.com:3000/callback"));
        assert!(!is_allowed(&a, "http://localhost:3000/other"));
        // Exact http loopback entries are fine.
        assert!(is_allowed(
            &list(&["http://127.0.0.1/cb"]),
            "http://127.0.0.1/cb"
        ));
    }
}

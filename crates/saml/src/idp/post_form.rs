//! The HTTP-POST binding's page: a form that submits itself to the ACS, with a strict Content
//! Security Policy (the one inline script is allowed by its hash; nothing else may load or run)
//! and a visible button for browsers without JavaScript.
//!
//! No `form-action` directive: Chromium applies it to the redirects that follow the submission
//! too, and an ACS redirects on to the application, whose origin we do not know.

use crate::xml::escape;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The script that submits the form; its hash goes into the CSP.
const SUBMIT_SCRIPT: &str = "document.forms[0].submit();";

/// Which message the form carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostField {
    SamlResponse,
    SamlRequest,
}

impl PostField {
    fn name(self) -> &'static str {
        match self {
            PostField::SamlResponse => "SAMLResponse",
            PostField::SamlRequest => "SAMLRequest",
        }
    }
}

/// A rendered auto-submit page and the headers it must be served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostForm {
    pub html: String,
    pub content_security_policy: String,
}

impl PostForm {
    /// Response headers for the page: the CSP, no caching (the form holds a bearer assertion),
    /// no referrer, no MIME sniffing.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            ("content-type", "text/html; charset=utf-8".into()),
            (
                "content-security-policy",
                self.content_security_policy.clone(),
            ),
            ("cache-control", "no-store".into()),
            ("referrer-policy", "no-referrer".into()),
            ("x-content-type-options", "nosniff".into()),
        ]
    }
}

fn script_hash() -> String {
    let digest = Sha256::digest(SUBMIT_SCRIPT.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page that POSTs `value` (base64) and `relay_state` to `action` (a registered ACS URL).
/// Every value is HTML-escaped.
pub fn post_form(
    action: &str,
    field: PostField,
    value: &str,
    relay_state: Option<&str>,
) -> PostForm {
    let mut html = String::with_capacity(value.len() + action.len() + 600);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Signing in</title></head><body><form method=\"post\" action=\"");
    html.push_str(&escape(action));
    html.push_str("\"><input type=\"hidden\" name=\"");
    html.push_str(field.name());
    html.push_str("\" value=\"");
    html.push_str(&escape(value));
    html.push_str("\">");
    if let Some(rs) = relay_state {
        html.push_str("<input type=\"hidden\" name=\"RelayState\" value=\"");
        html.push_str(&escape(rs));
        html.push_str("\">");
    }
    html.push_str("<noscript><p>Your browser does not run scripts: press Continue to finish signing in.</p><button type=\"submit\">Continue</button></noscript></form><script>");
    html.push_str(SUBMIT_SCRIPT);
    html.push_str("</script></body></html>\n");
    PostForm {
        html,
        content_security_policy: format!(
            "default-src 'none'; script-src {}; base-uri 'none'; frame-ancestors 'none'",
            script_hash()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_the_script_hash_matches() {
        let f = post_form(
            "https://sp.test/acs?a=1&b=\"2\"",
            PostField::SamlResponse,
            "PHg+",
            Some("<script>alert(1)</script>\"'"),
        );
        assert!(f
            .html
            .contains("action=\"https://sp.test/acs?a=1&amp;b=&quot;2&quot;\""));
        assert!(!f.html.contains("<script>alert"));
        assert!(f
            .html
            .contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;&apos;\""));
        // The only inline script is the one whose hash the CSP allows.
        assert_eq!(f.html.matches("<script>").count(), 1);
        assert!(f
            .html
            .contains(&format!("<script>{SUBMIT_SCRIPT}</script>")));
        // Known answer: sha256("document.forms[0].submit();").
        let expected = format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(b"document.forms[0].submit();"))
        );
        assert!(f.content_security_policy.contains(&expected));
        assert!(f.content_security_policy.starts_with("default-src 'none';"));
    }
}

//! What a remote SCIM target answers, read the way the SCIM push forwarder reads it: the
//! status/body classification of every call, then each reader of a successful answer (the
//! created id, a ListResponse page, `active`, `members`, the drift comparison). The input is
//! `status (2 bytes, big-endian) | Retry-After length (1 byte) | Retry-After | body`.
//!
//! Property: no panic, and the classification is total and consistent: a 2xx with a JSON (or
//! blank) body is an answer, anything else an error that names the call — never a success
//! made from a body that is not JSON.

use idbridge_forward::scim_push::{
    classify_answer, list_page, parse_retry_after, remote_active, remote_member_ids, resource,
    CallError,
};
use serde_json::{json, Value};

const WHAT: &str = "POST /Users";

fn desired_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": "00u1",
        "userName": "alice@example.com",
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "active": true,
        "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]
    })
}

pub fn forward_response(data: &[u8]) {
    let [s0, s1, ra_len, rest @ ..] = data else {
        return;
    };
    // Any status a server can send (100..=999 is what an HTTP status line can carry).
    let status = 100 + u16::from_be_bytes([*s0, *s1]) % 900;
    let ra_len = usize::from(*ra_len).min(rest.len());
    let (retry_after, body) = rest.split_at(ra_len);
    let retry_after = std::str::from_utf8(retry_after)
        .ok()
        .and_then(parse_retry_after);

    match classify_answer(WHAT, status, retry_after, "https://elsewhere.test/", body) {
        Ok(answer) => {
            assert!(
                (200..300).contains(&status),
                "HTTP {status} was taken as a success"
            );
            let blank = body.iter().all(u8::is_ascii_whitespace);
            assert!(
                blank || serde_json::from_slice::<Value>(body).is_ok(),
                "a body that is not JSON became an answer"
            );
            let _ = answer.id();
            let desired = desired_user();
            let page = list_page(&answer, "GET /Users").unwrap_or_default();
            for resource in page.1.iter().chain(std::iter::once(&answer.body)) {
                let _ = remote_active(resource);
                let _ = remote_member_ids(resource);
                let _ = resource::differences(&desired, resource);
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(WHAT),
                "the error does not name the call: {message}"
            );
            if let CallError::Busy {
                retry_after: Some(d),
                ..
            } = e
            {
                // A delay the scheduler can add to an Instant without overflow.
                let _ = std::time::Instant::now().checked_add(d);
            }
        }
    }
}

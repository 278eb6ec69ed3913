//! Checks of the WorkOS wire conventions (workos-api.md §0.3 and §2.4) for raw-HTTP tests.
//!
//! [`capture`] reads a whole response once; the `expect_*` methods return a
//! [`HarnessError::Mismatch`] that names the request, status and body, so a failing test says
//! what the server actually answered.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

use crate::error::HarnessError;

/// A response read whole, labelled with the request that produced it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// `METHOD /path?query`, for messages.
    pub request: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body parsed as JSON, if it parses.
    pub json: Option<Value>,
}

/// Sends the request and reads the whole response.
pub async fn capture(req: RequestBuilder) -> Result<Captured, HarnessError> {
    let (client, req) = req.build_split();
    let req = req.map_err(HarnessError::Http)?;
    let label = match req.url().query() {
        Some(q) => format!("{} {}?{}", req.method(), req.url().path(), q),
        None => format!("{} {}", req.method(), req.url().path()),
    };
    let resp = client.execute(req).await.map_err(HarnessError::Http)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(HarnessError::Http)?;
    let json = serde_json::from_str(&text).ok();
    Ok(Captured {
        request: label,
        status,
        headers,
        text,
        json,
    })
}

impl Captured {
    fn mismatch(&self, what: impl std::fmt::Display) -> HarnessError {
        let mut body = self.text.clone();
        if body.len() > 2000 {
            let mut cut = 2000;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push_str("...");
        }
        HarnessError::Mismatch(format!(
            "{}: {what}\n  got status {} body {body}",
            self.request, self.status
        ))
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Never 5xx; `X-Request-ID` present; `Content-Type: application/json` (the Python SDKs
    /// only parse JSON bodies under that type, and both SDKs copy the request id into errors).
    pub fn expect_conventions(&self) -> Result<(), HarnessError> {
        if self.status.is_server_error() {
            return Err(self.mismatch("expected no 5xx"));
        }
        match self.header("x-request-id") {
            Some(id) if !id.trim().is_empty() => {}
            _ => return Err(self.mismatch("missing or empty X-Request-ID header")),
        }
        match self.header("content-type") {
            Some(ct) if ct.to_ascii_lowercase().starts_with("application/json") => Ok(()),
            other => Err(self.mismatch(format!(
                "expected Content-Type application/json, got {other:?}"
            ))),
        }
    }

    /// The status is `status` and the body is JSON; returns the body.
    pub fn expect_json(&self, status: u16) -> Result<&Value, HarnessError> {
        if self.status.as_u16() != status {
            return Err(self.mismatch(format!("expected status {status}")));
        }
        self.json
            .as_ref()
            .ok_or_else(|| self.mismatch("expected a JSON body"))
    }

    /// A WorkOS error: the status, a JSON object with a non-empty string `message`, and `code`
    /// when given. A 422 `invalid_request_parameters` must list its `errors[]` as
    /// `{field, code}` strings.
    pub fn expect_error(&self, status: u16, code: Option<&str>) -> Result<(), HarnessError> {
        self.expect_conventions()?;
        let body = self.expect_json(status)?;
        let obj = body
            .as_object()
            .ok_or_else(|| self.mismatch("expected a JSON object body"))?;
        match obj.get("message") {
            Some(Value::String(m)) if !m.trim().is_empty() => {}
            _ => return Err(self.mismatch("expected a non-empty string \"message\"")),
        }
        if let Some(want) = code {
            if obj.get("code").and_then(Value::as_str) != Some(want) {
                return Err(self.mismatch(format!("expected \"code\": {want:?}")));
            }
        }
        if obj.get("code").and_then(Value::as_str) == Some("invalid_request_parameters") {
            let errors = obj
                .get("errors")
                .and_then(Value::as_array)
                .filter(|e| !e.is_empty())
                .ok_or_else(|| self.mismatch("expected a non-empty \"errors\" array"))?;
            for e in errors {
                let ok = e.get("field").and_then(Value::as_str).is_some()
                    && e.get("code").and_then(Value::as_str).is_some();
                if !ok {
                    return Err(
                        self.mismatch(format!("errors[] entry {e} lacks string field/code"))
                    );
                }
            }
        }
        Ok(())
    }

    /// A 422 `invalid_request_parameters` whose `errors[]` names `field`.
    pub fn expect_invalid_field(&self, field: &str) -> Result<(), HarnessError> {
        self.expect_error(422, Some("invalid_request_parameters"))?;
        if self.error_fields().iter().any(|f| f == field) {
            Ok(())
        } else {
            Err(self.mismatch(format!("expected errors[] to name field {field:?}")))
        }
    }

    /// The `field`s listed in a 422 body's `errors[]`.
    pub fn error_fields(&self) -> Vec<String> {
        self.json
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_array)
            .map(|errs| {
                errs.iter()
                    .filter_map(|e| e.get("field").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

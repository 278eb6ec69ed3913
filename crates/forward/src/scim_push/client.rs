//! The SCIM 2.0 client side: requests to the target with the bearer token, and every answer
//! classified the way the forwarder acts on it.
//!
//! Redirects are never followed (the token would go to a host nobody configured); connect and
//! whole-request timeouts always apply; a body that is not JSON, or a create answered without
//! an `id`, is an error of that request, never a panic.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::resource::get_ci;

/// `Content-Type` of SCIM bodies.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Largest answer read (a list page of big groups stays far below).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Why a SCIM call failed, as the forwarder acts on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 429, 5xx, 408: try again later (`Retry-After` honoured).
    #[error("{what}: HTTP {status}{}", detail_suffix(.detail))]
    Busy {
        /// `POST /Users` ...
        what: String,
        /// Status.
        status: u16,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// The SCIM error detail, if any.
        detail: String,
    },
    /// 401 / 403: the token is wrong or lacks rights; nothing will work until it is fixed.
    #[error("{what}: HTTP {status}: the target refused the bearer token; set the directory's forward bearer_token to the token the target shows{}", detail_suffix(.detail))]
    Unauthorized {
        /// Request.
        what: String,
        /// Status.
        status: u16,
        /// Detail.
        detail: String,
    },
    /// 404.
    #[error("{what}: HTTP 404{}", detail_suffix(.detail))]
    NotFound {
        /// Request.
        what: String,
        /// Detail.
        detail: String,
    },
    /// 409 (uniqueness).
    #[error("{what}: HTTP 409{}", detail_suffix(.detail))]
    Conflict {
        /// Request.
        what: String,
        /// Detail.
        detail: String,
    },
    /// Another 4xx: the target refuses this object as it is.
    #[error("{what}: HTTP {status}{}", detail_suffix(.detail))]
    Refused {
        /// Request.
        what: String,
        /// Status.
        status: u16,
        /// `scimType`, if any.
        scim_type: Option<String>,
        /// Detail.
        detail: String,
    },
    /// A 3xx: not followed.
    #[error("{what}: the target answered HTTP {status} redirecting to {location:?}; redirects are refused (the bearer token would follow it): set the endpoint to the final URL")]
    Redirect {
        /// Request.
        what: String,
        /// Status.
        status: u16,
        /// `Location`.
        location: String,
    },
    /// A 2xx whose body is unusable (not JSON, no `id`).
    #[error("{what}: HTTP {status} but {problem}")]
    BadResponse {
        /// Request.
        what: String,
        /// Status.
        status: u16,
        /// What is wrong.
        problem: String,
    },
    /// No answer in time.
    #[error("{what}: no answer within {ms} ms ({detail})")]
    Timeout {
        /// Request.
        what: String,
        /// The limit.
        ms: u64,
        /// Transport detail.
        detail: String,
    },
    /// Connection refused, DNS, TLS, reset.
    #[error("{what}: cannot reach the target: {detail}")]
    Transport {
        /// Request.
        what: String,
        /// Detail.
        detail: String,
        /// The connection was never made, so the request surely did not reach the target.
        connect: bool,
    },
}

fn detail_suffix(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

impl CallError {
    /// Short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Busy { .. } => "busy",
            CallError::Unauthorized { .. } => "unauthorized",
            CallError::NotFound { .. } => "not_found",
            CallError::Conflict { .. } => "conflict",
            CallError::Refused { .. } => "refused",
            CallError::Redirect { .. } => "redirect",
            CallError::BadResponse { .. } => "bad_response",
            CallError::Timeout { .. } => "timeout",
            CallError::Transport { .. } => "transport",
        }
    }

    /// Whether the request may have been applied by the target although no usable answer came
    /// back (a create must then look before it tries again).
    pub fn ambiguous(&self) -> bool {
        match self {
            CallError::Busy { status, .. } => *status != 429,
            CallError::Timeout { .. } | CallError::BadResponse { .. } => true,
            CallError::Transport { connect, .. } => !connect,
            _ => false,
        }
    }

    /// Whether waiting and trying again is the answer (the target is busy, down, or refuses
    /// the token: every object would fail alike, so nothing is parked for it).
    pub fn retry_forever(&self) -> bool {
        matches!(
            self,
            CallError::Busy { .. } | CallError::Unauthorized { .. } | CallError::Transport { .. }
        )
    }

    /// The HTTP status, when the target answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Busy { status, .. }
            | CallError::Unauthorized { status, .. }
            | CallError::Refused { status, .. }
            | CallError::Redirect { status, .. }
            | CallError::BadResponse { status, .. } => Some(*status),
            CallError::NotFound { .. } => Some(404),
            CallError::Conflict { .. } => Some(409),
            CallError::Timeout { .. } | CallError::Transport { .. } => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// The JSON body (`Null` for an empty body, e.g. 204).
    pub body: Value,
}

impl Answer {
    /// The resource `id` of a create/replace answer.
    pub fn id(&self) -> Option<&str> {
        get_ci(&self.body, "id")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Base URL (no trailing `/`).
    pub endpoint: String,
    /// Bearer token.
    pub token: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Connections kept per host (>= the forwarder's concurrency).
    pub max_idle: usize,
}

/// One target's HTTP client. Clones share the connection pool.
#[derive(Clone)]
pub struct ScimClient {
    http: reqwest::Client,
    endpoint: String,
    auth: HeaderValue,
    timeout_ms: u64,
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ScimClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ScimClient {
    /// Builds the client; fails on a token that cannot be a header value.
    pub fn new(s: &ClientSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .pool_max_idle_per_host(s.max_idle.max(1))
            .tcp_nodelay(true)
            .no_proxy()
            .user_agent(format!("idbridge-scim-push/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", s.token))
            .map_err(|_| "the bearer token contains characters a header cannot carry".to_owned())?;
        auth.set_sensitive(true);
        Ok(ScimClient {
            http,
            endpoint: s.endpoint.trim_end_matches('/').to_owned(),
            auth,
            timeout_ms: u64::try_from(s.request_timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Sends one request; `path` is relative to the endpoint (`Users`, `Users/<id>`,
    /// `Users?filter=...`). 2xx → [`Answer`]; everything else → [`CallError`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, CallError> {
        let what = format!("{method} /{}", path.split('?').next().unwrap_or(path));
        let url = format!("{}/{path}", self.endpoint);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, HeaderValue::from_static(SCIM_CONTENT_TYPE));
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE))
                .body(b);
        }
        let resp = req.send().await.map_err(|e| self.transport(&what, e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = read_limited(resp).await.map_err(|e| match e {
            ReadError::TooBig => CallError::BadResponse {
                what: what.clone(),
                status: status.as_u16(),
                problem: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            },
            ReadError::Http(e) => self.transport(&what, e),
        })?;
        classify_answer(&what, status.as_u16(), retry_after, &location, &bytes)
    }

    fn transport(&self, what: &str, e: reqwest::Error) -> CallError {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        if e.is_timeout() {
            CallError::Timeout {
                what: what.to_owned(),
                ms: self.timeout_ms,
                detail,
            }
        } else {
            CallError::Transport {
                what: what.to_owned(),
                detail,
                connect: e.is_connect(),
            }
        }
    }
}

/// The outcome of one call from what the target answered: a 2xx with a JSON (or blank) body is
/// an [`Answer`]; everything else is the [`CallError`] the forwarder acts on (retry, re-create,
/// adopt, park). Separate from [`ScimClient::call`] so it can be fuzzed without a socket.
pub fn classify_answer(
    what: &str,
    code: u16,
    retry_after: Option<Duration>,
    location: &str,
    bytes: &[u8],
) -> Result<Answer, CallError> {
    let what = what.to_owned();
    let location = location.to_owned();
    let Ok(status) = StatusCode::from_u16(code) else {
        return Err(CallError::BadResponse {
            what,
            status: code,
            problem: "the status code is out of range".into(),
        });
    };
    if status.is_success() {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer {
                status: code,
                body: Value::Null,
            });
        }
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(body) => Ok(Answer { status: code, body }),
            Err(e) => Err(CallError::BadResponse {
                what,
                status: code,
                problem: format!("the body is not valid JSON ({e})"),
            }),
        };
    }
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let detail = parsed
        .as_ref()
        .and_then(|v| get_ci(v, "detail"))
        .and_then(Value::as_str)
        .map(|s| s.chars().take(300).collect::<String>())
        .unwrap_or_else(|| {
            String::from_utf8_lossy(bytes)
                .chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_owned()
        });
    let scim_type = parsed
        .as_ref()
        .and_then(|v| get_ci(v, "scimType"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Err(match status {
        s if s.is_redirection() => CallError::Redirect {
            what,
            status: code,
            location,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CallError::Unauthorized {
            what,
            status: code,
            detail,
        },
        StatusCode::NOT_FOUND => CallError::NotFound { what, detail },
        StatusCode::CONFLICT => CallError::Conflict { what, detail },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => CallError::Busy {
            what,
            status: code,
            retry_after,
            detail,
        },
        s if s.is_server_error() => CallError::Busy {
            what,
            status: code,
            retry_after,
            detail,
        },
        _ => CallError::Refused {
            what,
            status: code,
            scim_type,
            detail,
        },
    })
}

enum ReadError {
    TooBig,
    Http(reqwest::Error),
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ReadError::TooBig);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(past), Some(Duration::ZERO));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&future).expect("date");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}

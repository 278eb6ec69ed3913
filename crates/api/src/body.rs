//! Request-body and query extraction that fails in the WorkOS error format.
//!
//! axum's own extractors answer with plain-text rejections; these map every failure (oversized,
//! malformed, wrong content type, wrong field types) to an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The body of a JSON request, parsed as an object. Field validation is the handler's job
/// (through [`Fields`]) so that each wrong field gets its own `errors[]` entry.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.starts_with("application/json") || ct.contains("+json")
            })
            // Absent content type: be lenient, curl users forget it; the body must still parse.
            .unwrap_or(true);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(JsonObject(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::BadRequest {
                code: "invalid_json",
                message: "The request body must be a JSON object.".into(),
            }),
            Err(e) => Err(ApiError::BadRequest {
                code: "invalid_json",
                message: format!("The request body is not valid JSON: {e}."),
            }),
        }
    }
}

/// Reads the whole body under the router's `DefaultBodyLimit`, mapping overflow to 413.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: crate::MAX_BODY_BYTES,
            }
        } else {
            ApiError::BadRequest {
                code: "invalid_body",
                message: "The request body could not be read.".into(),
            }
        }
    })
}

/// Typed access to a JSON object's fields that collects every type error before failing.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: Vec<crate::error::FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, field: &str, code: &str) {
        self.errors.push(crate::error::FieldError::new(field, code));
    }

    /// Reports every top-level key not in `known` as `unknown_field` (a field the handler
    /// would otherwise drop silently).
    pub fn deny_unknown(&mut self, known: &[&str]) {
        let map = self.map;
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.errors.push(
                    crate::error::FieldError::new(key, "unknown_field").with_message(format!(
                        "`{key}` is not a field of this request; known fields: {}",
                        known.join(", ")
                    )),
                );
            }
        }
    }

    pub fn present(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    /// A string field; `null` counts as absent.
    pub fn opt_string(&mut self, field: &str) -> Option<String> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(field, "must_be_string");
                None
            }
        }
    }

    /// A required, non-blank string field.
    pub fn required_string(&mut self, field: &str) -> Option<String> {
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.error(field, "required");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.error(field, "must_not_be_blank");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(field, "must_be_string");
                None
            }
        }
    }

    pub fn opt_bool(&mut self, field: &str) -> Option<bool> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(field, "must_be_boolean");
                None
            }
        }
    }

    pub fn opt_array(&mut self, field: &str) -> Option<&'a Vec<Value>> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a),
            Some(_) => {
                self.error(field, "must_be_array");
                None
            }
        }
    }

    pub fn opt_object(&mut self, field: &str) -> Option<&'a Map<String, Value>> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.error(field, "must_be_object");
                None
            }
        }
    }

    /// Adds a service's field issues about the parsed input, except for fields already
    /// reported here (one error per field is enough).
    pub fn issues(&mut self, issues: Vec<idbridge_sso::FieldIssue>) {
        for i in issues {
            if !self.errors.iter().any(|e| e.field == i.field) {
                self.errors
                    .push(crate::error::FieldError::new(i.field, i.code));
            }
        }
    }

    /// Fails with every collected error, or returns Ok when none.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// The query string as ordered pairs, so repeated keys (`events=a&events=b`), bracket keys
/// (`events[]=a`) and comma-joined values (`events=a,b`) can all be read: the SDKs use each.
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        Ok(Query(
            url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Query {
    /// The last value of a single-valued parameter; empty values count as absent (Node drops
    /// empty query values, other clients send them).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a list parameter across its three encodings, trimmed, empties dropped.
    pub fn get_list(&self, name: &str) -> Vec<String> {
        let bracket = format!("{name}[]");
        self.0
            .iter()
            .filter(|(k, _)| *k == name || *k == bracket)
            .flat_map(|(_, v)| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_params_accept_three_encodings() {
        let q = Query(vec![
            ("events".into(), "a,b".into()),
            ("events".into(), "c".into()),
            ("events[]".into(), "d".into()),
            ("other".into(), "x".into()),
        ]);
        assert_eq!(q.get_list("events"), ["a", "b", "c", "d"]);
        assert_eq!(q.get("other"), Some("x"));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn fields_collect_every_type_error() {
        let map = serde_json::json!({"name": 5, "flag": "yes", "list": {}})
            .as_object()
            .cloned()
            .unwrap();
        let mut f = Fields::new(&map);
        assert!(f.required_string("name").is_none());
        assert!(f.opt_bool("flag").is_none());
        assert!(f.opt_array("list").is_none());
        assert!(f.required_string("absent").is_none());
        match f.finish() {
            Err(ApiError::Validation(errs)) => {
                let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["name", "flag", "list", "absent"]);
            }
            other => panic!("expected validation error, got {other:?}"),
        }
    }
}

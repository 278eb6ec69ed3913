//! WorkOS-shaped error responses (workos-api.md §2.4).
//!
//! Every failure leaves through [`ApiError`], so the status codes and bodies the SDKs parse are
//! decided in one place. Internal errors are logged with detail and answered with a generic body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// One invalid request parameter, as in the 422 `errors[]` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    /// What is wrong and what to do, when the code alone does not say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code: code.into(),
            message: None,
        }
    }

    /// With a human-readable explanation.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("{entity} not found: '{id}'")]
    NotFound { entity: &'static str, id: String },
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request timed out")]
    Timeout,
    /// Over a request-rate or failed-authentication limit: 429 with `Retry-After`.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after_secs: u64,
    },
    /// The client did not send its whole body in time (a slow or stalled client: 408, never
    /// a 5xx, since the server is not at fault).
    #[error("request body not received within {secs} s")]
    BodyTimeout { secs: u64 },
    /// OAuth-style errors (`/sso/token`): `{error, error_description}` with status 400.
    #[error("{error}: {description}")]
    OAuth {
        error: &'static str,
        description: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            entity,
            id: id.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, code: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, code)])
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { .. } | ApiError::OAuth { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // 503, not 408: both are retried by the SDKs, but 503 is what a proxy would say.
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::Unauthorized => json!({"message": "Unauthorized"}),
            ApiError::NotFound { entity, id } => json!({
                "message": format!("{entity} not found: '{id}'."),
                "code": "entity_not_found",
                "entity_id": id,
            }),
            ApiError::RouteNotFound => json!({"message": "Not Found", "code": "route_not_found"}),
            ApiError::MethodNotAllowed => {
                json!({"message": "Method Not Allowed", "code": "method_not_allowed"})
            }
            ApiError::Validation(errors) => json!({
                "message": "Validation failed.",
                "code": "invalid_request_parameters",
                "errors": errors,
            }),
            ApiError::BadRequest { code, message } | ApiError::Conflict { code, message } => {
                json!({"message": message, "code": code})
            }
            ApiError::PayloadTooLarge { limit } => json!({
                "message": format!("Request body exceeds the limit of {limit} bytes."),
                "code": "payload_too_large",
            }),
            ApiError::UnsupportedMediaType => json!({
                "message": "Content-Type must be application/json.",
                "code": "unsupported_media_type",
            }),
            ApiError::Timeout => json!({"message": "Request timed out.", "code": "timeout"}),
            ApiError::RateLimited {
                message,
                retry_after_secs,
            } => json!({
                "message": format!("{message}; retry after {retry_after_secs} seconds."),
                "code": "rate_limit_exceeded",
            }),
            ApiError::BodyTimeout { secs } => json!({
                "message": format!("The request body did not arrive within {secs} seconds; send it whole, or raise server.body_read_timeout_secs."),
                "code": "request_timeout",
            }),
            ApiError::OAuth { error, description } => {
                json!({"error": error, "error_description": description})
            }
            ApiError::Internal(_) => json!({"message": "Internal Server Error"}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if matches!(
            self,
            ApiError::PayloadTooLarge { .. } | ApiError::BodyTimeout { .. }
        ) {
            // The rest of the body was never read: the connection cannot carry another request,
            // and saying so keeps keep-alive clients (every SDK) from reusing it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<idbridge_store::StoreError> for ApiError {
    fn from(e: idbridge_store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<idbridge_sso::SsoError> for ApiError {
    fn from(e: idbridge_sso::SsoError) -> Self {
        use idbridge_sso::SsoError;
        match e {
            SsoError::NotFound { entity, id } => ApiError::NotFound { entity, id },
            SsoError::Invalid(issues) => ApiError::Validation(
                issues
                    .into_iter()
                    .map(|i| FieldError::new(i.field, i.code))
                    .collect(),
            ),
            SsoError::Refused { code, message } => ApiError::BadRequest { code, message },
            SsoError::Conflict { code, message } => ApiError::Conflict { code, message },
            SsoError::OAuth { error, description } => ApiError::OAuth { error, description },
            SsoError::Store(e) => ApiError::Internal(e.to_string()),
            SsoError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

//! HTTP errors in the OpenAI style: `{"error": {"message", "type", "code"}}`, and the one
//! place where the node's refusals ([`ServeError`]) become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vouch_node::error::{ErrorKind, ServeError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, m: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: m.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", m)
    }
    pub fn payment(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYMENT_REQUIRED, "insufficient_funds", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", m)
    }
    pub fn overloaded(m: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", m)
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        let m = e.message;
        match e.kind {
            ErrorKind::Invalid => ApiError::bad_request(m),
            ErrorKind::Payment => ApiError::payment(m),
            ErrorKind::NotFound => ApiError::not_found(m),
            ErrorKind::Overloaded => ApiError::overloaded(m),
            ErrorKind::Unavailable => ApiError::unavailable(m),
            ErrorKind::TooLarge => ApiError::too_large(m),
            ErrorKind::Internal => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "code": self.status.as_u16() }
        });
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

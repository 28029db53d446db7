//! HTTP errors in the OpenAI style: `{"error": {"message", "type", "param", "code"}}`
//! (`code` a string such as `context_length_exceeded`, `param` the request field at fault
//! or null), and the one place where the node's refusals ([`ServeError`]) become HTTP
//! statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vouch_node::error::{ErrorKind, ServeError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Machine-readable reason; by default one per status (see [`ApiError::code`]).
    pub code: Option<&'static str>,
    /// The request field at fault.
    pub param: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, m: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: m.into(),
            code: None,
            param: None,
        }
    }
    /// Names the reason (`context_length_exceeded`, `model_not_found`, ...).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }
    /// The `code` string of the body: the one given, else the status's.
    pub fn code(&self) -> &'static str {
        self.code.unwrap_or(match self.status.as_u16() {
            400 => "invalid_request",
            401 => "invalid_api_key",
            402 => "insufficient_quota",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            413 => "request_too_large",
            429 => "rate_limit_exceeded",
            503 => "service_unavailable",
            _ => "internal_error",
        })
    }
    /// The body's `error` object.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code()
        })
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", m)
    }
    /// A request field this node does not support (yet): a clear 400, never ignored.
    pub fn unsupported(param: &str, m: impl Into<String>) -> Self {
        Self::bad_request(m)
            .with_code("unsupported_parameter")
            .with_param(param)
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
        let body = serde_json::json!({ "error": self.body() });
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

/// The answer to a route this node does not have: a JSON 404 naming it.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path())).with_code("unknown_url")
}

//! The one error type of every HTTP route outside the page's server functions: a status, a message
//! for the client (`{"error": "..."}`), and a `cause` for `/metrics`. [`From<engine::Error>`] is the
//! one place an engine error becomes a status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered with a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub cause: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, cause: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            cause,
        }
    }

    pub fn bad_request(cause: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, cause, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// `message` prefixed with where in the request it happened.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<engine::Error> for ApiError {
    fn from(e: engine::Error) -> Self {
        use engine::Error as E;
        let status = match &e {
            E::Decode(_) | E::Shape(_) => StatusCode::BAD_REQUEST,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // A full queue and a server going down are both "come back later" (with Retry-After).
            E::Overloaded { .. } | E::ShuttingDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            E::Remote { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            cause: super::metrics::cause(&e),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, cause = self.cause, "{}", self.message);
        }
        let mut res = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

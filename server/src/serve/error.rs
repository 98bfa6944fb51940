//! Errors of the plain HTTP routes, answered with a status and a message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error of a plain HTTP route.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl From<engine::Error> for HttpError {
    fn from(e: engine::Error) -> Self {
        let status = match &e {
            engine::Error::Decode(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            engine::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            engine::Error::Shape(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        (self.status, self.message).into_response()
    }
}

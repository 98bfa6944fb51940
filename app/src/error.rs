//! The error type every server function of the app returns, shared by server and browser.

use serde::{Deserialize, Serialize};
use server_fn::codec::JsonEncoding;
use server_fn::error::{FromServerFnError, ServerFnErrorErr};

/// Why a server function failed as a whole. Failures of a single variant are not errors of the call:
/// they travel inside the successful answer, next to the variants that worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    // ---- the caller's fault (4xx) ----
    /// The request was understood but its content is wrong (tensor length, unknown variant, ...).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body is larger than the function accepts.
    #[error("request too large: {0}")]
    TooLarge(String),

    // ---- the server's state (5xx) ----
    /// The server has no model that could answer.
    #[error("no model available: {0}")]
    NoModels(String),
    /// Something failed inside the server.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server is doing as much of this kind of work as it admits; the caller may try again.
    #[error("busy: {0}")]
    Busy(String),

    // ---- transport ----
    /// Encoding, decoding or reaching the server function failed (raised by `server_fn` itself).
    #[error("{0}")]
    ServerFn(ServerFnErrorErr),
}

impl AppError {
    /// The HTTP status the server answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest(_) => 400,
            AppError::TooLarge(_) => 413,
            AppError::NoModels(_) => 503,
            AppError::Internal(_) => 500,
            AppError::Busy(_) => 503,
            // On the server these mean that the request's arguments did not decode.
            AppError::ServerFn(
                ServerFnErrorErr::Args(_)
                | ServerFnErrorErr::MissingArg(_)
                | ServerFnErrorErr::Deserialization(_),
            ) => 400,
            AppError::ServerFn(_) => 500,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    /// On the server this runs inside the server function's call (for arguments that do not
    /// decode, before the function's body), where it gives the response the error's status;
    /// `server_fn` would answer 500 otherwise.
    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        let error = AppError::ServerFn(value);
        #[cfg(feature = "ssr")]
        crate::ssr::set_error_status(&error);
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_through_their_encoder() {
        for e in [
            AppError::BadRequest("expected 150528 floats, got 3".into()),
            AppError::ServerFn(ServerFnErrorErr::Args("eof".into())),
        ] {
            assert_eq!(AppError::de(e.ser()), e);
        }
        assert_eq!(AppError::BadRequest(String::new()).status(), 400);
        assert_eq!(AppError::NoModels(String::new()).status(), 503);
    }
}

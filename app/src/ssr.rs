//! Server-only parts of the app: the loaded models ([`AppState`]) and the server functions' bodies.

pub mod classify;
pub mod facts;
mod state;

pub use state::{AppState, LoadedVariant, StateConfig, VariantLoad};

use crate::AppError;

/// The [`AppState`] the router provides to server functions.
pub fn state_from_context() -> Result<AppState, AppError> {
    leptos::prelude::use_context::<AppState>().ok_or_else(|| {
        let e = AppError::Internal("the server did not provide its state to this function".into());
        set_error_status(&e);
        e
    })
}

/// Makes the server function's HTTP response carry the status that fits `error` (server functions
/// answer every error with 500 otherwise).
pub fn set_error_status(error: &AppError) {
    if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        let status = axum::http::StatusCode::from_u16(error.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        response.set_status(status);
    }
}

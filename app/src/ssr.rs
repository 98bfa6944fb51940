//! Server-only parts of the app: the loaded models ([`AppState`]) and the server functions' bodies.
//!
//! Nothing a server function answers names a path of the server's machine: texts that may hold one
//! (the report's photo folders, load errors) go through [`without_paths`].

pub mod classify;
pub mod drift;
pub mod facts;
mod state;

pub use state::{AppState, LoadedVariant, Reloaded, StateConfig, VariantLoad};

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

/// `text` with every path in it (a word with a `/`, URLs excepted) cut to its last component:
/// `400 photos of /work/data/imagenet-sample with an odd index` → `… of imagenet-sample with …`.
pub fn without_paths(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let core = word.trim_start_matches(['(', '[', '"', '\'', '`']);
            let core = core.trim_end_matches([')', ']', ',', ';', ':', '"', '\'', '`']);
            if !core.contains('/') || core.contains("://") {
                return word.to_string();
            }
            let last = core
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|l| !l.is_empty())
                .unwrap_or("…");
            word.replacen(core, last, 1)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::without_paths;

    #[test]
    fn paths_are_cut_to_their_last_component() {
        assert_eq!(
            without_paths(
                "400 photos of /work/main/../shared/data/imagenet-sample with an odd index"
            ),
            "400 photos of imagenet-sample with an odd index"
        );
        assert_eq!(
            without_paths("could not read (/srv/m/resnet50-int8.onnx): bad, see ./x/"),
            "could not read (resnet50-int8.onnx): bad, see x"
        );
        assert_eq!(without_paths("AMD EPYC, 2 cores"), "AMD EPYC, 2 cores");
        assert_eq!(without_paths("a / b"), "a … b");
        let remote = "kserve http://10.0.0.5:8000/v2/models/resnet50-int8 refused";
        assert_eq!(without_paths(remote), remote);
    }
}

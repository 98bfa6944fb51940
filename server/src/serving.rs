//! Inference over HTTP for programs: KServe v2 (`/v2/...`, [`crate::kserve`]), the Vertex AI
//! custom-container contract ([`crate::vertex`]) and Prometheus `/metrics` ([`crate::metrics`]), on the
//! same port as the web app. Every request runs through its variant's dynamic batcher (the
//! [`AppState`] owns one per ready variant); errors answer with a clear status and `{"error": ...}`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use engine::batcher::Answer;

use app::ssr::{AppState, VariantLoad};

use crate::metrics::Metrics;
use crate::vertex::VertexSettings;

/// Largest request body of the inference routes: 64 images as JSON floats fit (3 MB each) and a
/// 100 MB body gets 413 before it is read.
pub const INFER_BODY_LIMIT: usize = 64 << 20;

/// What the serving routes share. Cheap to clone.
#[derive(Clone)]
pub struct ServingState {
    pub app: AppState,
    pub metrics: Arc<Metrics>,
    pub vertex: Arc<VertexSettings>,
}

/// The KServe v2, Vertex AI and `/metrics` routes, to merge into the web app's router.
pub fn routes(state: ServingState) -> Router {
    crate::kserve::routes()
        .merge(crate::vertex::routes(&state.vertex))
        .route("/metrics", get(crate::metrics::handler))
        .with_state(state)
}

/// An error of the serving routes: a status, a message for the client, and a `cause` for `/metrics`.
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
            cause: crate::metrics::cause(&e),
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

impl ServingState {
    /// Counts an error raised before the request reached a variant's queue and returns it.
    pub fn reject(&self, variant: &str, e: ApiError) -> ApiError {
        self.metrics.rejected(variant, e.cause);
        e
    }

    /// Checks that `name` is a variant that can answer now.
    pub fn ready_variant(&self, name: &str) -> Result<engine::batcher::Batcher, ApiError> {
        let Some((variant, batcher)) = self.app.variant(name) else {
            let known: Vec<_> = self.app.variants().iter().map(|v| v.spec.id).collect();
            return Err(self.reject(
                "-",
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_model",
                    format!("unknown model `{name}` (models: {})", known.join(", ")),
                ),
            ));
        };
        if let (VariantLoad::Ready(_), Some(b)) = (&variant.load, batcher) {
            return Ok(b.clone());
        }
        let why = match &variant.load {
            VariantLoad::Missing => format!("{} is missing", variant.path.display()),
            VariantLoad::Failed(e) => e.clone(),
            VariantLoad::Ready(_) => "it has no batcher".into(),
        };
        Err(self.reject(
            name,
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("model `{name}` is not available: {why}"),
            ),
        ))
    }

    /// Runs `images` preprocessed images through variant `name`'s batcher.
    pub async fn infer(
        &self,
        name: &str,
        input: Arc<Vec<f32>>,
        images: usize,
        timeout: Option<Duration>,
    ) -> Result<Answer, ApiError> {
        let batcher = self.ready_variant(name)?;
        if let Err(e) = engine::backend::check_input(&input, images) {
            return Err(self.reject(name, e.into()));
        }
        if let Some(i) = input.iter().position(|v| !v.is_finite()) {
            return Err(self.reject(
                name,
                ApiError::bad_request(
                    "bad_input",
                    format!("the input has a non-finite value at index {i}"),
                ),
            ));
        }
        // The batcher counts its own outcomes (requests, queue full, deadline, model errors).
        Ok(batcher.infer(input, images, timeout).await?)
    }
}

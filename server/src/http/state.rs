//! What every route shares ([`HttpState`]) and the steps every inference route takes: find a variant
//! that can answer, admit a request before decoding anything, run it through the variant's batcher.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::http::StatusCode;
use engine::batcher::{Answer, Batcher};
use leptos::config::LeptosOptions;

use app::ssr::{AppState, VariantLoad};

use super::access::Access;
use super::error::ApiError;
use super::limits::Limits;
use super::metrics::Metrics;
use super::vertex::VertexSettings;

/// What the routes share. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub leptos: LeptosOptions,
    pub metrics: Arc<Metrics>,
    pub vertex: Arc<VertexSettings>,
    pub limits: Arc<Limits>,
    pub access: Arc<Access>,
    /// Whether `/metrics` is served on the main port (else on `--metrics-addr`).
    pub metrics_on_main_port: bool,
    /// Whether load and unload requests are obeyed (`--model-control`).
    pub model_control: ModelControl,
}

/// How far a running server follows its models folder (`--model-control`; the routes are
/// [`super::repository`]'s, which describes each mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModelControl {
    #[default]
    None,
    Explicit,
    Poll,
}

impl ModelControl {
    /// Whether load and unload requests are obeyed.
    pub fn allows_requests(self) -> bool {
        self != ModelControl::None
    }
}

impl FromRef<HttpState> for AppState {
    fn from_ref(s: &HttpState) -> Self {
        s.app.clone()
    }
}

impl FromRef<HttpState> for LeptosOptions {
    fn from_ref(s: &HttpState) -> Self {
        s.leptos.clone()
    }
}

impl HttpState {
    /// The state of a server with the default limits, no access control and fresh metrics.
    pub fn new(app: AppState, leptos: LeptosOptions, limits: Limits) -> Self {
        HttpState {
            app,
            leptos,
            metrics: Arc::new(Metrics::new()),
            vertex: Arc::new(VertexSettings::default()),
            limits: Arc::new(limits),
            access: Arc::new(Access::default()),
            metrics_on_main_port: true,
            model_control: Default::default(),
        }
    }

    /// Counts an error raised before the request reached a variant's queue and returns it.
    pub fn reject(&self, variant: &str, e: ApiError) -> ApiError {
        self.metrics.rejected(variant, e.cause);
        e
    }

    /// The 404 of a model name the registry does not know (counted), listing the known ones.
    pub fn unknown_model(&self, name: &str) -> ApiError {
        let known: Vec<_> = engine::variants::VARIANTS.iter().map(|v| v.id).collect();
        self.reject(
            "-",
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_model",
                format!("unknown model `{name}` (models: {})", known.join(", ")),
            ),
        )
    }

    /// Checks that `name` is a variant that can answer now.
    pub fn ready_variant(&self, name: &str) -> Result<Batcher, ApiError> {
        let Some((variant, batcher)) = self.app.variant(name) else {
            return Err(self.unknown_model(name));
        };
        if let (VariantLoad::Ready(_), Some(b)) = (&variant.load, batcher) {
            return Ok(b);
        }
        let why = self.load_problem(&variant.load, &variant.path);
        Err(self.reject(
            name,
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("model `{name}` is not available: {why}"),
            ),
        ))
    }

    /// Why a variant did not load, without the server's file-system layout (the models folder's
    /// absolute path is left out of anything a client reads).
    pub fn load_problem(&self, load: &VariantLoad, path: &Path) -> String {
        match load {
            VariantLoad::Missing => format!("{} is missing", file_name(path)),
            VariantLoad::Failed(e) => self.redact(e),
            VariantLoad::Unloaded => "unloaded by a model-repository request".into(),
            VariantLoad::Ready(_) => "it has no batcher".into(),
        }
    }

    /// `text` with the models folder's absolute path removed.
    pub fn redact(&self, text: &str) -> String {
        let dir = &self.app.config().models_dir;
        let mut out = text.to_string();
        for d in [std::fs::canonicalize(dir).ok(), Some(dir.to_path_buf())]
            .into_iter()
            .flatten()
        {
            let d = d.display().to_string();
            if !d.is_empty() {
                out = out
                    .replace(&format!("{d}/"), "")
                    .replace(&d, "the models folder");
            }
        }
        out
    }

    /// Admission before any photo is decoded: `requests` more requests must fit in the queue now.
    pub fn admit(&self, variant: &str, batcher: &Batcher, requests: usize) -> Result<(), ApiError> {
        let c = batcher.config();
        let free = c.queue_capacity.saturating_sub(batcher.queue_depth());
        if requests > free {
            return Err(self.reject(
                variant,
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "variant `{variant}` is overloaded: its queue of {} requests has room for {free}, \
                         not {requests}",
                        c.queue_capacity
                    ),
                ),
            ));
        }
        Ok(())
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

    /// [`HttpState::infer`] for image bytes (`images × 224×224×3`, HWC): the model normalizes them
    /// (`Model::run_u8`; on the GPU, a quarter of the float upload).
    pub async fn infer_pixels(
        &self,
        name: &str,
        pixels: Arc<Vec<u8>>,
        images: usize,
        timeout: Option<Duration>,
    ) -> Result<Answer, ApiError> {
        let batcher = self.ready_variant(name)?;
        if let Err(e) = engine::backend::check_pixels(&pixels, images) {
            return Err(self.reject(name, e.into()));
        }
        let mut request =
            engine::batcher::Request::new(engine::batcher::Input::Pixels(pixels), images);
        request.timeout = timeout;
        Ok(batcher.submit(request).await?)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().to_string(),
    )
}

//! The HTTP layer of `inferscope serve`: one router ([`app`]) for the page and the programmatic APIs on
//! one port, one error type ([`error::ApiError`]), and the limits and access checks every request
//! passes first.
//!
//! - [`page`]: the Leptos page, its server functions, `/healthz`, the site's files;
//! - [`kserve`]: KServe v2 (`/v2/...`); [`repository`]: Triton's model repository (index, load,
//!   unload; `--model-control`); [`vertex`]: the Vertex AI custom-container contract;
//!   [`metrics`]: Prometheus `/metrics` (on this port or `--metrics-addr`); [`preprocess`]:
//!   `POST /api/preprocess`;
//! - [`access`]: token, Host and cross-site checks; [`limits`]: body size/time/memory and decoding
//!   limits; [`listen`]: the accept loop (header timeout, connection cap, shutdown deadline);
//! - [`state`]: what the routes share and the steps of every inference (find, admit, infer).
//!
//! A request passes, in order: the access checks, then the body limits (the body is read whole
//! here), then its route. Every refusal is answered (never a dropped connection) and counted in
//! `/metrics` under its cause.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;

pub mod access;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod kserve;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod page;
pub mod preprocess;
pub mod repository;
mod state;
#[cfg(test)]
mod tests;
pub mod vertex;

pub use state::HttpState;

/// The whole application: the page, the APIs, and the checks in front of them.
pub fn app(state: HttpState) -> Router {
    // The inference routes' size limit is `limits::body_limit`, applied by `buffer_body` before the
    // route runs; axum's own 2 MiB default for `Bytes` would refuse a one-photo JSON tensor (3 MB).
    let mut api = kserve::routes()
        .merge(repository::routes())
        .merge(vertex::routes(&state.vertex))
        .layer(DefaultBodyLimit::disable());
    if state.metrics_on_main_port {
        api = api.route("/metrics", get(metrics::handler));
    }
    let body = limits::BodyState {
        limits: state.limits.clone(),
        metrics: state.metrics.clone(),
        vertex_predict: state.vertex.predict_route.clone(),
    };
    let access = (state.access.clone(), state.metrics.clone());
    page::routes(&state)
        .merge(api)
        .with_state(state)
        .layer(from_fn_with_state(body, limits::buffer_body))
        .layer(from_fn_with_state(access, access::check))
}

/// `/metrics` alone, for `--metrics-addr` (behind the Host check only: that port is for the
/// scraper's network).
pub fn metrics_app(state: HttpState) -> Router {
    let mut open = (*state.access).clone();
    open.drop_token();
    Router::new()
        .route("/metrics", get(metrics::handler))
        .with_state(state.clone())
        .layer(from_fn_with_state(
            (Arc::new(open), state.metrics.clone()),
            access::check,
        ))
}

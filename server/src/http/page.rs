//! The page: server-side rendering with hydration (Leptos), its server functions, `/healthz` and the
//! built site's files. The page and its server functions come from the `app` crate; the WASM bundle,
//! stylesheet and public assets are read from the site root that `./x` builds (`target/site`).

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leptos::prelude::*;
use leptos_axum::{
    file_and_error_handler_with_context, generate_route_list_with_exclusions,
    handle_server_fns_with_context, AxumRouteListing, LeptosRoutes,
};
use leptos_router::SsrMode;

use app::classify::{
    CLASSIFY_BODY_LIMIT, CLASSIFY_PATH, CLASSIFY_SET_BODY_LIMIT, CLASSIFY_SET_PATH,
};
use app::drift::DRIFT_PATH;
use app::ssr::AppState;
use app::{shell, App};

use super::{preprocess, HttpState};

/// Base name of the WASM bundle and stylesheet under `/pkg`.
pub const OUTPUT_NAME: &str = "inferscope";

/// The page (SSR), its server functions, `/api/preprocess`, `/healthz`, and the built site's files.
pub fn routes(http: &HttpState) -> Router<HttpState> {
    let options = http.leptos.clone();
    let state = http.app.clone();
    // `classify`, `layer_drift` and `classify_set` carry photos' pixels: they get routes with body
    // limits of their own (the other server functions keep axum's default), so they are left out of
    // the automatic registration.
    //
    // The page is rendered whole before its first byte goes out (`SsrMode::Async`), not streamed
    // out of order: what it waits for (the variant list, the report's facts, the prices) is local
    // and takes milliseconds, and a streamed document sometimes never finished loading in Chromium —
    // in session 10's e2e run the page had parsed the shell and the first out-of-order chunk, the
    // browser's network stack had the whole response, and the rest never reached the page
    // (`readyState` stayed "loading", docs/page.md "Known issue").
    let excluded = [CLASSIFY_PATH, DRIFT_PATH, CLASSIFY_SET_PATH];
    let routes = generate_route_list_with_exclusions(
        App,
        Some(excluded.iter().map(|p| p.to_string()).collect()),
    )
    .into_iter()
    .map(|r| {
        if excluded.contains(&r.path()) {
            r // the listing that keeps the server function out of the automatic registration
        } else {
            AxumRouteListing::new(r.path().to_string(), SsrMode::Async, r.methods(), vec![])
        }
    })
    .collect::<Vec<_>>();
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let photo_fn = {
        let context = context.clone();
        move |req: Request<Body>| photo_route(context.clone(), req)
    };
    let page = {
        let options = options.clone();
        move || shell(options.clone())
    };
    let mut router = Router::new()
        .route(
            CLASSIFY_PATH,
            post(photo_fn.clone()).layer(DefaultBodyLimit::max(CLASSIFY_BODY_LIMIT)),
        )
        .route(
            DRIFT_PATH,
            post(photo_fn.clone()).layer(DefaultBodyLimit::max(CLASSIFY_BODY_LIMIT)),
        )
        .route(
            CLASSIFY_SET_PATH,
            post(photo_fn).layer(DefaultBodyLimit::max(CLASSIFY_SET_BODY_LIMIT)),
        );
    // The sample photos (the labelled-set view runs the whole folder): from `--samples-dir`, which
    // may lie outside the site.
    if let Some(dir) = &state.config().samples_dir {
        router = router.nest_service("/samples", tower_http::services::ServeDir::new(dir));
    }
    router
        .route(
            preprocess::PATH,
            post(preprocess::handler).layer(DefaultBodyLimit::max(preprocess::BODY_LIMIT)),
        )
        .route("/healthz", get(health))
        .leptos_routes_with_context(http, routes, context.clone(), page)
        .fallback(file_and_error_handler_with_context::<HttpState, _>(
            context, shell,
        ))
}

/// `POST /api/classify`, `/api/layer_drift` and `/api/classify_set`: those server functions on
/// routes of their own, for their body limits (`buffer_body` has already read the body within
/// [`CLASSIFY_BODY_LIMIT`] / [`CLASSIFY_SET_BODY_LIMIT`]). Errors carry the status
/// of their [`app::AppError`] (see its `FromServerFnError` impl).
async fn photo_route(context: impl Fn() + Clone + Send + 'static, req: Request<Body>) -> Response {
    handle_server_fns_with_context(context, req)
        .await
        .into_response()
}

/// `GET /healthz`: 200 with which variants can answer.
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let variants: Vec<_> = state
        .variant_infos()
        .into_iter()
        .map(|v| serde_json::json!({ "id": v.id, "ready": v.availability.is_ready() }))
        .collect();
    Json(serde_json::json!({ "status": "ok", "variants": variants }))
}

//! The page: server-side rendering with hydration (Leptos), its server functions, `/healthz` and the
//! built site's files. The page and its server functions come from the `app` crate; the WASM bundle,
//! stylesheet and public assets are read from the site root that `./x` builds (`target/site`).

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leptos::prelude::*;
use leptos_axum::{
    file_and_error_handler_with_context, generate_route_list_with_exclusions,
    handle_server_fns_with_context, LeptosRoutes,
};

use app::classify::{CLASSIFY_BODY_LIMIT, CLASSIFY_PATH};
use app::ssr::AppState;
use app::{shell, App, AppError};

use super::{preprocess, HttpState};

/// Base name of the WASM bundle and stylesheet under `/pkg`.
pub const OUTPUT_NAME: &str = "inferscope";

/// The page (SSR), its server functions, `/api/preprocess`, `/healthz`, and the built site's files.
pub fn routes(http: &HttpState) -> Router<HttpState> {
    let options = http.leptos.clone();
    let state = http.app.clone();
    // `classify` carries a 602 KB tensor: it gets its own route with a body limit of its own (the
    // other server functions keep axum's default), so it is left out of the automatic registration.
    let routes = generate_route_list_with_exclusions(App, Some(vec![CLASSIFY_PATH.to_string()]));
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let classify = {
        let context = context.clone();
        move |parts: Parts, body: Result<Bytes, BytesRejection>| {
            classify_route(context.clone(), parts, body)
        }
    };
    let page = {
        let options = options.clone();
        move || shell(options.clone())
    };
    Router::new()
        .route(
            CLASSIFY_PATH,
            post(classify).layer(DefaultBodyLimit::max(CLASSIFY_BODY_LIMIT)),
        )
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

/// `POST /api/classify`: the `classify` server function behind a body limit of its own. The body is
/// read here, so that an oversized one is refused with 413 whether or not it announced its length.
async fn classify_route(
    context: impl Fn() + Clone + Send + 'static,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::TooLarge(format!("the body exceeds {CLASSIFY_BODY_LIMIT} bytes"))
            } else {
                AppError::BadRequest(rejection.body_text())
            };
            return (status, Json(error)).into_response();
        }
    };
    let req = Request::from_parts(parts, Body::from(body));
    error_status(
        handle_server_fns_with_context(context, req)
            .await
            .into_response(),
    )
    .await
}

/// `server_fn` answers the errors it raises itself (arguments that do not decode) with 500; give
/// them the status their [`AppError`] calls for.
async fn error_status(res: Response) -> Response {
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
    if let Ok(e) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status = StatusCode::from_u16(e.status()).unwrap_or(parts.status);
    }
    Response::from_parts(parts, Body::from(bytes))
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

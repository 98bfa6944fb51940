//! Triton's model-repository extension: the index (`POST /v2/repository/index`), and loading and
//! unloading a variant while the server runs (`POST /v2/repository/models/{name}/load` / `unload`).
//!
//! The models folder is the repository and the variant ids are its models. How far a running server
//! follows the folder is `--model-control`, named after Triton's `--model-control-mode`:
//! - `none` (the default): the variants are loaded at start-up; load and unload requests are refused;
//! - `explicit`: load and unload requests are obeyed (a load reads the variant's file again, warms it
//!   up and swaps it in; the model it replaces finishes the requests in its queue);
//! - `poll`: the server also looks at the folder every `--repository-poll-secs` and loads a variant
//!   whose file appeared or changed (`./x run` builds the variants in the background this way, so the
//!   page answers with the baseline first). Load and unload requests work too; an unloaded variant
//!   stays unloaded until its file changes or a load request brings it back.
//!
//! Loading reads only the registry's file names in the models folder: a request names a variant,
//! never a path. Behind the API token when one is set, like every `/v2` route.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use app::ssr::{Reloaded, VariantLoad};

use super::error::ApiError;
use super::kserve::VERSION;
use super::HttpState;

pub use super::state::ModelControl;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
}

/// One model of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub name: &'static str,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is unavailable (without absolute paths); empty when ready.
    pub reason: String,
}

/// Every variant with its state, or only the ready ones.
pub fn index_entries(s: &HttpState, only_ready: bool) -> Vec<IndexEntry> {
    s.app
        .variants()
        .iter()
        .filter_map(|v| {
            let (state, reason) = match &v.load {
                VariantLoad::Ready(_) => ("READY", String::new()),
                _ if only_ready => return None,
                VariantLoad::Unloaded => ("UNAVAILABLE", "unloaded".to_string()),
                other => ("UNAVAILABLE", s.load_problem(other, &v.path)),
            };
            Some(IndexEntry {
                name: v.spec.id,
                state,
                reason,
            })
        })
        .collect()
}

/// Every variant with its state. Triton's body `{"ready": true}` (only the ready models) is
/// honoured; any other body lists all.
async fn index(State(s): State<HttpState>, body: axum::body::Bytes) -> Json<Value> {
    let only_ready = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("ready").and_then(Value::as_bool))
        .unwrap_or(false);
    let models: Vec<Value> = index_entries(&s, only_ready)
        .into_iter()
        .map(
            |e| json!({ "name": e.name, "version": VERSION, "state": e.state, "reason": e.reason }),
        )
        .collect();
    Json(Value::Array(models))
}

/// The variant named by the path, or the KServe 404; and a refusal when model control is off or the
/// request carries parameters (`parameters`: their names). Triton lets a load carry a model config or
/// files; this repository's models are the registry's files only, so such a parameter is refused
/// rather than ignored.
fn allowed(s: &HttpState, name: &str, what: &str, parameters: &[String]) -> Result<(), ApiError> {
    if !s.model_control.allows_requests() {
        return Err(s.reject(
            name,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "model_control_off",
                format!(
                    "cannot {what} `{name}`: this server loads its models at start-up only (start it \
                     with --model-control explicit or poll to load and unload while serving)"
                ),
            ),
        ));
    }
    if engine::variants::by_id(name).is_none() {
        return Err(s.unknown_model(name));
    }
    // Triton's `unload_dependents` (tritonclient sends it on every unload) has nothing to act on:
    // no model here depends on another.
    let refused: Vec<&str> = parameters
        .iter()
        .map(String::as_str)
        .filter(|p| !(what == "unload" && *p == "unload_dependents"))
        .collect();
    if !refused.is_empty() {
        return Err(s.reject(
            name,
            ApiError::bad_request(
                "bad_request",
                format!(
                    "{what} parameters are not supported (got {}): a variant loads from its own \
                     file in the models folder",
                    refused.join(", ")
                ),
            ),
        ));
    }
    Ok(())
}

/// The parameter names of an HTTP load/unload body (`{"parameters": {...}}`; empty or no body: none).
fn body_parameters(s: &HttpState, name: &str, body: &[u8]) -> Result<Vec<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        s.reject(
            name,
            ApiError::bad_request("bad_request", format!("the body is not JSON: {e}")),
        )
    })?;
    Ok(value
        .get("parameters")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default())
}

/// Loads (or reloads) variant `name` from its file once it is ready, or says why not (400, as Triton
/// answers a failed load); a failed reload keeps the model that was answering.
pub async fn load_variant(
    s: &HttpState,
    name: &str,
    parameters: &[String],
) -> Result<(), ApiError> {
    allowed(s, name, "load", parameters)?;
    let app = s.app.clone();
    let id = name.to_string();
    let outcome = tokio::task::spawn_blocking(move || app.reload(&id))
        .await
        .map_err(|e| ApiError::internal(format!("loading `{name}` stopped: {e}")))?
        .ok_or_else(|| ApiError::internal(format!("`{name}` left the registry")))?;
    let fail = |why: String| {
        s.reject(
            name,
            ApiError::bad_request("load_failed", format!("failed to load `{name}`: {why}")),
        )
    };
    match outcome {
        Reloaded::Ready | Reloaded::Remote => Ok(()),
        Reloaded::Missing => {
            let file = engine::variants::by_id(name).map_or("", |v| v.file);
            Err(fail(format!("{file} is not in the models folder")))
        }
        Reloaded::Failed {
            error,
            kept_previous,
        } => {
            let kept = if kept_previous {
                " (the model loaded before still answers)"
            } else {
                ""
            };
            Err(fail(format!("{}{kept}", s.redact(&error))))
        }
    }
}

/// Takes variant `name` out of service: its queued requests finish, new ones get 503.
pub fn unload_variant(s: &HttpState, name: &str, parameters: &[String]) -> Result<(), ApiError> {
    allowed(s, name, "unload", parameters)?;
    s.app.unload(name);
    Ok(())
}

async fn load(
    State(s): State<HttpState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let parameters = body_parameters(&s, &name, &body)?;
    load_variant(&s, &name, &parameters).await?;
    Ok(Json(json!({})))
}

async fn unload(
    State(s): State<HttpState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let parameters = body_parameters(&s, &name, &body)?;
    unload_variant(&s, &name, &parameters)?;
    Ok(Json(json!({})))
}

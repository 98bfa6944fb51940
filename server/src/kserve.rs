//! KServe v2 / Open Inference Protocol over HTTP, as Triton speaks it.
//!
//! Health (`/v2/health/{live,ready}`), server and model metadata (`/v2`, `/v2/models/{name}`), model
//! readiness and config, Triton's model-repository index (`POST /v2/repository/index`), and inference
//! (`POST /v2/models/{name}[/versions/1]/infer`) with JSON tensors and Triton's binary tensor extension:
//! the body starts with `Inference-Header-Content-Length` bytes of JSON, followed by the inputs that
//! declare `parameters.binary_data_size`, in order; outputs asked for with `binary_data` (or all of
//! them with `binary_data_output`) come back the same way. Triton's classification extension
//! (`parameters.classification: k` on an output) answers `"value:index:label"` strings.
//!
//! Model names are the variant ids. Each has one input, `input`: FP32 `[N, 3, 224, 224]` (preprocessed
//! as `engine::preprocess` does) or BYTES `[N]` (encoded JPEG/PNG/WebP photos, binary only, preprocessed
//! on the server); and one output, `logits`: FP32 `[N, 1000]`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tower_http::limit::RequestBodyLimitLayer;

use app::ssr::VariantLoad;
use engine::{INPUT_LEN, INPUT_SIZE, NUM_CLASSES};

use crate::floats::Floats;
use crate::serving::{ApiError, ServingState, INFER_BODY_LIMIT};

/// The header that gives the JSON part's length in a binary request or response.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// The only model version: variants are rebuilt, not versioned.
pub const VERSION: &str = "1";
/// The model's input and output names.
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";

pub fn routes() -> Router<ServingState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/infer", post(infer).layer(body_limit()))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_v).layer(body_limit()),
        )
}

/// The inference routes' body limit: a `Content-Length` over it gets 413 before the body is read
/// (`RequestBodyLimitLayer`); a longer streamed body fails while being read (`DefaultBodyLimit`).
pub fn body_limit() -> tower::layer::util::Stack<DefaultBodyLimit, RequestBodyLimitLayer> {
    tower::layer::util::Stack::new(
        DefaultBodyLimit::max(INFER_BODY_LIMIT),
        RequestBodyLimitLayer::new(INFER_BODY_LIMIT),
    )
}

// ---- health and metadata ----

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "inferscope",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification", "model_repository"],
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready (200) when at least one variant can answer, else 503; the body lists what each ready model
/// says it is (backend, device, path, location).
async fn ready(State(s): State<ServingState>) -> (StatusCode, Json<Value>) {
    let models: Vec<Value> = s
        .app
        .variants()
        .iter()
        .filter_map(|v| Some(json!({ "name": v.spec.id, "info": v.info()? })))
        .collect();
    let status = if models.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({ "ready": !models.is_empty(), "models": models })),
    )
}

/// Triton's model-repository index: every variant with its state.
async fn repository_index(State(s): State<ServingState>) -> Json<Value> {
    let models: Vec<Value> = s
        .app
        .variants()
        .iter()
        .map(|v| {
            let (state, reason) = match &v.load {
                VariantLoad::Ready(_) => ("READY", String::new()),
                VariantLoad::Missing => ("UNAVAILABLE", format!("{} is missing", v.path.display())),
                VariantLoad::Failed(e) => ("UNAVAILABLE", e.clone()),
            };
            json!({ "name": v.spec.id, "version": VERSION, "state": state, "reason": reason })
        })
        .collect();
    Json(Value::Array(models))
}

fn check_version(s: &ServingState, name: &str, version: &str) -> Result<(), ApiError> {
    if version == VERSION {
        Ok(())
    } else {
        Err(s.reject(
            name,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_model",
                format!("model `{name}` has no version `{version}` (only `{VERSION}`)"),
            ),
        ))
    }
}

async fn model_metadata(
    State(s): State<ServingState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batcher = s.ready_variant(&name)?;
    let max = batcher.config().max_batch_size;
    let info = s.app.variant(&name).and_then(|(v, _)| v.info());
    Ok(Json(json!({
        "name": name,
        "versions": [VERSION],
        "platform": info.as_ref().map_or("", |i| i.platform()),
        // What runs it: backend, device, the computation path, where (engine::backend::ModelInfo).
        "parameters": info,
        "inputs": [{
            "name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, INPUT_SIZE, INPUT_SIZE],
            "parameters": { "alternative": "BYTES [-1]: encoded photos", "max_batch_size": max },
        }],
        "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES] }],
    })))
}

async fn model_metadata_v(
    state: State<ServingState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&state, &name, &version)?;
    model_metadata(state, Path(name)).await
}

/// 200 when the variant can answer; 404 for an unknown name, 503 for one that is not loaded.
async fn model_ready(
    State(s): State<ServingState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.ready_variant(&name).map(|_| StatusCode::OK)
}

async fn model_ready_v(
    state: State<ServingState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_version(&state, &name, &version)?;
    model_ready(state, Path(name)).await
}

/// A Triton-style model configuration (what `tritonclient`'s `get_model_config` reads).
async fn model_config(
    State(s): State<ServingState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batcher = s.ready_variant(&name)?;
    let c = batcher.config();
    let info = s.app.variant(&name).and_then(|(v, _)| v.info());
    let kind = match info.as_ref().map(|i| i.backend) {
        Some(engine::backend::BackendKind::Cuda) => "KIND_GPU",
        _ => "KIND_CPU",
    };
    Ok(Json(json!({
        "name": name,
        "platform": info.as_ref().map_or("", |i| i.platform()),
        "max_batch_size": c.max_batch_size,
        "input": [{ "name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": [3, INPUT_SIZE, INPUT_SIZE] }],
        "output": [{ "name": OUTPUT_NAME, "data_type": "TYPE_FP32", "dims": [NUM_CLASSES] }],
        "dynamic_batching": {
            "max_queue_delay_microseconds": c.max_queue_delay.as_micros() as u64,
            "default_queue_policy": {
                "max_queue_size": c.queue_capacity,
                "default_timeout_microseconds": c.timeout.as_micros() as u64,
            },
        },
        "instance_group": [{ "count": c.instances, "kind": kind }],
    })))
}

// ---- inference ----

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// JSON data, read straight into floats (see [`crate::floats`]).
    #[serde(default)]
    data: Option<Floats>,
}

#[derive(Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

async fn infer_v(
    state: State<ServingState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_version(&state, &name, &version)?;
    infer(state, Path(name), headers, body).await
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer(
    State(s): State<ServingState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| s.reject(&name, body_error(e)))?;
    let max_images = s.ready_variant(&name)?.config().max_batch_size;
    let (request, binary) = parse(&headers, &body).map_err(|e| s.reject(&name, e))?;
    let (tensor, images) = input_tensor(&request, binary, max_images)
        .await
        .map_err(|e| s.reject(&name, e))?;
    let outputs = requested_outputs(&request).map_err(|e| s.reject(&name, e))?;
    let timeout = match request.parameters.get("timeout") {
        // Triton's request timeout, in microseconds.
        Some(v) => Some(Duration::from_micros(
            v.as_u64().filter(|&t| t > 0).ok_or_else(|| {
                s.reject(
                    &name,
                    ApiError::bad_request(
                        "bad_request",
                        "parameters.timeout must be a positive number of microseconds",
                    ),
                )
            })?,
        )),
        None => None,
    };
    let answer = s.infer(&name, Arc::new(tensor), images, timeout).await?;
    Ok(respond(
        &s,
        &name,
        &request,
        &outputs,
        images,
        &answer.logits,
    ))
}

/// A body the extractor refused: over the size limit (413) or unreadable.
pub fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    let cause = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_body"
    };
    ApiError::new(
        status,
        cause,
        format!("{} (limit {} MiB)", e.body_text(), INFER_BODY_LIMIT >> 20),
    )
}

/// Splits the body into the JSON header and the binary section.
fn parse<'b>(headers: &HeaderMap, body: &'b Bytes) -> Result<(InferRequest, &'b [u8]), ApiError> {
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_request",
                    "Inference-Header-Content-Length must be a byte count",
                )
            })?,
    };
    if json_len > body.len() {
        return Err(ApiError::bad_request(
            "truncated",
            format!(
                "Inference-Header-Content-Length is {json_len} but the body has only {} bytes",
                body.len()
            ),
        ));
    }
    let (head, binary) = body.split_at(json_len);
    let request: InferRequest = serde_json::from_slice(head).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the inference request is not valid: {e}"),
        )
    })?;
    Ok((request, binary))
}

/// The request's one input as `images × 3×224×224` floats.
///
/// Every size the request declares (its batch dimension, each BYTES element's length) is checked
/// against `max_images` (the variant's `max_batch_size`) and against the bytes actually received, with
/// checked arithmetic, before anything of that size is allocated.
async fn input_tensor(
    request: &InferRequest,
    binary: &[u8],
    max_images: usize,
) -> Result<(Vec<f32>, usize), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let [input] = request.inputs.as_slice() else {
        return Err(bad(format!(
            "expected exactly one input (`{INPUT_NAME}`), got {}",
            request.inputs.len()
        )));
    };
    if input.name != INPUT_NAME {
        return Err(bad(format!(
            "unknown input `{}`: the model's input is `{INPUT_NAME}`",
            input.name
        )));
    }
    let binary_size = match input.parameters.get("binary_data_size") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("parameters.binary_data_size must be a byte count".into()))?,
        ),
    };
    let raw = match binary_size {
        Some(size) => {
            if binary.len() < size {
                return Err(ApiError::bad_request(
                    "truncated",
                    format!(
                        "input `{INPUT_NAME}` declares {size} bytes of binary data but the body has only {}",
                        binary.len()
                    ),
                ));
            }
            if binary.len() > size {
                return Err(bad(format!(
                    "the binary section has {} bytes but the inputs declare {size}",
                    binary.len()
                )));
            }
            if input.data.is_some() {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` has both `data` and binary data"
                )));
            }
            Some(&binary[..size])
        }
        None => {
            if !binary.is_empty() {
                return Err(bad(format!(
                    "the body has {} bytes after the JSON header but no input declares binary_data_size",
                    binary.len()
                )));
            }
            None
        }
    };
    match input.datatype.as_str() {
        "FP32" => fp32_input(input, raw, max_images),
        "BYTES" => bytes_input(input, raw, max_images).await,
        other => Err(bad(format!(
            "datatype {other} is not supported: input `{INPUT_NAME}` takes FP32 [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] \
             (or BYTES [N]: encoded photos)"
        ))),
    }
}

/// The batch dimension `n` a request declares, as a count of at most `max_images` images.
pub fn batch_dim(n: i64, max_images: usize) -> Result<usize, ApiError> {
    match usize::try_from(n) {
        Ok(n) if n > max_images => Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "{n} images in one request; the variant takes at most {max_images} (max_batch_size)"
            ),
        )),
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::bad_request(
            "bad_input",
            format!("input `{INPUT_NAME}` declares a batch of {n} images; it must be at least 1"),
        )),
    }
}

fn fp32_input(
    input: &RequestInput,
    raw: Option<&[u8]>,
    max_images: usize,
) -> Result<(Vec<f32>, usize), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let images = match input.shape.as_slice() {
        [n, 3, h, w] if *h == INPUT_SIZE as i64 && *w == INPUT_SIZE as i64 => {
            batch_dim(*n, max_images)?
        }
        shape => {
            return Err(bad(format!(
                "input `{INPUT_NAME}` has shape {shape:?}; expected [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] with N ≥ 1"
            )))
        }
    };
    // `images ≤ max_batch_size`, so this cannot overflow; checked all the same.
    let want = images
        .checked_mul(INPUT_LEN)
        .ok_or_else(|| bad(format!("{images} images overflow a tensor size")))?;
    let values = match (raw, &input.data) {
        (Some(raw), _) => {
            if Some(raw.len()) != want.checked_mul(4) {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` of shape {:?} needs {} bytes of FP32 data, got {}",
                    input.shape,
                    want.saturating_mul(4),
                    raw.len()
                )));
            }
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        (None, Some(data)) => {
            if let Some(what) = data.not_a_number {
                return Err(bad(format!("FP32 data must be numbers, found {what}")));
            }
            if data.count() != want {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` of shape {:?} needs {want} values, got {}",
                    input.shape,
                    data.count()
                )));
            }
            data.values.clone()
        }
        (None, None) => {
            return Err(bad(format!(
                "input `{INPUT_NAME}` has neither `data` nor binary_data_size"
            )))
        }
    };
    Ok((values, images))
}

/// BYTES `[N]` / `[N, 1]`: encoded photos, 4-byte little-endian length before each (binary only).
async fn bytes_input(
    input: &RequestInput,
    raw: Option<&[u8]>,
    max_images: usize,
) -> Result<(Vec<f32>, usize), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let images = match input.shape.as_slice() {
        [n] | [n, 1] => batch_dim(*n, max_images)?,
        shape => {
            return Err(bad(format!(
            "BYTES input `{INPUT_NAME}` has shape {shape:?}; expected [N] (one encoded photo each)"
        )))
        }
    };
    let Some(mut raw) = raw else {
        return Err(bad(
            "BYTES input (encoded photos) must be sent as binary data (binary_data_size)".into(),
        ));
    };
    // Each element takes at least its 4-byte length prefix.
    if images.checked_mul(4).is_none_or(|min| raw.len() < min) {
        return Err(ApiError::bad_request(
            "truncated",
            format!(
                "BYTES input declares {images} elements but its {} bytes cannot hold their length prefixes",
                raw.len()
            ),
        ));
    }
    let mut photos = Vec::with_capacity(images);
    for i in 0..images {
        if raw.len() < 4 {
            return Err(ApiError::bad_request(
                "truncated",
                format!("BYTES element {i}: its length prefix is missing"),
            ));
        }
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        if raw.len() - 4 < len {
            return Err(ApiError::bad_request(
                "truncated",
                format!(
                    "BYTES element {i} declares {len} bytes but only {} remain",
                    raw.len() - 4
                ),
            ));
        }
        photos.push(Bytes::copy_from_slice(&raw[4..4 + len]));
        raw = &raw[4 + len..];
    }
    if !raw.is_empty() {
        return Err(bad(format!(
            "{} bytes left over after {images} BYTES elements",
            raw.len()
        )));
    }
    let tensor = tokio::task::spawn_blocking(move || -> engine::Result<Vec<f32>> {
        let mut tensor = Vec::with_capacity(images.saturating_mul(INPUT_LEN));
        for photo in &photos {
            tensor.extend_from_slice(&engine::preprocess::preprocess(photo)?.data);
        }
        Ok(tensor)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("preprocessing crashed: {e}"),
        )
    })??;
    Ok((tensor, images))
}

/// One output to answer with.
struct Wanted {
    binary: bool,
    /// Triton's classification extension: the top `k` classes as strings.
    classification: Option<usize>,
}

fn requested_outputs(request: &InferRequest) -> Result<Vec<Wanted>, ApiError> {
    let all_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(outputs) = &request.outputs else {
        return Ok(vec![Wanted {
            binary: all_binary,
            classification: None,
        }]);
    };
    outputs
        .iter()
        .map(|o| {
            if o.name != OUTPUT_NAME {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!(
                        "unknown output `{}`: the model's output is `{OUTPUT_NAME}`",
                        o.name
                    ),
                ));
            }
            let classification = match o.parameters.get("classification") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .map(|k| (k as usize).min(NUM_CLASSES))
                        .filter(|&k| k > 0)
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "bad_request",
                                "parameters.classification must be a positive class count",
                            )
                        })?,
                ),
            };
            Ok(Wanted {
                binary: o
                    .parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(all_binary),
                classification,
            })
        })
        .collect()
}

fn respond(
    s: &ServingState,
    name: &str,
    request: &InferRequest,
    outputs: &[Wanted],
    images: usize,
    logits: &[f32],
) -> Response {
    let mut binary = Vec::new();
    let mut outs = Vec::with_capacity(outputs.len());
    for want in outputs {
        let (datatype, shape, mut json_data, raw): (&str, Vec<usize>, Value, Vec<u8>) =
            match want.classification {
                None => (
                    "FP32",
                    vec![images, NUM_CLASSES],
                    json!(logits),
                    logits.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                Some(k) => {
                    // Triton's format: "<output value>:<class index>:<label>", best first.
                    let strings: Vec<String> = logits
                        .chunks_exact(NUM_CLASSES)
                        .flat_map(|row| {
                            engine::classify::top_k(row, k)
                                .into_iter()
                                .map(|c| {
                                    format!(
                                        "{}:{}:{}",
                                        row[c.index],
                                        c.index,
                                        s.app.class_name(c.index)
                                    )
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let mut raw = Vec::new();
                    for st in &strings {
                        raw.extend_from_slice(&(st.len() as u32).to_le_bytes());
                        raw.extend_from_slice(st.as_bytes());
                    }
                    ("BYTES", vec![images, k], json!(strings), raw)
                }
            };
        let mut out = json!({ "name": OUTPUT_NAME, "datatype": datatype, "shape": shape });
        if want.binary {
            out["parameters"] = json!({ "binary_data_size": raw.len() });
            binary.extend_from_slice(&raw);
        } else {
            out["data"] = json_data.take();
        }
        outs.push(out);
    }
    let mut head = json!({ "model_name": name, "model_version": VERSION, "outputs": outs });
    if let Some(id) = &request.id {
        head["id"] = json!(id);
    }
    let head = serde_json::to_vec(&head).expect("JSON values serialize");
    if outputs.iter().any(|w| w.binary) {
        let len = head.len();
        let mut body = head;
        body.extend_from_slice(&binary);
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static(HEADER_LENGTH),
                    len.to_string(),
                ),
            ],
            body,
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], head).into_response()
    }
}

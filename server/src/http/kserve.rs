//! KServe v2 / Open Inference Protocol over HTTP, as Triton speaks it.
//!
//! Health (`/v2/health/{live,ready}`), server and model metadata (`/v2`, `/v2/models/{name}`), model
//! readiness and config, and inference
//! (`POST /v2/models/{name}[/versions/1]/infer`) with JSON tensors and Triton's binary tensor extension
//! (the wire format is `engine::kserve_wire`'s, shared with the remote client and `bench`): outputs
//! asked for with `binary_data` (or all of them with `binary_data_output`) come back binary. Triton's
//! classification extension (`parameters.classification: k` on an output) answers
//! `"value:index:label"` strings. Any other path under `/v2` gets a JSON 404.
//!
//! Model names are the variant ids. Each has one input, `input`: FP32 `[N, 3, 224, 224]` (preprocessed
//! as `engine::preprocess` does) or BYTES `[N]` (encoded JPEG/PNG/WebP photos, binary only, preprocessed
//! on the server); and one output, `logits`: FP32 `[N, 1000]`.
//!
//! [`parse_infer`] is the parser's boundary (no I/O, fuzzed in `super::fuzz`): every size a request
//! declares is checked against the variant's `max_batch_size` and the bytes received, with checked
//! arithmetic, before anything of that size is allocated.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use engine::kserve_wire::{self, BytesError, InferRequest, RequestInput, HEADER_LENGTH};
use engine::stages::{self, Stage};
use engine::{INPUT_LEN, INPUT_SIZE, NUM_CLASSES};

use super::error::ApiError;
use super::HttpState;

/// The only model version: variants are rebuilt, not versioned.
pub const VERSION: &str = "1";
/// The model's input and output names.
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
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
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .route("/v2/{*rest}", any(not_found))
}

/// Any other path under `/v2`: a KServe client reads JSON errors, not the page's HTML 404.
async fn not_found(
    State(s): State<HttpState>,
    method: Method,
    Path(rest): Path<String>,
) -> ApiError {
    s.reject(
        "-",
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no KServe v2 route {method} /v2/{rest}"),
        ),
    )
}

// ---- health and metadata ----

/// Server metadata. The extensions are those implemented in full: binary tensors, classification,
/// and Triton's `model_repository` (index, load, unload: [`super::repository`]) when the server
/// obeys load requests (`--model-control explicit|poll`).
async fn server_metadata(State(s): State<HttpState>) -> Json<Value> {
    let mut extensions = vec!["binary_tensor_data", "classification"];
    if s.model_control.allows_requests() {
        extensions.push("model_repository");
    }
    Json(json!({
        "name": "inferscope",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": extensions,
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready (200) when at least one variant can answer, else 503; the body lists what each ready model
/// says it is (backend, device, path, location).
async fn ready(State(s): State<HttpState>) -> (StatusCode, Json<Value>) {
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

fn check_version(s: &HttpState, name: &str, version: &str) -> Result<(), ApiError> {
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
    State(s): State<HttpState>,
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
            "parameters": {
                "alternative": "BYTES [-1]: encoded photos; UINT8 [-1, 224, 224, 3]: pixels before normalization",
                "max_batch_size": max,
            },
        }],
        "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES] }],
    })))
}

async fn model_metadata_v(
    state: State<HttpState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&state, &name, &version)?;
    model_metadata(state, Path(name)).await
}

/// 200 when the variant can answer; 404 for an unknown name, 503 for one that is not loaded.
async fn model_ready(
    State(s): State<HttpState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.ready_variant(&name).map(|_| StatusCode::OK)
}

async fn model_ready_v(
    state: State<HttpState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_version(&state, &name, &version)?;
    model_ready(state, Path(name)).await
}

/// A Triton-style model configuration (what `tritonclient`'s `get_model_config` reads).
async fn model_config(
    State(s): State<HttpState>,
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

async fn infer_v(
    state: State<HttpState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_version(&state, &name, &version)?;
    infer(state, Path(name), headers, body).await
}

/// A parsed inference request: the request (its JSON part) and its input, not yet decoded.
#[derive(Debug)]
pub struct Parsed {
    pub request: InferRequest,
    pub input: Input,
    pub outputs: Vec<Wanted>,
    pub timeout: Option<Duration>,
}

/// The request's one input.
#[derive(Debug)]
pub enum Input {
    /// `images × 3×224×224` floats.
    Tensor(Vec<f32>, usize),
    /// Encoded photos (ranges of the body), decoded after admission.
    Photos(Vec<std::ops::Range<usize>>),
    /// `images × 224×224×3` bytes (UINT8 HWC, before normalization): the model normalizes them
    /// ([`engine::backend::Model::run_u8`]; on the GPU, a quarter of the upload).
    Pixels(Vec<u8>, usize),
}

impl Input {
    pub fn images(&self) -> usize {
        match self {
            Input::Tensor(_, n) => *n,
            Input::Photos(p) => p.len(),
            Input::Pixels(_, n) => *n,
        }
    }
}

/// `POST /v2/models/{name}/infer`: parse (every declared size checked), admit (queue room) before
/// decoding any photo, decode (at most `--max-decoding` at once), run through the batcher.
pub async fn infer(
    State(s): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let batcher = s.ready_variant(&name)?;
    let max_images = batcher.config().max_batch_size;
    let parsed = stages::time(Stage::HttpParse, || {
        parse_infer(
            headers.get(HEADER_LENGTH).map(|v| v.as_bytes()),
            &body,
            max_images,
        )
    })
    .map_err(|e| s.reject(&name, e))?;
    let images = parsed.input.images();
    let tensor = match parsed.input {
        Input::Tensor(t, _) => t,
        Input::Pixels(p, _) => {
            drop(body);
            let answer = s
                .infer_pixels(&name, Arc::new(p), images, parsed.timeout)
                .await?;
            return Ok(respond(
                &s,
                &name,
                &parsed.request,
                &parsed.outputs,
                images,
                &answer.logits,
            ));
        }
        Input::Photos(ranges) => {
            let photos = ranges.into_iter().map(|r| body.slice(r));
            decode_photos(&s, &name, &batcher, photos, images).await?
        }
    };
    drop(body);
    let answer = s
        .infer(&name, Arc::new(tensor), images, parsed.timeout)
        .await?;
    Ok(respond(
        &s,
        &name,
        &parsed.request,
        &parsed.outputs,
        images,
        &answer.logits,
    ))
}

/// The parser's boundary: a body (and its `Inference-Header-Content-Length`) into a request whose
/// sizes are all checked, for a variant that takes at most `max_images` images per request.
pub fn parse_infer(
    header_len: Option<&[u8]>,
    body: &[u8],
    max_images: usize,
) -> Result<Parsed, ApiError> {
    let header_len = kserve_wire::header_length(header_len)
        .map_err(|m| ApiError::bad_request("bad_request", m))?;
    let (head, binary) = kserve_wire::split_body(body, header_len)
        .map_err(|m| ApiError::bad_request("truncated", m))?;
    let request: InferRequest = serde_json::from_slice(head).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("the inference request is not valid: {e}"),
        )
    })?;
    let input = input_tensor(&request, body, head.len(), binary.len(), max_images)?;
    let outputs = requested_outputs(&request)?;
    let timeout = match request.parameters.get("timeout") {
        // Triton's request timeout, in microseconds.
        Some(v) => Some(Duration::from_micros(
            v.as_u64().filter(|&t| t > 0).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_request",
                    "parameters.timeout must be a positive number of microseconds",
                )
            })?,
        )),
        None => None,
    };
    Ok(Parsed {
        request,
        input,
        outputs,
        timeout,
    })
}

/// The request's one input; `body[start..start + binary_len]` is the binary section.
fn input_tensor(
    request: &InferRequest,
    body: &[u8],
    start: usize,
    binary_len: usize,
    max_images: usize,
) -> Result<Input, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let names: Vec<&str> = request.inputs.iter().map(|i| i.name.as_str()).collect();
    check_one_input(&names)?;
    let input = &request.inputs[0];
    let binary_size = input.binary_data_size().map_err(bad)?;
    let raw = match binary_size {
        Some(size) => {
            if binary_len < size {
                return Err(ApiError::bad_request(
                    "truncated",
                    format!(
                        "input `{INPUT_NAME}` declares {size} bytes of binary data but the body has only {binary_len}"
                    ),
                ));
            }
            if binary_len > size {
                return Err(bad(format!(
                    "the binary section has {binary_len} bytes but the inputs declare {size}"
                )));
            }
            if input.data.is_some() {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` has both `data` and binary data"
                )));
            }
            Some(start..start + size)
        }
        None => {
            if binary_len > 0 {
                return Err(bad(format!(
                    "the body has {binary_len} bytes after the JSON header but no input declares binary_data_size"
                )));
            }
            None
        }
    };
    match input.datatype.as_str() {
        "FP32" => fp32_input(input, raw.map(|r| &body[r]), max_images),
        "BYTES" => bytes_input(input, body, raw, max_images),
        "UINT8" => u8_input(input, raw.map(|r| &body[r]), max_images),
        // (gRPC takes no UINT8: its message is `unsupported_datatype`'s.)
        other => Err(bad(format!(
            "datatype {other} is not supported: input `{INPUT_NAME}` takes FP32 [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] \
             (or UINT8 [N, {INPUT_SIZE}, {INPUT_SIZE}, 3]: pixels before normalization; or BYTES [N]: encoded photos)"
        ))),
    }
}

/// Checks that a request (HTTP or gRPC) names exactly one input, the model's.
pub fn check_one_input(names: &[&str]) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let [name] = names else {
        return Err(bad(format!(
            "expected exactly one input (`{INPUT_NAME}`), got {}",
            names.len()
        )));
    };
    if *name != INPUT_NAME {
        return Err(bad(format!(
            "unknown input `{name}`: the model's input is `{INPUT_NAME}`"
        )));
    }
    Ok(())
}

/// Checks that an output a request (HTTP or gRPC) asks for is the model's one output.
pub fn check_output_name(name: &str) -> Result<(), ApiError> {
    if name == OUTPUT_NAME {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "bad_request",
        format!("unknown output `{name}`: the model's output is `{OUTPUT_NAME}`"),
    ))
}

/// The images in an FP32 input of `shape` (`[N, 3, 224, 224]`, `1 ≤ N ≤ max_images`).
pub fn fp32_images(shape: &[i64], max_images: usize) -> Result<usize, ApiError> {
    match shape {
        [n, 3, h, w] if *h == INPUT_SIZE as i64 && *w == INPUT_SIZE as i64 => {
            batch_dim(*n, max_images)
        }
        shape => Err(ApiError::bad_request(
            "bad_input",
            format!(
                "input `{INPUT_NAME}` has shape {shape:?}; expected [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] with N ≥ 1"
            ),
        )),
    }
}

/// The images in a UINT8 input of `shape` (`[N, 224, 224, 3]`, HWC pixels, `1 ≤ N ≤ max_images`).
pub fn u8_images(shape: &[i64], max_images: usize) -> Result<usize, ApiError> {
    match shape {
        [n, h, w, 3] if *h == INPUT_SIZE as i64 && *w == INPUT_SIZE as i64 => {
            batch_dim(*n, max_images)
        }
        shape => Err(ApiError::bad_request(
            "bad_input",
            format!(
                "UINT8 input `{INPUT_NAME}` has shape {shape:?}; expected [N, {INPUT_SIZE}, {INPUT_SIZE}, 3] (HWC pixels) with N ≥ 1"
            ),
        )),
    }
}

/// The photos in a BYTES input of `shape` (`[N]` or `[N, 1]`, `1 ≤ N ≤ max_images`).
pub fn bytes_images(shape: &[i64], max_images: usize) -> Result<usize, ApiError> {
    match shape {
        [n] | [n, 1] => batch_dim(*n, max_images),
        shape => Err(ApiError::bad_request(
            "bad_input",
            format!(
                "BYTES input `{INPUT_NAME}` has shape {shape:?}; expected [N] (one encoded photo each)"
            ),
        )),
    }
}

/// The error for an input datatype the models do not take.
pub fn unsupported_datatype(datatype: &str) -> ApiError {
    ApiError::bad_request(
        "bad_input",
        format!(
            "datatype {datatype} is not supported: input `{INPUT_NAME}` takes FP32 [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] \
             (or BYTES [N]: encoded photos)"
        ),
    )
}

/// Admits a request of encoded photos into variant `name`'s queue, then decodes them (at most
/// `--max-decoding` photos decode at once, server-wide) into one preprocessed tensor.
pub async fn decode_photos(
    s: &HttpState,
    name: &str,
    batcher: &engine::batcher::Batcher,
    photos: impl IntoIterator<Item = Bytes>,
    images: usize,
) -> Result<Vec<f32>, ApiError> {
    s.admit(name, batcher, 1)?;
    let mut tensor = Vec::with_capacity(images.saturating_mul(INPUT_LEN));
    for photo in photos {
        let pre = s
            .limits
            .decode(photo)
            .await
            .map_err(|e| s.reject(name, e))?;
        tensor.extend_from_slice(&pre.data);
    }
    Ok(tensor)
}

/// Triton's classification extension: for each image, its top `k` classes as
/// `"<output value>:<class index>:<label>"`, best first.
pub fn classification_strings(s: &HttpState, logits: &[f32], k: usize) -> Vec<String> {
    logits
        .chunks_exact(NUM_CLASSES)
        .flat_map(|row| {
            engine::classify::top_k(row, k)
                .into_iter()
                .map(|c| format!("{}:{}:{}", row[c.index], c.index, s.app.class_name(c.index)))
                .collect::<Vec<_>>()
        })
        .collect()
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
) -> Result<Input, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let images = fp32_images(&input.shape, max_images)?;
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
            kserve_wire::f32_from_le(raw).expect("a multiple of 4 bytes")
        }
        (None, Some(data)) => {
            if let Some(what) = data.not_a_number {
                return Err(bad(format!("FP32 data must be numbers, found {what}")));
            }
            check_value_count(input, want, data.count())?;
            data.values.clone()
        }
        (None, None) => return Err(no_data()),
    };
    Ok(Input::Tensor(values, images))
}

/// Checks that a JSON `data` array holds the `want` values the input's shape declares.
fn check_value_count(input: &RequestInput, want: usize, got: usize) -> Result<(), ApiError> {
    if got == want {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "bad_input",
        format!(
            "input `{INPUT_NAME}` of shape {:?} needs {want} values, got {got}",
            input.shape
        ),
    ))
}

fn no_data() -> ApiError {
    ApiError::bad_request(
        "bad_input",
        format!("input `{INPUT_NAME}` has neither `data` nor binary_data_size"),
    )
}

/// UINT8 `[N, 224, 224, 3]`: the RGB bytes of resized, center-cropped photos (what preprocessing
/// produces before it normalizes), binary or JSON integers 0–255.
fn u8_input(
    input: &RequestInput,
    raw: Option<&[u8]>,
    max_images: usize,
) -> Result<Input, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let images = u8_images(&input.shape, max_images)?;
    // `images ≤ max_batch_size`: no overflow; checked all the same.
    let want = images
        .checked_mul(engine::preprocess::PIXELS_LEN)
        .ok_or_else(|| bad(format!("{images} images overflow a tensor size")))?;
    let pixels = match (raw, &input.data) {
        (Some(raw), _) => {
            if raw.len() != want {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` of shape {:?} needs {want} bytes of UINT8 data, got {}",
                    input.shape,
                    raw.len()
                )));
            }
            raw.to_vec()
        }
        (None, Some(data)) => {
            check_value_count(input, want, data.count())?;
            if data.not_a_number.is_some() {
                return Err(bad("UINT8 data must be integers 0–255".into()));
            }
            data.values
                .iter()
                .map(|&v| {
                    (v.fract() == 0.0 && (0.0..=255.0).contains(&v))
                        .then_some(v as u8)
                        .ok_or_else(|| bad(format!("UINT8 data must be integers 0–255, found {v}")))
                })
                .collect::<Result<Vec<u8>, ApiError>>()?
        }
        (None, None) => return Err(no_data()),
    };
    Ok(Input::Pixels(pixels, images))
}

/// BYTES `[N]` / `[N, 1]`: encoded photos, 4-byte little-endian length before each (binary only).
fn bytes_input(
    input: &RequestInput,
    body: &[u8],
    raw: Option<std::ops::Range<usize>>,
    max_images: usize,
) -> Result<Input, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_input", m);
    let images = bytes_images(&input.shape, max_images)?;
    let Some(raw) = raw else {
        return Err(bad(
            "BYTES input (encoded photos) must be sent as binary data (binary_data_size)".into(),
        ));
    };
    let base = body.as_ptr() as usize;
    let elements = kserve_wire::bytes_elements(&body[raw], images).map_err(|e| match e {
        BytesError::Truncated(m) => ApiError::bad_request("truncated", m),
        BytesError::LeftOver(m) => bad(m),
    })?;
    Ok(Input::Photos(
        elements
            .into_iter()
            .map(|e| {
                let at = e.as_ptr() as usize - base;
                at..at + e.len()
            })
            .collect(),
    ))
}

/// One output to answer with.
#[derive(Debug)]
pub struct Wanted {
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
            check_output_name(&o.name)?;
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

/// The inference answer: each output encoded only in the form it is asked for (a binary answer of
/// 1,000 logits used to build their JSON array too, 1,000 values allocated and dropped per image).
fn respond(
    s: &HttpState,
    name: &str,
    request: &InferRequest,
    outputs: &[Wanted],
    images: usize,
    logits: &[f32],
) -> Response {
    let responding = stages::start();
    let mut binary = Vec::new();
    let mut outs = Vec::with_capacity(outputs.len());
    for want in outputs {
        let mut out = json!({ "name": OUTPUT_NAME });
        let start = binary.len();
        match (want.classification, want.binary) {
            (None, true) => {
                out["datatype"] = json!("FP32");
                out["shape"] = json!([images, NUM_CLASSES]);
                kserve_wire::push_f32_le(&mut binary, logits);
            }
            (None, false) => {
                out["datatype"] = json!("FP32");
                out["shape"] = json!([images, NUM_CLASSES]);
                out["data"] = json!(logits);
            }
            (Some(k), binary_out) => {
                let strings = classification_strings(s, logits, k);
                out["datatype"] = json!("BYTES");
                out["shape"] = json!([images, k]);
                if binary_out {
                    for st in &strings {
                        kserve_wire::push_bytes_element(&mut binary, st.as_bytes());
                    }
                } else {
                    out["data"] = json!(strings);
                }
            }
        }
        if want.binary {
            out["parameters"] = json!({ "binary_data_size": binary.len() - start });
        }
        outs.push(out);
    }
    let mut head = json!({ "model_name": name, "model_version": VERSION, "outputs": outs });
    if let Some(id) = &request.id {
        head["id"] = json!(id);
    }
    let response = if outputs.iter().any(|w| w.binary) {
        let mut body = Vec::with_capacity(256 + binary.len());
        serde_json::to_writer(&mut body, &head).expect("JSON values serialize");
        let len = body.len();
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
        let head = serde_json::to_vec(&head).expect("JSON values serialize");
        ([(header::CONTENT_TYPE, "application/json")], head).into_response()
    };
    stages::since(Stage::HttpRespond, responding);
    response
}

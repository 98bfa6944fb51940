//! The Vertex AI custom-container contract: health on `AIP_HEALTH_ROUTE`, predictions on
//! `AIP_PREDICT_ROUTE` (the port, `AIP_HTTP_PORT`, is read by `inferscope serve`).
//!
//! `POST <predict route>` takes `{"instances": [...], "parameters": {...}}` and answers
//! `{"predictions": [...]}`, one prediction per instance. An instance is one photo, as
//! - `{"b64": "<base64 JPEG/PNG/WebP>"}` (or `{"image_bytes": {"b64": ...}}`): decoded and preprocessed
//!   on the server. A float tensor as JSON is ~3 MB, over Vertex's 1.5 MB request limit; a photo is not.
//! - `{"tensor_b64": "<base64 of 3×224×224 little-endian f32>"}`: a preprocessed tensor in 803 KB.
//! - a (nested) JSON array of 3×224×224 numbers: a preprocessed tensor, when size does not matter.
//!
//! Parameters (all optional): `variant` (default: `INFERSCOPE_VERTEX_MODEL`, else the first ready
//! variant), `top_k` (default 5), `logits` (true: include the 1000 logits). A prediction is
//! `{"variant", "top": [{"index", "label", "probability"}], "logits"?}`. Every instance runs as its own
//! request through the variant's batcher, so the instances of one call share model calls.
//!
//! A KServe v2 inference request sent to the predict route (what `rawPredict` forwards to Triton on
//! Vertex) is answered as `POST /v2/models/<default variant>/infer` would be.
//!
//! Limits: every instance is a request of the variant's queue, so a call with more instances than the
//! queue holds is refused at once with 413 naming `queue_capacity` (split the call), and one that
//! does not fit in the queue's free room now gets 503 + `Retry-After`, both before any photo is
//! decoded. [`parse_predict`] and [`instance_input`] are the parser's boundary (no I/O, fuzzed in
//! `super::fuzz`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use engine::kserve_wire::{Flatten, Floats, HEADER_LENGTH};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use engine::{INPUT_LEN, NUM_CLASSES};

use super::error::ApiError;
use super::HttpState;

/// Where the contract's routes are, and which variant answers by default.
#[derive(Debug, Clone, PartialEq)]
pub struct VertexSettings {
    pub health_route: String,
    pub predict_route: String,
    /// The variant that answers when a request names none (`None`: the first ready one).
    pub default_variant: Option<String>,
}

impl Default for VertexSettings {
    fn default() -> Self {
        VertexSettings {
            health_route: "/vertex/health".into(),
            predict_route: "/vertex/predict".into(),
            default_variant: None,
        }
    }
}

impl VertexSettings {
    /// From `AIP_HEALTH_ROUTE`, `AIP_PREDICT_ROUTE` and `INFERSCOPE_VERTEX_MODEL`, else the defaults
    /// (`/vertex/health`, `/vertex/predict`).
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let route = |k: &str, default: String| match var(k) {
            Some(r) if r.starts_with('/') => r,
            Some(r) if !r.is_empty() => format!("/{r}"),
            _ => default,
        };
        VertexSettings {
            health_route: route("AIP_HEALTH_ROUTE", d.health_route),
            predict_route: route("AIP_PREDICT_ROUTE", d.predict_route),
            default_variant: var("INFERSCOPE_VERTEX_MODEL").filter(|v| !v.is_empty()),
        }
    }
}

pub fn routes(settings: &VertexSettings) -> Router<HttpState> {
    Router::new()
        .route(&settings.health_route, get(health))
        .route(&settings.predict_route, post(predict))
}

impl HttpState {
    /// The variant a Vertex request without `parameters.variant` goes to.
    fn default_vertex_variant(&self) -> Option<String> {
        self.vertex.default_variant.clone().or_else(|| {
            self.app
                .ready()
                .first()
                .map(|(spec, _)| spec.id.to_string())
        })
    }
}

/// 200 when the default variant can answer, else 503 (Vertex then keeps traffic away).
async fn health(State(s): State<HttpState>) -> Response {
    let Some(variant) = s.default_vertex_variant() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no variant is ready" })),
        )
            .into_response();
    };
    match s.ready_variant(&variant) {
        Ok(_) => Json(json!({ "status": "ok", "variant": variant })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A predict call as sent.
#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    pub instances: Instances,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// Instances kept from one call: more could never be queued (a call's instances must fit in its
/// variant's queue), and each kept one costs ~50 bytes on the heap against the 3 (`[],`) it may take
/// on the wire, so past this they are counted, not kept.
pub const KEPT_INSTANCES: usize = 1024;

/// The instances of a call: the first [`KEPT_INSTANCES`] as sent, and how many there were.
#[derive(Debug, Default)]
pub struct Instances {
    pub kept: Vec<Instance>,
    pub count: usize,
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Instances;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of instances")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Instances, A::Error> {
                let mut out = Instances::default();
                loop {
                    let more = if out.kept.len() < KEPT_INSTANCES {
                        seq.next_element::<Instance>()?.map(|i| out.kept.push(i))
                    } else {
                        seq.next_element::<IgnoredAny>()?.map(|_| ())
                    };
                    if more.is_none() {
                        return Ok(out);
                    }
                    out.count += 1;
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// One instance as sent, read without building a `serde_json::Value` tree of its numbers (see
/// `engine::kserve_wire::Floats`): its size on the heap is bounded by its size on the wire.
#[derive(Debug)]
pub enum Instance {
    /// `{"b64": ...}` or `{"image_bytes": {"b64": ...}}`: an encoded photo (the value as sent).
    Photo(Value),
    /// `{"tensor_b64": ...}`.
    TensorB64(Value),
    /// A (nested) array of numbers.
    Numbers(Floats),
    /// An object without a known key.
    UnknownObject,
    /// A string, number, boolean or null.
    Scalar,
}

impl<'de> Deserialize<'de> for Instance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Instance;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an instance")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Instance, A::Error> {
                let mut floats = Floats::default();
                Visitor::visit_seq(Flatten(&mut floats), seq)?;
                Ok(Instance::Numbers(floats))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Instance, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "b64" if found.is_none() => {
                            found = Some(Instance::Photo(map.next_value()?))
                        }
                        "image_bytes" if found.is_none() => {
                            let v: Value = map.next_value()?;
                            if let Some(b64) = v.get("b64") {
                                found = Some(Instance::Photo(b64.clone()));
                            }
                        }
                        "tensor_b64" if found.is_none() => {
                            found = Some(Instance::TensorB64(map.next_value()?))
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(found.unwrap_or(Instance::UnknownObject))
            }
            fn visit_str<E>(self, _: &str) -> Result<Instance, E> {
                Ok(Instance::Scalar)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Instance, E> {
                Ok(Instance::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Instance, E> {
                Ok(Instance::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Instance, E> {
                Ok(Instance::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Instance, E> {
                Ok(Instance::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Instance, E> {
                Ok(Instance::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

async fn predict(
    State(s): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let default = s.default_vertex_variant();
    if headers.contains_key(HEADER_LENGTH) || looks_like_kserve(&body) {
        let variant = default.ok_or_else(|| no_variant(&s))?;
        return super::kserve::infer(State(s), Path(variant), headers, body).await;
    }
    let request = parse_predict(&body).map_err(|e| s.reject("-", e))?;
    drop(body);
    let variant = match request.parameters.get("variant") {
        Some(Value::String(v)) => v.clone(),
        Some(_) => {
            return Err(s.reject(
                "-",
                ApiError::bad_request("bad_request", "parameters.variant must be a string"),
            ))
        }
        None => default.ok_or_else(|| no_variant(&s))?,
    };
    let batcher = s.ready_variant(&variant)?;
    let queue_capacity = batcher.config().queue_capacity;
    let top_k = match request.parameters.get("top_k") {
        None => 5,
        Some(v) => v
            .as_u64()
            .filter(|&k| k >= 1)
            .map(|k| (k as usize).min(NUM_CLASSES))
            .ok_or_else(|| {
                s.reject(
                    &variant,
                    ApiError::bad_request("bad_request", "parameters.top_k must be at least 1"),
                )
            })?,
    };
    let with_logits = request
        .parameters
        .get("logits")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if request.instances.count == 0 {
        return Err(s.reject(
            &variant,
            ApiError::bad_request("bad_request", "`instances` is empty"),
        ));
    }
    // Every instance is a request of the variant's queue: a call with more than the queue holds could
    // never succeed, so it is refused at once, before anything is decoded.
    let count = request.instances.count;
    if count > queue_capacity || count > request.instances.kept.len() {
        return Err(s.reject(
            &variant,
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_instances",
                format!(
                    "{count} instances in one call; variant `{variant}` queues at most {} \
                     (queue_capacity): split the call",
                    queue_capacity.min(KEPT_INSTANCES)
                ),
            ),
        ));
    }
    // Check every instance (a bad one fails the call before any work), admit the call, then decode
    // the photos and run the instances as concurrent requests of the batcher.
    let inputs = request
        .instances
        .kept
        .into_iter()
        .enumerate()
        .map(|(i, instance)| {
            instance_input(instance)
                .map_err(|e| s.reject(&variant, e.context(format!("instance {i}"))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    s.admit(&variant, &batcher, inputs.len())?;
    let mut tensors = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let tensor = match input {
            InstanceInput::Tensor(t) => t,
            InstanceInput::Photo(bytes) => {
                s.limits
                    .decode(Bytes::from(bytes))
                    .await
                    .map_err(|e| s.reject(&variant, e.context(format!("instance {i}"))))?
                    .data
            }
        };
        tensors.push(Arc::new(tensor));
    }
    let tasks: Vec<_> = tensors
        .into_iter()
        .map(|t| {
            let (s, variant) = (s.clone(), variant.clone());
            tokio::spawn(async move { s.infer(&variant, t, 1, None).await })
        })
        .collect();
    let mut predictions = Vec::with_capacity(tasks.len());
    for task in tasks {
        let answer = task
            .await
            .map_err(|e| ApiError::internal(format!("inference task failed: {e}")))??;
        let top: Vec<Value> = engine::classify::top_k(&answer.logits, top_k)
            .into_iter()
            .map(|c| {
                json!({ "index": c.index, "label": s.app.class_name(c.index), "probability": c.prob })
            })
            .collect();
        let mut p = json!({ "variant": variant, "top": top });
        if with_logits {
            p["logits"] = json!(answer.logits);
        }
        predictions.push(p);
    }
    Ok(Json(json!({ "predictions": predictions })).into_response())
}

/// The parser's boundary: a predict body into its instances (not yet checked) and parameters.
pub fn parse_predict(body: &[u8]) -> Result<PredictRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("expected {{\"instances\": [...], \"parameters\": {{...}}}}: {e}"),
        )
    })
}

fn no_variant(s: &HttpState) -> ApiError {
    s.reject(
        "-",
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no variant is ready to answer",
        ),
    )
}

/// A JSON body with `inputs` and no `instances`: a KServe v2 request.
fn looks_like_kserve(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        inputs: Option<serde::de::IgnoredAny>,
        instances: Option<serde::de::IgnoredAny>,
    }
    matches!(
        serde_json::from_slice::<Probe>(body),
        Ok(Probe {
            inputs: Some(_),
            instances: None
        })
    )
}

/// An instance checked: a tensor, or a photo to decode.
#[derive(Debug)]
pub enum InstanceInput {
    Tensor(Vec<f32>),
    Photo(Vec<u8>),
}

/// Checks one instance (sizes before decoding base64 into anything of that size).
pub fn instance_input(instance: Instance) -> Result<InstanceInput, ApiError> {
    let bad = |m: &str| ApiError::bad_request("bad_input", m.to_string());
    let b64 = |v: &Value| -> Result<Vec<u8>, ApiError> {
        let s = v.as_str().ok_or_else(|| bad("`b64` must be a string"))?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| bad(&format!("invalid base64: {e}")))
    };
    match instance {
        Instance::Photo(photo) => Ok(InstanceInput::Photo(b64(&photo)?)),
        Instance::TensorB64(t) => {
            // The decoded size is known from the text's length: check it before decoding.
            let text_len = t.as_str().map_or(0, |s| s.trim().len());
            let want = INPUT_LEN * 4;
            if text_len / 4 * 3 > want + 3 || text_len < want / 3 * 4 {
                return Err(bad(&format!(
                    "`tensor_b64` must hold 3×224×224 little-endian f32 ({want} bytes), got about {} bytes",
                    text_len / 4 * 3
                )));
            }
            let bytes = b64(&t)?;
            if bytes.len() != want {
                return Err(bad(&format!(
                    "`tensor_b64` must hold 3×224×224 little-endian f32 ({want} bytes), got {} bytes",
                    bytes.len()
                )));
            }
            Ok(InstanceInput::Tensor(
                engine::kserve_wire::f32_from_le(&bytes).expect("a multiple of 4 bytes"),
            ))
        }
        Instance::UnknownObject => Err(bad(
            "an instance is {\"b64\": photo}, {\"image_bytes\": {\"b64\": photo}}, {\"tensor_b64\": ...} \
             or an array of 3×224×224 numbers",
        )),
        Instance::Numbers(floats) => {
            if floats.not_a_number.is_some() {
                return Err(ApiError::bad_request(
                    "bad_input",
                    "a tensor instance must hold only numbers",
                ));
            }
            if floats.count() != INPUT_LEN {
                return Err(bad(&format!(
                    "a tensor instance needs 3×224×224 = {INPUT_LEN} numbers, got {}",
                    floats.count()
                )));
            }
            Ok(InstanceInput::Tensor(floats.values))
        }
        Instance::Scalar => Err(bad(
            "an instance is an object ({\"b64\": ...}) or an array of numbers",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_come_from_the_aip_variables() {
        let s = VertexSettings::from_vars(|k| match k {
            "AIP_HEALTH_ROUTE" => Some("/v1/endpoints/1/deployedModels/2".into()),
            "AIP_PREDICT_ROUTE" => Some("v1/endpoints/1/deployedModels/2:predict".into()),
            _ => None,
        });
        assert_eq!(s.health_route, "/v1/endpoints/1/deployedModels/2");
        assert_eq!(s.predict_route, "/v1/endpoints/1/deployedModels/2:predict");
        assert_eq!(s.default_variant, None);
        assert_eq!(
            VertexSettings::from_vars(|_| None),
            VertexSettings::default()
        );
    }

    #[test]
    fn kserve_bodies_are_told_apart_from_vertex_ones() {
        assert!(looks_like_kserve(br#"{"inputs": [], "id": "1"}"#));
        assert!(!looks_like_kserve(br#"{"instances": [], "inputs": 1}"#));
        assert!(!looks_like_kserve(b"not json"));
    }
}

//! Remote variants: a variant answered by another server, behind the same [`Model`] trait as the local
//! engines (as burn's remote backend implements the same trait as its local ones).
//!
//! - [`Target::Kserve`]: any KServe v2 / Open Inference Protocol server (Triton, KServe, another
//!   `inferscope serve`), called with Triton's binary tensor extension: the batch goes as raw
//!   little-endian FP32 after a JSON header, the logits come back the same way.
//! - [`Target::Vertex`]: a Vertex AI endpoint, authenticated with an OAuth bearer token from
//!   Application Default Credentials (`gcp_auth`). `:predict` sends each image as an instance
//!   `{"tensor_b64": ...}` (803 KB, under Vertex's 1.5 MB request limit; the images of a batch go as
//!   concurrent requests) and reads `predictions[i].logits`, the contract `inferscope serve` implements;
//!   `:rawPredict` sends the KServe v2 binary request as is (Triton on Vertex).
//!
//! Every call has a timeout; connection failures and 429/502/503/504 answers are retried a bounded
//! number of times with exponential backoff; a timeout is not retried (a slow remote would otherwise
//! hold the caller for `retries × timeout`). Errors carry the remote's own error text.
//!
//! [`Model::run`] blocks on the model's own small tokio runtime: call it from a plain thread (the
//! batcher's workers) or `spawn_blocking`, never from an async task.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::backend::{check_input, Backend, BackendKind, Model, ModelInfo};
use crate::error::{Error, Result};
use crate::variants::VariantSpec;
use crate::{INPUT_LEN, NUM_CLASSES};

use crate::kserve_wire::{self, parse_logits as parse_kserve_response, HEADER_LENGTH};
/// The OAuth scope Vertex AI's prediction API takes.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Timeouts and retries of a remote variant.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOptions {
    /// Longest one HTTP call may take (connect + answer).
    pub timeout: Duration,
    /// Extra attempts after a connection failure or a 429/502/503/504 answer.
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(100),
        }
    }
}

/// How Vertex AI calls are authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VertexAuth {
    /// A bearer token from Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
    /// user credentials, or the metadata server).
    Adc,
    /// No `Authorization` header (a private endpoint behind its own network controls, or a test).
    None,
}

/// Where a remote variant lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `POST {url}/v2/models/{model}/infer`.
    Kserve {
        url: String,
        model: String,
        input: String,
        output: String,
    },
    /// `POST {url}` where `url` ends in `:predict` or `:rawPredict`.
    Vertex {
        url: String,
        auth: VertexAuth,
        /// For `:rawPredict`: the model's input and output names in the KServe v2 body.
        input: String,
        output: String,
    },
}

impl Target {
    /// The public Vertex AI URL of an endpoint: `https://{region}-aiplatform.googleapis.com/v1/
    /// projects/{project}/locations/{region}/endpoints/{endpoint}:{method}`; `api_base` replaces the
    /// scheme and host (a dedicated endpoint's domain, or a loopback server in tests).
    pub fn vertex_url(
        project: &str,
        region: &str,
        endpoint: &str,
        raw: bool,
        api_base: Option<&str>,
    ) -> String {
        let base = api_base
            .map(|b| b.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://{region}-aiplatform.googleapis.com"));
        let method = if raw { "rawPredict" } else { "predict" };
        format!("{base}/v1/projects/{project}/locations/{region}/endpoints/{endpoint}:{method}")
    }

    /// A short description for the variant's card.
    pub fn describe(&self) -> String {
        match self {
            Target::Kserve { url, model, .. } => format!("kserve {url} ({model})"),
            Target::Vertex { url, .. } => format!("vertex {url}"),
        }
    }

    /// What a model behind this target is, as [`Model::info`] says it.
    pub fn info(&self) -> ModelInfo {
        let host = |url: &str| {
            reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| url.to_string())
        };
        match self {
            Target::Kserve { url, model, .. } => ModelInfo {
                backend: BackendKind::Kserve,
                device: host(url),
                path: format!("KServe v2 binary tensors, remote model `{model}`"),
                location: self.describe(),
            },
            Target::Vertex { url, .. } => ModelInfo {
                backend: BackendKind::Vertex,
                device: host(url),
                path: if url.ends_with(":rawPredict") {
                    "Vertex AI :rawPredict (KServe v2 binary body)".into()
                } else {
                    "Vertex AI :predict (base64 tensors)".into()
                },
                location: self.describe(),
            },
        }
    }

    fn url(&self) -> String {
        match self {
            Target::Kserve { url, model, .. } => {
                format!("{}/v2/models/{model}/infer", url.trim_end_matches('/'))
            }
            Target::Vertex { url, .. } => url.clone(),
        }
    }
}

/// A remote endpoint as a [`Backend`]: what the loader places a remote variant on. The remote holds
/// its own copy of the model, so [`Backend::load`] does not read the local file.
pub struct RemoteBackend {
    target: Target,
    options: RemoteOptions,
}

impl RemoteBackend {
    pub fn new(target: Target, options: RemoteOptions) -> Self {
        RemoteBackend { target, options }
    }
}

impl Backend for RemoteBackend {
    fn kind(&self) -> BackendKind {
        match self.target {
            Target::Kserve { .. } => BackendKind::Kserve,
            Target::Vertex { .. } => BackendKind::Vertex,
        }
    }

    fn load(&self, spec: &VariantSpec, _path: &std::path::Path) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(RemoteModel::new(
            spec,
            self.target.clone(),
            self.options.clone(),
        )?))
    }
}

/// A variant answered by a remote server.
pub struct RemoteModel {
    spec: VariantSpec,
    target: Target,
    options: RemoteOptions,
    client: reqwest::Client,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    tokens: OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
}

/// What one attempt ended with.
enum Failure {
    /// Worth another attempt (connection refused/reset, 429, 502, 503, 504).
    Retry(Error),
    Final(Error),
}

impl RemoteModel {
    pub fn new(spec: &VariantSpec, target: Target, options: RemoteOptions) -> Result<Self> {
        let unavailable = |reason: String| Error::BackendUnavailable {
            backend: "remote".into(),
            reason,
        };
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| unavailable(format!("HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("remote-{}", spec.id))
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("runtime: {e}")))?;
        Ok(RemoteModel {
            spec: *spec,
            target,
            options,
            client,
            runtime: Some(runtime),
            tokens: OnceCell::new(),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the model")
            .block_on(f)
    }

    /// Asks a KServe v2 remote whether the model is ready (`GET /v2/models/{model}/ready`); Vertex
    /// endpoints have no such call and are assumed ready. The error carries the remote's answer.
    pub fn probe(&self) -> Result<()> {
        let Target::Kserve { url, model, .. } = &self.target else {
            return Ok(());
        };
        let ready = format!("{}/v2/models/{model}/ready", url.trim_end_matches('/'));
        self.block_on(async {
            let res = self
                .client
                .get(&ready)
                .send()
                .await
                .map_err(|e| transport_error(&ready, &e, &self.options))?;
            if res.status().is_success() {
                Ok(())
            } else {
                Err(status_error(&ready, res).await)
            }
        })
    }

    async fn call(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let mut wait = self.options.backoff;
        let mut attempt = 0;
        loop {
            let failure = match self.attempt(input, batch).await {
                Ok(logits) => return Ok(logits),
                Err(f) => f,
            };
            match failure {
                Failure::Retry(e) if attempt < self.options.retries => {
                    tracing::debug!(variant = self.spec.id, attempt, error = %e, "retrying");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Failure::Retry(e) | Failure::Final(e) => return Err(e),
            }
        }
    }

    async fn attempt(&self, input: &[f32], batch: usize) -> std::result::Result<Vec<f32>, Failure> {
        match &self.target {
            Target::Kserve {
                input: i,
                output: o,
                ..
            } => {
                let token = None;
                self.kserve(&self.target.url(), token, i, o, input, batch)
                    .await
            }
            Target::Vertex {
                url,
                auth,
                input: i,
                output: o,
            } => {
                let token = match auth {
                    VertexAuth::None => None,
                    VertexAuth::Adc => Some(self.token().await.map_err(Failure::Final)?),
                };
                if url.ends_with(":rawPredict") {
                    self.kserve(url, token, i, o, input, batch).await
                } else {
                    self.vertex_predict(url, token, input, batch).await
                }
            }
        }
    }

    async fn token(&self) -> Result<String> {
        let auth_error = |e: gcp_auth::Error| Error::Remote {
            url: "Application Default Credentials".into(),
            status: None,
            message: e.to_string(),
        };
        let provider = self
            .tokens
            .get_or_try_init(|| async { gcp_auth::provider().await.map_err(auth_error) })
            .await?;
        let token = provider
            .token(&[CLOUD_PLATFORM])
            .await
            .map_err(auth_error)?;
        Ok(token.as_str().to_string())
    }

    /// One KServe v2 call with binary tensors.
    async fn kserve(
        &self,
        url: &str,
        token: Option<String>,
        input_name: &str,
        output_name: &str,
        input: &[f32],
        batch: usize,
    ) -> std::result::Result<Vec<f32>, Failure> {
        let (body, head_len) =
            kserve_wire::fp32_request(input_name, output_name, input, batch, true);
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(HEADER_LENGTH, head_len.to_string())
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = self.send(url, req).await?;
        let header_len = res.headers().get(HEADER_LENGTH).and_then(|v| {
            kserve_wire::header_length(Some(v.as_bytes()))
                .ok()
                .flatten()
        });
        let bytes = res
            .bytes()
            .await
            .map_err(|e| Failure::Final(transport_error(url, &e, &self.options)))?;
        parse_kserve_response(&bytes, header_len, output_name, batch)
            .map_err(|m| Failure::Final(remote(url, None, m)))
    }

    /// Vertex `:predict`: one request per image, concurrently.
    async fn vertex_predict(
        &self,
        url: &str,
        token: Option<String>,
        input: &[f32],
        batch: usize,
    ) -> std::result::Result<Vec<f32>, Failure> {
        let mut set = tokio::task::JoinSet::new();
        for (i, image) in input.chunks_exact(INPUT_LEN).enumerate() {
            let bytes = kserve_wire::f32_to_le(image);
            let body = json!({
                "instances": [{ "tensor_b64": base64::engine::general_purpose::STANDARD.encode(bytes) }],
                "parameters": { "logits": true, "top_k": 1 },
            });
            let mut req = self.client.post(url).json(&body);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let (url, options) = (url.to_string(), self.options.clone());
            set.spawn(async move {
                let res = send(&url, req, &options).await?;
                let value: Value = res.json().await.map_err(|e| {
                    Failure::Final(remote(&url, None, format!("invalid JSON answer: {e}")))
                })?;
                let logits =
                    prediction_logits(&value).map_err(|m| Failure::Final(remote(&url, None, m)))?;
                Ok::<_, Failure>((i, logits))
            });
        }
        let mut rows = vec![Vec::new(); batch];
        while let Some(joined) = set.join_next().await {
            let (i, logits) = joined.map_err(|e| {
                Failure::Final(Error::Runtime(format!("remote call crashed: {e}")))
            })??;
            rows[i] = logits;
        }
        Ok(rows.concat())
    }

    async fn send(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> std::result::Result<reqwest::Response, Failure> {
        send(url, req, &self.options).await
    }
}

async fn send(
    url: &str,
    req: reqwest::RequestBuilder,
    options: &RemoteOptions,
) -> std::result::Result<reqwest::Response, Failure> {
    let res = match req.send().await {
        Ok(res) => res,
        Err(e) if e.is_connect() => return Err(Failure::Retry(transport_error(url, &e, options))),
        Err(e) => return Err(Failure::Final(transport_error(url, &e, options))),
    };
    if res.status().is_success() {
        return Ok(res);
    }
    let retry = matches!(res.status().as_u16(), 429 | 502 | 503 | 504);
    let e = status_error(url, res).await;
    Err(if retry {
        Failure::Retry(e)
    } else {
        Failure::Final(e)
    })
}

fn remote(url: &str, status: Option<u16>, message: impl Into<String>) -> Error {
    Error::Remote {
        url: url.to_string(),
        status,
        message: message.into(),
    }
}

fn transport_error(url: &str, e: &reqwest::Error, options: &RemoteOptions) -> Error {
    let message = if e.is_timeout() {
        format!(
            "no answer within {} ms (timeout)",
            options.timeout.as_millis()
        )
    } else if e.is_connect() {
        format!("cannot connect: {}", error_chain(e))
    } else {
        error_chain(e)
    };
    remote(url, None, message)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A non-2xx answer, with the remote's own error text (`{"error": "..."}` as KServe servers answer,
/// `{"error": {"message": ...}}` as Google APIs do, or the body itself).
async fn status_error(url: &str, res: reqwest::Response) -> Error {
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    let text = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| match &v["error"] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| body.chars().take(500).collect());
    remote(
        url,
        Some(status.as_u16()),
        format!("HTTP {status}: {}", text.trim()),
    )
}

/// The logits of a one-instance Vertex answer: `predictions[0]` is `{"logits": [...]}` or the array.
fn prediction_logits(v: &Value) -> std::result::Result<Vec<f32>, String> {
    let p = &v["predictions"][0];
    let row = p
        .get("logits")
        .unwrap_or(p)
        .as_array()
        .ok_or("the answer has no `predictions[0].logits`")?;
    let logits: Vec<f32> = row
        .iter()
        .map(|v| v.as_f64().map(|f| f as f32).ok_or("non-numeric logit"))
        .collect::<std::result::Result<_, _>>()?;
    if logits.len() != NUM_CLASSES {
        return Err(format!("{} logits, expected {NUM_CLASSES}", logits.len()));
    }
    Ok(logits)
}

impl Drop for RemoteModel {
    fn drop(&mut self) {
        // A runtime dropped the ordinary way blocks, which tokio forbids inside async code (where the
        // last `Arc` of a model may well be dropped).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Model for RemoteModel {
    fn spec(&self) -> &VariantSpec {
        &self.spec
    }

    fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        check_input(input, batch)?;
        self.block_on(self.call(input, batch))
    }

    fn info(&self) -> ModelInfo {
        self.target.info()
    }

    /// A remote answers `logits` only: the KServe v2 / Vertex AI contract has no feature-map output
    /// that inferscope could ask every server for.
    fn explains(&self) -> std::result::Result<(), String> {
        Err(format!(
            "a remote variant ({}) answers logits only: its server offers no feature map",
            self.target.info().location
        ))
    }

    fn ready(&self) -> Result<()> {
        self.probe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertex_urls_follow_the_public_api() {
        assert_eq!(
            Target::vertex_url("p", "europe-west4", "123", false, None),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/endpoints/123:predict"
        );
        assert_eq!(
            Target::vertex_url("p", "r", "9", true, Some("http://127.0.0.1:8080/")),
            "http://127.0.0.1:8080/v1/projects/p/locations/r/endpoints/9:rawPredict"
        );
    }

    #[test]
    fn kserve_answers_parse_binary_and_json_outputs() {
        let logits: Vec<f32> = (0..2 * NUM_CLASSES).map(|i| i as f32).collect();
        let other = [1u8, 2, 3, 4];
        let head = json!({"outputs": [
            {"name": "other", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
            {"name": "logits", "datatype": "FP32", "shape": [2, 1000],
             "parameters": {"binary_data_size": logits.len() * 4}},
        ]});
        let mut body = serde_json::to_vec(&head).unwrap();
        let n = body.len();
        body.extend_from_slice(&other);
        body.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
        assert_eq!(
            parse_kserve_response(&body, Some(n), "logits", 2).unwrap(),
            logits
        );
        let e = parse_kserve_response(&body[..body.len() - 1], Some(n), "logits", 2).unwrap_err();
        assert!(e.contains("truncated") || e.contains("values"), "{e}");

        let json_body = serde_json::to_vec(&json!({"outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [1, 1000], "data": &logits[..1000]}
        ]}))
        .unwrap();
        assert_eq!(
            parse_kserve_response(&json_body, None, "logits", 1).unwrap(),
            &logits[..1000]
        );
        assert!(parse_kserve_response(&json_body, None, "probs", 1)
            .unwrap_err()
            .contains("no output `probs`"));
    }

    #[test]
    fn vertex_predictions_give_logits() {
        let row: Vec<f32> = (0..NUM_CLASSES).map(|i| i as f32 / 10.0).collect();
        let v = json!({"predictions": [{"logits": row, "top": []}]});
        assert_eq!(prediction_logits(&v).unwrap(), row);
        let bare = json!({"predictions": [row]});
        assert_eq!(prediction_logits(&bare).unwrap(), row);
        assert!(prediction_logits(&json!({"predictions": []})).is_err());
    }
}

//! KServe v2 / Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, the protocol of
//! Triton's and KServe's high-throughput clients) on its own port, Triton's 8001 by default.
//!
//! The service is generated from `proto/grpc_predict_v2.proto` at build time (`build.rs`: `protox`
//! parses it in pure Rust, no `protoc`; `tonic-prost-build` writes the code). Every inference goes
//! through the same [`ServingState`] as the HTTP routes: the same variant lookup
//! ([`ServingState::ready_variant`]), the same input checks, batcher, limits (`max_batch_size`,
//! queue, deadline: `parameters["timeout"]` in µs, as Triton's client sends it) and metrics; errors
//! are the HTTP route's, carried as gRPC status codes (see [`status`]). Inputs: FP32
//! `[N, 3, 224, 224]` (raw little-endian bytes or `fp32_contents`) or BYTES `[N]` (encoded photos,
//! raw with 4-byte length prefixes or `bytes_contents`). Outputs: `logits` FP32 `[N, 1000]` as raw
//! bytes, or Triton's classification extension (`parameters["classification"] = k` on the output).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use tonic::{Code, Request, Response, Status};

use axum::body::Bytes;
use engine::kserve_wire::{self, BytesError};
use engine::{INPUT_LEN, INPUT_SIZE, NUM_CLASSES};

use crate::http::error::ApiError;
use crate::http::kserve::{
    bytes_images, check_one_input, check_output_name, classification_strings, decode_photos,
    fp32_images, unsupported_datatype, INPUT_NAME, OUTPUT_NAME, VERSION,
};
use crate::http::limits::INFER_BODY_LIMIT;
use crate::http::HttpState as ServingState;

/// The generated protocol types, client and server.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;
use pb::model_infer_request::InferInputTensor;
use pb::model_infer_response::InferOutputTensor;

/// Triton's gRPC port.
pub const DEFAULT_PORT: u16 = 8001;

/// The gRPC flag of `inferscope serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GrpcArgs {
    /// KServe v2 gRPC address, or `off` [default: the HTTP address's host on port 8001 (Triton's);
    /// a free port when the HTTP port is 0; 0.0.0.0:8001 under AIP_HTTP_PORT].
    #[arg(long = "grpc-addr", env = "INFERSCOPE_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
}

impl GrpcArgs {
    /// Where to listen, given the HTTP address (`None`: gRPC is off).
    pub fn addr(&self, http: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
        match self.grpc_addr.as_deref().map(str::trim) {
            Some("off") => Ok(None),
            Some(a) if !a.is_empty() => a
                .parse()
                .map(Some)
                .with_context(|| format!("--grpc-addr `{a}` is not host:port or `off`")),
            _ => {
                let port = if http.port() == 0 { 0 } else { DEFAULT_PORT };
                Ok(Some(SocketAddr::new(http.ip(), port)))
            }
        }
    }
}

/// The running gRPC server; [`Running::finish`] waits for it to drain after the shutdown signal.
pub struct Running(Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>);

impl Running {
    pub async fn finish(self) -> anyhow::Result<()> {
        if let Some(task) = self.0 {
            task.await
                .context("the gRPC server crashed")?
                .context("serving gRPC")?;
        }
        Ok(())
    }
}

/// Binds the gRPC port (failing clearly when it is taken) and serves until `shutdown` resolves, then
/// answers what is in flight.
pub async fn spawn(
    args: &GrpcArgs,
    http: SocketAddr,
    state: ServingState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let Some(addr) = args.addr(http)? else {
        return Ok(Running(None));
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {addr} (--grpc-addr, or `off`)"))?;
    let local = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = GrpcInferenceServiceServer::new(Service { state })
        .max_decoding_message_size(INFER_BODY_LIMIT)
        .max_encoding_message_size(INFER_BODY_LIMIT);
    tracing::info!("KServe v2 gRPC listening on {local}");
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            // A connection that stops answering pings is closed; one connection cannot open
            // unbounded streams (the queue and decoding limits bound the work behind them).
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(256))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown),
    );
    Ok(Running(Some(task)))
}

/// An HTTP route's error as a gRPC status: 400 → INVALID_ARGUMENT, 403 → FAILED_PRECONDITION
/// (model control off), 404 → NOT_FOUND,
/// 413 → RESOURCE_EXHAUSTED, 503 (queue full, not loaded, shutting down) → UNAVAILABLE,
/// 504 → DEADLINE_EXCEEDED, 502 (a remote variant failed) and 500 → INTERNAL. The message is the
/// same text the HTTP route answers.
pub fn status(e: ApiError) -> Status {
    let code = match e.status {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::NOT_FOUND => Code::NotFound,
        // Model control is off: the request is valid, the server is not set up to obey it.
        StatusCode::FORBIDDEN => Code::FailedPrecondition,
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    if e.status.is_server_error() {
        tracing::warn!(status = %e.status, cause = e.cause, "gRPC: {}", e.message);
    }
    Status::new(code, e.message)
}

struct Service {
    state: ServingState,
}

impl Service {
    /// The API token (`--api-token`), as the HTTP routes ask it: `authorization: Bearer <token>`.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self
            .state
            .access
            .token_ok(&request.metadata().clone().into_headers())
        {
            return Ok(());
        }
        self.state.metrics.rejected("-", "unauthorized");
        Err(Status::unauthenticated(
            "this server requires `authorization: Bearer <token>` (see --api-token)",
        ))
    }

    fn check_version(&self, name: &str, version: &str) -> Result<(), Status> {
        if version.is_empty() || version == VERSION {
            return Ok(());
        }
        Err(status(self.state.reject(
            name,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_model",
                format!("model `{name}` has no version `{version}` (only `{VERSION}`)"),
            ),
        )))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    /// Ready when at least one variant can answer (as `/v2/health/ready`).
    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = !self.state.app.ready().is_empty();
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    /// `ready: false` for a model that is unknown or not loaded (Triton answers the same).
    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let ready = (r.version.is_empty() || r.version == VERSION)
            && self.state.app.variant(&r.name).is_some_and(|(v, b)| {
                matches!(v.load, app::ssr::VariantLoad::Ready(_)) && b.is_some()
            });
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "inferscope".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: if self.state.model_control.allows_requests() {
                vec!["classification".into(), "model_repository".into()]
            } else {
                vec!["classification".into()]
            },
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        self.check_version(&r.name, &r.version)?;
        self.state.ready_variant(&r.name).map_err(status)?;
        let tensor = |name: &str, shape: Vec<i64>| pb::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        };
        let side = INPUT_SIZE as i64;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: r.name,
            versions: vec![VERSION.into()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![tensor(INPUT_NAME, vec![-1, 3, side, side])],
            outputs: vec![tensor(OUTPUT_NAME, vec![-1, NUM_CLASSES as i64])],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        self.authorize(&request)?;
        let mut r = request.into_inner();
        let s = &self.state;
        let name = r.model_name.clone();
        self.check_version(&name, &r.model_version)?;
        let batcher = s.ready_variant(&name).map_err(status)?;
        let reject = |e: ApiError| status(s.reject(&name, e));
        let input = input_tensor(&mut r, batcher.config().max_batch_size).map_err(reject)?;
        let classification = requested_output(&r).map_err(reject)?;
        let timeout = match r.parameters.get("timeout").map(|p| &p.parameter_choice) {
            None => None,
            Some(Some(ParameterChoice::Int64Param(us))) if *us > 0 => {
                Some(Duration::from_micros(*us as u64))
            }
            Some(_) => {
                return Err(reject(ApiError::bad_request(
                    "bad_request",
                    "parameters[\"timeout\"] must be a positive int64 number of microseconds",
                )))
            }
        };
        // Admission before any photo is decoded, and at most `--max-decoding` decoding at once.
        let (tensor, images) = match input {
            GrpcInput::Tensor(t, images) => (t, images),
            GrpcInput::Photos(photos) => {
                let images = photos.len();
                let t = decode_photos(s, &name, &batcher, photos, images)
                    .await
                    .map_err(status)?;
                (t, images)
            }
        };
        let answer = s
            .infer(&name, Arc::new(tensor), images, timeout)
            .await
            .map_err(status)?;
        let (output, raw) = match classification {
            None => (
                InferOutputTensor {
                    name: OUTPUT_NAME.into(),
                    datatype: "FP32".into(),
                    shape: vec![images as i64, NUM_CLASSES as i64],
                    ..Default::default()
                },
                answer
                    .logits
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
            Some(k) => {
                let mut raw = Vec::new();
                for text in classification_strings(s, &answer.logits, k) {
                    kserve_wire::push_bytes_element(&mut raw, text.as_bytes());
                }
                (
                    InferOutputTensor {
                        name: OUTPUT_NAME.into(),
                        datatype: "BYTES".into(),
                        shape: vec![images as i64, k as i64],
                        ..Default::default()
                    },
                    raw,
                )
            }
        };
        Ok(Response::new(pb::ModelInferResponse {
            model_name: name,
            model_version: VERSION.into(),
            id: r.id,
            parameters: Default::default(),
            outputs: vec![output],
            raw_output_contents: vec![raw],
        }))
    }

    /// Triton's repository index (the same entries as `POST /v2/repository/index`).
    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let models = crate::http::repository::index_entries(&self.state, r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name.into(),
                version: VERSION.into(),
                state: e.state.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    /// Loads (or reloads) a variant from its file (`--model-control explicit|poll`).
    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let parameters: Vec<String> = r.parameters.into_keys().collect();
        crate::http::repository::load_variant(&self.state, &r.model_name, &parameters)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    /// Takes a variant out of service (`--model-control explicit|poll`).
    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let parameters: Vec<String> = r.parameters.into_keys().collect();
        crate::http::repository::unload_variant(&self.state, &r.model_name, &parameters)
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("bad_input", message)
}

/// The request's one input, every size checked against `max_images` and the bytes received.
#[derive(Debug)]
enum GrpcInput {
    /// `images × 3×224×224` floats.
    Tensor(Vec<f32>, usize),
    /// Encoded photos, decoded after admission (as the HTTP route does).
    Photos(Vec<Bytes>),
}

fn input_tensor(r: &mut pb::ModelInferRequest, max_images: usize) -> Result<GrpcInput, ApiError> {
    let names: Vec<&str> = r.inputs.iter().map(|i| i.name.as_str()).collect();
    check_one_input(&names)?;
    let input = &mut r.inputs[0];
    let raw = match r.raw_input_contents.len() {
        0 => None,
        1 => {
            if input.contents.is_some() {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` has both `contents` and raw_input_contents"
                )));
            }
            Some(std::mem::take(&mut r.raw_input_contents[0]))
        }
        n => {
            return Err(bad(format!(
                "raw_input_contents has {n} entries for 1 input"
            )))
        }
    };
    let contents = input.contents.take().unwrap_or_default();
    match input.datatype.as_str() {
        "FP32" => fp32_input(input, raw, contents, max_images),
        "BYTES" => bytes_input(input, raw, contents, max_images),
        other => Err(unsupported_datatype(other)),
    }
}

fn fp32_input(
    input: &InferInputTensor,
    raw: Option<Vec<u8>>,
    contents: pb::InferTensorContents,
    max_images: usize,
) -> Result<GrpcInput, ApiError> {
    let images = fp32_images(&input.shape, max_images)?;
    // `images ≤ max_batch_size`: no overflow.
    let want = images * INPUT_LEN;
    let values = match raw {
        Some(raw) => {
            if raw.len() != want * 4 {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` of shape {:?} needs {} bytes of FP32 data, got {}",
                    input.shape,
                    want * 4,
                    raw.len()
                )));
            }
            kserve_wire::f32_from_le(&raw).expect("a multiple of 4 bytes")
        }
        None => {
            if contents.fp32_contents.len() != want {
                return Err(bad(format!(
                    "input `{INPUT_NAME}` of shape {:?} needs {want} values in fp32_contents, got {}",
                    input.shape,
                    contents.fp32_contents.len()
                )));
            }
            contents.fp32_contents
        }
    };
    Ok(GrpcInput::Tensor(values, images))
}

/// BYTES `[N]` / `[N, 1]`: encoded photos (raw with 4-byte length prefixes, or `bytes_contents`).
fn bytes_input(
    input: &InferInputTensor,
    raw: Option<Vec<u8>>,
    contents: pb::InferTensorContents,
    max_images: usize,
) -> Result<GrpcInput, ApiError> {
    let images = bytes_images(&input.shape, max_images)?;
    let photos = match raw {
        Some(raw) => {
            let raw = Bytes::from(raw);
            kserve_wire::bytes_elements(&raw, images)
                .map_err(|e| match e {
                    BytesError::Truncated(m) => ApiError::bad_request("truncated", m),
                    BytesError::LeftOver(m) => bad(m),
                })?
                .into_iter()
                .map(|e| raw.slice_ref(e))
                .collect()
        }
        None => {
            if contents.bytes_contents.len() != images {
                return Err(bad(format!(
                    "BYTES input `{INPUT_NAME}` of shape {:?} needs {images} elements in bytes_contents, got {}",
                    input.shape,
                    contents.bytes_contents.len()
                )));
            }
            contents
                .bytes_contents
                .into_iter()
                .map(Bytes::from)
                .collect()
        }
    };
    Ok(GrpcInput::Photos(photos))
}

/// The one output there is; `Some(k)` for Triton's classification extension.
fn requested_output(r: &pb::ModelInferRequest) -> Result<Option<usize>, ApiError> {
    match r.outputs.as_slice() {
        [] => Ok(None),
        [o] => {
            check_output_name(&o.name)?;
            match o
                .parameters
                .get("classification")
                .map(|p| &p.parameter_choice)
            {
                None => Ok(None),
                Some(Some(ParameterChoice::Int64Param(k))) if *k > 0 => {
                    Ok(Some((*k as usize).min(NUM_CLASSES)))
                }
                Some(_) => Err(ApiError::bad_request(
                    "bad_request",
                    "parameters[\"classification\"] must be a positive int64 class count",
                )),
            }
        }
        many => Err(ApiError::bad_request(
            "bad_request",
            format!(
                "{} outputs requested: the model has one, `{OUTPUT_NAME}`",
                many.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_address_follows_the_http_one() {
        let http: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let none = GrpcArgs::default();
        assert_eq!(
            none.addr(http).unwrap(),
            Some("127.0.0.1:8001".parse().unwrap())
        );
        assert_eq!(
            none.addr("127.0.0.1:0".parse().unwrap()).unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        let off = GrpcArgs {
            grpc_addr: Some("off".into()),
        };
        assert_eq!(off.addr(http).unwrap(), None);
        let bad = GrpcArgs {
            grpc_addr: Some("8001".into()),
        };
        assert!(format!("{:#}", bad.addr(http).unwrap_err()).contains("not host:port"));
    }

    #[test]
    fn a_huge_declared_shape_is_refused_without_allocating() {
        let input = InferInputTensor {
            name: INPUT_NAME.into(),
            datatype: "FP32".into(),
            shape: vec![i64::MAX, 3, 224, 224],
            ..Default::default()
        };
        let e = fp32_input(&input, Some(vec![0; 16]), Default::default(), 8).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("at most 8"), "{}", e.message);
        // More photos than max_batch_size: refused before any is looked at.
        let photos = InferInputTensor {
            datatype: "BYTES".into(),
            shape: vec![1000],
            ..input
        };
        let e = bytes_input(&photos, Some(vec![0; 4000]), Default::default(), 8)
            .err()
            .unwrap();
        assert_eq!(e.cause, "batch_too_large", "{}", e.message);
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        let code = |s| status(ApiError::new(s, "x", "m")).code();
        assert_eq!(code(StatusCode::BAD_REQUEST), Code::InvalidArgument);
        assert_eq!(code(StatusCode::NOT_FOUND), Code::NotFound);
        assert_eq!(code(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(code(StatusCode::GATEWAY_TIMEOUT), Code::DeadlineExceeded);
        assert_eq!(code(StatusCode::BAD_GATEWAY), Code::Internal);
    }
}

//! What one client may cost: how long it may take to send a request, how many bytes of request
//! bodies the server holds at once, how many photos decode at once, how many connections are open.
//!
//! - Headers: hyper's header-read timeout ([`Limits::header_timeout`]) closes a connection that has
//!   not sent a request's headers in time; it runs from the moment the connection waits for a
//!   request, so it is also the idle keep-alive limit.
//! - Bodies ([`buffer_body`]): read whole before any handler runs, within [`Limits::body_timeout`]
//!   (408 after it) and the route's size limit (413, from `Content-Length` before reading when it is
//!   announced), and charged against a budget of bytes held by all requests at once
//!   ([`Limits::body_memory`]; 503 + `Retry-After` when it is spent), so a crowd of large bodies
//!   cannot take the memory the models need. Every refusal is counted in `/metrics` under its cause.
//! - Photos: at most [`Limits::decoders`] photos decode at once ([`Limits::decode`]); a photo is at
//!   most `engine::preprocess::MAX_MEGAPIXELS` (48 MP, ~200 MB while decoded and resized), so this
//!   bounds the memory decoding takes.
//! - Connections: [`Limits::max_connections`] open at once (one more is answered 503 and closed) and
//!   a shutdown deadline after which stalled connections are cut ([`super::listen`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::metrics::Metrics;

/// Largest request body of the inference routes: 64 images as JSON floats fit (3 MB each).
pub const INFER_BODY_LIMIT: usize = 64 << 20;
/// Largest body of the other routes (the page's small server functions).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{s}: must be a positive number of seconds"))
    }
}

/// The limit options of `inferscope serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Seconds a connection may take to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "INFERSCOPE_HEADER_TIMEOUT_S", default_value = "30", value_parser = secs)]
    pub header_timeout_s: Duration,
    /// Seconds a client may take to send a request's body (408 after).
    #[arg(long, env = "INFERSCOPE_BODY_TIMEOUT_S", default_value = "60", value_parser = secs)]
    pub body_timeout_s: Duration,
    /// On SIGTERM / Ctrl-C: seconds to finish in-flight requests before open connections are cut.
    #[arg(long, env = "INFERSCOPE_SHUTDOWN_TIMEOUT_S", default_value = "30", value_parser = secs)]
    pub shutdown_timeout_s: Duration,
    /// Connections open at once; one more is answered 503 and closed.
    #[arg(long, env = "INFERSCOPE_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// MiB of request bodies held at once by all requests; past it, 503 + Retry-After.
    #[arg(long, env = "INFERSCOPE_BODY_MEMORY_MB", default_value_t = 256)]
    pub body_memory_mb: usize,
    /// Photos decoded at once (each at most 48 megapixels, ~200 MB while decoded). Default: the
    /// number of cores, at most 4.
    #[arg(long, env = "INFERSCOPE_MAX_DECODING")]
    pub max_decoding: Option<usize>,
}

/// The limits of a running server (see the module docs). Cheap to share.
#[derive(Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    /// Budget of request-body bytes, in KiB permits.
    body_memory: Arc<Semaphore>,
    body_memory_kib: usize,
    /// Photos decoding now.
    decoders: Arc<Semaphore>,
    pub max_decoding: usize,
}

impl Limits {
    pub fn new(args: &LimitArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.max_connections > 0,
            "--max-connections must be at least 1"
        );
        anyhow::ensure!(
            args.body_memory_mb > 0,
            "--body-memory-mb must be at least 1"
        );
        let kib = args
            .body_memory_mb
            .checked_mul(1024)
            .filter(|&k| k <= Semaphore::MAX_PERMITS && u32::try_from(k).is_ok())
            .ok_or_else(|| anyhow::anyhow!("--body-memory-mb is too large"))?;
        let max_decoding = args.max_decoding.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(4)
        });
        anyhow::ensure!(max_decoding > 0, "--max-decoding must be at least 1");
        Ok(Limits {
            header_timeout: args.header_timeout_s,
            body_timeout: args.body_timeout_s,
            shutdown_timeout: args.shutdown_timeout_s,
            max_connections: args.max_connections,
            body_memory: Arc::new(Semaphore::new(kib)),
            body_memory_kib: kib,
            decoders: Arc::new(Semaphore::new(max_decoding)),
            max_decoding,
        })
    }

    /// The defaults, for tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct A {
            #[command(flatten)]
            limits: LimitArgs,
        }
        Limits::new(&A::parse_from(["test"]).limits).expect("default limits")
    }

    /// Decodes and preprocesses one photo on a blocking thread once one of the decoding slots is free.
    pub async fn decode(&self, photo: Bytes) -> Result<engine::preprocess::Preprocessed, ApiError> {
        let _slot = self
            .decoders
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the decoder pool is closed"))?;
        tokio::task::spawn_blocking(move || engine::preprocess::preprocess(&photo))
            .await
            .map_err(|e| ApiError::internal(format!("preprocessing crashed: {e}")))?
            .map_err(ApiError::from)
    }

    /// Takes `bytes` from the body budget, or `None` when it is spent.
    fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024).min(self.body_memory_kib)).ok()?;
        self.body_memory.clone().try_acquire_many_owned(kib).ok()
    }
}

/// The body limit of a route.
pub fn body_limit(path: &str, vertex_predict: &str) -> usize {
    if path.starts_with("/v2/") || path == vertex_predict {
        INFER_BODY_LIMIT
    } else if path == super::preprocess::PATH {
        super::preprocess::BODY_LIMIT
    } else if path == app::classify::CLASSIFY_PATH || path == app::drift::DRIFT_PATH {
        app::classify::CLASSIFY_BODY_LIMIT
    } else if path == app::classify::CLASSIFY_SET_PATH {
        app::classify::CLASSIFY_SET_BODY_LIMIT
    } else {
        DEFAULT_BODY_LIMIT
    }
}

/// State of [`buffer_body`].
#[derive(Clone)]
pub struct BodyState {
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub vertex_predict: String,
}

/// Reads the request's body whole, within the route's size limit, the body timeout and the body
/// budget, and hands it to the route as a buffered body (see the module docs).
pub async fn buffer_body(State(s): State<BodyState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let limit = body_limit(&path, &s.vertex_predict);
    // Server functions answer in their own error format.
    let server_fn = path.starts_with("/api/") && path != super::preprocess::PATH;
    let refuse = |status: StatusCode, cause: &'static str, message: String| -> Response {
        s.metrics.rejected("-", cause);
        if server_fn {
            let e = if status == StatusCode::PAYLOAD_TOO_LARGE {
                app::AppError::TooLarge(message)
            } else {
                app::AppError::BadRequest(message)
            };
            return (status, Json(e)).into_response();
        }
        ApiError::new(status, cause, message).into_response()
    };
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| req.body().size_hint().exact());
    if announced.is_some_and(|n| n > limit as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is {} bytes; this route takes at most {} MiB",
                announced.unwrap_or(0),
                limit >> 20
            ),
        );
    }
    let mut held = announced.map_or(0, |n| n as usize);
    let Some(mut permit) = s.limits.reserve(held.max(1)) else {
        return refuse_busy(&s, held);
    };
    let (parts, body) = req.into_parts();
    let mut body = body;
    let mut buf: Vec<u8> = Vec::with_capacity(held.min(limit));
    let deadline = tokio::time::Instant::now() + s.limits.body_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the body did not arrive within {} s ({} bytes received)",
                        s.limits.body_timeout.as_secs_f64(),
                        buf.len()
                    ),
                )
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("the body could not be read: {e}"),
                )
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds this route's limit of {} MiB", limit >> 20),
            );
        }
        buf.extend_from_slice(&data);
        if buf.len() > held {
            // A body longer than announced cannot happen (hyper checks); a chunked one grows here.
            let more = (buf.len() - held).max(64 << 10);
            match s.limits.reserve(more) {
                Some(p) => permit.merge(p),
                None => return refuse_busy(&s, buf.len()),
            }
            held += more;
        }
    }
    let req = Request::from_parts(parts, Body::from(buf));
    let res = next.run(req).await;
    drop(permit);
    res
}

fn refuse_busy(s: &BodyState, bytes: usize) -> Response {
    s.metrics.rejected("-", "body_memory");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "body_memory",
        format!(
            "the server holds its limit of request bodies ({} MiB) and cannot take {bytes} more bytes now",
            s.limits.body_memory_kib >> 10
        ),
    )
    .into_response()
}

//! `inferscope bench`: load against any KServe v2 server (inferscope, Triton, a python server) or an
//! inferscope Vertex predict route.
//!
//! Closed loop (`--concurrency N`: N clients, each sending its next request when the last is answered)
//! or open loop (`--rate R`: requests start on a fixed schedule whatever the answers do; latency is
//! measured from the scheduled start, so a stalled server is not hidden by coordinated omission). A
//! warm-up period is run first and not recorded. Latencies go into an HDR histogram; the summary
//! (p50/p90/p99/p99.9, throughput, errors by kind) is printed and, with `--json`, written to a file.
//! `--protocol kserve-grpc` sends the same raw FP32 tensors over KServe v2 gRPC (`--url` is then the
//! gRPC address, e.g. `http://127.0.0.1:8001`), all clients on one HTTP/2 connection.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use engine::kserve_wire::{self, InferRequest, RequestInput, RequestOutput};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::grpc::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;

/// Options of `inferscope bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server base URL (`http://host:port`; the gRPC port for `kserve-grpc`).
    #[arg(long)]
    pub url: String,
    /// Model name (KServe) or variant (Vertex).
    #[arg(long, default_value = "resnet50-baseline")]
    pub model: String,
    /// `kserve` (binary FP32 tensors), `kserve-u8` (binary UINT8 `[N, 224, 224, 3]` pixels, a quarter
    /// of the FP32 bytes, normalized by the server), `kserve-json` (JSON tensors), `kserve-bytes`
    /// (encoded photos as BYTES), `kserve-grpc` (raw FP32 tensors over gRPC) or `vertex` (a base64
    /// photo per instance, to `--vertex-route`).
    #[arg(long, default_value = "kserve")]
    pub protocol: Protocol,
    /// The inferscope Vertex predict route.
    #[arg(long, default_value = "/vertex/predict")]
    pub vertex_route: String,
    /// Closed loop: clients sending back to back.
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second, on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured duration, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Unmeasured warm-up before it, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Images per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The photo to send (default: foolbox's first photo in ~/.cache/inferscope).
    #[arg(long)]
    pub photo: Option<PathBuf>,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Name of this run in the output (e.g. `inferscope`, `python-ort`).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Kserve,
    KserveU8,
    KserveJson,
    KserveBytes,
    KserveGrpc,
    Vertex,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub label: String,
    pub url: String,
    pub model: String,
    pub protocol: Protocol,
    pub mode: String,
    pub batch: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Answered requests per second.
    pub throughput_rps: f64,
    /// Images per second (`throughput_rps × batch`).
    pub images_per_s: f64,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A prepared request.
struct Request {
    url: String,
    body: Vec<u8>,
    header_len: Option<usize>,
    /// `kserve-grpc`: the request to send instead of `body`.
    grpc: Option<pb::ModelInferRequest>,
}

/// The client of a run: HTTP, or one gRPC channel shared by every client task.
#[derive(Clone)]
enum Client {
    Http(reqwest::Client),
    Grpc(GrpcInferenceServiceClient<tonic::transport::Channel>),
}

struct Outcome {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Outcome {
    fn new() -> Self {
        Outcome {
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.hist.add(&other.hist).expect("same bounds");
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn record(&mut self, latency: Duration, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.hist
                    .saturating_record(latency.as_micros().max(1) as u64);
            }
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(bench(&args))?;
    print_summary(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn default_photo() -> PathBuf {
    let cache = std::env::var_os("INFERSCOPE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/inferscope")
        });
    cache.join("foolbox-images/imagenet_00_243.jpg")
}

fn prepare(args: &BenchArgs) -> anyhow::Result<Request> {
    let photo_path = args.photo.clone().unwrap_or_else(default_photo);
    let photo = std::fs::read(&photo_path)
        .with_context(|| format!("reading {} (pass --photo)", photo_path.display()))?;
    let base = args.url.trim_end_matches('/');
    let infer = format!("{base}/v2/models/{}/infer", args.model);
    let n = args.batch;
    anyhow::ensure!(n >= 1, "--batch must be at least 1");
    let tensor = || -> anyhow::Result<Vec<f32>> {
        let one = engine::preprocess::preprocess(&photo)?.data;
        Ok(one.repeat(n))
    };
    Ok(match args.protocol {
        Protocol::Kserve => {
            let (body, len) = kserve_wire::fp32_request("input", "logits", &tensor()?, n, true);
            Request {
                url: infer,
                body,
                header_len: Some(len),
                grpc: None,
            }
        }
        Protocol::KserveU8 => {
            let pixels = engine::preprocess::preprocess_pixels(&photo)?
                .data
                .repeat(n);
            let (body, len) = kserve_wire::u8_request("input", "logits", &pixels, n, true);
            Request {
                url: infer,
                body,
                header_len: Some(len),
                grpc: None,
            }
        }
        Protocol::KserveGrpc => {
            let t = tensor()?;
            let input = pb::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![n as i64, 3, 224, 224],
                ..Default::default()
            };
            Request {
                url: base.to_string(),
                body: Vec::new(),
                header_len: None,
                grpc: Some(pb::ModelInferRequest {
                    model_name: args.model.clone(),
                    inputs: vec![input],
                    raw_input_contents: vec![t.iter().flat_map(|v| v.to_le_bytes()).collect()],
                    ..Default::default()
                }),
            }
        }
        Protocol::KserveJson => {
            let request = InferRequest {
                inputs: vec![RequestInput {
                    name: "input".into(),
                    shape: vec![n as i64, 3, 224, 224],
                    datatype: "FP32".into(),
                    data: Some(tensor()?.into()),
                    ..RequestInput::default()
                }],
                outputs: Some(vec![RequestOutput {
                    name: "logits".into(),
                    parameters: json!({"binary_data": false})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                }]),
                ..InferRequest::default()
            };
            Request {
                url: infer,
                body: serde_json::to_vec(&request)?,
                header_len: None,
                grpc: None,
            }
        }
        Protocol::KserveBytes => {
            let photos = vec![photo.as_slice(); n];
            let (body, len) = kserve_wire::bytes_request("input", "logits", &photos, true);
            Request {
                url: infer,
                body,
                header_len: Some(len),
                grpc: None,
            }
        }
        Protocol::Vertex => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
            let instances: Vec<_> = (0..n).map(|_| json!({ "b64": b64 })).collect();
            let body = serde_json::to_vec(&json!({
                "instances": instances,
                "parameters": {"variant": args.model},
            }))?;
            Request {
                url: format!("{base}{}", args.vertex_route),
                body,
                header_len: None,
                grpc: None,
            }
        }
    })
}

async fn send(client: &Client, req: &Request) -> Result<(), String> {
    match (client, &req.grpc) {
        (Client::Grpc(c), Some(r)) => {
            let res = c
                .clone()
                .model_infer(r.clone())
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout".to_string(),
                    code => format!("grpc {code:?}"),
                })?;
            if res
                .get_ref()
                .raw_output_contents
                .iter()
                .any(|o| !o.is_empty())
            {
                Ok(())
            } else {
                Err("grpc empty answer".into())
            }
        }
        (Client::Http(c), None) => send_http(c, req).await,
        _ => unreachable!("the client matches the protocol"),
    }
}

async fn send_http(client: &reqwest::Client, req: &Request) -> Result<(), String> {
    let mut r = client.post(&req.url).body(req.body.clone());
    r = match req.header_len {
        Some(n) => r
            .header(kserve_wire::HEADER_LENGTH, n.to_string())
            .header("Content-Type", "application/octet-stream"),
        None => r.header("Content-Type", "application/json"),
    };
    let res = r.send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_string()
        } else if e.is_connect() {
            "connect".to_string()
        } else {
            "transport".to_string()
        }
    })?;
    let status = res.status();
    // Read the whole answer: the latency includes receiving it.
    let body = res.bytes().await.map_err(|_| "transport".to_string())?;
    if status.is_success() && !body.is_empty() {
        Ok(())
    } else {
        Err(format!("http {}", status.as_u16()))
    }
}

async fn bench(args: &BenchArgs) -> anyhow::Result<Summary> {
    let req = Arc::new(prepare(args)?);
    let mode = match (args.concurrency, args.rate) {
        (Some(c), None) if c >= 1 => format!("closed loop, concurrency {c}"),
        (None, Some(r)) if r > 0.0 => format!("open loop, {r} req/s"),
        (None, None) => bail!("give --concurrency N (closed loop) or --rate R (open loop)"),
        _ => bail!("--concurrency must be ≥ 1 and --rate > 0"),
    };
    let concurrency = args.concurrency.unwrap_or(0);
    let client = if req.grpc.is_some() {
        let channel = tonic::transport::Endpoint::from_shared(req.url.clone())
            .with_context(|| format!("`{}` is not a gRPC URL (http://host:port)", req.url))?
            .timeout(Duration::from_secs_f64(args.timeout))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {} (gRPC)", req.url))?;
        Client::Grpc(
            GrpcInferenceServiceClient::new(channel)
                .max_decoding_message_size(crate::http::limits::INFER_BODY_LIMIT)
                .max_encoding_message_size(crate::http::limits::INFER_BODY_LIMIT),
        )
    } else {
        Client::Http(
            reqwest::Client::builder()
                .timeout(Duration::from_secs_f64(args.timeout))
                .pool_max_idle_per_host(concurrency.max(64))
                .build()?,
        )
    };
    // Fail early and clearly when the server is not there or refuses the request.
    send(&client, &req)
        .await
        .map_err(|e| anyhow::anyhow!("the first request to {} failed: {e}", req.url))?;

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    eprintln!(
        "bench {} ({:?}, {mode}): {:.0} s warm-up, {:.0} s measured",
        req.url, args.protocol, args.warmup, args.duration
    );

    let mut total = Outcome::new();
    if let Some(rate) = args.rate {
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut tasks = tokio::task::JoinSet::new();
        let mut outcome = Outcome::new();
        let mut i: u32 = 0;
        loop {
            let scheduled = start + period * i;
            if scheduled >= end {
                break;
            }
            i += 1;
            tokio::time::sleep_until(scheduled.into()).await;
            let (client, req) = (client.clone(), Arc::clone(&req));
            tasks.spawn(async move {
                let result = send(&client, &req).await;
                (scheduled, scheduled.elapsed(), result)
            });
            while let Some(done) = tasks.try_join_next() {
                let (at, latency, result) = done?;
                if at >= measure_from {
                    outcome.record(latency, result);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            let (at, latency, result) = done?;
            if at >= measure_from {
                outcome.record(latency, result);
            }
        }
        total.merge(outcome);
    } else {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, req) = (client.clone(), Arc::clone(&req));
            tasks.spawn(async move {
                let mut outcome = Outcome::new();
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = send(&client, &req).await;
                    if t0 >= measure_from {
                        outcome.record(t0.elapsed(), result);
                    }
                }
                outcome
            });
        }
        while let Some(outcome) = tasks.join_next().await {
            total.merge(outcome?);
        }
    }

    let measured = duration.as_secs_f64();
    let q = |p: f64| total.hist.value_at_quantile(p) as f64 / 1000.0;
    let throughput = total.ok as f64 / measured;
    Ok(Summary {
        label: args.label.clone(),
        url: req.url.clone(),
        model: args.model.clone(),
        protocol: args.protocol,
        mode,
        batch: args.batch,
        duration_s: measured,
        requests: total.ok + total.errors.values().sum::<u64>(),
        ok: total.ok,
        errors: total.errors,
        throughput_rps: throughput,
        images_per_s: throughput * args.batch as f64,
        latency_ms: Latency {
            mean: total.hist.mean() / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: total.hist.max() as f64 / 1000.0,
        },
    })
}

fn print_summary(s: &Summary) {
    let l = &s.latency_ms;
    println!(
        "{} {} — {}, batch {}",
        if s.label.is_empty() {
            "bench"
        } else {
            &s.label
        },
        s.url,
        s.mode,
        s.batch
    );
    println!(
        "  requests {}  ok {}  errors {:?}  throughput {:.2} req/s ({:.2} img/s)",
        s.requests, s.ok, s.errors, s.throughput_rps, s.images_per_s
    );
    println!(
        "  latency ms: mean {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        l.mean, l.p50, l.p90, l.p99, l.p999, l.max
    );
}

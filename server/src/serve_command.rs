//! `inferscope serve`: its options, loading the variants, listening, and shutting down. The routes
//! are [`crate::http`]'s.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use app::ssr::StateConfig;
use engine::backend::{BackendKind, BackendOptions};
use engine::loader::{GpuSelection, Placement};
use leptos::config::{Env, LeptosOptions};

use crate::http::{self, access, limits, HttpState};

/// Options of `inferscope serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, env = "INFERSCOPE_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Folder with `labels.json` and the variants' ONNX files; variants whose file is missing are
    /// listed as not built. Also a `gs://BUCKET/PATH` or `file:///DIR` URI (fetched into
    /// `--models-cache` first); AIP_STORAGE_URI, when set, wins.
    #[arg(long, env = "INFERSCOPE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Engine that runs the variants: `cpu` (embedded ONNX Runtime) or `cuda`.
    #[arg(long, env = "INFERSCOPE_BACKEND", default_value = "cpu")]
    pub backend: BackendKind,
    /// GPUs to serve on (with `--backend cuda`): `all` or ordinals like `0,1`. Every variant gets a
    /// replica on each (loaded in parallel); its dynamic batcher hands each batch to the least busy
    /// replica, so batches run on all of them at once. Default: GPU 0 only.
    #[arg(long, env = "INFERSCOPE_GPUS")]
    pub gpus: Option<GpuSelection>,
    /// Replicas (executors: own stream, buffers, graphs) of each variant per GPU with `--gpus`; two
    /// let the host work of one batch overlap the GPU work of another [default: 1].
    #[arg(long, env = "INFERSCOPE_EXECUTORS_PER_GPU")]
    pub executors_per_gpu: Option<usize>,
    /// ONNX Runtime intra-op threads per model (default: every core).
    #[arg(long, env = "INFERSCOPE_THREADS")]
    pub threads: Option<usize>,
    /// The built site: `pkg/inferscope.{js,wasm,css}` and the public assets (`./x run` builds it).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,
    /// The sample photos the page offers, served at `/samples/` [default: SITE_ROOT/samples]
    /// (`./x dev` under cargo-leptos keeps them outside the site, which cargo-leptos rewrites).
    #[arg(long, env = "INFERSCOPE_SAMPLES_DIR")]
    pub samples_dir: Option<PathBuf>,
    /// Batching and per-variant backends (KServe v2, Vertex AI, `/metrics`: see docs/serving.md).
    #[command(flatten)]
    pub serving: crate::config::ServingArgs,
    /// Timeouts and limits (docs/serving.md, "Limits").
    #[command(flatten)]
    pub limits: limits::LimitArgs,
    /// Access control, off by default (docs/serving.md, "Deploying safely").
    #[command(flatten)]
    pub access: access::AccessArgs,
    /// Serve `/metrics` on this address instead of the main port (as Triton does on its own port).
    #[arg(long, env = "INFERSCOPE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// KServe v2 over gRPC (`--grpc-addr`).
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcArgs,
    /// Whether the running server follows its models folder: `none` (load at start-up only),
    /// `explicit` (obey `POST /v2/repository/models/{m}/load|unload`), `poll` (also load a variant
    /// whose file appears or changes, every `--repository-poll-secs`; `./x run` uses it while it
    /// builds the variants in the background). See docs/serving.md.
    #[arg(
        long,
        env = "INFERSCOPE_MODEL_CONTROL",
        value_enum,
        default_value = "none"
    )]
    pub model_control: http::repository::ModelControl,
    /// Seconds between two looks at the models folder with `--model-control poll`.
    #[arg(long, env = "INFERSCOPE_REPOSITORY_POLL_SECS", default_value_t = 2.0)]
    pub repository_poll_secs: f64,
    /// Models from `gs://` / `file://` / AIP_STORAGE_URI (`--models-cache`).
    #[command(flatten)]
    pub storage: crate::storage::StorageArgs,
}

/// Batcher workers per GPU executor unless `--instances` or the file say otherwise: two, so that one
/// batch's bytes are copied into pinned memory while the other's runs on the GPU (the GPU engine copies
/// a batch of image bytes before it locks the executor: `Model::run_u8_parts`). docs/gpu.md,
/// 2026-12-01a.
const GPU_CALLS_PER_EXECUTOR: usize = 2;

/// The placement `--gpus` / `--executors-per-gpu` ask for (`None` without them), or a clear error:
/// `--gpus` needs `--backend cuda`, a build with the `cuda` feature, and GPUs this machine has.
fn gpu_placement(
    backend: BackendKind,
    gpus: Option<&GpuSelection>,
    per_gpu: Option<usize>,
) -> anyhow::Result<Option<Placement>> {
    let Some(gpus) = gpus else {
        anyhow::ensure!(
            per_gpu.is_none(),
            "--executors-per-gpu needs --gpus (e.g. `--gpus 0`)"
        );
        return Ok(None);
    };
    anyhow::ensure!(
        backend == BackendKind::Cuda,
        "--gpus places a replica of every variant on each GPU: it needs --backend cuda (not {backend})"
    );
    let per_gpu = per_gpu.unwrap_or(1);
    anyhow::ensure!(per_gpu >= 1, "--executors-per-gpu must be at least 1");
    let count = engine::cuda::device_count().context("--gpus")?;
    Ok(Some(Placement::gpus(&gpus.resolve(count)?, per_gpu)))
}

/// Loads the models and serves until Ctrl-C / SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(args));
    // Whatever is still running (a connection cut at the shutdown deadline, a photo decoding) does
    // not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn serve(mut args: Args) -> anyhow::Result<()> {
    // The Vertex AI custom-container contract: listen on every interface at `AIP_HTTP_PORT`.
    if let Some(port) = std::env::var("AIP_HTTP_PORT")
        .ok()
        .filter(|p| !p.is_empty())
    {
        let port: u16 = port
            .parse()
            .context("AIP_HTTP_PORT must be a port number")?;
        args.addr = SocketAddr::from(([0, 0, 0, 0], port));
    }
    args.models_dir = crate::storage::resolve(&args.models_dir, &args.storage).await?;
    let mut serving_file = args.serving.file()?;
    if let Some(placement) =
        gpu_placement(args.backend, args.gpus.as_ref(), args.executors_per_gpu)?
    {
        tracing::info!(
            replicas = placement.replicas,
            gpus = ?placement.target,
            "a replica of every variant on each GPU (--gpus)"
        );
        // Two model calls in flight per replica unless --instances / the file say otherwise.
        args.serving.default_instances = Some(GPU_CALLS_PER_EXECUTOR * placement.replicas);
        serving_file.set_default_placement(placement);
    } else if args.backend == BackendKind::Cuda {
        args.serving.default_instances = Some(GPU_CALLS_PER_EXECUTOR);
    }
    let (default_batching, per_variant) = args.serving.batching(&serving_file)?;
    let limits = std::sync::Arc::new(limits::Limits::new(&args.limits)?);
    let metrics = std::sync::Arc::new(http::metrics::Metrics::new());
    // wasm-bindgen's name (`./x build-site`), or cargo-leptos's (`cargo leptos build|watch`, which
    // also tells Leptos's hydration scripts at compile time).
    let pkg = args.site_root.join("pkg");
    let name = http::page::OUTPUT_NAME;
    if !pkg.join(format!("{name}_bg.wasm")).is_file() && !pkg.join(format!("{name}.wasm")).is_file()
    {
        tracing::warn!(
            "{}/{name}_bg.wasm is missing: the page will render but not become interactive (build it with `./x run`)",
            pkg.display()
        );
    }

    let mut backend_options = BackendOptions::default();
    if let Some(threads) = args.threads {
        anyhow::ensure!(threads > 0, "--threads must be at least 1");
        backend_options.intra_threads = threads;
    }
    let batching = engine::batcher::BatchPlan {
        default: default_batching,
        per_variant,
        observer: Some(metrics.clone()),
    };
    let config = StateConfig {
        models_dir: args.models_dir.clone(),
        backend: args.backend,
        backend_options,
        batching,
        samples_dir: Some(
            args.samples_dir
                .clone()
                .unwrap_or_else(|| args.site_root.join("samples")),
        ),
        machines: serving_file.machines(),
    };
    let state =
        tokio::task::spawn_blocking(move || crate::config::load_state(config, &serving_file))
            .await
            .context("loading the models")?;
    if args.model_control == http::repository::ModelControl::Poll {
        let every = args.repository_poll_secs;
        anyhow::ensure!(
            every.is_finite() && (0.05..=3600.0).contains(&every),
            "--repository-poll-secs must be from 0.05 to 3600, got {every}"
        );
        tracing::info!(
            every_secs = every,
            dir = %args.models_dir.display(),
            "polling the models folder: a variant file that appears or changes is loaded"
        );
        state.watch_models(std::time::Duration::from_secs_f64(every));
    }
    let ready = state.ready().len();
    // Asking for the GPU and not getting it is an error, never a quiet CPU fallback.
    if args.backend != BackendKind::Cpu && ready == 0 {
        if let Some(e) = state.variants().iter().find_map(|v| match &v.load {
            app::ssr::VariantLoad::Failed(e) => Some(e.clone()),
            _ => None,
        }) {
            anyhow::bail!(
                "--backend {}: no variant could be loaded: {e}",
                args.backend
            );
        }
    }
    if ready == 0 {
        tracing::warn!(
            "no variant loaded from {}: the page will say so (run `./x setup` to build the models)",
            args.models_dir.display()
        );
    }

    let site_root = args
        .site_root
        .to_str()
        .context("the site root must be valid UTF-8")?;
    let options = LeptosOptions::builder()
        .output_name(http::page::OUTPUT_NAME)
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .site_addr(args.addr)
        .env(Env::PROD)
        .build();
    let vertex = std::sync::Arc::new(http::vertex::VertexSettings::from_env());
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match args.metrics_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--metrics-addr)"))?,
        ),
        None => None,
    };
    let state = HttpState {
        app: state,
        leptos: options,
        metrics: metrics.clone(),
        access: std::sync::Arc::new(access::Access::new(&args.access, addr, &vertex)),
        vertex,
        limits: limits.clone(),
        metrics_on_main_port: metrics_listener.is_none(),
        model_control: args.model_control,
    };
    let grpc = crate::grpc::spawn(&args.grpc, args.addr, state.clone(), shutdown_signal()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(l) = metrics_listener {
        tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
        let app = http::metrics_app(state.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(http::listen::serve(
            l,
            app,
            limits.clone(),
            metrics.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
    }
    if args.access.api_token.is_some() {
        tracing::info!("the APIs require the token (--api-token)");
    }
    tracing::info!("{ready} variant(s) ready; listening on http://{addr}");
    let deadline = limits.shutdown_timeout;
    let signalled = std::sync::Arc::new(std::sync::OnceLock::new());
    let cut = http::listen::serve(listener, http::app(state), limits, metrics, {
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            let _ = signalled.set(tokio::time::Instant::now());
            let _ = stop_tx.send(true);
        }
    })
    .await;
    if cut > 0 {
        tracing::warn!("{cut} connection(s) cut at the shutdown deadline");
    }
    drop(stop_rx);
    // gRPC drains from the same signal, within what is left of the same deadline: a client that
    // stalls a stream cannot hold the exit.
    let until = signalled
        .get()
        .map_or_else(tokio::time::Instant::now, |t| *t)
        + deadline;
    match tokio::time::timeout_at(until, grpc.finish()).await {
        Ok(finished) => finished?,
        Err(_) => tracing::warn!("gRPC calls still open at the shutdown deadline were cut"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_need_the_cuda_backend_and_a_cuda_build() {
        let all = GpuSelection::All;
        assert!(gpu_placement(BackendKind::Cpu, None, None)
            .unwrap()
            .is_none());
        let e = format!(
            "{:#}",
            gpu_placement(BackendKind::Cpu, Some(&all), None).unwrap_err()
        );
        assert!(e.contains("needs --backend cuda (not cpu)"), "{e}");
        let e = format!(
            "{:#}",
            gpu_placement(BackendKind::Cuda, None, Some(2)).unwrap_err()
        );
        assert!(e.contains("--executors-per-gpu needs --gpus"), "{e}");
        let e = format!(
            "{:#}",
            gpu_placement(BackendKind::Cuda, Some(&all), Some(0)).unwrap_err()
        );
        assert!(e.contains("at least 1"), "{e}");
        let asked = gpu_placement(BackendKind::Cuda, Some(&GpuSelection::List(vec![0])), None);
        if cfg!(feature = "cuda") {
            match asked {
                // A GPU machine: one replica on GPU 0.
                Ok(p) => assert_eq!(p, Some(Placement::gpus(&[0], 1))),
                // None here: the driver's reason.
                Err(e) => println!("no GPU here: {e:#}"),
            }
        } else {
            let e = format!("{:#}", asked.unwrap_err());
            assert!(e.contains("rebuild with `--features cuda`"), "{e}");
        }
    }
}

//! `inferscope serve`: the web app and its API on one axum server.
//!
//! The page and its server functions come from the `app` crate (Leptos SSR + hydration); the WASM
//! bundle, stylesheet and public assets are read from the site root that `./x` builds
//! (`target/site`). The router is built by [`router::app`] so that tests and later route groups use
//! the same one.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use app::ssr::StateConfig;
use engine::backend::{BackendKind, BackendOptions};
use leptos::config::{Env, LeptosOptions};

mod error;
mod preprocess;
pub mod router;
#[cfg(test)]
mod tests;

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
    /// ONNX Runtime intra-op threads per model (default: every core).
    #[arg(long, env = "INFERSCOPE_THREADS")]
    pub threads: Option<usize>,
    /// The built site: `pkg/inferscope.{js,wasm,css}` and the public assets (`./x run` builds it).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,
    /// Batching and per-variant backends (KServe v2, Vertex AI, `/metrics`: see docs/serving.md).
    #[command(flatten)]
    pub serving: crate::config::ServingArgs,
    /// KServe v2 over gRPC (`--grpc-addr`).
    #[command(flatten)]
    pub grpc: crate::grpc::GrpcArgs,
    /// Models from `gs://` / `file://` / AIP_STORAGE_URI (`--models-cache`).
    #[command(flatten)]
    pub storage: crate::storage::StorageArgs,
}

/// Loads the models and serves until Ctrl-C / SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
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
    let serving_file = args.serving.file()?;
    let (default_batching, per_variant) = args.serving.batching(&serving_file)?;
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let bundle = args
        .site_root
        .join("pkg")
        .join(format!("{}_bg.wasm", router::OUTPUT_NAME));
    if !bundle.is_file() {
        tracing::warn!(
            "{} is missing: the page will render but not become interactive (build it with `./x run`)",
            bundle.display()
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
        samples_dir: Some(args.site_root.join("samples")),
    };
    let state =
        tokio::task::spawn_blocking(move || crate::config::load_state(config, &serving_file))
            .await
            .context("loading the models")?;
    let ready = state.ready().count();
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
        .output_name(router::OUTPUT_NAME)
        .site_root(site_root)
        .site_pkg_dir("pkg")
        .site_addr(args.addr)
        .env(Env::PROD)
        .build();
    let serving = crate::serving::ServingState {
        app: state.clone(),
        metrics,
        vertex: std::sync::Arc::new(crate::vertex::VertexSettings::from_env()),
    };
    let grpc =
        crate::grpc::spawn(&args.grpc, args.addr, serving.clone(), shutdown_signal()).await?;
    let app = router::app(state, options).merge(crate::serving::routes(serving));

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!("{ready} variant(s) ready; listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    grpc.finish().await?;
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

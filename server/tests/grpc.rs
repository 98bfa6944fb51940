//! KServe v2 over gRPC against the real `inferscope serve` binary on loopback: NVIDIA's
//! `tritonclient[grpc]` (PyPI, unmodified) checks health, metadata, raw and BYTES inputs, batches,
//! classification and errors with the real baseline and foolbox's labelled photos; `/metrics` counts
//! the gRPC requests and errors like the HTTP ones; `inferscope bench --protocol kserve-grpc` loads it.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

/// `.tools/py` (or INFERSCOPE_PY) when it has tritonclient's gRPC client; else skips (or fails under
/// INFERSCOPE_REQUIRE_PY=1) with the reason.
pub fn python_with_grpc_client() -> Option<PathBuf> {
    let py = std::env::var_os("INFERSCOPE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/py"));
    if !py.join("tritonclient/grpc").is_dir() {
        let msg = format!(
            "{} has no tritonclient[grpc] (`./x setup` installs it)",
            py.display()
        );
        assert!(std::env::var_os("INFERSCOPE_REQUIRE_PY").is_none(), "{msg}");
        eprintln!("SKIP: {msg}");
        return None;
    }
    Some(py)
}

#[test]
fn tritonclient_grpc_infers_the_right_class_and_errors_are_counted() {
    let Some(models) = models_dir() else { return };
    let photos: Vec<_> = PHOTOS.iter().filter_map(|p| foolbox(p)).collect();
    if photos.len() != PHOTOS.len() {
        return;
    }
    let Some(py) = python_with_grpc_client() else {
        return;
    };
    let server = Server::start(&baseline_only_dir(&models), &["--max-batch-size", "4"], &[]);
    let port = grpc_port(&server);
    assert_ne!(port, server.port);
    run_check(&server, &py, &photos, &["--max-batch-size", "4"]);

    // The gRPC requests went through the variant's batcher and its metrics, errors under their cause.
    let metrics = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for needle in [
        r#"inferscope_errors_total{cause="bad_input",variant="resnet50-baseline"}"#,
        r#"inferscope_errors_total{cause="unknown_model",variant="-"}"#,
        r#"inferscope_requests_total{variant="resnet50-baseline"}"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
}

/// Runs scripts/serving/tritonclient_grpc_check.py against `server` and asserts it passed.
fn run_check(
    server: &Server,
    py: &std::path::Path,
    photos: &[(PathBuf, Vec<u8>, usize)],
    args: &[&str],
) {
    let mut cmd = Command::new("python3");
    cmd.arg(workspace_root().join("scripts/serving/tritonclient_grpc_check.py"))
        .args(["--grpc", &format!("127.0.0.1:{}", grpc_port(server))])
        .args(["--http", &format!("127.0.0.1:{}", server.port)])
        .args(args)
        .env("PYTHONPATH", py);
    for (path, _, class) in photos {
        cmd.arg("--photo")
            .arg(format!("{}:{class}", path.display()));
    }
    let out = cmd.output().expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "tritonclient[grpc] checks failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

#[test]
fn grpc_calls_need_the_api_token_when_one_is_set() {
    let Some(models) = models_dir() else { return };
    let Some(photo) = foolbox(PHOTOS[0]) else {
        return;
    };
    let Some(py) = python_with_grpc_client() else {
        return;
    };
    let token = "s3cret-grpc-token";
    let server = Server::start(&baseline_only_dir(&models), &["--api-token", token], &[]);
    run_check(&server, &py, &[photo], &["--token", token]);
}

#[test]
fn bench_speaks_kserve_grpc() {
    let Some(models) = models_dir() else { return };
    if foolbox(PHOTOS[0]).is_none() {
        return;
    }
    let server = Server::start(&baseline_only_dir(&models), &[], &[]);
    let port = grpc_port(&server);
    let json =
        std::env::temp_dir().join(format!("inferscope-bench-grpc-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_inferscope"))
        .args(["bench", "--protocol", "kserve-grpc", "--concurrency", "2"])
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["--duration", "3", "--warmup", "0.5"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["protocol"], "kserve-grpc");
    assert!(summary["ok"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");

    // A model the server does not have: the first request fails with the server's status, clearly.
    let out = Command::new(env!("CARGO_BIN_EXE_inferscope"))
        .args(["bench", "--protocol", "kserve-grpc", "--concurrency", "1"])
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--model",
            "resnet51",
        ])
        .args(["--duration", "1", "--warmup", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound"), "{err}");
}

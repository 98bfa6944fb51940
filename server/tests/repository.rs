//! Loading variants while the server runs (Triton's model-repository extension and
//! `--model-control`), against the real `inferscope serve` binary on loopback with the real baseline:
//! a variant file that appears is loaded on request (`explicit`) or by itself (`poll`) and answers
//! photos correctly; unload takes it out of service; a server without model control refuses; NVIDIA's
//! `tritonclient[http]` drives the same extension unmodified.
//!
//! CI builds only the baseline, so the "new variant" here is the baseline's file appearing under the
//! pruned variant's name: a real ResNet50 file the real loader loads and runs.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const NEW: &str = "resnet50-pruned";
const NEW_FILE: &str = "resnet50-pruned.onnx";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn post(url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = client().post(url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn ready(server: &Server, model: &str) -> StatusCode {
    client()
        .get(server.url(&format!("/v2/models/{model}/ready")))
        .send()
        .await
        .unwrap()
        .status()
}

/// Whether the server metadata (`GET /v2`) claims Triton's `model_repository` extension.
async fn claims_repository(server: &Server) -> bool {
    let meta: Value = client()
        .get(server.url("/v2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    meta["extensions"]
        .as_array()
        .unwrap_or_else(|| panic!("{meta}"))
        .contains(&json!("model_repository"))
}

/// The model's index entry (`state`, `reason`).
async fn index_entry(server: &Server, model: &str) -> Value {
    let (s, index) = post(&server.url("/v2/repository/index"), None).await;
    assert_eq!(s, StatusCode::OK);
    index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == model)
        .cloned()
        .unwrap_or_else(|| panic!("{model} not in the index: {index}"))
}

/// The baseline's file appears in `dir` under the new variant's name (a link renamed into place,
/// as a builder's atomic write would appear).
fn appear(models: &Path, dir: &Path) {
    let tmp = dir.join(".appearing.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(models.join("resnet50-baseline.onnx"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(NEW_FILE)).unwrap();
}

/// Top-1 class of `model` for a foolbox photo sent as a KServe v2 BYTES input.
async fn top1(server: &Server, model: &str, photo: &[u8]) -> usize {
    let header = json!({
        "inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": photo.len() + 4}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": false}}]
    })
    .to_string();
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&(photo.len() as u32).to_le_bytes());
    body.extend_from_slice(photo);
    let res = client()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    argmax(&json_logits(&v))
}

#[tokio::test]
async fn explicit_control_loads_and_unloads_on_request() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    let dir = baseline_only_dir(&models);
    let server = Server::start(
        &dir,
        &["--model-control", "explicit", "--grpc-addr", "127.0.0.1:0"],
        &[],
    );
    assert!(claims_repository(&server).await);

    // Not there yet: a load says why, and the variant stays unavailable.
    let load = server.url(&format!("/v2/repository/models/{NEW}/load"));
    let (s, e) = post(&load, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{NEW_FILE} is not in the models folder")),
        "{e}"
    );
    assert_eq!(index_entry(&server, NEW).await["state"], "UNAVAILABLE");

    // The file appears; a load makes it ready, and it answers the photo right.
    appear(&models, &dir);
    assert_ne!(
        ready(&server, NEW).await,
        StatusCode::OK,
        "explicit control: nothing loads by itself"
    );
    let (s, e) = post(&load, Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{e}\n{}", server.log());
    assert_eq!(ready(&server, NEW).await, StatusCode::OK);
    assert_eq!(index_entry(&server, NEW).await["state"], "READY");
    assert_eq!(top1(&server, NEW, &photo).await, class);

    // Parameters (a config, files) are refused, not ignored; unknown models are a 404.
    let (s, e) = post(&load, Some(json!({"parameters": {"config": "{}"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().unwrap().contains("config"), "{e}");
    let (s, _) = post(&server.url("/v2/repository/models/resnet51/load"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Unload: out of service with a clear reason; the baseline is untouched; a load brings it back.
    let unload = server.url(&format!("/v2/repository/models/{NEW}/unload"));
    let (s, e) = post(&unload, None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_ne!(ready(&server, NEW).await, StatusCode::OK);
    let entry = index_entry(&server, NEW).await;
    assert_eq!(entry["state"], "UNAVAILABLE");
    assert_eq!(entry["reason"], "unloaded");
    let (s, ready_only) = post(
        &server.url("/v2/repository/index"),
        Some(json!({"ready": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ready_only,
        json!([{"name": "resnet50-baseline", "version": "1", "state": "READY", "reason": ""}])
    );
    assert_eq!(top1(&server, "resnet50-baseline", &photo).await, class);
    assert_eq!(post(&load, None).await.0, StatusCode::OK);
    assert_eq!(top1(&server, NEW, &photo).await, class);

    // NVIDIA's client drives the same extension unmodified.
    let Some(py) = tritonclient_path() else {
        return;
    };
    // NVIDIA's clients drive the same extension unmodified, over HTTP and gRPC.
    let script = r#"
import sys
import tritonclient.http as httpclient
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
m = sys.argv[3]
for kind, c in [("http", httpclient.InferenceServerClient(sys.argv[1])),
                ("grpc", grpcclient.InferenceServerClient(sys.argv[2]))]:
    assert c.is_model_ready(m), (kind, "ready before")
    c.unload_model(m)
    assert not c.is_model_ready(m), (kind, "unloaded")
    index = c.get_model_repository_index()
    if kind == "grpc":
        index = [{"name": e.name, "state": e.state} for e in index.models]
    states = {e["name"]: e["state"] for e in index}
    assert states[m] == "UNAVAILABLE", (kind, states)
    c.load_model(m)
    assert c.is_model_ready(m), (kind, "loaded again")
    try:
        c.load_model("resnet51")
        raise SystemExit(f"{kind}: an unknown model loaded")
    except InferenceServerException as e:
        assert "unknown model" in str(e), (kind, e)
    print(f"{kind}: repository checks passed")
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &format!("127.0.0.1:{}", server.port),
            &format!("127.0.0.1:{}", grpc_port(&server)),
            NEW,
        ])
        .env("PYTHONPATH", &py)
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("http: repository checks passed")
            && stdout.contains("grpc: repository checks passed"),
        "tritonclient: {stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// `.tools/py` with tritonclient, or `None` after saying so (an error where the suite requires it).
fn tritonclient_path() -> Option<std::path::PathBuf> {
    let py = std::env::var_os("INFERSCOPE_PY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/py"));
    if py.join("tritonclient/grpc").is_dir() && py.join("tritonclient/http").is_dir() {
        return Some(py);
    }
    let msg = format!(
        "{} has no tritonclient (`./x setup` installs it)",
        py.display()
    );
    assert!(std::env::var_os("INFERSCOPE_REQUIRE_PY").is_none(), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

#[tokio::test]
async fn without_model_control_loads_are_refused() {
    let Some(models) = models_dir() else { return };
    let dir = baseline_only_dir(&models);
    appear(&models, &dir);
    let server = Server::start(&dir, &[], &[]);
    // Loaded at start-up: the file was there.
    assert_eq!(ready(&server, NEW).await, StatusCode::OK);
    for op in ["load", "unload"] {
        let (s, e) = post(
            &server.url(&format!("/v2/repository/models/{NEW}/{op}")),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{op}: {e}");
        assert!(
            e["error"].as_str().unwrap().contains("--model-control"),
            "{e}"
        );
    }
    assert_eq!(ready(&server, NEW).await, StatusCode::OK, "nothing changed");
    assert!(!claims_repository(&server).await);
}

#[tokio::test]
async fn poll_control_loads_a_file_that_appears_and_reloads_a_changed_one() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[1]) else {
        return;
    };
    let dir = baseline_only_dir(&models);
    let server = Server::start(
        &dir,
        &["--model-control", "poll", "--repository-poll-secs", "0.2"],
        &[],
    );
    assert_ne!(ready(&server, NEW).await, StatusCode::OK);
    appear(&models, &dir);
    let wait_ready = |what: &'static str| {
        let server = &server;
        async move {
            let start = Instant::now();
            while ready(server, NEW).await != StatusCode::OK {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{what}: not ready after 60 s:\n{}",
                    server.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_ready("the file appeared").await;
    assert_eq!(top1(&server, NEW, &photo).await, class);

    // Rebuilt: a new file renamed over the old one is loaded again (the log says so).
    let tmp = dir.join(".rebuilt.tmp");
    std::fs::copy(models.join("resnet50-baseline.onnx"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(NEW_FILE)).unwrap();
    let start = Instant::now();
    while server.log().matches("model file changed").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no reload:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_ready("the file changed").await;
    assert_eq!(top1(&server, NEW, &photo).await, class);
    let _ = std::fs::remove_file(dir.join(NEW_FILE));
}

/// The availability the page's variant list (`/api/variants`) gives `model`.
async fn page_availability(server: &Server, model: &str) -> Value {
    let res = page_request(&client(), server, "/api/variants")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = res.json().await.unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == model)
        .unwrap_or_else(|| panic!("{model} not listed: {list}"))["availability"]
        .clone()
}

/// A file the build has written but the server has not loaded yet (the watcher confirms a file over
/// two polls, and loading takes seconds) is still "being built, ask again" on the page, even when the
/// build has already finished: the page stops asking once nothing builds, and would otherwise never see
/// the card come alive (a clean-clone CI run of 2026-11-30 waited 15 minutes on that). A server that
/// does not watch the folder says the file is not loaded, as before.
#[tokio::test]
async fn a_written_file_the_watcher_has_not_loaded_yet_keeps_the_page_asking() {
    use engine::build_status::{BuildStatus, VariantState};
    let Some(models) = models_dir() else { return };
    for (watching, args) in [
        (
            true,
            &["--model-control", "poll", "--repository-poll-secs", "60"][..],
        ),
        (false, &[][..]),
    ] {
        let dir = baseline_only_dir(&models);
        let server = Server::start(&dir, args, &[]);
        // The build wrote the file and finished (this test process stands for the builder).
        appear(&models, &dir);
        let mut status = BuildStatus::new([NEW]);
        status.set(NEW, VariantState::Written, Some(1.0));
        status.finished = Some(Ok(()));
        status.write(&dir).unwrap();
        let availability = page_availability(&server, NEW).await;
        if watching {
            assert_eq!(
                availability["Building"]["running"],
                json!(true),
                "{availability}"
            );
            assert!(
                availability["Building"]["status"]
                    .as_str()
                    .is_some_and(|s| s.contains("loading")),
                "{availability}"
            );
        } else {
            assert!(availability.get("Missing").is_some(), "{availability}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

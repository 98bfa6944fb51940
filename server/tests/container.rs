//! The container image (`./Containerfile`, built by `./x image`) run with podman + runc the way
//! Vertex AI runs a custom container, checked from outside: `AIP_HTTP_PORT`, `AIP_HEALTH_ROUTE` and
//! `AIP_PREDICT_ROUTE` taken from what `deploy/vertex/deploy.sh --dry-run` would hand Vertex, models
//! from `AIP_STORAGE_URI=file://…` (fetched into the cache inside the container); health turns 200 once
//! the models are loaded; a Vertex predict with a base64 photo names its class; KServe v2 over HTTP and
//! gRPC with NVIDIA's unmodified clients; the page and its WASM bundle load; SIGTERM answers the
//! request in flight and exits 0. Also: the KServe/Kubernetes manifests validate against their schemas.
//!
//! Needs podman (./x installs it) and the image `INFERSCOPE_IMAGE` (default
//! `localhost/inferscope:latest`; `./x test` builds it first). Without them the test says why and
//! skips, or fails under `INFERSCOPE_REQUIRE_CONTAINER=1` (set by `./x test`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

fn skip_or_fail(msg: &str) {
    assert!(
        std::env::var_os("INFERSCOPE_REQUIRE_CONTAINER").is_none(),
        "INFERSCOPE_REQUIRE_CONTAINER=1 and {msg}"
    );
    eprintln!("SKIP: {msg}");
}

fn podman(args: &[&str]) -> Output {
    let mut cmd = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        // runc with cgroupfs and no default ulimits (../shared/ENV.md); ./x writes the same file.
        let conf = std::env::temp_dir().join("inferscope-containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n",
        )
        .unwrap();
        cmd.env("CONTAINERS_CONF", conf);
    }
    cmd.args(args).output().expect("running podman")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `--flag=value` from the dry run's output.
fn flag(output: &str, name: &str) -> String {
    let key = format!("{name}=");
    output
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{name} not in the dry run:\n{output}"))
        .to_string()
}

/// A folder with the baseline and the class names only (hard links, else copies), mounted into the
/// container as the `file://` models storage.
fn storage_dir(models: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("container-models");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["resnet50-baseline.onnx", "labels.json"] {
        let from = models.join(f).canonicalize().unwrap();
        if std::fs::hard_link(&from, dir.join(f)).is_err() {
            std::fs::copy(&from, dir.join(f)).unwrap();
        }
    }
    dir
}

/// Removes the container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

#[test]
fn the_manifests_validate_against_the_kubernetes_and_kserve_schemas() {
    let py = std::env::var_os("INFERSCOPE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/py"));
    let wheel = std::fs::read_dir(py.join("wheels")).ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("kserve-"))
    });
    let Some(wheel) = wheel.filter(|_| py.join("kubernetes_validate").is_dir()) else {
        let msg = format!(
            "{} has no kubernetes-validate or wheels/kserve-*.whl (`./x setup` installs them)",
            py.display()
        );
        assert!(std::env::var_os("INFERSCOPE_REQUIRE_PY").is_none(), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    };
    let dir = workspace_root().join("deploy/kserve");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let run = |files: &[PathBuf]| {
        Command::new("python3")
            .arg(dir.join("validate.py"))
            .arg("--kserve-wheel")
            .arg(&wheel)
            .args(files)
            .env("PYTHONPATH", &py)
            .output()
            .unwrap()
    };
    let out = run(&files);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    for kind in [
        "InferenceService inferscope ",
        "InferenceService inferscope-grpc ",
        "Deployment inferscope ",
        "Service inferscope ",
        "HorizontalPodAutoscaler inferscope ",
    ] {
        assert!(
            report.contains("valid: ") && report.contains(kind),
            "{kind}: {report}"
        );
    }

    // The validator is not a rubber stamp: a misspelt field fails in each kind of document.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let bad = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from}");
        let path = tmp.join(format!(
            "bad-{}-{file}",
            from.trim_end_matches(':').replace(' ', "-")
        ));
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        path
    };
    for (path, why) in [
        (
            bad("inferenceservice.yaml", "scaleTarget:", "scaleTargt:"),
            "unknown field `scaleTargt`",
        ),
        (
            bad(
                "inferenceservice.yaml",
                "containerPort: 8080",
                "containerPort: \"8080x\"",
            ),
            "is not of type 'integer'",
        ),
        (
            bad(
                "deployment.yaml",
                "averageUtilization:",
                "averageUtilisation:",
            ),
            "averageUtilisation",
        ),
    ] {
        let out = run(std::slice::from_ref(&path));
        assert!(
            !out.status.success() && text(&out).contains(why),
            "{why}: {}",
            text(&out)
        );
    }
}

#[test]
fn the_image_runs_as_vertex_ai_runs_it() {
    if Command::new("podman").arg("--version").output().is_err() {
        return skip_or_fail(
            "podman is not installed (`./x setup_containers`, or apt-get install podman runc)",
        );
    }
    let image =
        std::env::var("INFERSCOPE_IMAGE").unwrap_or_else(|_| "localhost/inferscope:latest".into());
    let inspect = podman(&["image", "inspect", "--format", "{{json .Config}}", &image]);
    if !inspect.status.success() {
        return skip_or_fail(&format!(
            "no image {image} (`./x image` builds it): {}",
            text(&inspect)
        ));
    }
    let Some(models) = models_dir() else {
        return skip_or_fail("no models to serve");
    };
    let photos: Vec<_> = PHOTOS.iter().filter_map(|p| foolbox(p)).collect();
    if photos.len() != PHOTOS.len() {
        return skip_or_fail("foolbox's photos are missing");
    }
    let Some(py) = grpc_python() else {
        return;
    };

    // What deploy/vertex/deploy.sh tells Vertex is what the image does.
    let dry = Command::new(workspace_root().join("deploy/vertex/deploy.sh"))
        .args([
            "--project",
            "test-project",
            "--region",
            "europe-west4",
            "--dry-run",
        ])
        .args([
            "--artifact-uri",
            "gs://test-bucket/models",
            "--gpu",
            "nvidia-l4:1",
        ])
        .output()
        .unwrap();
    let dry_text = text(&dry);
    assert!(dry.status.success(), "{dry_text}");
    for step in [
        "gcloud ai models upload",
        "gcloud ai endpoints create",
        "gcloud ai endpoints deploy-model",
        "--artifact-uri=gs://test-bucket/models",
        "--machine-type=",
        "--min-replica-count=1",
        "--max-replica-count=",
        "--autoscaling-metric-specs=cpu-usage=",
        "--accelerator=type=nvidia-l4",
        "count=1",
    ] {
        assert!(
            dry_text.contains(step),
            "{step} not in the dry run:\n{dry_text}"
        );
    }
    let port: u16 = flag(&dry_text, "--container-ports").parse().unwrap();
    let health = flag(&dry_text, "--container-health-route");
    let predict = flag(&dry_text, "--container-predict-route");
    let config: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(
        config["ExposedPorts"].get(format!("{port}/tcp")).is_some()
            && config["ExposedPorts"].get("8001/tcp").is_some(),
        "the image exposes {port} and 8001: {config}"
    );
    assert_eq!(
        config["User"], "10001:10001",
        "the image runs as a non-root user"
    );

    // Run it as Vertex would, on free ports of the host network (the dry run's routes; the port
    // is the image's 8080 in Vertex, a free one here so that tests can run side by side).
    let (http, grpc) = (free_port(), free_port());
    let storage = storage_dir(&models);
    let name = format!("inferscope-test-{}", std::process::id());
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    let started = Instant::now();
    let run = podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-e",
        &format!("AIP_HTTP_PORT={http}"),
        "-e",
        &format!("AIP_HEALTH_ROUTE={health}"),
        "-e",
        &format!("AIP_PREDICT_ROUTE={predict}"),
        "-e",
        "AIP_STORAGE_URI=file:///mnt/models",
        "-e",
        &format!("INFERSCOPE_GRPC_ADDR=0.0.0.0:{grpc}"),
        "-e",
        "INFERSCOPE_THREADS=2",
        "-v",
        &format!("{}:/mnt/models:ro", storage.display()),
        &image,
    ]);
    assert!(run.status.success(), "podman run: {}", text(&run));
    let container = Container(name.clone());
    let logs = || text(&podman(&["logs", &container.0]));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    // Health: nothing (not listening) or 503 until the models are loaded, then 200.
    let ready_after = rt.block_on(async {
        loop {
            if let Ok(res) = client.get(format!("{base}{health}")).send().await {
                if res.status() == 200 {
                    return started.elapsed();
                }
                assert_eq!(res.status(), 503, "{}", logs());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "never ready:\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eprintln!(
        "container start → health 200: {:.2} s",
        ready_after.as_secs_f64()
    );
    let log = logs();
    assert!(
        log.contains("models from AIP_STORAGE_URI=file:///mnt/models"),
        "{log}"
    );
    assert!(log.contains("fetching resnet50-baseline.onnx"), "{log}");

    // Vertex predict with a base64 photo names its class.
    let (_, bytes, class) = &photos[0];
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let (status, answer): (u16, Value) = rt.block_on(async {
        let res = client
            .post(format!("{base}{predict}"))
            .json(&json!({"instances": [{"b64": b64}], "parameters": {"top_k": 3}}))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    });
    assert_eq!(status, 200, "{answer}");
    let top = &answer["predictions"][0]["top"][0];
    assert_eq!(top["index"].as_u64(), Some(*class as u64), "{answer}");
    assert!(
        top["label"]
            .as_str()
            .is_some_and(|l| !l.is_empty() && !l.starts_with("class ")),
        "{answer}"
    );

    // KServe v2 over HTTP and gRPC with NVIDIA's unmodified clients.
    for (script, args) in [
        (
            "tritonclient_check.py",
            vec!["--url".to_string(), format!("127.0.0.1:{http}")],
        ),
        (
            "tritonclient_grpc_check.py",
            vec![
                "--grpc".to_string(),
                format!("127.0.0.1:{grpc}"),
                "--http".to_string(),
                format!("127.0.0.1:{http}"),
            ],
        ),
    ] {
        let mut cmd = Command::new("python3");
        cmd.arg(workspace_root().join("scripts/serving").join(script))
            .args(&args)
            .env("PYTHONPATH", &py);
        for (path, _, class) in &photos {
            cmd.arg("--photo")
                .arg(format!("{}:{class}", path.display()));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{script}:\n{}\ncontainer log:\n{}",
            text(&out),
            logs()
        );
    }

    // The page and its WASM bundle.
    rt.block_on(async {
        let page = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("inferscope") && html.contains("/pkg/inferscope"),
            "{html}"
        );
        let wasm = client
            .get(format!("{base}/pkg/inferscope_bg.wasm"))
            .send()
            .await
            .unwrap();
        assert_eq!(wasm.status(), 200);
        assert!(wasm.bytes().await.unwrap().starts_with(b"\0asm"));
    });

    // SIGTERM while a request is in flight: it is answered, then the container exits 0.
    let instances: Vec<Value> = (0..12).map(|_| json!({"b64": b64})).collect();
    let in_flight = {
        let (client, url) = (client.clone(), format!("{base}{predict}"));
        rt.spawn(async move {
            let res = client
                .post(url)
                .json(&json!({"instances": instances}))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    let kill = podman(&["kill", "--signal", "TERM", &container.0]);
    assert!(kill.status.success(), "{}", text(&kill));
    let (status, answer) = rt.block_on(in_flight).unwrap();
    assert_eq!(status, 200, "the request in flight at SIGTERM: {answer}");
    assert_eq!(
        answer["predictions"].as_array().map(Vec::len),
        Some(12),
        "{answer}"
    );
    let wait = podman(&["wait", &container.0]);
    assert_eq!(
        String::from_utf8_lossy(&wait.stdout).trim(),
        "0",
        "exit code; log:\n{}",
        logs()
    );
    assert!(logs().contains("shutting down"));
}

fn grpc_python() -> Option<PathBuf> {
    let py = std::env::var_os("INFERSCOPE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/py"));
    if !py.join("tritonclient/grpc").is_dir() || !py.join("tritonclient/http").is_dir() {
        skip_or_fail(&format!(
            "{} has no tritonclient[http,grpc] (`./x setup` installs it)",
            py.display()
        ));
        return None;
    }
    Some(py)
}

//! KServe v2 and the Vertex AI contract against the real `inferscope serve` binary on loopback: the
//! protocol with real photos and the real baseline, NVIDIA's `tritonclient[http]` as the client, bad
//! input of every kind (clear 4xx, and the server keeps answering), a full queue (503), graceful
//! shutdown, and `/metrics`.
//!
//! Expected classes come from foolbox's file names (`imagenet_NN_CLASS.jpg`); the golden test checks
//! that the baseline gets these photos right.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn get(url: &str) -> (StatusCode, Value) {
    let res = client().get(url).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post_json(url: &str, body: &Value) -> (StatusCode, Value) {
    let res = client().post(url).json(body).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post_binary(url: &str, body: Vec<u8>, header_len: usize) -> reqwest::Response {
    client()
        .post(url)
        .header("Inference-Header-Content-Length", header_len.to_string())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The protocol's health, metadata and index routes, without any model.
#[tokio::test]
async fn health_metadata_and_index_without_models() {
    let server = Server::start(&empty_models_dir(), &[], &[]);
    let (s, meta) = get(&server.url("/v2")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(meta["name"], "inferscope");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    assert_eq!(get(&server.url("/v2/health/live")).await.0, StatusCode::OK);
    assert_eq!(
        get(&server.url("/v2/health/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "no model can answer"
    );
    let index: Value = client()
        .post(server.url("/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let index = index.as_array().unwrap();
    assert_eq!(index.len(), engine::variants::VARIANTS.len());
    assert!(index
        .iter()
        .all(|m| m["state"] == "UNAVAILABLE" && m["reason"].as_str().unwrap().contains("missing")));

    let (s, e) = get(&server.url("/v2/models/resnet51/ready")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("unknown model `resnet51`"));
    let (s, e) = get(&server.url("/v2/models/resnet50-baseline")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(e["error"].as_str().unwrap().contains("is missing"), "{e}");
    let (s, _) = get(&server.url("/v2/models/resnet50-baseline/versions/7/ready")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Binary and JSON tensors, a batch of two photos, encoded photos as BYTES, the classification
/// extension, and the metrics they leave behind.
#[tokio::test]
async fn inference_gives_the_right_classes() {
    let Some(models) = models_dir() else { return };
    let photos: Vec<_> = PHOTOS.iter().filter_map(|p| foolbox(p)).collect();
    if photos.len() != PHOTOS.len() {
        return;
    }
    let server = Server::start(&models, &[], &[]);
    let url = server.url("/v2/models/resnet50-baseline/infer");
    let tensors: Vec<f32> = photos
        .iter()
        .flat_map(|(_, bytes, _)| engine::preprocess::preprocess(bytes).unwrap().data)
        .collect();
    let want: Vec<usize> = photos.iter().map(|p| p.2).collect();

    // Binary in, binary out, both photos in one request.
    let (body, n) = kserve_binary(&tensors, 2, true);
    let res = post_binary(&url, body, n).await;
    assert_eq!(res.status(), StatusCode::OK);
    let head_len: usize = res.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..head_len]).unwrap();
    assert_eq!(head["outputs"][0]["shape"], json!([2, 1000]));
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8000);
    let logits: Vec<f32> = bytes[head_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let got: Vec<usize> = logits.chunks_exact(1000).map(argmax).collect();
    assert_eq!(got, want);

    // JSON in, JSON out.
    let body = json!({
        "id": "json-1",
        "inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                    "data": &tensors[..engine::INPUT_LEN]}],
    });
    let (s, v) = post_json(&url, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "json-1");
    let json_row = json_logits(&v);
    assert_eq!(argmax(&json_row), want[0]);
    for (a, b) in json_row.iter().zip(&logits[..1000]) {
        assert!(
            (a - b).abs() < 1e-3,
            "JSON and binary logits differ: {a} vs {b}"
        );
    }

    // The pixels before normalization (UINT8 [N, 224, 224, 3]): the server normalizes them with the
    // same arithmetic, so the logits are the FP32 request's.
    let pixels: Vec<u8> = photos
        .iter()
        .flat_map(|(_, bytes, _)| engine::preprocess::preprocess_pixels(bytes).unwrap().data)
        .collect();
    let (body, n) = engine::kserve_wire::u8_request("input", "logits", &pixels, 2, true);
    let res = post_binary(&url, body, n).await;
    assert_eq!(res.status(), StatusCode::OK);
    let head_len: usize = res.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    let u8_logits: Vec<f32> = bytes[head_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(u8_logits.len(), 2000);
    for (a, b) in u8_logits.iter().zip(&logits) {
        assert!(
            (a - b).abs() < 1e-3,
            "UINT8 and FP32 logits differ: {a} vs {b}"
        );
    }
    // A UINT8 tensor in the FP32 layout is refused with the layout it needs.
    let (body, n) = engine::kserve_wire::u8_request("input", "logits", &pixels, 2, true);
    let body = String::from_utf8_lossy(&body[..n])
        .replace("[2,224,224,3]", "[2,3,224,224]")
        .into_bytes()
        .into_iter()
        .chain(pixels.iter().copied())
        .collect::<Vec<u8>>();
    let res = post_binary(&url, body, n).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("[N, 224, 224, 3]"),
        "{v}"
    );

    // Encoded photos (BYTES) and the classification extension.
    let mut raw = Vec::new();
    for (_, bytes, _) in &photos {
        raw.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        raw.extend_from_slice(bytes);
    }
    let head = json!({
        "inputs": [{"name": "input", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    });
    let mut body = serde_json::to_vec(&head).unwrap();
    let n = body.len();
    body.extend_from_slice(&raw);
    let res = post_binary(&url, body, n).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    let top: Vec<&str> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(top.len(), 4, "{top:?}");
    for (i, class) in want.iter().enumerate() {
        let best: Vec<&str> = top[2 * i].split(':').collect();
        assert_eq!(best[1], class.to_string(), "{top:?}");
        assert!(!best[2].is_empty(), "a label follows the index: {top:?}");
    }

    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"inferscope_requests_total{variant="resnet50-baseline"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"inferscope_batch_size_bucket{variant="resnet50-baseline",le="2"} 4"#)
    );
    assert!(metrics.contains("inferscope_inference_seconds_bucket{variant=\"resnet50-baseline\""));
    assert!(metrics.contains("process_resident_memory_bytes"));
}

/// NVIDIA's own client, unmodified (PyPI `tritonclient[http]`, installed by `./x` into `.tools/py`).
#[test]
fn tritonclient_infers_the_right_class() {
    let Some(models) = models_dir() else { return };
    let photos: Vec<_> = PHOTOS.iter().filter_map(|p| foolbox(p)).collect();
    if photos.len() != PHOTOS.len() {
        return;
    }
    let py = std::env::var_os("INFERSCOPE_PY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/py"));
    if !py.join("tritonclient").is_dir() {
        let msg = format!(
            "{} has no tritonclient (`./x setup` installs it)",
            py.display()
        );
        assert!(std::env::var_os("INFERSCOPE_REQUIRE_PY").is_none(), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    }
    let server = Server::start(&models, &[], &[]);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(workspace_root().join("scripts/serving/tritonclient_check.py"))
        .args(["--url", &format!("127.0.0.1:{}", server.port)])
        .env("PYTHONPATH", &py);
    for (path, _, class) in &photos {
        cmd.arg("--photo")
            .arg(format!("{}:{class}", path.display()));
    }
    let out = cmd.output().expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient checks failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Sends `Content-Length: 100 MB` and the first megabyte on a raw socket; returns the status line.
fn send_huge_body(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&vec![b' '; 1 << 20]); // the server may already have answered and closed
    let mut answer = [0u8; 256];
    let n = s.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_the_server_stays_up() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    let server = Server::start(&models, &[], &[]);
    let url = server.url("/v2/models/resnet50-baseline/infer");
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    let input = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});

    // (what, body, expected status, expected words in the error)
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            b"{\"inputs\": [".to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid",
        ),
        (
            "no inputs field",
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "inputs",
        ),
        (
            "wrong shape",
            serde_json::to_vec(&input(json!([1, 3, 224, 225]), "FP32", json!([0.0]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "shape",
        ),
        (
            "too few values",
            serde_json::to_vec(&input(json!([1, 3, 224, 224]), "FP32", json!([0.0, 1.0]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "needs 150528 values, got 2",
        ),
        (
            "wrong dtype",
            serde_json::to_vec(&input(json!([1, 3, 224, 224]), "FP16", json!([0]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "datatype FP16 is not supported",
        ),
        (
            "strings as FP32",
            serde_json::to_vec(&input(json!([1, 3, 224, 224]), "FP32", json!(["a"]))).unwrap(),
            StatusCode::BAD_REQUEST,
            "must be numbers",
        ),
        (
            "wrong input name",
            serde_json::to_vec(
                &json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            )
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "unknown input `x`",
        ),
        (
            "too many images for one batch",
            serde_json::to_vec(&input(
                json!([9, 3, 224, 224]),
                "FP32",
                json!(vec![0.0; 9 * engine::INPUT_LEN]),
            ))
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "takes at most 8",
        ),
    ];
    for (what, body, status, words) in cases {
        let res = client()
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{what}");
        let v: Value = res.json().await.unwrap();
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(words), "{what}: `{e}` lacks `{words}`");
    }

    // Truncated binary section, and a header length past the end of the body.
    let (body, n) = kserve_binary(&tensor, 1, true);
    let short = body[..body.len() - 1000].to_vec();
    let res = post_binary(&url, short, n).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let e: Value = res.json().await.unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("declares 602112 bytes"),
        "{e}"
    );
    let res = post_binary(&url, body[..n - 5].to_vec(), n).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Unknown model.
    let (s, e) = post_json(
        &server.url("/v2/models/resnet51/infer"),
        &json!({"inputs": []}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("unknown model"));

    // 100 MB bodies are refused before they are read.
    for path in ["/v2/models/resnet50-baseline/infer", "/vertex/predict"] {
        let line = send_huge_body(server.port, path);
        assert!(line.contains("413"), "{path}: {line}");
    }

    // A decompression bomb (a real 40000×40000 PNG), as BYTES and as a Vertex instance.
    let bomb = png_bomb();
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small on the wire: {}",
        bomb.len()
    );
    let mut raw = (bomb.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(&bomb);
    let head = json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                  "parameters": {"binary_data_size": raw.len()}}]});
    let mut body = serde_json::to_vec(&head).unwrap();
    let n = body.len();
    body.extend_from_slice(&raw);
    let res = post_binary(&url, body, n).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let e: Value = res.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("40000×40000"), "{e}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bomb);
    let (s, e) = post_json(
        &server.url("/vertex/predict"),
        &json!({"instances": [{"b64": b64}]}),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("instance 0: image too large"),
        "{e}"
    );
    let (s, e) = post_json(
        &server.url("/vertex/predict"),
        &json!({"instances": [{"b64": "not base64!"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().contains("invalid base64"),
        "{e}"
    );

    // Still up, still right.
    assert_eq!(get(&server.url("/v2/health/ready")).await.0, StatusCode::OK);
    let (body, n) = kserve_binary(&tensor, 1, false);
    let v: Value = post_binary(&url, body, n).await.json().await.unwrap();
    assert_eq!(argmax(&json_logits(&v)), class);

    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"inferscope_errors_total{cause="bad_json",variant="resnet50-baseline"} 2"#,
        r#"inferscope_errors_total{cause="truncated",variant="resnet50-baseline"} 2"#,
        r#"inferscope_errors_total{cause="unknown_model",variant="-"} 1"#,
        r#"inferscope_errors_total{cause="image_too_large",variant="resnet50-baseline"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

/// A queue of one request and batches of one: a burst gets some 503s with Retry-After, the rest
/// answers, and nothing else goes wrong.
#[tokio::test]
async fn a_full_queue_answers_503() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    let server = Server::start(
        &models,
        &[
            "--queue-capacity",
            "1",
            "--max-batch-size",
            "1",
            "--max-queue-delay-us",
            "0",
        ],
        &[],
    );
    let url = server.url("/v2/models/resnet50-baseline/infer");
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    let (body, n) = kserve_binary(&tensor, 1, false);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post_binary(&url, body, n).await })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for t in tasks {
        let res = t.await.unwrap();
        match res.status() {
            StatusCode::OK => {
                let v: Value = res.json().await.unwrap();
                assert_eq!(argmax(&json_logits(&v)), class);
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(res.headers()["retry-after"], "1");
                let v: Value = res.json().await.unwrap();
                assert!(
                    v["error"]
                        .as_str()
                        .unwrap()
                        .contains("queue of 1 requests is full"),
                    "{v}"
                );
                busy += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 2 && busy >= 1, "ok {ok}, 503 {busy}");
}

/// SIGTERM while requests wait in the queue: they are answered, then the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    // Requests wait up to 1.5 s for a full batch of 8: three of them are still queued at SIGTERM.
    let mut server = Server::start(
        &models,
        &["--max-batch-size", "8", "--max-queue-delay-us", "1500000"],
        &[],
    );
    let url = server.url("/v2/models/resnet50-baseline/infer");
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    let (body, n) = kserve_binary(&tensor, 1, false);
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post_binary(&url, body, n).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(30)));
    assert!(status.success(), "exit status {status}");
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.unwrap();
        assert_eq!(argmax(&json_logits(&v)), class);
    }
    assert!(server.log().contains("shutting down"));
}

/// The Vertex AI custom-container contract: the AIP_* variables, photos and tensors as instances.
#[tokio::test]
async fn vertex_contract() {
    let Some(models) = models_dir() else { return };
    let photos: Vec<_> = PHOTOS.iter().filter_map(|p| foolbox(p)).collect();
    if photos.len() != PHOTOS.len() {
        return;
    }
    let predict_route = "/v1/endpoints/7/deployedModels/8:predict";
    let server = Server::start(
        &models,
        &[],
        &[
            ("AIP_HEALTH_ROUTE", "/v1/endpoints/7/deployedModels/8"),
            ("AIP_PREDICT_ROUTE", predict_route),
        ],
    );
    let (s, v) = get(&server.url("/v1/endpoints/7/deployedModels/8")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["variant"], "resnet50-baseline");

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let tensor = engine::preprocess::preprocess(&photos[1].1).unwrap().data;
    let tensor_bytes: Vec<u8> = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
    let body = json!({
        "instances": [
            {"b64": b64(&photos[0].1)},
            {"image_bytes": {"b64": b64(&photos[1].1)}},
            {"tensor_b64": b64(&tensor_bytes)},
        ],
        "parameters": {"top_k": 3, "variant": "resnet50-baseline"},
    });
    let wire = serde_json::to_vec(&body).unwrap().len();
    assert!(wire < 1_500_000, "under Vertex's 1.5 MB limit: {wire}");
    let (s, v) = post_json(&server.url(predict_route), &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3);
    let classes = [photos[0].2, photos[1].2, photos[1].2];
    for (p, class) in preds.iter().zip(classes) {
        assert_eq!(p["top"].as_array().unwrap().len(), 3);
        assert_eq!(p["top"][0]["index"], class, "{p}");
        assert!(p["top"][0]["label"].as_str().unwrap().len() > 1);
        assert!(p.get("logits").is_none());
    }

    // A plain JSON tensor instance, with logits asked for.
    let body = json!({"instances": [tensor], "parameters": {"logits": true}});
    let (s, v) = post_json(&server.url(predict_route), &body).await;
    assert_eq!(s, StatusCode::OK);
    let logits: Vec<f32> = v["predictions"][0]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(argmax(&logits), photos[1].2);

    // A KServe v2 request on the predict route (rawPredict to Triton on Vertex).
    let (body, n) = kserve_binary(&tensor, 1, false);
    let v: Value = post_binary(&server.url(predict_route), body, n)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(argmax(&json_logits(&v)), photos[1].2);

    for (body, words) in [
        (json!({"instances": "x"}), "expected {\"instances\""),
        (json!({"instances": []}), "`instances` is empty"),
        (
            json!({"instances": [[1.0, 2.0]]}),
            "needs 3×224×224 = 150528 numbers, got 2",
        ),
        (json!({"instances": [{"pixels": 1}]}), "an instance is"),
        (
            json!({"instances": [[1.0]], "parameters": {"variant": "resnet51"}}),
            "unknown model",
        ),
    ] {
        let (s, e) = post_json(&server.url(predict_route), &body).await;
        assert!(s.is_client_error(), "{body}: {s}");
        assert!(e["error"].as_str().unwrap().contains(words), "{body}: {e}");
    }
}

//! Hostile clients against the real `inferscope serve` binary on loopback (issue 10): every request
//! gets an HTTP answer with the documented status, the process stays up, a good request is still
//! answered right afterwards, memory stays bounded (peak resident size from `/proc`, as a ratio to the
//! idle one) and `/metrics` counts each refusal under its cause.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends `body` to `path` with `headers` on a raw socket and reads the whole answer: (status, body).
/// Panics when the server closes the connection without an HTTP answer.
fn raw_post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no HTTP answer ({} bytes: {text:?})", answer.len()));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn kserve_json(shape: Value, datatype: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}),
    )
    .unwrap()
}

/// A binary KServe body: the JSON header with `input`'s `shape`, `datatype` and `binary_data_size`,
/// then `binary`.
fn kserve_bin(shape: Value, datatype: &str, declared: Value, binary: &[u8]) -> (Vec<u8>, usize) {
    let head = json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                  "parameters": {"binary_data_size": declared}}]});
    let mut body = serde_json::to_vec(&head).unwrap();
    let n = body.len();
    body.extend_from_slice(binary);
    (body, n)
}

async fn metrics(server: &Server) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The count of `inferscope_errors_total{cause, variant}` (0 when absent).
fn errors(metrics: &str, cause: &str, variant: &str) -> u64 {
    let key = format!("inferscope_errors_total{{cause=\"{cause}\",variant=\"{variant}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A good request still gets the right class.
async fn assert_still_right(server: &mut Server, tensor: &[f32], class: usize) {
    assert!(server.alive(), "the server died:\n{}", server.log());
    let (body, n) = kserve_binary(tensor, 1, false);
    let res = client()
        .post(server.url("/v2/models/resnet50-baseline/infer"))
        .header("Inference-Header-Content-Length", n.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(argmax(&json_logits(&v)), class);
}

/// Declared sizes far beyond what was sent (issue 10's one-request crash), on every route: each gets
/// a 4xx that names the limit, nothing of the declared size is allocated (peak RSS stays near idle),
/// the server keeps answering, and `/metrics` counts each refusal under its cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_sizes_are_checked_before_allocating() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    let mut server = Server::start(&baseline_only_dir(&models), &[], &[]);
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    assert_still_right(&mut server, &tensor, class).await;
    let idle = server.proc_status_bytes("VmRSS");
    server.reset_peak_rss();
    let port = server.port;
    let infer = "/v2/models/resnet50-baseline/infer";
    let json_ct = ("Content-Type", "application/json".to_string());

    // (what, path, headers, body, status, words in the error)
    let huge = json!([100_000, 3, 224, 224]);
    let mut cases: Vec<(&str, &str, Vec<(&str, String)>, Vec<u8>, u16, &str)> = vec![
        (
            "JSON: batch of 100000, no data",
            infer,
            vec![json_ct.clone()],
            kserve_json(huge.clone(), "FP32", json!([])),
            400,
            "takes at most 8",
        ),
        (
            "JSON: batch of 2^62",
            infer,
            vec![json_ct.clone()],
            kserve_json(json!([1i64 << 62, 3, 224, 224]), "FP32", json!([])),
            400,
            "takes at most 8",
        ),
        (
            "JSON: negative batch",
            infer,
            vec![json_ct.clone()],
            kserve_json(json!([-1, 3, 224, 224]), "FP32", json!([])),
            400,
            "at least 1",
        ),
        (
            "BYTES: 100000 elements",
            infer,
            vec![json_ct.clone()],
            kserve_json(json!([100_000]), "BYTES", json!([])),
            400,
            "takes at most 8",
        ),
        (
            "JSON: exact count past the shape",
            infer,
            vec![json_ct.clone()],
            kserve_json(
                json!([1, 3, 224, 224]),
                "FP32",
                json!(vec![0; engine::INPUT_LEN + 5]),
            ),
            400,
            "needs 150528 values, got 150533",
        ),
    ];
    let (b, n) = kserve_bin(huge.clone(), "FP32", json!(0), &[]);
    cases.push((
        "binary: batch of 100000, no data",
        infer,
        vec![("Inference-Header-Content-Length", n.to_string())],
        b,
        400,
        "takes at most 8",
    ));
    let (b, n) = kserve_bin(json!([1, 3, 224, 224]), "FP32", json!(u64::MAX), &[0; 16]);
    cases.push((
        "binary: binary_data_size of 2^64-1",
        infer,
        vec![("Inference-Header-Content-Length", n.to_string())],
        b,
        400,
        "declares 18446744073709551615 bytes",
    ));
    let (b, n) = kserve_bin(json!([8]), "BYTES", json!(8), &[0; 8]);
    cases.push((
        "BYTES: 8 elements in 8 bytes",
        infer,
        vec![("Inference-Header-Content-Length", n.to_string())],
        b,
        400,
        "cannot hold their length prefixes",
    ));
    let (b, n) = kserve_bin(
        json!([1]),
        "BYTES",
        json!(8),
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
    );
    cases.push((
        "BYTES: element declaring 4 GB",
        infer,
        vec![("Inference-Header-Content-Length", n.to_string())],
        b,
        400,
        "declares 4294967295 bytes",
    ));
    cases.push((
        "binary: header length of 2^64-1",
        infer,
        vec![("Inference-Header-Content-Length", u64::MAX.to_string())],
        b"{}".to_vec(),
        400,
        "Inference-Header-Content-Length is 18446744073709551615",
    ));
    let (b, n) = kserve_bin(huge.clone(), "FP32", json!(0), &[]);
    cases.push((
        "Vertex rawPredict: batch of 100000",
        "/vertex/predict",
        vec![("Inference-Header-Content-Length", n.to_string())],
        b,
        400,
        "takes at most 8",
    ));
    // ~300 KB: 100,000 empty instances.
    let many = format!("{{\"instances\": [{}[]]}}", "[],".repeat(99_999));
    cases.push((
        "Vertex: 100000 instances",
        "/vertex/predict",
        vec![json_ct.clone()],
        many.into_bytes(),
        413,
        "queues at most 64 (queue_capacity)",
    ));
    cases.push((
        "Vertex: tensor_b64 of the wrong size",
        "/vertex/predict",
        vec![json_ct.clone()],
        br#"{"instances": [{"tensor_b64": "AAAA"}]}"#.to_vec(),
        400,
        "must hold 3×224×224",
    ));
    for (what, path, headers, body, status, words) in &cases {
        let (got, text) = raw_post(port, path, headers, body);
        assert_eq!(got, *status, "{what}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(words), "{what}: `{e}` lacks `{words}`");
        assert!(
            server.alive(),
            "{what} killed the server:\n{}",
            server.log()
        );
    }

    assert_still_right(&mut server, &tensor, class).await;
    let peak = server.proc_status_bytes("VmHWM");
    let ratio = peak as f64 / idle as f64;
    eprintln!(
        "declared-size abuse: idle RSS {} MiB, peak {} MiB ({ratio:.2}× idle)",
        idle >> 20,
        peak >> 20
    );
    assert!(ratio <= 2.0, "peak RSS {ratio:.2}× idle");
    let m = metrics(&server).await;
    for (cause, n) in [
        ("batch_too_large", 5),
        ("too_many_instances", 1),
        ("truncated", 4),
    ] {
        assert_eq!(errors(&m, cause, "resnet50-baseline"), n, "{cause} in\n{m}");
    }
}

//! Remote variants end to end: a second `inferscope serve` on loopback plays the remote (a KServe v2
//! server, a Vertex AI endpoint), the real protocols in between. Also a remote that is down (the error
//! reaches the page's variant card with the remote's text) and one that is slow (it times out alone:
//! the local variant keeps answering).

mod support;

use std::time::{Duration, Instant};

use leptos::server_fn::codec::BitcodeEncoding;
use leptos::server_fn::Encodes;
use reqwest::StatusCode;
use serde_json::Value;
use support::*;

use app::catalog::{Availability, VariantInfo};
use app::classify::{Classify, ClassifyResponse, TimingMode, CLASSIFY_PATH};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "inferscope-remote-test-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// A loopback port nobody listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// KServe v2 binary inference of one tensor; (status, JSON answer).
async fn infer(server: &Server, model: &str, tensor: &[f32]) -> (StatusCode, Value) {
    let (body, n) = kserve_binary(tensor, 1, false);
    let res = client()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .header("Inference-Header-Content-Length", n.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

async fn variant_cards(server: &Server) -> Vec<VariantInfo> {
    page_request(&client(), server, "/api/variants")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The page's `classify` server function (bitcode in, JSON out), as the browser calls it.
async fn classify(server: &Server, pixels: Vec<u8>) -> ClassifyResponse {
    let body = <BitcodeEncoding as Encodes<Classify>>::encode(&Classify {
        pixels,
        variants: String::new(),
        mode: TimingMode::Alone,
        explain: true,
    })
    .unwrap();
    let res = client()
        .post(server.url(CLASSIFY_PATH))
        .header("Content-Type", "application/bitcode")
        .header("Accept", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test]
async fn kserve_remote_answers_and_a_down_remote_shows_its_error() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    // The remote serves the baseline only: asking it for `resnet50-int8` is an error of its own.
    let remote = Server::start(&baseline_only_dir(&models), &[], &[]);
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let config = write_config(
        "kserve",
        &format!(
            r#"
            [variants.resnet50-baseline]
            backend = "kserve"
            url = "{}"
            timeout_ms = 20000

            [variants.resnet50-pruned]
            backend = "kserve"
            url = "{dead}"
            model = "resnet50-baseline"
            timeout_ms = 2000
            retries = 1
            backoff_ms = 50

            [variants.resnet50-sparse24]
            backend = "kserve"
            url = "{}"
            model = "resnet50-int8"
            retries = 0
            "#,
            remote.base, remote.base
        ),
    );
    let front = Server::start(&models, &["--config", config.to_str().unwrap()], &[]);
    assert!(
        front.log().contains("remote not ready yet"),
        "the dead remote is reported at start"
    );

    // Through the front's KServe v2 API, the front's batcher, the KServe client, the remote's API.
    let (s, v) = infer(&front, "resnet50-baseline", &tensor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(argmax(&json_logits(&v)), class);
    let (s, direct) = infer(&remote, "resnet50-baseline", &tensor).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json_logits(&v),
        json_logits(&direct),
        "the front passes the remote's logits on"
    );

    // The down remote: a clear 502 naming it, the front stays up.
    let (s, v) = infer(&front, "resnet50-pruned", &tensor).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains(&dead) && e.contains("cannot connect"), "{e}");

    // A remote that answers with an error: its own text comes through.
    let (s, v) = infer(&front, "resnet50-sparse24", &tensor).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("HTTP 503") && e.contains("model `resnet50-int8` is not available"),
        "{e}"
    );

    // The page: the cards say where each variant runs, and the down remote's error is in its card.
    let cards = variant_cards(&front).await;
    match &cards[0].availability {
        Availability::Ready { backend, .. } => {
            assert_eq!(
                backend,
                &format!("kserve {} (resnet50-baseline)", remote.base)
            )
        }
        other => panic!("{other:?}"),
    }
    let pixels = engine::preprocess::preprocess_pixels(&photo).unwrap().data;
    let answer = classify(&front, pixels).await;
    let by_id = |id: &str| answer.outcomes.iter().find(|o| o.id == id).unwrap();
    let base = by_id("resnet50-baseline").result.as_ref().unwrap();
    assert_eq!(base.top[0].index as usize, class);
    let err = by_id("resnet50-pruned").result.as_ref().unwrap_err();
    assert!(
        err.contains("cannot connect") && err.contains(&dead),
        "{err}"
    );

    let metrics = client()
        .get(front.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"inferscope_errors_total{cause="remote",variant="resnet50-pruned"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_remote_times_out_alone() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[0]) else {
        return;
    };
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    // The slow remote holds every request 4 s, waiting for a batch of 8 that never fills.
    let slow = Server::start(
        &models,
        &["--max-batch-size", "8", "--max-queue-delay-us", "4000000"],
        &[],
    );
    let config = write_config(
        "slow",
        &format!(
            r#"
            [variants.resnet50-baseline]
            backend = "cpu"

            [variants.resnet50-pruned]
            backend = "kserve"
            url = "{}"
            model = "resnet50-baseline"
            timeout_ms = 700
            retries = 2
            "#,
            slow.base
        ),
    );
    let front = Server::start(&models, &["--config", config.to_str().unwrap()], &[]);
    let slow_call = async {
        let t0 = Instant::now();
        let answer = infer(&front, "resnet50-pruned", &tensor).await;
        (answer, t0.elapsed())
    };
    let (((s, v), waited), local_answer) =
        tokio::join!(slow_call, infer(&front, "resnet50-baseline", &tensor));
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("no answer within 700 ms (timeout)"), "{e}");
    // A timeout is not retried: the caller waited one timeout, not three, and far less than the 4 s
    // the remote would have taken.
    assert!(waited < Duration::from_millis(3500), "{waited:?}");
    let (s, v) = local_answer;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(argmax(&json_logits(&v)), class);
}

#[tokio::test]
async fn vertex_remotes_predict_and_raw_predict() {
    let Some(models) = models_dir() else { return };
    let Some((_, photo, class)) = foolbox(PHOTOS[1]) else {
        return;
    };
    let tensor = engine::preprocess::preprocess(&photo).unwrap().data;
    // Two "Vertex endpoints": inferscope under the custom-container contract, as Vertex would run it.
    let predict = Server::start(
        &models,
        &[],
        &[(
            "AIP_PREDICT_ROUTE",
            "/v1/projects/p/locations/r/endpoints/11:predict",
        )],
    );
    let raw = Server::start(
        &models,
        &[],
        &[(
            "AIP_PREDICT_ROUTE",
            "/v1/projects/p/locations/r/endpoints/12:rawPredict",
        )],
    );
    let config = write_config(
        "vertex",
        &format!(
            r#"
            [variants.resnet50-baseline]
            backend = "vertex"
            project = "p"
            region = "r"
            endpoint = "11"
            api_base = "{}"
            auth = "none"

            [variants.resnet50-pruned]
            backend = "vertex"
            project = "p"
            region = "r"
            endpoint = "12"
            method = "rawPredict"
            api_base = "{}"
            auth = "none"
            "#,
            predict.base, raw.base
        ),
    );
    let front = Server::start(&models, &["--config", config.to_str().unwrap()], &[]);
    for model in ["resnet50-baseline", "resnet50-pruned"] {
        let (s, v) = infer(&front, model, &tensor).await;
        assert_eq!(s, StatusCode::OK, "{model}: {v}");
        assert_eq!(argmax(&json_logits(&v)), class, "{model}");
    }
    // A batch of two goes out as two concurrent :predict calls.
    let two = [tensor.clone(), tensor.clone()].concat();
    let (body, n) = kserve_binary(&two, 2, false);
    let v: Value = client()
        .post(front.url("/v2/models/resnet50-baseline/infer"))
        .header("Inference-Header-Content-Length", n.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logits = json_logits(&v);
    assert_eq!(logits.len(), 2000, "{v}");
    assert!(logits.chunks(1000).all(|row| argmax(row) == class));
}

//! The router end to end, in process (`tower::ServiceExt::oneshot`): the page, the server functions
//! with real tensors, the body limits, bad input, and that the server keeps answering after it.
//!
//! Tests that need the real model (`models/resnet50-baseline.onnx`, written by `./x setup`) and
//! foolbox's photos skip with a message when those are missing.

use std::path::{Path, PathBuf};

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::server_fn::codec::BitcodeEncoding;
use leptos::server_fn::Encodes;
use tower::ServiceExt;

use app::catalog::VariantInfo;
use app::classify::{
    Classify, ClassifyResponse, ClassifySet, SetResponse, TimingMode, CLASSIFY_BODY_LIMIT,
    CLASSIFY_PATH, CLASSIFY_SET_BODY_LIMIT, CLASSIFY_SET_PATH, MAX_SET_PHOTOS,
};
use app::drift::{DriftResponse, LayerDrift, DRIFT_PATH};
use app::ssr::{AppState, StateConfig};
use app::AppError;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn options() -> LeptosOptions {
    LeptosOptions::builder()
        .output_name(super::page::OUTPUT_NAME)
        .site_root(
            workspace_root()
                .join("target/site")
                .to_string_lossy()
                .to_string(),
        )
        .build()
}

/// The server's router over `state`, with the default limits and no access control.
fn app(state: AppState) -> Router {
    super::app(super::HttpState::new(
        state,
        options(),
        super::limits::Limits::for_tests(),
    ))
}

/// A models directory that does not exist.
fn no_models_dir() -> PathBuf {
    std::env::temp_dir().join("inferscope-test-no-models-here")
}

/// A router over a models directory without models: every variant is "not built".
fn router_without_models() -> Router {
    let state = AppState::load(StateConfig::cpu(no_models_dir()));
    app(state)
}

/// The real models directory (`INFERSCOPE_MODELS`, as `./x test` sets it, else `models/`).
fn models_dir() -> PathBuf {
    std::env::var_os("INFERSCOPE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models"))
}

/// A router over the real models, or `None` (with a message) when the baseline is not built.
fn router_with_models() -> Option<Router> {
    let models = models_dir();
    if !models.join(engine::variants::VARIANTS[0].file).is_file() {
        eprintln!(
            "SKIP: {} has no baseline model (run `./x setup`)",
            models.display()
        );
        return None;
    }
    let state = AppState::load(StateConfig::cpu(models));
    assert!(
        !state.ready().is_empty(),
        "the baseline exists but did not load"
    );
    Some(app(state))
}

/// One of foolbox's 20 labelled photos (`INFERSCOPE_FOOLBOX`, else the `./x setup` cache): its bytes
/// and its ImageNet class, from the file name.
fn foolbox_photo(name: &str) -> Option<(Vec<u8>, usize)> {
    let dir = std::env::var_os("INFERSCOPE_FOOLBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("INFERSCOPE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/inferscope")
                });
            cache.join("foolbox-images")
        });
    let path = dir.join(name);
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("SKIP: {} not found (run `./x setup`)", path.display());
        return None;
    };
    // imagenet_NN_LABEL.jpg: the class index is foolbox's label for the photo.
    let label = name
        .trim_end_matches(".jpg")
        .rsplit('_')
        .next()
        .and_then(|l| l.parse().ok());
    Some((bytes, label.expect("foolbox names end in _LABEL.jpg")))
}

fn classify_request(pixels: Vec<u8>, variants: &str) -> Request<Body> {
    let body = <BitcodeEncoding as Encodes<Classify>>::encode(&Classify {
        pixels,
        variants: variants.to_string(),
        mode: TimingMode::Alone,
        explain: true,
    })
    .expect("bitcode encoding is infallible");
    Request::post(CLASSIFY_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn classify_set_request(pixels: Vec<u8>) -> Request<Body> {
    let body = <BitcodeEncoding as Encodes<ClassifySet>>::encode(&ClassifySet {
        pixels,
        variants: String::new(),
    })
    .expect("bitcode encoding is infallible");
    Request::post(CLASSIFY_SET_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(body))
        .unwrap()
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = router
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = res.status();
    (
        status,
        to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

async fn assert_healthy(router: &Router) {
    let (status, body) = send(
        router,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["variants"].as_array().unwrap().len(),
        engine::variants::VARIANTS.len()
    );
}

#[tokio::test]
async fn classify_names_the_right_class_for_a_real_photo() {
    let Some(router) = router_with_models() else {
        return;
    };
    let Some((photo, label)) = foolbox_photo("imagenet_00_243.jpg") else {
        return;
    };
    let pixels = engine::preprocess::preprocess_pixels(&photo).unwrap().data;
    let (status, body) = send(&router, classify_request(pixels, "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: ClassifyResponse = serde_json::from_slice(&body).unwrap();
    let baseline = answer
        .outcomes
        .iter()
        .find(|o| o.id == "resnet50-baseline")
        .expect("baseline answered");
    let prediction = baseline.result.as_ref().expect("baseline succeeded");
    assert_eq!(prediction.top.len(), app::classify::TOP_K);
    assert_eq!(
        prediction.top[0].index as usize, label,
        "top-5: {:?}",
        prediction.top
    );
    assert_eq!(prediction.top[0].name, "bull mastiff");
    // Asked for (explain: true): the class activation map of the top-1 class, 7×7.
    let cam = prediction
        .cam
        .as_ref()
        .expect("asked for")
        .as_ref()
        .expect("cpu explains");
    assert_eq!(
        (cam.class, cam.height, cam.width),
        (prediction.top[0].index, 7, 7)
    );
    assert!(prediction.top.windows(2).all(|w| w[0].prob >= w[1].prob));
    assert!(prediction.top.iter().all(|c| (0.0..=1.0).contains(&c.prob)));
    assert!(prediction.inference_us > 0);
    // Every variant on disk answers, each with its own result.
    for o in &answer.outcomes {
        assert!(o.result.is_ok(), "{}: {:?}", o.id, o.result);
    }
}

#[tokio::test]
async fn classify_rejects_a_tensor_of_the_wrong_length_with_400() {
    let router = router_without_models();
    let (status, body) = send(&router, classify_request(vec![5; 1000], "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(
        matches!(&e, AppError::BadRequest(m) if m.contains("150528 bytes, got 1000")),
        "{e:?}"
    );
    assert_healthy(&router).await;
}

#[tokio::test]
async fn classify_rejects_an_unknown_variant_with_400() {
    let router = router_without_models();
    let (status, body) = send(
        &router,
        classify_request(
            vec![0; engine::preprocess::PIXELS_LEN],
            "resnet50-baseline,resnet18",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("unknown variant `resnet18`"));
}

#[tokio::test]
async fn classify_without_models_says_so_with_503() {
    let router = router_without_models();
    let (status, body) = send(
        &router,
        classify_request(vec![0; engine::preprocess::PIXELS_LEN], ""),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(
        matches!(&e, AppError::NoModels(m) if m.contains("./x setup")),
        "{e:?}"
    );
}

#[tokio::test]
async fn classify_refuses_an_oversized_body_with_413_and_stays_up() {
    let router = router_without_models();
    let req = Request::post(CLASSIFY_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .body(Body::from(vec![0u8; 2 * CLASSIFY_BODY_LIMIT]))
        .unwrap();
    let (status, body) = send(&router, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(matches!(e, AppError::TooLarge(_)), "{e:?}");
    // Garbage of an acceptable size is a client error too, not a crash.
    let req = Request::post(CLASSIFY_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .body(Body::from(vec![0xffu8; 4096]))
        .unwrap();
    let (status, body) = send(&router, req).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(matches!(e, AppError::ServerFn(_)), "{e:?}");
    assert_healthy(&router).await;
}

fn drift_request(pixels: Vec<u8>) -> Request<Body> {
    let body = <BitcodeEncoding as Encodes<LayerDrift>>::encode(&LayerDrift { pixels })
        .expect("bitcode encoding is infallible");
    Request::post(DRIFT_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn layer_drift_compares_every_variant_with_the_baseline_block_by_block() {
    let Some(router) = router_with_models() else {
        return;
    };
    let Some((photo, _)) = foolbox_photo("imagenet_16_251.jpg") else {
        return;
    };
    let pixels = engine::preprocess::preprocess_pixels(&photo).unwrap().data;
    let (status, body) = send(&router, drift_request(pixels)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let d: DriftResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(d.baseline, "resnet50-baseline");
    assert_eq!(d.layers.len(), 17, "{:?}", d.layers);
    assert_eq!(
        (d.layers[0].as_str(), d.layers[16].as_str()),
        ("stem", "layer4.2")
    );
    assert!(d.variants.iter().all(|v| v.id != d.baseline));
    assert!(d.path.contains("ONNX Runtime CPU"), "{}", d.path);
    for v in &d.variants {
        let layers = v
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", v.id));
        assert_eq!(layers.len(), 17, "{}", v.id);
        let errors: Vec<f32> = layers
            .iter()
            .map(|l| *l.relative_error.as_ref().expect("same shapes"))
            .collect();
        assert!(
            errors.iter().all(|e| e.is_finite() && *e >= 0.0),
            "{}: {errors:?}",
            v.id
        );
        assert!(
            errors[16] > 0.0,
            "{}: its last block equals the baseline's",
            v.id
        );
        if v.id == "resnet50-int8" {
            assert!(errors[0] > 0.0, "INT8 quantizes the stem");
        }
    }
    assert_healthy(&router).await;
}

#[tokio::test]
async fn layer_drift_refuses_bad_input_and_says_when_there_is_no_baseline() {
    let router = router_without_models();
    let (status, body) = send(&router, drift_request(vec![5; 1000])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(
        matches!(&e, AppError::BadRequest(m) if m.contains("150528 bytes, got 1000")),
        "{e:?}"
    );
    let req = Request::post(DRIFT_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .body(Body::from(vec![0u8; 2 * CLASSIFY_BODY_LIMIT]))
        .unwrap();
    let (status, _) = send(&router, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = send(
        &router,
        drift_request(vec![0; engine::preprocess::PIXELS_LEN]),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(
        matches!(&e, AppError::NoModels(m) if m.contains("against the baseline")),
        "{e:?}"
    );
    assert_healthy(&router).await;
}

#[tokio::test]
async fn preprocess_route_matches_the_library_and_rejects_non_images() {
    let router = router_without_models();
    let Some((photo, _)) = foolbox_photo("imagenet_01_559.jpg") else {
        return;
    };
    let expected = engine::preprocess::preprocess(&photo).unwrap();
    let res = router
        .clone()
        .oneshot(
            Request::post("/api/preprocess")
                .body(Body::from(photo))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["x-image-width"],
        expected.width.to_string().as_str()
    );
    let body = to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let got: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, expected.data);

    let text = b"this is a text file renamed to photo.jpg\n".repeat(20);
    let (status, body) = send(
        &router,
        Request::post("/api/preprocess")
            .body(Body::from(text))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(String::from_utf8_lossy(&body).contains("not a supported image"));

    let huge = vec![0u8; super::preprocess::BODY_LIMIT + 1];
    let (status, _) = send(
        &router,
        Request::post("/api/preprocess")
            .body(Body::from(huge))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_healthy(&router).await;
}

#[tokio::test]
async fn list_variants_reports_missing_files() {
    let router = router_without_models();
    let req = Request::post("/api/variants")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&router, req).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let list: Vec<VariantInfo> = serde_json::from_slice(&body).unwrap();
    let ids: Vec<_> = list.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        ids,
        engine::variants::VARIANTS
            .iter()
            .map(|v| v.id)
            .collect::<Vec<_>>()
    );
    for v in &list {
        match &v.availability {
            // The file's name, never the server's folder (issue 14).
            app::catalog::Availability::Missing { path } => {
                let spec = engine::variants::by_id(&v.id).unwrap();
                assert_eq!(path, spec.file);
                assert!(
                    !path.contains(&no_models_dir().display().to_string()),
                    "{path}"
                )
            }
            other => panic!("{}: {other:?}", v.id),
        }
    }
}

#[tokio::test]
async fn the_page_renders_on_the_server_with_every_variant() {
    let router = router_without_models();
    let (status, body) = send(&router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("/pkg/inferscope.js"), "no hydration script");
    assert!(
        html.contains("Loading…"),
        "no loading note before hydration"
    );
    for v in engine::variants::VARIANTS {
        assert!(
            html.contains(&format!("data-variant=\"{}\"", v.id)),
            "no card for {}",
            v.id
        );
    }
    assert!(html.contains("Not built yet"));
    // Sent whole, not streamed out of order: no chunk arrives later as a `<template>` moved into
    // place by a script (a streamed page sometimes never finished loading: docs/page.md).
    assert!(!html.contains("<template"), "an out-of-order chunk: {html}");
    let (status, _) = send(
        &router,
        Request::get("/no/such/page").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `serve --backend cuda` in a build without the `cuda` feature (or on a machine without a GPU) stops
/// with the reason, before listening; it never serves the variants on the CPU instead.
#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_the_gpu_without_one_is_an_error_not_a_cpu_fallback() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: crate::serve_command::Args,
    }
    let models = models_dir();
    if !models.join(engine::variants::VARIANTS[0].file).is_file() {
        eprintln!(
            "SKIP: {} has no baseline model (run `./x setup`)",
            models.display()
        );
        return;
    }
    let cli = Cli::try_parse_from([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--backend",
        "cuda",
        "--models-dir",
        models.to_str().unwrap(),
    ])
    .unwrap();
    let e = crate::serve_command::run(cli.serve)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--backend cuda: no variant could be loaded: "),
        "{e}"
    );
    assert!(e.contains("cuda"), "{e}");
}

#[tokio::test]
async fn classify_set_answers_each_photo_as_classify_does() {
    let Some(router) = router_with_models() else {
        return;
    };
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in ["imagenet_00_243.jpg", "imagenet_16_251.jpg"] {
        let Some((photo, label)) = foolbox_photo(name) else {
            return;
        };
        pixels.extend(engine::preprocess::preprocess_pixels(&photo).unwrap().data);
        labels.push(label);
    }
    let (status, body) = send(&router, classify_set_request(pixels.clone())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let set: SetResponse = serde_json::from_slice(&body).unwrap();
    assert!(!set.outcomes.is_empty());
    for (k, one) in pixels.chunks(engine::preprocess::PIXELS_LEN).enumerate() {
        let (status, body) = send(&router, classify_request(one.to_vec(), "")).await;
        assert_eq!(status, StatusCode::OK);
        let single: ClassifyResponse = serde_json::from_slice(&body).unwrap();
        for o in &set.outcomes {
            let answers = o.result.as_ref().expect("every variant on disk answers");
            assert_eq!(answers.len(), 2, "{}", o.id);
            let alone = single.outcomes.iter().find(|s| s.id == o.id).unwrap();
            let alone = alone.result.as_ref().unwrap();
            let top =
                |t: &[app::classify::NamedScore]| t.iter().map(|c| c.index).collect::<Vec<_>>();
            assert_eq!(top(&answers[k].top), top(&alone.top), "{} photo {k}", o.id);
            assert!(answers[k].inference_us > 0);
        }
    }
    let baseline = set.outcomes[0].result.as_ref().unwrap();
    assert_eq!(baseline[0].top[0].index as usize, labels[0]);
}

#[tokio::test]
async fn classify_set_refuses_bad_sizes_before_running() {
    let router = router_without_models();
    // Not a whole number of photos.
    let (status, body) = send(
        &router,
        classify_set_request(vec![0; engine::preprocess::PIXELS_LEN + 7]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("1 to 8 times"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = send(&router, classify_set_request(Vec::new())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // One photo too many: bitcode packs nine black photos into a few bytes, so the count itself is
    // checked after decoding...
    let black = vec![0; (MAX_SET_PHOTOS + 1) * engine::preprocess::PIXELS_LEN];
    let (status, body) = send(&router, classify_set_request(black)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("1 to 8 times"));
    // ...and nine real-looking photos do not fit the route's body limit: refused before the body is
    // read whole.
    let too_many: Vec<u8> = (0..(MAX_SET_PHOTOS + 1) * engine::preprocess::PIXELS_LEN)
        .map(|i| (i % 251) as u8)
        .collect();
    let (status, body) = send(&router, classify_set_request(too_many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let e: AppError = serde_json::from_slice(&body).unwrap();
    assert!(matches!(e, AppError::TooLarge(_)), "{e:?}");
    let req = Request::post(CLASSIFY_SET_PATH)
        .header(header::CONTENT_TYPE, "application/bitcode")
        .body(Body::from(vec![0u8; 2 * CLASSIFY_SET_BODY_LIMIT]))
        .unwrap();
    assert_eq!(send(&router, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_healthy(&router).await;
}

#[tokio::test]
async fn sample_photos_are_served_from_the_samples_folder() {
    let dir = std::env::temp_dir().join(format!("inferscope-samples-route-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("n03590841_jack-o'-lantern.JPEG"),
        b"not really a jpeg",
    )
    .unwrap();
    let mut config = StateConfig::cpu(no_models_dir());
    config.samples_dir = Some(dir.clone());
    let router = app(AppState::load(config));
    let (status, body) = send(
        &router,
        Request::get("/samples/n03590841_jack-o%27-lantern.JPEG")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"not really a jpeg");
}

//! Class activation maps on the real models (`engine::cam`, the CPU backend's feature-map output).
//!
//! The map the server shows is computed from the feature map ONNX Runtime returns and the FC weights
//! read from the file; here it is checked against a computation that shares neither: inferscope's own
//! plain Rust forward pass (`optimize::forward`, im2col + faer) to the last block's output, and the
//! weighted sum written out as loops. Photos: foolbox's labelled ImageNet photos (what CI has).

use engine::cam::{class_activation_map, top1_map};
use engine::model::tensor_names as tn;
use engine::optimize::forward::{forward_observed, Act};
use engine::variants::VARIANTS;

mod common;
use common::models::{foolbox, load_cpu as load, models_dir};

/// Largest absolute difference, relative to the largest absolute value of `want`.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn baseline_cam_equals_a_direct_computation_on_a_photo() {
    let path = models_dir().join(VARIANTS[0].file);
    let image = foolbox("imagenet_00_243.jpg"); // a bull mastiff, labelled 243
    let model = load(VARIANTS[0].file);
    let (logits, explained) = model.run_explained(&image, 1).expect("feature map");
    let plain = model.run(&image, 1).expect("run");
    assert!(
        rel_err(&logits, &plain) < 1e-5,
        "asking for the feature map changes the logits"
    );
    let map = &explained.maps[0];
    assert_eq!((map.channels, map.height, map.width), (2048, 7, 7));
    let cam = top1_map(map, &explained.classifier, &logits).expect("cam");
    assert_eq!(cam.class, 243, "the baseline calls it a bull mastiff");

    // Direct: the network in plain Rust to the last block's output, then Σ_k w_k · A_k as loops.
    let net = engine::onnx_io::load(&path).expect("read the model");
    let last = net.blocks().last().expect("blocks").name.clone();
    let mut features = Vec::new();
    let direct_logits = forward_observed(&net, &Act::image(image.clone()), &mut |name, data| {
        if name == tn::block_out(&last) {
            features = data.to_vec();
        }
    });
    assert_eq!(features.len(), 2048 * 49);
    let class = cam.class as usize;
    let mut direct = vec![0f64; 49];
    for k in 0..2048 {
        let w = f64::from(net.fc.weight[class * 2048 + k]);
        for (cell, d) in direct.iter_mut().enumerate() {
            *d += w * f64::from(features[k * 49 + cell]);
        }
    }
    let direct: Vec<f32> = direct.into_iter().map(|v| v as f32).collect();
    let err = rel_err(&cam.values, &direct);
    println!(
        "class {class}: cam {:?}… vs direct {:?}…, relative error {err:.2e}",
        &cam.values[..4],
        &direct[..4]
    );
    assert!(
        err < 1e-3,
        "CAM differs from the direct computation by {err}"
    );
    assert_eq!(
        cam.hottest(),
        {
            let i = direct
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0 as u32;
            (i / 7, i % 7)
        },
        "the hottest cell"
    );
    // The map accounts for the logit: mean + bias = ONNX Runtime's logit (and the Rust forward's).
    let logit = logits[class];
    assert!(
        (cam.logit() - logit).abs() < 1e-3 * logit.abs().max(1.0),
        "mean(CAM) + b = {} but the logit is {logit}",
        cam.logit()
    );
    assert!((direct_logits[class] - logit).abs() < 1e-2 * logit.abs().max(1.0));
    // Every class's map, not only the top-1's: spot-check three against the loops.
    for c in [0usize, 500, 999] {
        let m = class_activation_map(map, &explained.classifier, c).unwrap();
        assert!((m.logit() - logits[c]).abs() < 1e-3 * logits[c].abs().max(1.0));
    }
}

#[test]
fn every_variant_file_returns_its_feature_map_on_the_cpu_backend() {
    let image = foolbox("imagenet_16_251.jpg"); // a dalmatian
    let mut checked = Vec::new();
    for spec in VARIANTS.iter() {
        let path = models_dir().join(spec.file);
        if !path.exists() {
            println!(
                "skip {}: {} is not built here (`inferscope build-variants`)",
                spec.id,
                path.display()
            );
            continue;
        }
        let model = load(spec.file);
        model.explains().expect("the CPU backend explains");
        let (logits, explained) = model.run_explained(&image, 1).expect("feature map");
        let plain = model.run(&image, 1).expect("run");
        assert!(
            rel_err(&logits, &plain) < 1e-5,
            "{}: logits change",
            spec.id
        );
        let map = &explained.maps[0];
        assert_eq!(
            (map.channels, map.height, map.width),
            (2048, 7, 7),
            "{}",
            spec.id
        );
        assert!(
            map.data.iter().all(|v| v.is_finite() && *v >= 0.0),
            "{}: after a ReLU",
            spec.id
        );
        let cam = top1_map(map, &explained.classifier, &logits).expect("cam");
        let logit = logits[cam.class as usize];
        // INT8: the pooled vector is quantized before its FC, so the identity holds up to that.
        let tol = match spec.precision {
            engine::variants::Precision::Fp32 => 1e-3,
            engine::variants::Precision::Int8 => 5e-2,
        } * logit.abs().max(1.0);
        println!(
            "{}: class {}, mean(CAM) + b = {:.4}, logit {logit:.4}, hottest {:?}",
            spec.id,
            cam.class,
            cam.logit(),
            cam.hottest()
        );
        assert!(
            (cam.logit() - logit).abs() < tol,
            "{}: mean(CAM) + b = {} against the logit {logit}",
            spec.id,
            cam.logit()
        );
        // A batch of two: each image gets its own map.
        let two: Vec<f32> = image.iter().chain(&image).copied().collect();
        let (_, both) = model.run_explained(&two, 2).expect("batch");
        assert_eq!(both.maps.len(), 2);
        assert!(rel_err(&both.maps[1].data, &map.data) < 1e-4, "{}", spec.id);
        checked.push(spec.id);
    }
    assert!(checked.contains(&VARIANTS[0].id), "the baseline at least");
}

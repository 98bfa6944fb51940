//! Per-layer drift on the real models (`engine::drift`, the CPU backend's traced session).
//!
//! The traced activations are checked against a computation that shares nothing with ONNX Runtime:
//! inferscope's own plain Rust forward pass (`optimize::forward`, im2col + faer), tensor by tensor;
//! and the traced session must answer exactly what the served one answers. Photos: foolbox's
//! labelled ImageNet photos (what CI has).

use engine::drift::{compare, relative_error, STEM};
use engine::model::tensor_names as tn;
use engine::optimize::forward::{forward_observed, Act};
use engine::variants::{Precision, VARIANTS};

mod common;
use common::models::{foolbox, load_cpu as load, models_dir};

#[test]
fn traced_points_are_the_block_outputs_the_rust_forward_computes() {
    let image = foolbox("imagenet_00_243.jpg"); // a bull mastiff
    let mut checked = Vec::new();
    for spec in VARIANTS.iter() {
        let path = models_dir().join(spec.file);
        if !path.exists() {
            println!("skip {}: {} is not built here", spec.id, path.display());
            continue;
        }
        let model = load(spec.file);
        model.traces().expect("the CPU backend traces");
        let (logits, acts) = model.run_traced(&image).expect("traced run");
        // The traced session answers what the served one answers.
        let plain = model.run(&image, 1).expect("run");
        let err = relative_error(&plain, &logits).unwrap();
        println!(
            "{}: traced logits vs served: relative error {err:.1e}",
            spec.id
        );
        assert!(
            err < 1e-6,
            "{}: the traced session's logits differ ({err})",
            spec.id
        );

        let net = engine::onnx_io::load(&path).expect("read the model");
        let mut want = vec![STEM.to_string()];
        want.extend(net.blocks().map(|b| b.name.clone()));
        let labels: Vec<&str> = acts.iter().map(|a| a.label.as_str()).collect();
        assert_eq!(
            labels, want,
            "{}: the stem and every block, in order",
            spec.id
        );
        assert_eq!(acts.len(), 17, "ResNet50: the stem and 16 blocks");
        assert_eq!(acts[0].shape, [64, 56, 56]);
        assert_eq!(acts[16].shape, [2048, 7, 7]);

        // The plain Rust forward of the same file: the same tensors (its INT8 forward is not the
        // file's integer arithmetic, so only the float files are compared value by value).
        if spec.precision == Precision::Fp32 {
            let mut observed = std::collections::HashMap::new();
            forward_observed(&net, &Act::image(image.clone()), &mut |name, data| {
                observed.insert(name.to_string(), data.to_vec());
            });
            for a in &acts {
                let name = if a.label == STEM {
                    tn::POOL.to_string()
                } else {
                    tn::block_out(&a.label)
                };
                let rust = &observed[&name];
                let err = relative_error(rust, &a.data).expect("same length");
                assert!(
                    err < 1e-4,
                    "{} {}: ONNX Runtime's tensor differs from the Rust forward's by {err}",
                    spec.id,
                    a.label
                );
            }
        }
        checked.push(spec.id);
    }
    assert!(checked.contains(&VARIANTS[0].id), "the baseline at least");
}

#[test]
fn drift_from_the_baseline_is_zero_for_itself_and_grows_where_the_variants_change_layers() {
    let image = foolbox("imagenet_16_251.jpg"); // a dalmatian
    let baseline = load(VARIANTS[0].file);
    let (_, base) = baseline.run_traced(&image).expect("baseline");
    let itself = compare(&base, &base);
    assert!(
        itself.iter().all(|l| l.relative_error == Ok(0.0)),
        "{itself:?}"
    );
    for spec in &VARIANTS[1..] {
        if !models_dir().join(spec.file).exists() {
            println!("skip {}: not built here", spec.id);
            continue;
        }
        let (_, acts) = load(spec.file).run_traced(&image).expect("traced run");
        let drift = compare(&base, &acts);
        let errors: Vec<f32> = drift
            .iter()
            .map(|l| {
                *l.relative_error
                    .as_ref()
                    .expect("every variant keeps the block shapes")
            })
            .collect();
        println!(
            "{}: {}",
            spec.id,
            drift
                .iter()
                .zip(&errors)
                .map(|(l, e)| format!("{} {e:.4}", l.label))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(
            errors.iter().all(|e| e.is_finite() && *e < 2.0),
            "{errors:?}"
        );
        // Every variant changes the network somewhere before its last block.
        assert!(
            errors[16] > 0.0,
            "{}: the last block's output is the baseline's",
            spec.id
        );
        // INT8 quantizes the stem itself: its error starts there.
        if spec.precision == Precision::Int8 {
            assert!(errors[0] > 0.0, "INT8's stem output equals the baseline's");
        }
    }
}

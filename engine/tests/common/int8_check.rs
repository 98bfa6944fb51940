//! The integer path's CPU reference against ONNX Runtime running the same INT8 QDQ file.

use std::path::Path;

use engine::int8::QNet;

/// Relative L2 distance between two logit vectors.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Runs `photos` through ONNX Runtime and through [`QNet::forward`]; asserts the integer form reproduces
/// ONNX Runtime's logits (relative error ≤ 1e-3, same top-1; measured 7.6e-7 on the full build's file,
/// float rounding at requantization ties aside). Returns the worst error.
pub fn check(int8_file: &Path, photos: &[std::path::PathBuf]) -> f64 {
    let net = engine::onnx_io::load(int8_file).expect("loading the INT8 file");
    let q = QNet::new(&net).expect("integer form of the INT8 file");
    let ort = engine::cpu::OrtSession::open(int8_file, 2).expect("ONNX Runtime session");
    let mut worst = 0f64;
    for p in photos {
        let x = engine::preprocess::preprocess(&std::fs::read(p).unwrap()).unwrap();
        let want = ort
            .run_named(&x.data, 1, &["logits"])
            .unwrap()
            .pop()
            .unwrap()
            .1;
        let got = q.forward(&x.data);
        let e = rel_err(&got, &want);
        println!(
            "{}: relative error {e:.2e}, top-1 ONNX Runtime {} integer form {}",
            p.display(),
            argmax(&want),
            argmax(&got)
        );
        assert_eq!(argmax(&got), argmax(&want), "{}", p.display());
        assert!(e <= 1e-3, "{}: integer form off by {e}", p.display());
        worst = worst.max(e);
    }
    worst
}

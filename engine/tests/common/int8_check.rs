//! The integer path's CPU reference against ONNX Runtime running the same INT8 QDQ file.

use std::path::Path;

use engine::int8::{Epilogue, QNet};

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

/// Runs `photos` through ONNX Runtime and through [`QNet::forward`] (both epilogues); asserts the
/// exact epilogue reproduces ONNX Runtime's logits (relative error ≤ 2e-2, same top-1; measured 7.6e-7
/// on the full build's file) and the fused one stays near (≤ 0.15; measured 2.6–4.1e-2). Returns the worst errors (exact, fused).
pub fn check(int8_file: &Path, photos: &[std::path::PathBuf]) -> (f64, f64) {
    let net = engine::onnx_io::load(int8_file).expect("loading the INT8 file");
    let q = QNet::new(&net).expect("integer form of the INT8 file");
    let ort = engine::cpu::OrtSession::open(int8_file, 2).expect("ONNX Runtime session");
    let (mut worst_exact, mut worst_fused) = (0f64, 0f64);
    for p in photos {
        let x = engine::preprocess::preprocess(&std::fs::read(p).unwrap()).unwrap();
        let want = ort
            .run_named(&x.data, 1, &["logits"])
            .unwrap()
            .pop()
            .unwrap()
            .1;
        let exact = q.forward(&x.data, Epilogue::Exact);
        let fused = q.forward(&x.data, Epilogue::Fused);
        let (e, f) = (rel_err(&exact, &want), rel_err(&fused, &want));
        println!(
            "{}: exact {e:.2e}, fused {f:.2e}, top-1 ORT {} exact {} fused {}",
            p.display(),
            argmax(&want),
            argmax(&exact),
            argmax(&fused)
        );
        assert_eq!(argmax(&exact), argmax(&want), "{}", p.display());
        assert!(e <= 2e-2, "{}: exact epilogue off by {e}", p.display());
        assert!(f <= 0.15, "{}: fused epilogue off by {f}", p.display());
        worst_exact = worst_exact.max(e);
        worst_fused = worst_fused.max(f);
    }
    (worst_exact, worst_fused)
}

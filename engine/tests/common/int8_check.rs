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

/// How far the integer form's logits may be from ONNX Runtime's (relative L2).
///
/// Both compute every convolution the same way, and on the full build's file the logits agree to
/// 7.6e-7. The residual add is where they may part: the integer form computes the ONNX `QLinearAdd`
/// formula in float (`rint((s_a·(a−z_a) + s_b·(b−z_b)) / s_c) + z_c`, what the GPU's epilogue does),
/// while ONNX Runtime's AVX2 kernel computes it in fixed point (XNNPack's method: 22-bit multipliers
/// and a shift), which can land one step away on values next to a rounding boundary. On the INT8
/// file calibrated on foolbox's 20 photos (the build without `../shared`, 2026-12-01) every layer
/// of foolbox's first photo was equal bit for bit up to `layer4.0`'s add, where 3 of 100,352 values
/// were one step apart; the later layers carried that to 1,690 values (at most 2 steps) by
/// `layer4.2`'s add, and to relative errors of 2.0e-3–5.6e-3 on 18 of the 20 photos (6e-7 and 8e-7 on
/// the other two). A real fault (a wrong scale, zero point, bias or layout) gives errors of 0.1 and
/// more.
pub const MAX_REL_ERR: f64 = 1e-2;

/// Runs `photos` through ONNX Runtime and through [`QNet::forward`]; asserts the integer form reproduces
/// ONNX Runtime's logits (relative error ≤ [`MAX_REL_ERR`], same top-1). Returns the worst error.
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
        assert!(e <= MAX_REL_ERR, "{}: integer form off by {e}", p.display());
        worst = worst.max(e);
    }
    worst
}

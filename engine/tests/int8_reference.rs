#![cfg(feature = "ort")]
//! The integer path (what the GPU's int8 tensor cores run) against ONNX Runtime on the built INT8
//! variant, when `models/resnet50-int8.onnx` exists (`./x run` builds it; the variant end-to-end test
//! runs the same check on the INT8 file it builds, so CI always covers it).

mod common;

use std::path::{Path, PathBuf};

#[test]
fn integer_path_matches_onnx_runtime_on_the_int8_variant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let file = root.join("models/resnet50-int8.onnx");
    if !file.exists() {
        eprintln!(
            "skipping: {} not built (optimize_e2e covers the check)",
            file.display()
        );
        return;
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap());
    let mut photos: Vec<PathBuf> = std::fs::read_dir(home.join(".cache/inferscope/foolbox-images"))
        .expect("foolbox photos (./x setup)")
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    photos.truncate(3);
    let worst = common::int8_check::check(&file, &photos);
    println!("worst relative error: {worst:.2e}");
}

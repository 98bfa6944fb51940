//! The real models and photos the tests read: `INFERSCOPE_MODELS` (else `models/`), foolbox's photos
//! (`INFERSCOPE_FOOLBOX`, else the `./x setup` cache), and a variant loaded on the CPU backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::backend::{BackendKind, BackendOptions, Model};
use engine::loader::backend_for;
use engine::variants::VARIANTS;

pub fn models_dir() -> PathBuf {
    std::env::var_os("INFERSCOPE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

/// foolbox's 20 labelled ImageNet photos (`imagenet_NN_LABEL.jpg`), as `./x setup` caches them.
pub fn foolbox_dir() -> PathBuf {
    std::env::var_os("INFERSCOPE_FOOLBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/inferscope/foolbox-images")
        })
}

/// One of foolbox's photos, preprocessed to the network's input.
pub fn foolbox(name: &str) -> Vec<f32> {
    let dir = foolbox_dir();
    let bytes = std::fs::read(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e} (run `./x setup`)", dir.join(name).display()));
    engine::preprocess::preprocess(&bytes)
        .expect("preprocess")
        .data
}

/// The variant in `file` on the CPU backend, 2 threads.
pub fn load_cpu(file: &str) -> Arc<dyn Model> {
    let spec = VARIANTS.iter().find(|v| v.file == file).expect("a variant");
    let backend = backend_for(
        BackendKind::Cpu,
        &BackendOptions {
            intra_threads: 2,
            device: 0,
        },
    )
    .expect("cpu backend");
    backend
        .load(spec, &models_dir().join(file))
        .expect("load the variant")
}

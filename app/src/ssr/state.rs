//! The server's state: the variants loaded from the models directory, the class names, the settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::backend::{backend_for, Backend, BackendKind, BackendOptions, Model};
use engine::batcher::{BatchPlan, Batcher};
use engine::labels::Labels;
use engine::variants::{Precision, VariantSpec, VARIANTS};

use crate::catalog::{Availability, VariantInfo};

/// Where the models are and how to run them.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Folder with `labels.json` and the variants' ONNX files.
    pub models_dir: PathBuf,
    /// Engine that runs the variants.
    pub backend: BackendKind,
    pub backend_options: BackendOptions,
    /// Dynamic batching of each ready variant (every inference goes through its variant's queue).
    pub batching: BatchPlan,
    /// Folder of the sample photos the page offers (served at `/samples/`), if any.
    pub samples_dir: Option<PathBuf>,
}

impl StateConfig {
    /// The embedded CPU engine on `models_dir`, with the backend's default settings.
    pub fn cpu(models_dir: impl Into<PathBuf>) -> Self {
        StateConfig {
            models_dir: models_dir.into(),
            backend: BackendKind::Cpu,
            backend_options: BackendOptions::default(),
            batching: BatchPlan::default(),
            samples_dir: None,
        }
    }
}

/// What became of one variant at start-up.
#[derive(Clone)]
pub enum VariantLoad {
    Ready(Arc<dyn Model>),
    /// Its file is not in the models directory (not built yet).
    Missing,
    /// The file exists but the backend refused it, or the backend itself is unavailable.
    Failed(String),
}

/// One variant of the registry and what became of it.
#[derive(Clone)]
pub struct LoadedVariant {
    pub spec: &'static VariantSpec,
    pub path: PathBuf,
    pub load: VariantLoad,
}

/// Everything the request handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: StateConfig,
    variants: Vec<LoadedVariant>,
    labels: Option<Labels>,
    /// One per entry of `variants`: the queue of a ready variant.
    batchers: Vec<Option<Batcher>>,
}

impl AppState {
    /// Loads every variant whose file is in the models directory. Never fails as a whole: a missing
    /// file, a file the backend rejects or an unavailable backend is recorded per variant and shown.
    /// Blocking (creating a session takes about a second per model).
    pub fn load(config: StateConfig) -> Self {
        let labels = load_labels(&config.models_dir);
        let present: Vec<bool> = VARIANTS
            .iter()
            .map(|spec| config.models_dir.join(spec.file).is_file())
            .collect();
        let backend = if present.iter().any(|&p| p) {
            Some(backend_for(config.backend, &config.backend_options).map_err(|e| e.to_string()))
        } else {
            None
        };
        let variants = VARIANTS
            .iter()
            .zip(present)
            .map(|(spec, present)| {
                let path = config.models_dir.join(spec.file);
                let load = match (&backend, present) {
                    (_, false) | (None, _) => VariantLoad::Missing,
                    (Some(Err(e)), true) => VariantLoad::Failed(e.clone()),
                    (Some(Ok(backend)), true) => {
                        match load_and_warm_up(backend.as_ref(), spec, &path) {
                            Ok(model) => VariantLoad::Ready(model),
                            Err(e) => VariantLoad::Failed(e.to_string()),
                        }
                    }
                };
                if let VariantLoad::Failed(e) = &load {
                    tracing::warn!(variant = spec.id, error = %e, "could not load");
                }
                LoadedVariant { spec, path, load }
            })
            .collect();
        Self::from_parts(config, variants, labels)
    }

    /// A state from already loaded variants (tests, or callers with their own loading).
    pub fn from_parts(
        config: StateConfig,
        variants: Vec<LoadedVariant>,
        labels: Option<Labels>,
    ) -> Self {
        let batchers = variants
            .iter()
            .map(|v| match &v.load {
                VariantLoad::Ready(model) => Some(config.batching.start(Arc::clone(model))),
                _ => None,
            })
            .collect();
        AppState {
            inner: Arc::new(Inner {
                config,
                variants,
                labels,
                batchers,
            }),
        }
    }

    /// The variant with this id and, when it is ready, its batcher.
    pub fn variant(&self, id: &str) -> Option<(&LoadedVariant, Option<&Batcher>)> {
        let i = self.inner.variants.iter().position(|v| v.spec.id == id)?;
        Some((&self.inner.variants[i], self.inner.batchers[i].as_ref()))
    }

    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    /// Every variant of the registry, in registry order.
    pub fn variants(&self) -> &[LoadedVariant] {
        &self.inner.variants
    }

    /// The variants that can run.
    pub fn ready(&self) -> impl Iterator<Item = (&'static VariantSpec, &Arc<dyn Model>)> {
        self.inner.variants.iter().filter_map(|v| match &v.load {
            VariantLoad::Ready(m) => Some((v.spec, m)),
            _ => None,
        })
    }

    /// Name of ImageNet class `index`, or `class N` when `labels.json` is missing.
    pub fn class_name(&self, index: usize) -> String {
        match &self.inner.labels {
            Some(labels) => labels.name(index).to_string(),
            None => format!("class {index}"),
        }
    }

    /// The variant list as the page shows it.
    pub fn variant_infos(&self) -> Vec<VariantInfo> {
        let backend = self.inner.config.backend.to_string();
        self.inner
            .variants
            .iter()
            .map(|v| VariantInfo {
                id: v.spec.id.into(),
                title: v.spec.title.into(),
                summary: v.spec.summary.into(),
                precision: match v.spec.precision {
                    Precision::Fp32 => "FP32",
                    Precision::Int8 => "INT8",
                }
                .into(),
                availability: match &v.load {
                    VariantLoad::Ready(model) => Availability::Ready {
                        backend: model.location().unwrap_or_else(|| backend.clone()),
                    },
                    VariantLoad::Missing => Availability::Missing {
                        path: v.path.display().to_string(),
                    },
                    VariantLoad::Failed(error) => Availability::Failed {
                        error: error.clone(),
                    },
                },
            })
            .collect()
    }
}

/// Loads a variant and runs it once, so that a model that cannot run fails here rather than on a
/// user's photo, and the first photo is not slowed by the runtime's first-run set-up.
fn load_and_warm_up(
    backend: &dyn Backend,
    spec: &VariantSpec,
    path: &Path,
) -> engine::Result<Arc<dyn Model>> {
    let start = std::time::Instant::now();
    let model = backend.load(spec, path)?;
    let logits = model.run(&vec![0.0; engine::INPUT_LEN], 1)?;
    if logits.len() != engine::NUM_CLASSES {
        return Err(engine::Error::Shape(format!(
            "{} answers {} values per image instead of {}",
            path.display(),
            logits.len(),
            engine::NUM_CLASSES
        )));
    }
    tracing::info!(variant = spec.id, path = %path.display(), took = ?start.elapsed(), "loaded");
    Ok(model)
}

fn load_labels(models_dir: &Path) -> Option<Labels> {
    let path = models_dir.join("labels.json");
    if !path.is_file() {
        tracing::warn!(path = %path.display(), "no class names: answers will show class indices");
        return None;
    }
    match Labels::load(&path) {
        Ok(labels) => Some(labels),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the class names");
            None
        }
    }
}

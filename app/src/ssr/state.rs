//! The server's state: the loaded variants with their batchers, the class names, the settings. The
//! loading itself is the engine's ([`engine::loader`]).

use std::path::PathBuf;
use std::sync::Arc;

use engine::backend::{BackendKind, BackendOptions, Model};
use engine::batcher::{BatchPlan, Batcher};
use engine::labels::Labels;
use engine::loader::{LoadPlan, Placement};
pub use engine::loader::{LoadedVariant, VariantLoad};
use engine::variants::{Precision, VariantSpec};

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

    /// Every variant on `backend` from `models_dir` (the serving config adds per-variant placements).
    pub fn plan(&self) -> LoadPlan {
        LoadPlan {
            default: Placement::local(self.backend),
            options: self.backend_options.clone(),
            ..LoadPlan::new(&self.models_dir, self.backend)
        }
    }
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
    /// Loads every variant on `config.backend` from the models directory (see [`AppState::load_plan`]).
    pub fn load(config: StateConfig) -> Self {
        let plan = config.plan();
        Self::load_plan(config, &plan)
    }

    /// Loads every variant as `plan` places it, through the engine's one loader
    /// ([`engine::loader::load_all`]: one warm-up each). Never fails as a whole: a missing file, a
    /// file the backend rejects or an unavailable backend is recorded per variant and shown.
    /// Blocking (creating a session takes about a second per model).
    pub fn load_plan(config: StateConfig, plan: &LoadPlan) -> Self {
        let labels = engine::loader::labels(&plan.models_dir);
        let variants = engine::loader::load_all(plan);
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
                    VariantLoad::Ready(model) => {
                        let info = model.info();
                        Availability::Ready {
                            backend: info.runs_on(),
                            info,
                        }
                    }
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

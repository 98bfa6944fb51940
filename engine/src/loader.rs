//! The one loader: places every variant of the registry on its backend, loads it once and warms it
//! up, whoever serves it (the web app, the KServe v2 / Vertex AI API, the tests).
//!
//! ## Design
//! A [`Placement`] says where one variant runs: a local backend (`cpu`, `cuda` with its GPU ordinal)
//! reading the variant's file from the models directory, or a remote KServe v2 / Vertex AI target; and
//! how many replicas answer it. A [`LoadPlan`] gives every variant its placement (a default, plus
//! per-variant exceptions from the serving config). [`load_all`] creates each backend once
//! ([`backend_for`], the one place that turns a name into an engine), loads every variant through it,
//! and warms each model up with [`warm_up`], so that a model that cannot run fails at start-up rather
//! than on a user's photo. It never fails as a whole: a missing file, a refused file or an unavailable
//! backend is recorded per variant ([`VariantLoad`]) and shown on the page.
//!
//! A backend asked for and missing (no GPU) is that variant's error, never a quiet CPU fallback —
//! unless the plan says [`Fallback::Cpu`]; then the variant runs on the CPU, logs why, and its
//! [`ModelInfo`](crate::backend::ModelInfo) says `cpu`, so the card stays true.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::{Backend, BackendKind, BackendOptions, Model, ModelInfo};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::variants::{VariantSpec, VARIANTS};

/// Where one variant runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The variant's file in the models directory, on this machine.
    Local {
        /// `cpu` or `cuda`.
        backend: BackendKind,
        /// GPU ordinal (cuda); the first of `replicas` consecutive GPUs.
        device: usize,
    },
    /// Another server (the models directory's file is not read).
    #[cfg(feature = "remote")]
    Remote {
        target: crate::remote::Target,
        options: crate::remote::RemoteOptions,
    },
}

/// Where one variant runs and how many copies answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub target: Target,
    /// Copies of the model; each request goes to the least busy one. On `cuda` replica `i` runs on
    /// GPU `device + i`; on `cpu` each replica is its own ONNX Runtime session. Give the variant's
    /// batcher at least as many `instances` to keep them all busy.
    pub replicas: usize,
}

impl Placement {
    /// One copy on a local backend (`cpu`, or `cuda` on GPU 0).
    pub fn local(backend: BackendKind) -> Self {
        Placement {
            target: Target::Local { backend, device: 0 },
            replicas: 1,
        }
    }

    /// The backend this placement asks for.
    pub fn backend(&self) -> BackendKind {
        match &self.target {
            Target::Local { backend, .. } => *backend,
            #[cfg(feature = "remote")]
            Target::Remote { target, .. } => match target {
                crate::remote::Target::Kserve { .. } => BackendKind::Kserve,
                crate::remote::Target::Vertex { .. } => BackendKind::Vertex,
            },
        }
    }
}

/// What happens when a local backend that was asked for is not there (no GPU, no `cuda` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// The variant fails to load with the backend's reason (the default: asking for a GPU and getting
    /// a CPU silently would make every number on the page lie).
    #[default]
    Error,
    /// The variant runs on the CPU instead, with a warning in the log; its card says `cpu`.
    Cpu,
}

impl std::str::FromStr for Fallback {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "error" | "none" => Ok(Fallback::Error),
            "cpu" => Ok(Fallback::Cpu),
            other => Err(Error::BackendUnavailable {
                backend: other.into(),
                reason: "unknown fallback (expected `error` or `cpu`)".into(),
            }),
        }
    }
}

/// Every variant's placement.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Folder with `labels.json` and the variants' ONNX files.
    pub models_dir: PathBuf,
    /// Placement of the variants `per_variant` does not name.
    pub default: Placement,
    /// Placements by variant id.
    pub per_variant: HashMap<String, Placement>,
    /// Settings of the local backends (threads; the device comes from the placement).
    pub options: BackendOptions,
    pub fallback: Fallback,
}

impl LoadPlan {
    /// Every variant on `backend`, from `models_dir`.
    pub fn new(models_dir: impl Into<PathBuf>, backend: BackendKind) -> Self {
        LoadPlan {
            models_dir: models_dir.into(),
            default: Placement::local(backend),
            per_variant: HashMap::new(),
            options: BackendOptions::default(),
            fallback: Fallback::Error,
        }
    }

    /// The placement of variant `id`.
    pub fn placement(&self, id: &str) -> &Placement {
        self.per_variant.get(id).unwrap_or(&self.default)
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
    /// Its file in the models directory (read by local backends only).
    pub path: PathBuf,
    pub load: VariantLoad,
}

impl LoadedVariant {
    /// What the model says it is, when it is loaded.
    pub fn info(&self) -> Option<ModelInfo> {
        match &self.load {
            VariantLoad::Ready(model) => Some(model.info()),
            _ => None,
        }
    }
}

/// Local backends created so far, per (backend, device): the engine, or why it could not start.
type BackendCache = HashMap<(BackendKind, usize), std::result::Result<Arc<dyn Backend>, String>>;

/// The backend of a placement's replica `replica`: the one place that turns a placement into an
/// engine. Local backends are created once per (backend, device) and shared through `cache`.
fn backend(
    placement: &Placement,
    replica: usize,
    options: &BackendOptions,
    cache: &mut BackendCache,
) -> std::result::Result<Arc<dyn Backend>, String> {
    match &placement.target {
        Target::Local { backend, device } => {
            let device = if *backend == BackendKind::Cuda {
                device + replica
            } else {
                0
            };
            cache
                .entry((*backend, device))
                .or_insert_with(|| {
                    let options = BackendOptions {
                        device,
                        ..options.clone()
                    };
                    backend_for(*backend, &options).map_err(|e| e.to_string())
                })
                .clone()
        }
        #[cfg(feature = "remote")]
        Target::Remote { target, options } => Ok(Arc::new(crate::remote::RemoteBackend::new(
            target.clone(),
            options.clone(),
        ))),
    }
}

/// Loads every variant of the registry as `plan` places it, each warmed up ([`warm_up`]). Blocking
/// (an ONNX Runtime session takes about a second per model, a GPU model a few). Never fails as a whole.
pub fn load_all(plan: &LoadPlan) -> Vec<LoadedVariant> {
    let mut cache = HashMap::new();
    VARIANTS
        .iter()
        .map(|spec| {
            let path = plan.models_dir.join(spec.file);
            let placement = plan.placement(spec.id);
            let load = load_one(spec, &path, placement, plan, &mut cache);
            match &load {
                VariantLoad::Ready(model) => {
                    let info = model.info();
                    tracing::info!(
                        variant = spec.id,
                        backend = %info.backend,
                        device = info.device,
                        path = info.path,
                        at = info.location,
                        "ready"
                    );
                }
                VariantLoad::Failed(e) => {
                    tracing::warn!(variant = spec.id, error = %e, "could not load")
                }
                VariantLoad::Missing => {
                    tracing::info!(variant = spec.id, path = %path.display(), "not built")
                }
            }
            LoadedVariant { spec, path, load }
        })
        .collect()
}

fn load_one(
    spec: &'static VariantSpec,
    path: &Path,
    placement: &Placement,
    plan: &LoadPlan,
    cache: &mut BackendCache,
) -> VariantLoad {
    let remote = placement.backend().is_remote();
    if !remote && !path.is_file() {
        return VariantLoad::Missing;
    }
    let mut replicas = Vec::new();
    for replica in 0..placement.replicas.max(1) {
        let backend = match backend(placement, replica, &plan.options, cache) {
            Ok(b) => b,
            Err(e) if plan.fallback == Fallback::Cpu && !remote => {
                tracing::warn!(variant = spec.id, error = %e, "falling back to the CPU (--fallback cpu)");
                match backend(&Placement::local(BackendKind::Cpu), 0, &plan.options, cache) {
                    Ok(b) => b,
                    Err(cpu) => return VariantLoad::Failed(format!("{e}; CPU fallback: {cpu}")),
                }
            }
            Err(e) => return VariantLoad::Failed(e),
        };
        let start = std::time::Instant::now();
        let model = match backend.load(spec, path) {
            Ok(m) => m,
            Err(e) => return VariantLoad::Failed(e.to_string()),
        };
        match warm_up(model.as_ref()) {
            Ok(()) => {}
            // A remote that is down now may come up later: keep the variant, say so in the log; its
            // requests fail with the remote's error until then.
            Err(e) if remote => {
                tracing::warn!(variant = spec.id, error = %e, "remote not ready yet")
            }
            Err(e) => return VariantLoad::Failed(e.to_string()),
        }
        tracing::debug!(variant = spec.id, replica, took = ?start.elapsed(), "loaded");
        replicas.push(model);
    }
    if replicas.len() == 1 {
        VariantLoad::Ready(replicas.pop().expect("one replica"))
    } else {
        VariantLoad::Ready(Arc::new(Replicas::new(replicas)))
    }
}

/// The one warm-up: a remote is asked whether it is ready ([`Model::ready`]); a local model runs one
/// zero image, so that a model that cannot run fails here and the first photo is not slowed by the
/// runtime's first-run set-up (a GPU model also builds its batch-1 graph).
pub fn warm_up(model: &dyn Model) -> Result<()> {
    if model.info().backend.is_remote() {
        return model.ready();
    }
    let logits = model.run(&vec![0.0; crate::INPUT_LEN], 1)?;
    if logits.len() != crate::NUM_CLASSES {
        return Err(Error::Shape(format!(
            "{} answers {} values per image instead of {}",
            model.spec().id,
            logits.len(),
            crate::NUM_CLASSES
        )));
    }
    Ok(())
}

/// The class names in `models_dir/labels.json`, or `None` (logged) when they cannot be read: answers
/// then show class indices.
pub fn labels(models_dir: &Path) -> Option<Labels> {
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

/// Several copies of one variant (one per GPU, or several sessions): each call goes to the copy
/// with the fewest calls in flight.
pub struct Replicas {
    models: Vec<(Arc<dyn Model>, AtomicUsize)>,
}

impl Replicas {
    /// `models` must hold at least one model, all of the same variant.
    pub fn new(models: Vec<Arc<dyn Model>>) -> Self {
        assert!(!models.is_empty(), "at least one replica");
        Replicas {
            models: models
                .into_iter()
                .map(|m| (m, AtomicUsize::new(0)))
                .collect(),
        }
    }

    /// The replicas' own descriptions.
    pub fn infos(&self) -> Vec<ModelInfo> {
        self.models.iter().map(|(m, _)| m.info()).collect()
    }
}

impl Model for Replicas {
    fn spec(&self) -> &VariantSpec {
        self.models[0].0.spec()
    }

    fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        let (model, busy) = self
            .models
            .iter()
            .min_by_key(|(_, busy)| busy.load(Ordering::Relaxed))
            .expect("at least one replica");
        busy.fetch_add(1, Ordering::Relaxed);
        let out = model.run(input, batch);
        busy.fetch_sub(1, Ordering::Relaxed);
        out
    }

    fn explains(&self) -> std::result::Result<(), String> {
        self.models.iter().try_for_each(|(m, _)| m.explains())
    }

    fn run_explained(
        &self,
        input: &[f32],
        batch: usize,
    ) -> Result<(Vec<f32>, crate::cam::Explained)> {
        let (model, busy) = self
            .models
            .iter()
            .min_by_key(|(_, busy)| busy.load(Ordering::Relaxed))
            .expect("at least one replica");
        busy.fetch_add(1, Ordering::Relaxed);
        let out = model.run_explained(input, batch);
        busy.fetch_sub(1, Ordering::Relaxed);
        out
    }

    fn info(&self) -> ModelInfo {
        let infos = self.infos();
        let mut info = infos[0].clone();
        let devices: Vec<&str> = infos.iter().map(|i| i.device.as_str()).collect();
        info.device = format!("{} replicas: {}", infos.len(), devices.join(", "));
        info
    }

    fn ready(&self) -> Result<()> {
        self.models.iter().try_for_each(|(m, _)| m.ready())
    }
}

/// The backend called `name` (`cpu`, `cuda`/`gpu`), or a clear error: an unknown name, a backend this
/// build or machine cannot provide, or a remote one (which needs its endpoint: [`Target::Remote`]).
pub fn backend_for_name(name: &str, opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    backend_for(name.parse()?, opts)
}

/// The backend of this kind, or a clear error if this build or machine cannot provide it.
pub fn backend_for(kind: BackendKind, opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    match kind {
        BackendKind::Cpu => cpu_backend(opts),
        BackendKind::Cuda => crate::cuda::backend(opts),
        BackendKind::Kserve | BackendKind::Vertex => Err(Error::BackendUnavailable {
            backend: kind.to_string(),
            reason:
                "a remote backend needs its endpoint (a `[variants.<id>]` table with `url`, or \
                     `project`/`region`/`endpoint`: docs/serving.md)"
                    .into(),
        }),
    }
}

#[cfg(feature = "ort")]
fn cpu_backend(opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(crate::cpu::CpuBackend::new(opts)?))
}

#[cfg(not(feature = "ort"))]
fn cpu_backend(_: &BackendOptions) -> Result<Arc<dyn Backend>> {
    Err(Error::BackendUnavailable {
        backend: "cpu".into(),
        reason: "this build of inferscope-engine lacks the `ort` feature".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_asked_for_and_missing_is_the_variants_error() {
        // A folder where every variant file exists (empty files: the backend must refuse them or be
        // unavailable, never silently run something else).
        let dir = std::env::temp_dir().join(format!("inferscope-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for v in &VARIANTS {
            std::fs::write(dir.join(v.file), b"").unwrap();
        }
        let plan = LoadPlan::new(&dir, BackendKind::Cuda);
        let loaded = load_all(&plan);
        assert_eq!(loaded.len(), VARIANTS.len());
        for v in &loaded {
            match &v.load {
                VariantLoad::Failed(e) => assert!(
                    e.contains("cuda") || e.contains("invalid model"),
                    "{}: {e}",
                    v.spec.id
                ),
                VariantLoad::Missing => panic!("{}: the file is there", v.spec.id),
                VariantLoad::Ready(m) => {
                    assert_eq!(m.info().backend, BackendKind::Cuda, "{}", v.spec.id)
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_missing_and_placements_default() {
        let mut plan = LoadPlan::new("/nonexistent/inferscope", BackendKind::Cpu);
        plan.per_variant
            .insert(VARIANTS[1].id.into(), Placement::local(BackendKind::Cuda));
        assert_eq!(plan.placement(VARIANTS[0].id).backend(), BackendKind::Cpu);
        assert_eq!(plan.placement(VARIANTS[1].id).backend(), BackendKind::Cuda);
        for v in load_all(&plan) {
            assert!(matches!(v.load, VariantLoad::Missing), "{}", v.spec.id);
        }
        assert_eq!("cpu".parse::<Fallback>().unwrap(), Fallback::Cpu);
        assert!("gpu".parse::<Fallback>().is_err());
    }
}

//! The one loader: places every variant of the registry on its backend, loads it once and warms it
//! up, whoever serves it (the web app, the KServe v2 / Vertex AI API, the tests).
//!
//! ## Design
//! A [`Placement`] says where one variant runs: a local backend (`cpu`, `cuda` with its GPU ordinal)
//! reading the variant's file from the models directory, or a remote KServe v2 / Vertex AI target; and
//! how many replicas answer it (on `cuda`, on which GPUs: `serve --gpus all|0,1,…` is a [`GpuSelection`];
//! replica `i` runs on the placement's GPU `i mod n`, so several replicas per GPU are several executors
//! there, each with its own stream and buffers). A [`LoadPlan`] gives every variant its placement (a default, plus
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
use std::sync::atomic::{AtomicU64, Ordering};
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
        /// GPU ordinals (cuda) the replicas run on in turn: replica `i` on `devices[i % len]`.
        /// `[0]` on the CPU.
        devices: Vec<usize>,
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
    /// GPU `devices[i % devices.len()]`; on `cpu` each replica is its own ONNX Runtime session. Give
    /// the variant's batcher at least as many `instances` to keep them all busy.
    pub replicas: usize,
}

impl Placement {
    /// One copy on a local backend (`cpu`, or `cuda` on GPU 0).
    pub fn local(backend: BackendKind) -> Self {
        Placement {
            target: Target::Local {
                backend,
                devices: vec![0],
            },
            replicas: 1,
        }
    }

    /// `per_gpu` copies on each of `gpus` (cuda), interleaved (GPU 0, GPU 1, GPU 0, GPU 1, …), so that
    /// the least-busy choice, which takes the first of equally busy replicas, spreads over the GPUs
    /// before it doubles up on one.
    pub fn gpus(gpus: &[usize], per_gpu: usize) -> Self {
        Placement {
            target: Target::Local {
                backend: BackendKind::Cuda,
                devices: gpus.to_vec(),
            },
            replicas: gpus.len().max(1) * per_gpu.max(1),
        }
    }

    /// The device of replica `replica` (a GPU ordinal on `cuda`; 0 elsewhere).
    pub fn device_of(&self, replica: usize) -> usize {
        match &self.target {
            Target::Local {
                backend: BackendKind::Cuda,
                devices,
            } if !devices.is_empty() => devices[replica % devices.len()],
            _ => 0,
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

/// Which GPUs `serve --gpus` places the variants on: `all`, or a list of ordinals (`0,1`, `1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// Every GPU the driver reports.
    All,
    /// These ordinals, in this order (no repeats).
    List(Vec<usize>),
}

impl std::str::FromStr for GpuSelection {
    /// What is wrong with the text (clap prints it after the flag's name).
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = |why: String| format!("`{s}`: {why} (expected `all` or GPU ordinals like `0,1`)");
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(GpuSelection::All);
        }
        let mut list: Vec<usize> = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let n: usize = part
                .parse()
                .map_err(|_| bad(format!("`{part}` is not a GPU ordinal")))?;
            if list.contains(&n) {
                return Err(bad(format!("GPU {n} is listed twice")));
            }
            list.push(n);
        }
        Ok(GpuSelection::List(list))
    }
}

impl GpuSelection {
    /// The ordinals on a machine with `count` GPUs, or why not: none there, or one listed that the
    /// machine lacks.
    pub fn resolve(&self, count: usize) -> Result<Vec<usize>> {
        let err = |reason: String| Error::BackendUnavailable {
            backend: "cuda".into(),
            reason,
        };
        if count == 0 {
            return Err(err(
                "--gpus: this machine has no GPU the CUDA driver can see".into(),
            ));
        }
        match self {
            GpuSelection::All => Ok((0..count).collect()),
            GpuSelection::List(list) => match list.iter().find(|&&g| g >= count) {
                Some(g) => Err(err(format!(
                    "--gpus: GPU {g} asked for, this machine has {count} (ordinals 0–{})",
                    count - 1
                ))),
                None => Ok(list.clone()),
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
    /// Taken out of service while the server runs (Triton's model-repository unload).
    Unloaded,
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
        Target::Local { backend, .. } => {
            let device = placement.device_of(replica);
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
    Loader::new(plan.clone()).load_all()
}

/// Loads variants as one plan places them, at start-up and again later (a variant whose file appears
/// or changes while the server runs: the model repository's load path). Each local backend is created
/// once, on first use, and shared by every variant and every reload.
pub struct Loader {
    plan: LoadPlan,
    cache: std::sync::Mutex<BackendCache>,
}

impl Loader {
    pub fn new(plan: LoadPlan) -> Self {
        Loader {
            plan,
            cache: Default::default(),
        }
    }

    pub fn plan(&self) -> &LoadPlan {
        &self.plan
    }

    /// Every variant of the registry, in registry order ([`Loader::load`] each).
    pub fn load_all(&self) -> Vec<LoadedVariant> {
        VARIANTS.iter().map(|spec| self.load(spec)).collect()
    }

    /// One variant, warmed up ([`warm_up`]), or why not. Blocking; loads one at a time.
    pub fn load(&self, spec: &'static VariantSpec) -> LoadedVariant {
        let path = self.plan.models_dir.join(spec.file);
        let placement = self.plan.placement(spec.id);
        let load = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            load_one(spec, &path, placement, &self.plan, &mut cache)
        };
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
            VariantLoad::Unloaded => {}
        }
        LoadedVariant { spec, path, load }
    }
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
    let n = placement.replicas.max(1);
    // Each replica's backend first (created once per device and shared through `cache`).
    let mut backends = Vec::with_capacity(n);
    for replica in 0..n {
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
        backends.push(backend);
    }
    // Then the models: replicas on different GPUs load in parallel (a GPU model builds the graphs of
    // every batch bucket, seconds each), replicas on one device one after another (the per-layer
    // search times kernels on the device: a second search beside it would time the wrong thing).
    let mut by_device: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for replica in 0..n {
        by_device
            .entry(placement.device_of(replica))
            .or_default()
            .push(replica);
    }
    let mut loaded: Vec<(usize, ReplicaLoad)> = std::thread::scope(|s| {
        let backends = &backends;
        let handles: Vec<_> = by_device
            .values()
            .map(|replicas| {
                s.spawn(move || {
                    replicas
                        .iter()
                        .map(|&r| (r, load_replica(spec, path, backends[r].as_ref(), remote, r)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(0, Err("loading panicked".to_string()))])
            })
            .collect()
    });
    loaded.sort_by_key(|(r, _)| *r);
    let mut replicas = Vec::with_capacity(n);
    for (r, model) in loaded {
        match model {
            Ok(m) => replicas.push(m),
            Err(e) if n == 1 => return VariantLoad::Failed(e),
            Err(e) => {
                return VariantLoad::Failed(format!(
                    "replica {r} of {n} (device {}): {e}",
                    placement.device_of(r)
                ))
            }
        }
    }
    if replicas.len() == 1 {
        VariantLoad::Ready(replicas.pop().expect("one replica"))
    } else {
        VariantLoad::Ready(Arc::new(Replicas::new(replicas)))
    }
}

/// One replica loaded and warmed up, or why not.
type ReplicaLoad = std::result::Result<Arc<dyn Model>, String>;

/// Loads one replica through its backend and warms it up.
fn load_replica(
    spec: &'static VariantSpec,
    path: &Path,
    backend: &dyn Backend,
    remote: bool,
    replica: usize,
) -> ReplicaLoad {
    let start = std::time::Instant::now();
    let model = backend.load(spec, path).map_err(|e| e.to_string())?;
    match warm_up(model.as_ref()) {
        Ok(()) => {}
        // A remote that is down now may come up later: keep the variant, say so in the log; its
        // requests fail with the remote's error until then.
        Err(e) if remote => {
            tracing::warn!(variant = spec.id, error = %e, "remote not ready yet")
        }
        Err(e) => return Err(e.to_string()),
    }
    tracing::debug!(variant = spec.id, replica, took = ?start.elapsed(), "loaded");
    Ok(model)
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
    // A model that explains also answers with its feature map (another set of outputs of the same
    // run): warm that path too, so the page's first photo (maps are on by default) is not the one
    // that pays its first-run set-up.
    if model.explains().is_ok() {
        model.run_explained(&vec![0.0; crate::INPUT_LEN], 1)?;
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

/// Several copies of one variant (one per GPU, several executors on one GPU, or several sessions):
/// each call goes to the copy with the fewest calls in flight ([`least_busy`]), chosen and counted
/// under one lock so that two calls arriving together never pick the same idle copy.
pub struct Replicas {
    models: Vec<Arc<dyn Model>>,
    busy: std::sync::Mutex<Vec<usize>>,
    calls: Vec<AtomicU64>,
}

/// The index of the first of the least busy replicas (`busy[i]` = calls in flight on replica `i`).
/// Ties go to the lowest index: with replicas interleaved over GPUs ([`Placement::gpus`]) an idle
/// GPU is used before a second executor on a busy one.
///
/// # Panics
/// If `busy` is empty.
pub fn least_busy(busy: &[usize]) -> usize {
    assert!(!busy.is_empty(), "at least one replica");
    let mut best = 0;
    for (i, &b) in busy.iter().enumerate() {
        if b < busy[best] {
            best = i;
        }
    }
    best
}

/// Marks a replica free again when its call ends (also when it panics).
struct InFlight<'a> {
    busy: &'a std::sync::Mutex<Vec<usize>>,
    index: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy[self.index] -= 1;
    }
}

impl Replicas {
    /// `models` must hold at least one model, all of the same variant.
    pub fn new(models: Vec<Arc<dyn Model>>) -> Self {
        assert!(!models.is_empty(), "at least one replica");
        Replicas {
            busy: std::sync::Mutex::new(vec![0; models.len()]),
            calls: models.iter().map(|_| AtomicU64::new(0)).collect(),
            models,
        }
    }

    /// The replicas' own descriptions.
    pub fn infos(&self) -> Vec<ModelInfo> {
        self.models.iter().map(|m| m.info()).collect()
    }

    /// Calls each replica has taken so far.
    pub fn calls(&self) -> Vec<u64> {
        self.calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `f` on the least busy replica.
    fn on_least_busy<T>(&self, f: impl FnOnce(&dyn Model) -> Result<T>) -> Result<T> {
        let index = {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let i = least_busy(&busy);
            busy[i] += 1;
            i
        };
        let _in_flight = InFlight {
            busy: &self.busy,
            index,
        };
        self.calls[index].fetch_add(1, Ordering::Relaxed);
        f(self.models[index].as_ref())
    }
}

impl Model for Replicas {
    fn spec(&self) -> &VariantSpec {
        self.models[0].spec()
    }

    fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.on_least_busy(|m| m.run(input, batch))
    }

    /// Each replica's own byte path (a GPU normalizes on the device).
    fn run_u8(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        self.on_least_busy(|m| m.run_u8(pixels, batch))
    }

    /// Each replica's own gathered byte path (see [`Model::run_u8_parts`]).
    fn run_u8_parts(&self, parts: &[&[u8]], batch: usize) -> Result<Vec<f32>> {
        self.on_least_busy(|m| m.run_u8_parts(parts, batch))
    }

    fn explains(&self) -> std::result::Result<(), String> {
        self.models.iter().try_for_each(|m| m.explains())
    }

    fn run_explained(
        &self,
        input: &[f32],
        batch: usize,
    ) -> Result<(Vec<f32>, crate::cam::Explained)> {
        self.on_least_busy(|m| m.run_explained(input, batch))
    }

    /// Each replica's own byte path, as for [`Model::run_u8`].
    fn run_u8_explained(
        &self,
        pixels: &[u8],
        batch: usize,
    ) -> Result<(Vec<f32>, crate::cam::Explained)> {
        self.on_least_busy(|m| m.run_u8_explained(pixels, batch))
    }

    fn traces(&self) -> std::result::Result<(), String> {
        self.models.iter().try_for_each(|m| m.traces())
    }

    fn run_traced(&self, input: &[f32]) -> Result<(Vec<f32>, Vec<crate::drift::Activation>)> {
        self.on_least_busy(|m| m.run_traced(input))
    }

    /// The first replica's description; `device` says how many replicas run where, e.g.
    /// `4 replicas: 2 × NVIDIA H200 (GPU 0), 2 × NVIDIA H200 (GPU 1)`.
    fn info(&self) -> ModelInfo {
        let infos = self.infos();
        let mut info = infos[0].clone();
        info.device = describe_replicas(infos.iter().map(|i| i.device.as_str()));
        info
    }

    fn ready(&self) -> Result<()> {
        self.models.iter().try_for_each(|m| m.ready())
    }
}

/// `N replicas: a, 2 × b` from the replicas' devices, in order of first appearance.
pub fn describe_replicas<'a>(devices: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    for d in devices {
        total += 1;
        match counts.iter_mut().find(|(name, _)| *name == d) {
            Some((_, n)) => *n += 1,
            None => counts.push((d, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(d, n)| {
            if *n == 1 {
                d.to_string()
            } else {
                format!("{n} × {d}")
            }
        })
        .collect();
    format!("{total} replicas: {}", parts.join(", "))
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
                VariantLoad::Missing | VariantLoad::Unloaded => {
                    panic!("{}: the file is there", v.spec.id)
                }
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

    #[test]
    fn gpus_parse_and_resolve_with_clear_errors() {
        assert_eq!("all".parse::<GpuSelection>().unwrap(), GpuSelection::All);
        assert_eq!("ALL".parse::<GpuSelection>().unwrap(), GpuSelection::All);
        assert_eq!(
            "0,1".parse::<GpuSelection>().unwrap(),
            GpuSelection::List(vec![0, 1])
        );
        assert_eq!(
            " 3 , 1 ".parse::<GpuSelection>().unwrap(),
            GpuSelection::List(vec![3, 1])
        );
        for (bad, why) in [
            ("", "is not a GPU ordinal"),
            ("0,", "is not a GPU ordinal"),
            ("-1", "is not a GPU ordinal"),
            ("gpu0", "is not a GPU ordinal"),
            ("0,1,0", "GPU 0 is listed twice"),
        ] {
            let e = bad.parse::<GpuSelection>().unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("expected `all`"),
                "{bad}: {e}"
            );
        }
        assert_eq!(GpuSelection::All.resolve(2).unwrap(), vec![0, 1]);
        assert_eq!(GpuSelection::List(vec![1]).resolve(2).unwrap(), vec![1]);
        let e = GpuSelection::List(vec![0, 2])
            .resolve(2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPU 2 asked for, this machine has 2"), "{e}");
        let e = GpuSelection::All.resolve(0).unwrap_err().to_string();
        assert!(e.contains("no GPU"), "{e}");
    }

    #[test]
    fn replicas_interleave_over_gpus_and_the_least_busy_is_chosen() {
        let p = Placement::gpus(&[0, 1], 2);
        assert_eq!(p.replicas, 4);
        assert_eq!(p.backend(), BackendKind::Cuda);
        let devices: Vec<usize> = (0..4).map(|r| p.device_of(r)).collect();
        assert_eq!(devices, [0, 1, 0, 1]);
        assert_eq!(Placement::gpus(&[3], 1).device_of(0), 3);
        // The CPU has one "device" whatever the replica.
        assert_eq!(Placement::local(BackendKind::Cpu).device_of(5), 0);

        assert_eq!(least_busy(&[0]), 0);
        assert_eq!(least_busy(&[0, 0]), 0);
        assert_eq!(least_busy(&[1, 0]), 1);
        assert_eq!(least_busy(&[1, 1, 0, 0]), 2);
        assert_eq!(least_busy(&[2, 1, 1, 3]), 1);
        // Two batches in flight on GPU 0 and GPU 1 (replicas 0 and 1): the third goes to GPU 0's
        // second executor (replica 2), not behind a running batch.
        assert_eq!(least_busy(&[1, 1, 0, 0]), 2);

        assert_eq!(
            describe_replicas([
                "H200 (GPU 0)",
                "H200 (GPU 1)",
                "H200 (GPU 0)",
                "H200 (GPU 1)"
            ]),
            "4 replicas: 2 × H200 (GPU 0), 2 × H200 (GPU 1)"
        );
        assert_eq!(
            describe_replicas(["H200 (GPU 0)", "H200 (GPU 1)"]),
            "2 replicas: H200 (GPU 0), H200 (GPU 1)"
        );
    }

    /// Two real CPU sessions of the baseline as replicas: two calls at once go to both, and each
    /// replica answers the byte path like the model alone.
    #[cfg(feature = "ort")]
    #[test]
    fn two_calls_at_once_run_on_two_replicas() {
        let models = std::env::var_os("INFERSCOPE_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../models"));
        let path = models.join(VARIANTS[0].file);
        if !path.is_file() {
            println!("skipping: no {} (run ./x setup)", path.display());
            return;
        }
        let backend = backend_for(BackendKind::Cpu, &BackendOptions::default()).unwrap();
        let load = || backend.load(&VARIANTS[0], &path).unwrap();
        let alone = load();
        let replicas = Replicas::new(vec![load(), load()]);
        let pixels: Vec<u8> = (0..crate::preprocess::PIXELS_LEN)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let expected = alone.run_u8(&pixels, 1).unwrap();
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..2 {
                        assert_eq!(replicas.run_u8(&pixels, 1).unwrap(), expected);
                    }
                });
            }
        });
        let calls = replicas.calls();
        assert_eq!(calls.iter().sum::<u64>(), 4, "{calls:?}");
        assert!(calls.iter().all(|&c| c >= 1), "one replica idle: {calls:?}");
        assert_eq!(*replicas.busy.lock().unwrap(), [0, 0]);
        assert!(replicas.info().device.starts_with("2 replicas: "));
    }
}

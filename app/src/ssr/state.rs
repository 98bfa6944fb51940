//! The server's state: the loaded variants with their batchers, the class names, the settings. The
//! loading itself is the engine's ([`engine::loader`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use engine::backend::{BackendKind, BackendOptions, Model};
use engine::batcher::{BatchPlan, Batcher};
use engine::build_status::{BuildStatus, VariantState};
use engine::labels::Labels;
use engine::loader::{LoadPlan, Loader, Placement};
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
    /// The machines the page prices with (`[[machines]]` of the serving config); `None`: the
    /// defaults of [`crate::cost::default_machines`].
    pub machines: Option<Vec<crate::cost::Machine>>,
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
            machines: None,
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
///
/// The variants can change while the server runs: a variant file that appears (a background
/// `build-variants`) or is rebuilt is loaded through the same [`Loader`] as at start-up
/// ([`AppState::reload`]: the model repository's load path, called by [`AppState::watch_models`] or a
/// `POST /v2/repository/models/{id}/load`), and swapped in once it is warm; requests already queued
/// finish on the model they started with.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: StateConfig,
    labels: Option<Labels>,
    /// Places and loads every variant, at start-up and on reloads.
    loader: Loader,
    /// One per variant of the registry, in registry order.
    slots: RwLock<Vec<Slot>>,
    /// Held while a variant loads, so two reloads of one file never run side by side.
    loading: Mutex<()>,
    /// The last look at `build-status.json` and when it was taken ([`AppState::build_running`]).
    build_seen: Mutex<Option<(Instant, Option<BuildStatus>)>>,
    /// [`AppState::watch_models`] runs: a file the build has written is loaded within a few polls.
    watching: AtomicBool,
}

/// A variant, what became of it, and its queue when it is ready.
#[derive(Clone)]
struct Slot {
    variant: LoadedVariant,
    batcher: Option<Batcher>,
    /// The file as it was when it was last loaded (or found missing): what [`AppState::watch_models`]
    /// compares with.
    stamp: Option<FileStamp>,
}

/// A file's size and modification time: a rebuilt (renamed-into-place) file changes both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// How a [`AppState::reload`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Reloaded {
    /// The variant is ready (loaded now, or reloaded from a changed file).
    Ready,
    /// Its file is not in the models folder.
    Missing,
    /// The backend refused the file; `kept_previous`: the model loaded before still answers.
    Failed { error: String, kept_previous: bool },
    /// A remote variant: there is no file to load; the remote serves what it serves.
    Remote,
}

impl AppState {
    /// Loads every variant on `config.backend` from the models directory (see [`AppState::load_plan`]).
    pub fn load(config: StateConfig) -> Self {
        let plan = config.plan();
        Self::load_plan(config, &plan)
    }

    /// Loads every variant as `plan` places it, through the engine's one loader
    /// ([`engine::loader::Loader`]: one warm-up each). Never fails as a whole: a missing file, a
    /// file the backend rejects or an unavailable backend is recorded per variant and shown.
    /// Blocking (creating a session takes about a second per model).
    pub fn load_plan(config: StateConfig, plan: &LoadPlan) -> Self {
        let labels = engine::loader::labels(&plan.models_dir);
        let loader = Loader::new(plan.clone());
        let variants = loader.load_all();
        Self::assemble(config, loader, variants, labels)
    }

    /// A state from already loaded variants (tests, or callers with their own loading); later
    /// reloads place variants as `config` says.
    pub fn from_parts(
        config: StateConfig,
        variants: Vec<LoadedVariant>,
        labels: Option<Labels>,
    ) -> Self {
        let loader = Loader::new(config.plan());
        Self::assemble(config, loader, variants, labels)
    }

    fn assemble(
        config: StateConfig,
        loader: Loader,
        variants: Vec<LoadedVariant>,
        labels: Option<Labels>,
    ) -> Self {
        let slots = variants
            .into_iter()
            .map(|variant| Slot {
                batcher: batcher_for(&config, &variant),
                stamp: FileStamp::of(&variant.path),
                variant,
            })
            .collect();
        AppState {
            inner: Arc::new(Inner {
                config,
                labels,
                loader,
                slots: RwLock::new(slots),
                loading: Mutex::new(()),
                build_seen: Mutex::new(None),
                watching: AtomicBool::new(false),
            }),
        }
    }

    fn slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Slot>> {
        self.inner.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The variant with this id and, when it is ready, its batcher (as they are now: a reload
    /// later does not change what this returned).
    pub fn variant(&self, id: &str) -> Option<(LoadedVariant, Option<Batcher>)> {
        let slots = self.slots();
        let slot = slots.iter().find(|s| s.variant.spec.id == id)?;
        Some((slot.variant.clone(), slot.batcher.clone()))
    }

    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    /// Every variant of the registry, in registry order, as they are now.
    pub fn variants(&self) -> Vec<LoadedVariant> {
        self.slots().iter().map(|s| s.variant.clone()).collect()
    }

    /// Every variant with its batcher when it is ready, read together (one consistent moment).
    pub fn snapshot(&self) -> Vec<(LoadedVariant, Option<Batcher>)> {
        self.slots()
            .iter()
            .map(|s| (s.variant.clone(), s.batcher.clone()))
            .collect()
    }

    /// The variants that can run now.
    pub fn ready(&self) -> Vec<(&'static VariantSpec, Arc<dyn Model>)> {
        self.slots()
            .iter()
            .filter_map(|s| match &s.variant.load {
                VariantLoad::Ready(m) => Some((s.variant.spec, Arc::clone(m))),
                _ => None,
            })
            .collect()
    }

    /// Loads variant `id` again from its file (or its remote) through the start-up loader, warms it
    /// up, and swaps it in; the model it replaces finishes the requests already in its queue. A
    /// failed reload keeps a model that was answering. `None` for an id the registry does not know.
    /// Blocking (seconds): call it off the async runtime.
    pub fn reload(&self, id: &str) -> Option<Reloaded> {
        let spec = engine::variants::by_id(id)?;
        let _one_at_a_time = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner());
        let remote = self.inner.loader.plan().placement(id).backend().is_remote();
        let path = self.inner.loader.plan().models_dir.join(spec.file);
        let stamp = FileStamp::of(&path);
        let loaded = self.inner.loader.load(spec);
        let outcome = match &loaded.load {
            VariantLoad::Ready(_) if remote => Reloaded::Remote,
            VariantLoad::Ready(_) => Reloaded::Ready,
            VariantLoad::Missing | VariantLoad::Unloaded => Reloaded::Missing,
            VariantLoad::Failed(e) => Reloaded::Failed {
                error: e.clone(),
                kept_previous: false,
            },
        };
        let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
        let slot = slots.iter_mut().find(|s| s.variant.spec.id == id)?;
        slot.stamp = stamp;
        if let Reloaded::Failed { error, .. } = &outcome {
            if matches!(slot.variant.load, VariantLoad::Ready(_)) {
                tracing::warn!(variant = id, error = %error, "reload failed: the loaded model stays");
                return Some(Reloaded::Failed {
                    error: error.clone(),
                    kept_previous: true,
                });
            }
        }
        slot.batcher = batcher_for(&self.inner.config, &loaded);
        slot.variant = loaded;
        Some(outcome)
    }

    /// Takes variant `id` out of service (Triton's unload): new requests get "unloaded"; those in its
    /// queue finish. `false` for an id the registry does not know.
    pub fn unload(&self, id: &str) -> bool {
        let _one_at_a_time = self.inner.loading.lock().unwrap_or_else(|e| e.into_inner());
        let mut slots = self.inner.slots.write().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.iter_mut().find(|s| s.variant.spec.id == id) else {
            return false;
        };
        slot.variant.load = VariantLoad::Unloaded;
        slot.batcher = None;
        tracing::info!(variant = id, "unloaded");
        true
    }

    /// Polls the models folder every `every` and reloads each local variant whose file appeared or
    /// changed, once it has stayed the same for one more poll (Triton's `--model-control-mode=poll`).
    /// An unloaded variant stays unloaded until its file changes. The thread ends with the state.
    pub fn watch_models(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("models-watch".into())
            .spawn(move || {
                // A file seen changed on the last poll, with the stamp it had then.
                let mut pending: HashMap<&'static str, Option<FileStamp>> = HashMap::new();
                loop {
                    std::thread::sleep(every);
                    let Some(inner) = weak.upgrade() else { return };
                    let state = AppState { inner };
                    for (spec, seen, now) in state.changed_files() {
                        if pending.get(spec.id) == Some(&now) {
                            pending.remove(spec.id);
                            tracing::info!(variant = spec.id, "model file changed: loading it");
                            match state.reload(spec.id) {
                                Some(Reloaded::Failed { error, .. }) => {
                                    tracing::warn!(variant = spec.id, error = %error, "reload failed")
                                }
                                other => tracing::info!(variant = spec.id, outcome = ?other, "reloaded"),
                            }
                        } else if now != seen {
                            pending.insert(spec.id, now);
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => self.inner.watching.store(true, Ordering::Relaxed),
            Err(e) => tracing::error!(error = %e, "could not start watching the models folder"),
        }
    }

    /// The local variants whose file differs from when it was last loaded: (variant, stamp then,
    /// stamp now).
    fn changed_files(&self) -> Vec<(&'static VariantSpec, Option<FileStamp>, Option<FileStamp>)> {
        let plan = self.inner.loader.plan();
        self.slots()
            .iter()
            .filter(|s| !plan.placement(s.variant.spec.id).backend().is_remote())
            .filter_map(|s| {
                let now = FileStamp::of(&s.variant.path);
                (now != s.stamp).then_some((s.variant.spec, s.stamp, now))
            })
            .collect()
    }

    /// The running background build of the variants, if one is writing into the models folder. Every
    /// answer asks (to label its times), so the file is read at most once a second.
    pub fn build_running(&self) -> Option<BuildStatus> {
        let mut seen = self
            .inner
            .build_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &*seen {
            Some((at, status)) if at.elapsed() < Duration::from_secs(1) => status.clone(),
            _ => {
                let status = BuildStatus::read(&self.inner.config.models_dir)
                    .filter(BuildStatus::is_running);
                *seen = Some((Instant::now(), status.clone()));
                status
            }
        }
    }

    /// Name of ImageNet class `index`, or `class N` when `labels.json` is missing.
    pub fn class_name(&self, index: usize) -> String {
        match &self.inner.labels {
            Some(labels) => labels.name(index).to_string(),
            None => format!("class {index}"),
        }
    }

    /// The variant list as the page shows it: a variant not loaded yet says where the background
    /// build stands ([`BuildStatus::describe`]).
    pub fn variant_infos(&self) -> Vec<VariantInfo> {
        let build = BuildStatus::read(&self.inner.config.models_dir);
        self.slots()
            .iter()
            .map(|s| {
                let v = &s.variant;
                let building = build.as_ref().and_then(|b| b.describe(v.spec.id));
                VariantInfo {
                    id: v.spec.id.into(),
                    title: v.spec.title.into(),
                    summary: v.spec.summary.into(),
                    precision: match v.spec.precision {
                        Precision::Fp32 => "FP32",
                        Precision::Int8 => "INT8",
                    }
                    .into(),
                    availability: match (&v.load, building) {
                        (VariantLoad::Ready(model), _) => {
                            let info = model.info();
                            Availability::Ready {
                                backend: info.runs_on(),
                                info,
                            }
                        }
                        (VariantLoad::Missing, Some(status)) => Availability::Building {
                            file: v.spec.file.to_string(),
                            status,
                            running: build.as_ref().is_some_and(BuildStatus::is_running),
                        },
                        // Written by the build, not loaded yet: the watcher loads it within a few
                        // polls, and the page keeps asking until it has (else it would stop asking
                        // when the build says "written" and never see the card come alive).
                        (VariantLoad::Missing, None)
                            if self.inner.watching.load(Ordering::Relaxed)
                                && build
                                    .as_ref()
                                    .and_then(|b| b.variant(v.spec.id))
                                    .is_some_and(|b| b.state == VariantState::Written)
                                && v.path.is_file() =>
                        {
                            Availability::Building {
                                file: v.spec.file.to_string(),
                                status: "Written: the server is loading it.".into(),
                                running: true,
                            }
                        }
                        (VariantLoad::Missing, None) => Availability::Missing {
                            path: v.path.display().to_string(),
                        },
                        (VariantLoad::Unloaded, _) => Availability::Unloaded,
                        (VariantLoad::Failed(error), _) => Availability::Failed {
                            error: error.clone(),
                        },
                    },
                }
            })
            .collect()
    }
}

/// The queue of a ready variant.
fn batcher_for(config: &StateConfig, variant: &LoadedVariant) -> Option<Batcher> {
    match &variant.load {
        VariantLoad::Ready(model) => Some(config.batching.start(Arc::clone(model))),
        _ => None,
    }
}

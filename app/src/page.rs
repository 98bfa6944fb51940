//! The comparison page: drop a photo, see every variant's answer side by side.

use std::sync::Arc;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::burst::Burst;
use crate::catalog::{list_variants, Availability, VariantInfo};
use crate::classify::{classify, Prediction, VariantOutcome};
use crate::components::burst_panel::BurstPanel;
use crate::components::dropzone::DropZone;
use crate::components::run_summary::RunSummary;
use crate::components::samples::SamplePicker;
use crate::components::variant_card::VariantCard;
use crate::facts::{model_facts, FactsReport};
use crate::stats::LatencySamples;

/// Largest file the page accepts (a 50-megapixel JPEG is about 20 MB).
pub const MAX_UPLOAD_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// What the page is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Idle,
    Busy(&'static str),
    Failed(String),
    Done,
}

impl Phase {
    /// Short name for the `data-phase` attribute (tests and styling).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Busy(_) => "busy",
            Phase::Failed(_) => "failed",
            Phase::Done => "done",
        }
    }
}

/// The photo being classified.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub name: String,
    /// Size in bytes, once known.
    pub bytes: Option<f64>,
    /// Where the page shows the photo: an object URL of the user's file (freed when replaced), or a
    /// sample's own URL.
    pub preview: Option<String>,
    preview_is_object_url: bool,
    /// Pixel size, once decoded.
    pub size: Option<(u32, u32)>,
}

/// Where a photo comes from.
pub enum Source {
    /// Chosen, dropped or pasted by the user.
    File(web_sys::File),
    /// One of the server's sample photos.
    Sample { url: String, name: String },
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(f) => f.name(),
            Source::Sample { name, .. } => name.clone(),
        }
    }
}

/// Timings of the last run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Decoding and preprocessing in the browser (WASM).
    pub preprocess_ms: f64,
    /// Browser → server → browser for the `classify` call.
    pub round_trip_ms: f64,
    /// The server's own time for the call.
    pub server_ms: f64,
}

impl Timings {
    /// The part of the round trip spent outside the server: the network, (de)serialization in the
    /// browser and the HTTP stack.
    pub fn transport_ms(&self) -> f64 {
        (self.round_trip_ms - self.server_ms).max(0.0)
    }
}

/// The page's reactive state, shared by its components.
#[derive(Clone, Copy)]
pub struct RunState {
    pub phase: RwSignal<Phase>,
    pub upload: RwSignal<Option<Upload>>,
    pub timings: RwSignal<Option<Timings>>,
    pub outcomes: RwSignal<Vec<VariantOutcome>>,
    /// The current photo's tensor (what a burst sends).
    pub tensor: RwSignal<Option<Arc<Vec<f32>>>>,
    /// Server time (queue wait + inference) of every answer per variant id, single runs and bursts.
    pub latency: RwSignal<Vec<(String, LatencySamples)>>,
    generation: StoredValue<u64>,
}

impl RunState {
    fn new() -> Self {
        RunState {
            phase: RwSignal::new(Phase::Idle),
            upload: RwSignal::new(None),
            timings: RwSignal::new(None),
            outcomes: RwSignal::new(Vec::new()),
            tensor: RwSignal::new(None),
            latency: RwSignal::new(Vec::new()),
            generation: StoredValue::new(0),
        }
    }

    /// This variant's answer in the last run.
    pub fn outcome(&self, id: &str) -> Option<Result<Prediction, String>> {
        self.outcomes
            .with(|o| o.iter().find(|x| x.id == id).map(|x| x.result.clone()))
    }

    /// Adds the answers' server times to the variants' latency samples.
    pub fn record(&self, outcomes: &[VariantOutcome]) {
        self.latency.update(|all| {
            for o in outcomes {
                let Ok(p) = &o.result else { continue };
                let ms = (p.queue_us + p.inference_us) as f64 / 1000.0;
                match all.iter_mut().find(|(id, _)| *id == o.id) {
                    Some((_, samples)) => samples.push(ms),
                    None => {
                        let mut samples = LatencySamples::default();
                        samples.push(ms);
                        all.push((o.id.clone(), samples));
                    }
                }
            }
        });
    }

    /// This variant's latency samples.
    pub fn samples(&self, id: &str) -> LatencySamples {
        self.latency.with(|all| {
            all.iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        })
    }

    /// Classifies a photo; a newer photo supersedes a run still in flight.
    pub fn start(self, source: Source) {
        let generation = self.generation.get_value() + 1;
        self.generation.set_value(generation);
        leptos::task::spawn_local(async move { self.run(generation, source).await });
    }

    fn is_current(&self, generation: u64) -> bool {
        self.generation.get_value() == generation
    }

    fn fail(&self, message: String) {
        self.phase.set(Phase::Failed(message));
    }

    async fn run(self, generation: u64, source: Source) {
        use crate::browser::{
            fetch_bytes, now_ms, object_url, read_file, revoke_url, yield_to_renderer,
        };

        let name = source.name();
        if let Some(old) = self.upload.get_untracked() {
            if let (Some(url), true) = (old.preview, old.preview_is_object_url) {
                revoke_url(&url);
            }
        }
        self.upload.set(Some(Upload {
            name: name.clone(),
            bytes: None,
            preview: None,
            preview_is_object_url: false,
            size: None,
        }));
        self.outcomes.set(Vec::new());
        self.timings.set(None);
        self.tensor.set(None);

        self.phase.set(Phase::Busy("Reading the photo…"));
        let (bytes, preview, preview_is_object_url) = match &source {
            Source::File(file) => {
                if file.size() > MAX_UPLOAD_BYTES {
                    return self.fail(format!(
                        "{name} is {:.1} MB; the limit is {:.0} MB.",
                        file.size() / 1048576.0,
                        MAX_UPLOAD_BYTES / 1048576.0
                    ));
                }
                match read_file(file).await {
                    Ok(bytes) => (bytes, object_url(file), true),
                    Err(e) => return self.fail(e),
                }
            }
            Source::Sample { url, .. } => match fetch_bytes(url).await {
                Ok(bytes) => (bytes, Some(url.clone()), false),
                Err(e) => return self.fail(e),
            },
        };
        if !self.is_current(generation) {
            return;
        }
        self.upload.update(|u| {
            if let Some(u) = u {
                u.bytes = Some(bytes.len() as f64);
            }
        });

        self.phase.set(Phase::Busy(
            "Decoding and preprocessing in your browser (WASM)…",
        ));
        yield_to_renderer().await;
        let start = now_ms();
        let preprocessed = engine::preprocess::preprocess(&bytes);
        let preprocess_ms = now_ms() - start;
        let pre = match preprocessed {
            Ok(pre) => pre,
            Err(e) => return self.fail(format!("{name} cannot be classified: {e}")),
        };
        self.upload.update(|u| {
            if let Some(u) = u {
                u.preview = preview;
                u.preview_is_object_url = preview_is_object_url;
                u.size = Some((pre.width, pre.height));
            }
        });
        let tensor = Arc::new(pre.data);
        self.tensor.set(Some(Arc::clone(&tensor)));

        self.phase
            .set(Phase::Busy("Running every variant on the server…"));
        let start = now_ms();
        let answer = classify(tensor.as_ref().clone(), Vec::new()).await;
        let round_trip_ms = now_ms() - start;
        if !self.is_current(generation) {
            return;
        }
        match answer {
            Ok(answer) => {
                self.timings.set(Some(Timings {
                    preprocess_ms,
                    round_trip_ms,
                    server_ms: answer.server_us as f64 / 1000.0,
                }));
                self.record(&answer.outcomes);
                self.outcomes.set(answer.outcomes);
                self.phase.set(Phase::Done);
            }
            Err(e) => self.fail(format!("The server could not classify {name}: {e}")),
        }
    }
}

/// The page at `/`; `?embed=1` gives the compact layout for an iframe (no header or footer).
#[component]
pub fn ComparePage() -> impl IntoView {
    let run = RunState::new();
    let burst = Burst::new();
    let query = use_query_map();
    let embed = move || query.with(|q| q.get("embed").is_some_and(|v| v == "1" || v == "true"));
    // Effects run only in the browser, once the WASM bundle has hydrated the page.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let variants = Resource::new(|| (), |_| list_variants());
    let facts = Resource::new(|| (), |_| model_facts());

    view! {
        <div class="page" class:embed=embed>
            <header class="masthead">
                <h1>"inferscope"</h1>
                <p class="tagline">
                    "What pruning, 2:4 sparsity and INT8 quantization do to a ResNet50 ImageNet classifier. "
                    "Your photo is decoded and preprocessed in this page (WebAssembly); the server runs every variant on the same tensor at once."
                </p>
            </header>
            <main class="compare" data-hydrated=move || hydrated.get().to_string()>
                <section class="input-row" aria-label="Photo">
                    <div class="input-col">
                        <DropZone run hydrated />
                        <SamplePicker run hydrated />
                    </div>
                    <div class="input-col">
                        <RunSummary run />
                        <BurstPanel run burst hydrated />
                    </div>
                </section>
                <Suspense fallback=|| {
                    view! { <p class="note">"Loading the list of variants…"</p> }
                }>
                    {move || Suspend::new(async move {
                        let facts = facts.await.ok().flatten();
                        match variants.await {
                            Ok(list) => view! { <VariantGrid list run facts /> }.into_any(),
                            Err(e) => {
                                view! {
                                    <p class="error" role="alert">
                                        {format!("Could not list the variants: {e}")}
                                    </p>
                                }
                                    .into_any()
                            }
                        }
                    })}
                </Suspense>
            </main>
            <footer class="colophon">
                "Timings: preprocessing is measured in your browser, queue wait and inference on the server per variant, the round trip from this page; transport is the round trip minus the server's time. "
                "Histograms count every answer this page received: the server's time per variant (queue wait + inference)."
            </footer>
        </div>
    }
    .into_any()
}

#[component]
fn VariantGrid(list: Vec<VariantInfo>, run: RunState, facts: Option<FactsReport>) -> impl IntoView {
    let ready = list.iter().filter(|v| v.availability.is_ready()).count();
    let missing: Vec<String> = list
        .iter()
        .filter(|v| matches!(v.availability, Availability::Missing { .. }))
        .map(|v| v.title.clone())
        .collect();
    let total = list.len();
    let note = if missing.is_empty() {
        view! { {format!("{ready} of {total} variants loaded.")} }.into_any()
    } else {
        view! {
            {format!("{ready} of {total} variants loaded; not built yet: {}", missing.join(", "))}
            " (" <code>"./x run"</code> " builds them)."
        }
        .into_any()
    };
    let facts_note = facts.as_ref().map(|f| {
        let machine = if f.machine.is_empty() {
            String::new()
        } else {
            format!("; CPU latency on {}", f.machine)
        };
        view! {
            <p class="note facts-note">
                {format!("Model facts: measured by build-variants on {}{machine}.", f.evaluation)}
            </p>
        }
    });
    let baseline_top1 = Signal::derive(move || {
        run.outcomes.with(|o| {
            o.iter()
                .find(|x| x.id == engine::variants::VARIANTS[0].id)
                .and_then(|b| b.result.as_ref().ok())
                .and_then(|p| p.top.first())
                .map(|c| c.index)
        })
    });
    let timings: Signal<Option<Timings>> = run.timings.into();
    let cards = list
        .into_iter()
        .map(|info| {
            let id = info.id.clone();
            let facts = facts.as_ref().and_then(|f| f.variant(&id)).cloned();
            let outcome = Signal::derive({
                let id = id.clone();
                move || run.outcome(&id)
            });
            let samples = Signal::derive(move || run.samples(&id));
            let busy = Signal::derive(move || matches!(run.phase.get(), Phase::Busy(_)));
            view! { <VariantCard info outcome busy baseline_top1 timings samples facts /> }
        })
        .collect_view();
    view! {
        <p class="note variants-note">{note}</p>
        {facts_note}
        <section class="cards" aria-label="Variants">{cards}</section>
    }
    .into_any()
}

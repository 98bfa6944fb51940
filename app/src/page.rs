//! The comparison page: drop a photo, see every variant's answer side by side.

use leptos::prelude::*;

use crate::catalog::{list_variants, Availability, VariantInfo};
use crate::classify::{classify, Prediction, VariantOutcome};
use crate::components::dropzone::DropZone;
use crate::components::run_summary::RunSummary;
use crate::components::variant_card::VariantCard;

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
    pub bytes: f64,
    /// Object URL of the file, for the preview.
    pub preview: Option<String>,
    /// Pixel size, once decoded.
    pub size: Option<(u32, u32)>,
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

/// The page's reactive state, shared by its components.
#[derive(Clone, Copy)]
pub struct RunState {
    pub phase: RwSignal<Phase>,
    pub upload: RwSignal<Option<Upload>>,
    pub timings: RwSignal<Option<Timings>>,
    pub outcomes: RwSignal<Vec<VariantOutcome>>,
    generation: StoredValue<u64>,
}

impl RunState {
    fn new() -> Self {
        RunState {
            phase: RwSignal::new(Phase::Idle),
            upload: RwSignal::new(None),
            timings: RwSignal::new(None),
            outcomes: RwSignal::new(Vec::new()),
            generation: StoredValue::new(0),
        }
    }

    /// This variant's answer in the last run.
    pub fn outcome(&self, id: &str) -> Option<Result<Prediction, String>> {
        self.outcomes
            .with(|o| o.iter().find(|x| x.id == id).map(|x| x.result.clone()))
    }

    /// Classifies `file`; a newer file supersedes a run still in flight.
    pub fn start(self, file: web_sys::File) {
        let generation = self.generation.get_value() + 1;
        self.generation.set_value(generation);
        leptos::task::spawn_local(async move { self.run(generation, file).await });
    }

    fn is_current(&self, generation: u64) -> bool {
        self.generation.get_value() == generation
    }

    fn fail(&self, message: String) {
        self.phase.set(Phase::Failed(message));
    }

    async fn run(self, generation: u64, file: web_sys::File) {
        use crate::browser::{now_ms, object_url, read_file, revoke_url, yield_to_renderer};

        let name = file.name();
        if let Some(old) = self.upload.get_untracked().and_then(|u| u.preview) {
            revoke_url(&old);
        }
        self.upload.set(Some(Upload {
            name: name.clone(),
            bytes: file.size(),
            preview: None,
            size: None,
        }));
        self.outcomes.set(Vec::new());
        self.timings.set(None);
        if file.size() > MAX_UPLOAD_BYTES {
            self.fail(format!(
                "{name} is {:.1} MB; the limit is {:.0} MB.",
                file.size() / 1048576.0,
                MAX_UPLOAD_BYTES / 1048576.0
            ));
            return;
        }

        self.phase.set(Phase::Busy("Reading the file…"));
        let bytes = match read_file(&file).await {
            Ok(bytes) => bytes,
            Err(e) => return self.fail(e),
        };
        if !self.is_current(generation) {
            return;
        }

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
        let preview = object_url(&file);
        self.upload.update(|u| {
            if let Some(u) = u {
                u.preview = preview;
                u.size = Some((pre.width, pre.height));
            }
        });

        self.phase
            .set(Phase::Busy("Running every variant on the server…"));
        let start = now_ms();
        let answer = classify(pre.data, Vec::new()).await;
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
                self.outcomes.set(answer.outcomes);
                self.phase.set(Phase::Done);
            }
            Err(e) => self.fail(format!("The server could not classify {name}: {e}")),
        }
    }
}

/// The page at `/`.
#[component]
pub fn ComparePage() -> impl IntoView {
    let run = RunState::new();
    // Effects run only in the browser, once the WASM bundle has hydrated the page.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let variants = Resource::new(|| (), |_| list_variants());

    view! {
        <header class="masthead">
            <h1>"inferscope"</h1>
            <p class="tagline">
                "What pruning, 2:4 sparsity and INT8 quantization do to a ResNet50 ImageNet classifier. "
                "Your photo is decoded and preprocessed in this page (WebAssembly); the server runs every variant on the same tensor at once."
            </p>
        </header>
        <main class="compare" data-hydrated=move || hydrated.get().to_string()>
            <section class="input-row">
                <DropZone run hydrated />
                <RunSummary run />
            </section>
            <Suspense fallback=|| view! { <p class="note">"Loading the list of variants…"</p> }>
                {move || Suspend::new(async move {
                    match variants.await {
                        Ok(list) => view! { <VariantGrid list run /> }.into_any(),
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
            "Timings: preprocessing is measured in your browser, inference on the server per variant, the round trip from this page."
        </footer>
    }
    .into_any()
}

#[component]
fn VariantGrid(list: Vec<VariantInfo>, run: RunState) -> impl IntoView {
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
            " (" <code>"./x setup"</code> " builds them)."
        }
        .into_any()
    };
    let baseline_top1 = Signal::derive(move || {
        run.outcomes.with(|o| {
            o.iter()
                .find(|x| x.id == engine::variants::VARIANTS[0].id)
                .and_then(|b| b.result.as_ref().ok())
                .and_then(|p| p.top.first())
                .map(|c| c.index)
        })
    });
    let round_trip_ms = Signal::derive(move || run.timings.get().map(|t| t.round_trip_ms));
    let cards = list
        .into_iter()
        .map(|info| {
            let id = info.id.clone();
            let outcome = Signal::derive(move || run.outcome(&id));
            let busy = Signal::derive(move || matches!(run.phase.get(), Phase::Busy(_)));
            view! { <VariantCard info outcome busy baseline_top1 round_trip_ms /> }
        })
        .collect_view();
    view! {
        <p class="note variants-note">{note}</p>
        <section class="cards">{cards}</section>
    }
    .into_any()
}

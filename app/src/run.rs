//! The page's state: what a run is doing ([`Phase`]), the photo ([`Upload`], [`Source`]), the last
//! run's timings ([`Timings`]) and the reactive [`RunState`] the components share.
//!
//! Its own module, so that the components (and the burst) import the state and not the page that
//! imports them.

use std::sync::Arc;

use leptos::prelude::*;

use crate::classify::{classify, ClassifyResponse, Prediction, TimingMode, VariantOutcome};
use crate::explain::CamSettings;
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
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    /// How the server ran the variants.
    pub mode: TimingMode,
    /// Decoding and preprocessing in the browser (WASM).
    pub preprocess_ms: f64,
    /// Browser → server → browser for the `classify` call.
    pub round_trip_ms: f64,
    /// The server's own time for the call.
    pub server_ms: f64,
    /// Set when the server measured under contention it knows of (what shared the machine).
    pub contention: Option<String>,
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
    /// The current photo's 224×224 RGB bytes (what a run and a burst send).
    pub pixels: RwSignal<Option<Arc<Vec<u8>>>>,
    /// How a photo's run times the variants (the default: each alone).
    pub mode: RwSignal<TimingMode>,
    /// Server time (queue wait + inference) of every answer per timing mode and variant id, single
    /// runs and bursts.
    pub latency: RwSignal<Vec<(TimingMode, String, LatencySamples)>>,
    /// Which mode's answers the histograms show (the mode of the last run or burst started, or the
    /// one the reader picked).
    pub histogram_mode: RwSignal<TimingMode>,
    /// Class activation maps: whether a run asks for them, how the cards show them.
    pub cam: CamSettings,
    /// The last contention note among the answers the histograms hold (see
    /// [`ClassifyResponse::contention`]): the histograms say so while it is set.
    pub contended: RwSignal<Option<String>>,
    generation: StoredValue<u64>,
}

impl RunState {
    pub fn new() -> Self {
        RunState {
            phase: RwSignal::new(Phase::Idle),
            upload: RwSignal::new(None),
            timings: RwSignal::new(None),
            outcomes: RwSignal::new(Vec::new()),
            pixels: RwSignal::new(None),
            mode: RwSignal::new(TimingMode::Alone),
            latency: RwSignal::new(Vec::new()),
            histogram_mode: RwSignal::new(TimingMode::Alone),
            cam: CamSettings::new(),
            contended: RwSignal::new(None),
            generation: StoredValue::new(0),
        }
    }

    /// This variant's answer in the last run.
    pub fn outcome(&self, id: &str) -> Option<Result<Prediction, String>> {
        self.outcomes
            .with(|o| o.iter().find(|x| x.id == id).map(|x| x.result.clone()))
    }

    /// Adds the answers' server times to the variants' latency samples of their mode (and remembers
    /// when they were measured under contention).
    pub fn record(&self, answer: &ClassifyResponse) {
        let (mode, outcomes) = (answer.mode, &answer.outcomes);
        if answer.contention.is_some() {
            self.contended.set(answer.contention.clone());
        }
        self.latency.update(|all| {
            for o in outcomes {
                let Ok(p) = &o.result else { continue };
                let ms = (p.queue_us + p.inference_us) as f64 / 1000.0;
                match all.iter_mut().find(|(m, id, _)| *m == mode && *id == o.id) {
                    Some((_, _, samples)) => samples.push(ms),
                    None => {
                        let mut samples = LatencySamples::default();
                        samples.push(ms);
                        all.push((mode, o.id.clone(), samples));
                    }
                }
            }
        });
    }

    /// This variant's latency samples in `mode`.
    pub fn samples(&self, mode: TimingMode, id: &str) -> LatencySamples {
        self.latency.with(|all| {
            all.iter()
                .find(|(m, i, _)| *m == mode && i == id)
                .map(|(_, _, s)| s.clone())
                .unwrap_or_default()
        })
    }

    /// How many answers of `mode` the histograms hold (all variants).
    pub fn answers(&self, mode: TimingMode) -> usize {
        self.latency.with(|all| {
            all.iter()
                .filter(|(m, _, _)| *m == mode)
                .map(|(_, _, s)| s.len())
                .sum()
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
            fetch_bytes, now_ms, object_url, read_file, revoke_url, settle_rendering,
            yield_to_renderer,
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
        self.pixels.set(None);

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
        let preprocessed = engine::preprocess::preprocess_pixels(&bytes);
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
        let pixels = Arc::new(pre.data);
        self.pixels.set(Some(Arc::clone(&pixels)));

        let mode = self.mode.get_untracked();
        self.histogram_mode.set(mode);
        self.phase.set(Phase::Busy(match mode {
            TimingMode::Alone => "Running the variants on the server, one after another…",
            TimingMode::AllAtOnce => "Running every variant on the server at once…",
        }));
        if mode == TimingMode::Alone {
            // Each alone means the engine has the machine to itself: let the browser finish showing
            // the photo first (it may be the same machine).
            settle_rendering().await;
            if !self.is_current(generation) {
                return;
            }
        }
        let (answer, round_trip_ms) =
            timed_classify(pixels.as_ref().clone(), mode, self.cam.show.get_untracked()).await;
        if !self.is_current(generation) {
            return;
        }
        match answer {
            Ok(answer) => {
                self.timings.set(Some(Timings {
                    mode: answer.mode,
                    preprocess_ms,
                    round_trip_ms,
                    server_ms: answer.server_us as f64 / 1000.0,
                    contention: answer.contention.clone(),
                }));
                self.record(&answer);
                self.outcomes.set(answer.outcomes);
                self.phase.set(Phase::Done);
            }
            Err(e) => self.fail(format!("The server could not classify {name}: {e}")),
        }
    }
}

/// Calls `classify` and measures its round trip, between two User Timing marks
/// (`inferscope:classify:start` / `:end`) that `./x bench-page` lines up with the request's Resource
/// Timing to split the transport (encoding in WASM, the fetch, decoding the answer).
pub async fn timed_classify(
    pixels: Vec<u8>,
    mode: TimingMode,
    explain: bool,
) -> (
    Result<crate::classify::ClassifyResponse, crate::AppError>,
    f64,
) {
    use crate::browser::{mark, now_ms};
    mark("inferscope:classify:start");
    let start = now_ms();
    let answer = classify(pixels, String::new(), mode, explain).await;
    let round_trip_ms = now_ms() - start;
    mark("inferscope:classify:end");
    (answer, round_trip_ms)
}

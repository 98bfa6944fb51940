//! Classifying one preprocessed photo with every variant: the `classify` server function and its types.
//!
//! The request is the photo as the browser resized and cropped it: 224×224 RGB bytes (150,528 bytes in
//! bitcode, a quarter of the 602 KB float tensor), which the server normalizes with the same code, bit
//! for bit ([`engine::preprocess::normalize`]); and the [`TimingMode`] the variants run in. The answer
//! has one entry per variant, each either a prediction or that variant's error, so that one failing
//! variant never hides the others.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use server_fn::codec::Bitcode;

use crate::AppError;

/// Where the `classify` server function is mounted.
pub const CLASSIFY_PATH: &str = "/api/classify";
/// Largest request body the `classify` route accepts: the bitcode pixels (150,528 bytes and a length)
/// plus room for the variant ids.
pub const CLASSIFY_BODY_LIMIT: usize = 1 << 18;
/// How many classes each variant reports.
pub const TOP_K: usize = 5;

/// How the server runs and times the variants of one request.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    bitcode::Encode,
    bitcode::Decode,
)]
pub enum TimingMode {
    /// One variant after another, each with the engine to itself (every thread, no neighbour): each
    /// card's inference is that variant's own speed. The default for a single photo.
    #[default]
    Alone,
    /// Every variant at the same time, sharing the engine, as a server under load runs them: each
    /// card's time includes the others' work. The default for bursts.
    AllAtOnce,
}

impl TimingMode {
    pub const ALL: [TimingMode; 2] = [TimingMode::Alone, TimingMode::AllAtOnce];

    /// The name the page shows.
    pub fn label(self) -> &'static str {
        match self {
            TimingMode::Alone => "each alone",
            TimingMode::AllAtOnce => "all at once",
        }
    }

    /// A stable id (`data-mode` attributes, form values).
    pub fn id(self) -> &'static str {
        match self {
            TimingMode::Alone => "alone",
            TimingMode::AllAtOnce => "all-at-once",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.id() == id)
    }

    /// What the mode means, for the page.
    pub fn explain(self) -> &'static str {
        match self {
            TimingMode::Alone => {
                "The server runs the variants one after another, each with the whole engine to \
                 itself: no other model call of this server runs meanwhile (on a GPU: one variant's \
                 stream at a time; a remote variant: one request of ours in flight, the remote may \
                 serve others). Inference is each variant's own speed; queue wait is the wait for \
                 the engine."
            }
            TimingMode::AllAtOnce => {
                "The server runs every variant at the same time on the same cores (on a GPU: side by \
                 side on separate streams), as a busy server does: each variant's time includes \
                 the others' work."
            }
        }
    }
}

/// One class of a variant's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedScore {
    /// ImageNet class index (standard order).
    pub index: u32,
    /// Human-readable class name.
    pub name: String,
    /// Softmax probability over the 1000 classes.
    pub prob: f32,
}

/// A variant's answer for the photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The [`TOP_K`] most probable classes, most probable first.
    pub top: Vec<NamedScore>,
    /// Time spent inside the model, measured on the server, in microseconds (the normalization of
    /// the uploaded bytes included, ~0.1 ms on a CPU).
    pub inference_us: u64,
    /// Time between this variant's request entering its queue and the start of its inference, in
    /// microseconds: the batching window, and the wait for the engine ([`TimingMode::Alone`]) or for
    /// the variant's own calls in flight.
    pub queue_us: u64,
    /// Where the variant looked for its top-1 class (its class activation map over the 224×224 crop,
    /// [`engine::cam`]), when the call asked for it: the map, or why this variant cannot give one.
    pub cam: Option<Result<engine::cam::Cam, String>>,
}

/// One variant's part of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantOutcome {
    pub id: String,
    pub result: Result<Prediction, String>,
}

/// The answer to one `classify` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    /// One entry per variant asked for, in registry order.
    pub outcomes: Vec<VariantOutcome>,
    /// How the variants ran.
    pub mode: TimingMode,
    /// Time the server spent on the whole call, in microseconds.
    pub server_us: u64,
    /// Set when the server's times were measured under contention it knows of (a variant build running
    /// on the same machine): one line saying what shared the machine.
    #[serde(default)]
    pub contention: Option<String>,
}

/// Runs the photo through the variants named in `variants` (comma-separated ids, e.g.
/// `resnet50-baseline,resnet50-int8`; every available variant when empty), in `mode`; with `explain`,
/// each answer also carries its class activation map ([`Prediction::cam`]).
///
/// `pixels` must hold exactly 224×224×3 = 150,528 bytes, HWC RGB, as
/// `engine::preprocess::preprocess_pixels` produces.
///
/// The ids travel as one string, not a list: bitcode packs a list's lengths at down to one bit each,
/// so a 256 KB body could declare two million empty strings (48 MB decoded); a string decodes to at
/// most its own bytes.
#[server(input = Bitcode, prefix = "/api", endpoint = "classify")]
pub async fn classify(
    pixels: Vec<u8>,
    variants: String,
    mode: TimingMode,
    explain: bool,
) -> Result<ClassifyResponse, AppError> {
    let state = crate::ssr::state_from_context()?;
    let answer = crate::ssr::classify::classify(&state, pixels, variants, mode, explain).await;
    if let Err(e) = &answer {
        crate::ssr::set_error_status(e);
    }
    answer
}

/// Where the [`classify_set`] server function is mounted.
pub const CLASSIFY_SET_PATH: &str = "/api/classify_set";
/// Most photos one [`classify_set`] call carries.
pub const MAX_SET_PHOTOS: usize = 8;
/// Largest request body the `classify_set` route accepts: [`MAX_SET_PHOTOS`] photos of 224×224 RGB
/// bytes, a length, and room for the variant ids.
pub const CLASSIFY_SET_BODY_LIMIT: usize = MAX_SET_PHOTOS * engine::preprocess::PIXELS_LEN + 4096;

/// One photo's answer from one variant in a [`classify_set`] call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoAnswer {
    /// The [`TOP_K`] most probable classes, most probable first.
    pub top: Vec<NamedScore>,
    /// This photo's model call, alone on the engine, in microseconds.
    pub inference_us: u64,
}

/// One variant's answers for the photos of a [`classify_set`] call, in the order sent, or why it
/// could not answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetOutcome {
    pub id: String,
    pub result: Result<Vec<PhotoAnswer>, String>,
}

/// The answer to one [`classify_set`] call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetResponse {
    /// One entry per variant, in registry order.
    pub outcomes: Vec<SetOutcome>,
    /// Time the server spent on the whole call, in microseconds.
    pub server_us: u64,
    /// As in [`ClassifyResponse::contention`].
    #[serde(default)]
    pub contention: Option<String>,
}

/// Runs 1 to [`MAX_SET_PHOTOS`] photos (`pixels`: their 224×224 RGB bytes one after another) through
/// the variants named in `variants` (as in [`classify`]) for the page's labelled-set view: each photo
/// is one batch-1 model call alone on the engine ([`TimingMode::Alone`]), as `inferscope eval` runs
/// them, so each answer's time is that variant's own latency. Several photos per call keep the
/// engine busy while the browser prepares the next ones.
#[server(input = Bitcode, prefix = "/api", endpoint = "classify_set")]
pub async fn classify_set(pixels: Vec<u8>, variants: String) -> Result<SetResponse, AppError> {
    let state = crate::ssr::state_from_context()?;
    let answer = crate::ssr::classify::classify_set(&state, pixels, variants).await;
    if let Err(e) = &answer {
        crate::ssr::set_error_status(e);
    }
    answer
}

/// A variant's latency measured alone on the server, now: the reference for the page's times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AloneTiming {
    pub id: String,
    /// Each run's model call, in microseconds, in order.
    pub runs_us: Vec<u64>,
    /// Their median.
    pub median_us: u64,
}

/// Most runs one [`time_alone`] call may ask for.
pub const MAX_ALONE_RUNS: u32 = 50;

/// Times variant `id` alone on the server: `runs` (1 to [`MAX_ALONE_RUNS`]) model calls on one image,
/// one after another, with the engine to itself (no other model call of the server runs meanwhile),
/// after one untimed warm-up call, as `build-variants` benchmarks a file.
#[server(prefix = "/api", endpoint = "time_alone")]
pub async fn time_alone(id: String, runs: u32) -> Result<AloneTiming, AppError> {
    let state = crate::ssr::state_from_context()?;
    let answer = crate::ssr::classify::time_alone(&state, id, runs).await;
    if let Err(e) = &answer {
        crate::ssr::set_error_status(e);
    }
    answer
}

//! Classifying one preprocessed photo with every variant: the `classify` server function and its types.
//!
//! The request is the 1×3×224×224 tensor the browser computed (602 KB in bitcode, instead of ~1.6 MB
//! as JSON); the answer has one entry per variant, each either a prediction or that variant's error, so
//! that one failing variant never hides the others.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use server_fn::codec::Bitcode;

use crate::AppError;

/// Where the `classify` server function is mounted.
pub const CLASSIFY_PATH: &str = "/api/classify";
/// Largest request body the `classify` route accepts: the bitcode tensor (602,112 bytes) plus room for
/// the variant ids.
pub const CLASSIFY_BODY_LIMIT: usize = 1 << 20;
/// How many classes each variant reports.
pub const TOP_K: usize = 5;

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
    /// Time spent inside the model, measured on the server, in microseconds.
    pub inference_us: u64,
    /// Time between the request's arrival and the start of this variant's inference, in microseconds.
    pub queue_us: u64,
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
    /// Time the server spent on the whole call (all variants run concurrently), in microseconds.
    pub server_us: u64,
}

/// Runs the preprocessed photo through the variants named in `variants` (every available variant when
/// empty), concurrently.
///
/// `tensor` must hold exactly 3×224×224 = 150,528 finite floats, NCHW, torchvision-normalized, as
/// `engine::preprocess::preprocess` produces.
#[server(input = Bitcode, prefix = "/api", endpoint = "classify")]
pub async fn classify(
    tensor: Vec<f32>,
    variants: Vec<String>,
) -> Result<ClassifyResponse, AppError> {
    let state = crate::ssr::state_from_context()?;
    let answer = crate::ssr::classify::classify(&state, tensor, variants).await;
    if let Err(e) = &answer {
        crate::ssr::set_error_status(e);
    }
    answer
}

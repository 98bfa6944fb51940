//! Per-layer drift for the current photo: the `layer_drift` server function and its types.
//!
//! Where the class activation maps show *where* a variant looks, drift shows *where inside the network*
//! its activations leave the baseline's: for the stem and each of the 16 blocks, the relative error of
//! the variant's output against the baseline's on the same photo ([`engine::drift`]). It is asked for
//! separately from `classify`, after the answer, so the timed run never pays for it; the server computes
//! it with the engine to itself (other requests wait, and their queue wait says so).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use server_fn::codec::Bitcode;

use crate::AppError;

/// Where the `layer_drift` server function is mounted (its own route, with the `classify` body limit).
pub const DRIFT_PATH: &str = "/api/layer_drift";

/// One variant's drift from the baseline, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantDrift {
    pub id: String,
    /// One entry per point of [`DriftResponse::layers`], in that order.
    pub result: Result<Vec<engine::drift::LayerDrift>, String>,
}

/// The answer to one `layer_drift` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftResponse {
    /// The variant every other one is compared with.
    pub baseline: String,
    /// The points compared, in graph order (`stem`, `layer1.0`, …, `layer4.2`).
    pub layers: Vec<String>,
    /// Every other loaded variant, in registry order.
    pub variants: Vec<VariantDrift>,
    /// What computed the activations.
    pub path: String,
    /// The server's time for the call (untimed for the variants' cards), in microseconds.
    pub server_us: u64,
}

/// The relative error of each loaded variant's block outputs against the baseline's, on `pixels`
/// (exactly 224×224×3 = 150,528 bytes, HWC RGB, as `classify` takes them).
#[server(input = Bitcode, prefix = "/api", endpoint = "layer_drift")]
pub async fn layer_drift(pixels: Vec<u8>) -> Result<DriftResponse, AppError> {
    let state = crate::ssr::state_from_context()?;
    let answer = crate::ssr::drift::layer_drift(&state, pixels).await;
    if let Err(e) = &answer {
        crate::ssr::set_error_status(e);
    }
    answer
}

//! What the page shows besides answers: the variants' measured facts from `models/report.json`
//! (written by `inferscope build-variants`) and the sample photos one click classifies.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::AppError;

/// Measured facts of one variant, as `build-variants` reported them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantFacts {
    pub id: String,
    pub file_bytes: u64,
    /// gzip size of the file (what the 2:4 zeros save in storage).
    pub gzip_bytes: u64,
    pub params: u64,
    pub nonzero_params: u64,
    /// Multiply-accumulates per 224×224 image, in billions.
    pub gmacs: f64,
    /// Top-1 / top-5 on the report's evaluation photos (fractions).
    pub top1: f64,
    pub top5: f64,
    /// Fraction of the evaluation photos with the same top-1 class as the baseline.
    pub agreement: f64,
    /// How many evaluation photos.
    pub images: usize,
    /// Median batch-1 latency on the CPU in the report's benchmark, and its thread count.
    pub cpu_ms_b1: Option<f64>,
    pub cpu_threads: Option<usize>,
}

/// The facts of every variant in the report, with where the numbers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactsReport {
    /// Which photos scored the variants (e.g. "400 photos of … with an odd index").
    pub evaluation: String,
    /// The machine the benchmark ran on.
    pub machine: String,
    pub variants: Vec<VariantFacts>,
}

impl FactsReport {
    pub fn variant(&self, id: &str) -> Option<&VariantFacts> {
        self.variants.iter().find(|v| v.id == id)
    }
}

/// A photo the page offers to classify with one click.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Where the browser fetches it (e.g. `/samples/imagenet_00_243.jpg`).
    pub url: String,
    /// Its file name.
    #[serde(default)]
    pub name: String,
    /// Its labelled ImageNet class's name and index, when the file name says it
    /// ([`engine::labels::class_from_file_name`]: `imagenet_NN_LABEL.jpg`, or `<wnid>_….JPEG` with a
    /// `classes.tsv` in the folder).
    pub label: Option<String>,
    #[serde(default)]
    pub class: Option<u32>,
}

/// The facts in `models/report.json`; `None` when the variants have not been built and measured yet.
#[server(prefix = "/api", endpoint = "facts")]
pub async fn model_facts() -> Result<Option<FactsReport>, AppError> {
    let state = crate::ssr::state_from_context()?;
    Ok(crate::ssr::facts::read_report(&state.config().models_dir))
}

/// The sample photos the server has (none when the site was built without them).
#[server(prefix = "/api", endpoint = "samples")]
pub async fn list_samples() -> Result<Vec<Sample>, AppError> {
    let state = crate::ssr::state_from_context()?;
    Ok(match &state.config().samples_dir {
        Some(dir) => crate::ssr::facts::samples(dir, |i| state.class_name(i)),
        None => Vec::new(),
    })
}

/// The 1000 ImageNet class names in index order, as the server names them (the labelled-set view
/// names the labels of photos the user drops in).
#[server(prefix = "/api", endpoint = "class_names")]
pub async fn class_names() -> Result<Vec<String>, AppError> {
    let state = crate::ssr::state_from_context()?;
    Ok((0..engine::NUM_CLASSES)
        .map(|i| state.class_name(i))
        .collect())
}

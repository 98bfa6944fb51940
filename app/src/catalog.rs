//! Which variants the server has: the `list_variants` server function and its types.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use engine::backend::ModelInfo;

use crate::AppError;

/// One variant of the registry as the page lists it, available or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantInfo {
    /// Stable id, e.g. `resnet50-int8`.
    pub id: String,
    pub title: String,
    pub summary: String,
    /// `FP32` or `INT8`.
    pub precision: String,
    /// Whether the server can run it.
    pub availability: Availability,
}

/// Whether a variant can answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Availability {
    /// Loaded. `backend` is one line for the card (`cpu`, `cuda`, or a remote's address:
    /// [`ModelInfo::runs_on`]); `info` is what the model says it is (backend, device, the path that
    /// actually runs, where).
    Ready { backend: String, info: ModelInfo },
    /// Its model file (named here: `resnet50-int8.onnx`) is not in the models directory.
    Missing { path: String },
    /// Its file exists but could not be loaded.
    Failed { error: String },
    /// Its file (`file`) is not there yet: a build writes it. `status` is where the build stands (one
    /// line); `running`: the build is under way (the page asks again until the variant is ready).
    Building {
        file: String,
        status: String,
        running: bool,
    },
    /// Taken out of service by a model-repository request; a load request brings it back.
    Unloaded,
}

impl Availability {
    pub fn is_ready(&self) -> bool {
        matches!(self, Availability::Ready { .. })
    }

    /// A build is writing this variant's file now.
    pub fn is_building(&self) -> bool {
        matches!(self, Availability::Building { running: true, .. })
    }
}

/// Every variant of the registry, baseline first, with whether the server can run it.
#[server(prefix = "/api", endpoint = "variants")]
pub async fn list_variants() -> Result<Vec<VariantInfo>, AppError> {
    let state = crate::ssr::state_from_context()?;
    // The page names files, never folders of the server's machine.
    Ok(state
        .variant_infos()
        .into_iter()
        .map(|mut v| {
            v.availability = match v.availability {
                Availability::Missing { path } => Availability::Missing {
                    path: crate::ssr::without_paths(&path),
                },
                Availability::Failed { error } => Availability::Failed {
                    error: crate::ssr::without_paths(&error),
                },
                Availability::Building {
                    file,
                    status,
                    running,
                } => Availability::Building {
                    file,
                    status: crate::ssr::without_paths(&status),
                    running,
                },
                ready => ready,
            };
            v
        })
        .collect())
}

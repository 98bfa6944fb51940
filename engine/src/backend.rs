//! Backends: something that runs a variant.
//!
//! ## Design
//! One [`Backend`] per engine (embedded CPU on ONNX Runtime, co-hosted GPU on cudarc, remote KServe v2 /
//! Vertex AI), chosen by name ([`BackendKind`]). A backend loads a variant's ONNX file into a [`Model`],
//! which is `Send + Sync`, created once and shared by every request. A backend that is asked for and
//! cannot run here (no GPU, built without the feature) is an error, never a silent CPU fallback.
//! `Model::run` blocks: callers in async code run it on a blocking pool.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::variants::VariantSpec;

/// Which engine runs a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Embedded ONNX Runtime on this machine's CPU.
    Cpu,
    /// Co-hosted NVIDIA GPU (engine feature `cuda`).
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" | "gpu" => Ok(BackendKind::Cuda),
            other => Err(Error::BackendUnavailable {
                backend: other.into(),
                reason: "unknown backend (expected `cpu` or `cuda`)".into(),
            }),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

/// Settings shared by the local backends.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Threads ONNX Runtime uses inside one operator (CPU backend).
    pub intra_threads: usize,
    /// GPU ordinal (CUDA backend).
    pub device: usize,
}

impl Default for BackendOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        BackendOptions {
            intra_threads: cores,
            device: 0,
        }
    }
}

/// An engine that can load variants.
pub trait Backend: Send + Sync {
    /// `cpu`, `cuda`, ...
    fn kind(&self) -> BackendKind;
    /// Loads one variant's ONNX file.
    fn load(&self, spec: &VariantSpec, path: &Path) -> Result<Arc<dyn Model>>;
}

/// A loaded variant, ready to answer.
pub trait Model: Send + Sync {
    /// Which variant this is.
    fn spec(&self) -> &VariantSpec;
    /// Runs `batch` images (`input.len() == batch * 3*224*224`, NCHW, torchvision-normalized) and
    /// returns `batch * 1000` logits.
    fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>>;
    /// Runs `batch` images given as their resized, cropped 224×224 RGB bytes (`pixels.len() == batch
    /// * 224*224*3`, HWC, as [`crate::preprocess::preprocess_pixels`] makes them: what the page
    /// uploads). The default normalizes on the host with [`crate::preprocess::normalize`], bit for bit
    /// what the browser's preprocessing would have sent, then calls [`run`](Self::run); a backend that
    /// normalizes on its device overrides it.
    fn run_u8(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        check_pixels(pixels, batch)?;
        self.run(&crate::preprocess::normalize(pixels)?, batch)
    }
    /// Where this model runs when that is not the server's own backend (a remote variant's
    /// `kserve http://…`), for the page's variant card.
    fn location(&self) -> Option<String> {
        None
    }
}

/// Checks an input buffer against the batch size.
pub fn check_input(input: &[f32], batch: usize) -> Result<()> {
    if batch == 0 || input.len() != batch * crate::INPUT_LEN {
        return Err(Error::Shape(format!(
            "expected {batch} × 3×224×224 = {} floats, got {}",
            batch * crate::INPUT_LEN,
            input.len()
        )));
    }
    Ok(())
}

/// Checks a buffer of 224×224 RGB images against the batch size.
pub fn check_pixels(pixels: &[u8], batch: usize) -> Result<()> {
    let one = crate::preprocess::PIXELS_LEN;
    if batch == 0 || pixels.len() != batch * one {
        return Err(Error::Shape(format!(
            "expected {batch} × 224×224×3 = {} bytes, got {}",
            batch * one,
            pixels.len()
        )));
    }
    Ok(())
}

/// The backend of this kind, or a clear error if this build or machine cannot provide it.
pub fn backend_for(kind: BackendKind, opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    match kind {
        BackendKind::Cpu => cpu_backend(opts),
        BackendKind::Cuda => crate::cuda::backend(opts),
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

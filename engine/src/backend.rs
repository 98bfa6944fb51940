//! Backends: something that runs a variant.
//!
//! ## Design
//! One [`Backend`] per engine (embedded CPU on ONNX Runtime, co-hosted GPU on cudarc, remote KServe v2 /
//! Vertex AI), chosen by name ([`BackendKind`]). A backend loads a variant into a [`Model`], which is
//! `Send + Sync`, created once and shared by every request, and says what it is ([`Model::info`]: the
//! backend, the device, the computation path that actually runs, where) for the page's cards and the
//! KServe v2 metadata. A backend that is asked for and cannot run here (no GPU, built without the
//! feature) is an error, never a silent CPU fallback. `Model::run` blocks: callers in async code run it
//! on a blocking pool.
//!
//! This module builds for the browser too (the page shows [`ModelInfo`]); the engines themselves sit
//! behind features.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cam::Explained;
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
    /// A remote KServe v2 / Open Inference Protocol server (engine feature `remote`).
    Kserve,
    /// A remote Vertex AI endpoint (engine feature `remote`).
    Vertex,
}

impl BackendKind {
    /// Every backend, in the order the help text lists them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Cpu,
        BackendKind::Cuda,
        BackendKind::Kserve,
        BackendKind::Vertex,
    ];

    /// Whether the variant runs on another server (its file here is not read).
    pub fn is_remote(self) -> bool {
        matches!(self, BackendKind::Kserve | BackendKind::Vertex)
    }

    /// The KServe v2 `platform` of a model on this backend (`/v2/models/{name}` metadata).
    pub fn platform(self) -> &'static str {
        match self {
            BackendKind::Cpu => "onnxruntime_onnx",
            BackendKind::Cuda => "inferscope_cudarc",
            BackendKind::Kserve => "kserve_v2_remote",
            BackendKind::Vertex => "vertex_ai_remote",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" | "gpu" => Ok(BackendKind::Cuda),
            "kserve" => Ok(BackendKind::Kserve),
            "vertex" => Ok(BackendKind::Vertex),
            other => Err(Error::BackendUnavailable {
                backend: other.into(),
                reason: "unknown backend (expected `cpu`, `cuda`, `kserve` or `vertex`)".into(),
            }),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Kserve => "kserve",
            BackendKind::Vertex => "vertex",
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

/// What a loaded model is and where it runs, as it describes itself ([`Model::info`]): the page's
/// variant card, the KServe v2 model metadata and the readiness answers show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The backend that runs it.
    pub backend: BackendKind,
    /// The device: `CPU, 2 intra-op threads`, `NVIDIA H200 (GPU 0)`, or the remote's host.
    pub device: String,
    /// How it computes, as it actually runs: `ONNX Runtime CPU fp32`, `ONNX Runtime CPU int8
    /// (QDQ fused to QLinearConv)`, the GPU's path (`fp16 cuDNN, tensor cores`, ...), or the remote
    /// protocol and model name.
    pub path: String,
    /// Where: `this server`, or the remote's address (`kserve http://host:8000 (resnet50-int8)`).
    pub location: String,
}

impl ModelInfo {
    /// The KServe v2 `platform` (`onnxruntime_onnx`, `inferscope_cudarc`, ...).
    pub fn platform(&self) -> &'static str {
        self.backend.platform()
    }

    /// One line for a card: the remote's address for a remote variant, else the backend's name.
    pub fn runs_on(&self) -> String {
        if self.backend.is_remote() {
            self.location.clone()
        } else {
            self.backend.to_string()
        }
    }
}

/// Where a local model runs (the [`ModelInfo::location`] of the cpu and cuda backends).
pub const LOCAL: &str = "this server";

/// A loaded variant, ready to answer.
pub trait Model: Send + Sync {
    /// Which variant this is.
    fn spec(&self) -> &VariantSpec;
    /// Runs `batch` images (`input.len() == batch * 3*224*224`, NCHW, torchvision-normalized) and
    /// returns `batch * 1000` logits.
    fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>>;
    /// Runs `batch` images given as their resized, cropped 224×224 RGB bytes (`pixels.len() ==
    /// batch × 224×224×3`, HWC, as [`crate::preprocess::preprocess_pixels`] makes them: what the page
    /// uploads). The default normalizes on the host with [`crate::preprocess::normalize`], bit for bit
    /// what the browser's preprocessing would have sent, then calls [`run`](Self::run); a backend that
    /// normalizes on its device overrides it.
    fn run_u8(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        check_pixels(pixels, batch)?;
        self.run(&crate::preprocess::normalize(pixels)?, batch)
    }
    /// [`run_u8`](Self::run_u8) on a batch that arrives as several requests' bytes, in order (`parts`
    /// together hold `batch × 224×224×3` bytes, each part whole images): what the dynamic batcher
    /// sends. The default joins them into one buffer and calls [`run_u8`](Self::run_u8) (the batcher
    /// did that itself before); a backend that stages the bytes in a buffer of its own (the GPU
    /// engine's pinned memory) overrides it and copies each part straight there, one copy less.
    fn run_u8_parts(&self, parts: &[&[u8]], batch: usize) -> Result<Vec<f32>> {
        if let [one] = parts {
            return self.run_u8(one, batch);
        }
        let mut joined = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            joined.extend_from_slice(p);
        }
        self.run_u8(&joined, batch)
    }
    /// Whether [`run_explained`](Self::run_explained) works, and if not why (for the page's cards
    /// before any photo): the default says this backend cannot.
    fn explains(&self) -> std::result::Result<(), String> {
        Err(format!(
            "the {} backend does not return its feature map",
            self.info().backend
        ))
    }
    /// As [`run`](Self::run), and also the last feature map of each image with the variant's FC
    /// weights, for class activation maps ([`crate::cam`]). The normal [`run`](Self::run) must not
    /// pay for it. The default: [`Error::Unsupported`] with [`explains`](Self::explains)'s reason.
    fn run_explained(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Explained)> {
        let _ = (input, batch);
        Err(Error::Unsupported(
            self.explains()
                .err()
                .unwrap_or_else(|| "feature maps not implemented".into()),
        ))
    }
    /// [`run_explained`](Self::run_explained) on 224×224 RGB bytes, normalized as
    /// [`run_u8`](Self::run_u8) does.
    fn run_u8_explained(&self, pixels: &[u8], batch: usize) -> Result<(Vec<f32>, Explained)> {
        check_pixels(pixels, batch)?;
        self.run_explained(&crate::preprocess::normalize(pixels)?, batch)
    }
    /// Whether [`run_traced`](Self::run_traced) works, and if not why: the default says this backend
    /// cannot.
    fn traces(&self) -> std::result::Result<(), String> {
        Err(format!(
            "the {} backend does not return its layers' outputs",
            self.info().backend
        ))
    }
    /// Runs one image (`input.len() == 3*224*224`) and returns its logits with the activations that
    /// per-layer drift compares ([`crate::drift`]: the stem's and every block's output), in graph
    /// order. For analysis, not for serving: a backend may run it on a separate, slower path, and it
    /// is not timed. The default: [`Error::Unsupported`] with [`traces`](Self::traces)'s reason.
    fn run_traced(&self, input: &[f32]) -> Result<(Vec<f32>, Vec<crate::drift::Activation>)> {
        let _ = input;
        Err(Error::Unsupported(
            self.traces()
                .err()
                .unwrap_or_else(|| "layer outputs not implemented".into()),
        ))
    }
    /// [`run_traced`](Self::run_traced) on one image's 224×224 RGB bytes, normalized as
    /// [`run_u8`](Self::run_u8) does on the host.
    fn run_u8_traced(&self, pixels: &[u8]) -> Result<(Vec<f32>, Vec<crate::drift::Activation>)> {
        check_pixels(pixels, 1)?;
        self.run_traced(&crate::preprocess::normalize(pixels)?)
    }
    /// What this model is and where it runs.
    fn info(&self) -> ModelInfo;
    /// Whether it can answer now without running it: a remote asks its server (`GET .../ready`);
    /// a local model, once loaded, is.
    fn ready(&self) -> Result<()> {
        Ok(())
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

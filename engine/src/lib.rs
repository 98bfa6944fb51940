//! inferscope's inference library.
//!
//! What a ResNet50 variant is ([`variants`]), how a photo becomes its input tensor ([`preprocess`], the
//! same code in the browser's WASM and on the server), how logits become softmax top-k answers
//! ([`classify`]), and, behind features, the ResNet50 model in memory with its ONNX reader/writer and the
//! Keras importer (`onnx`), the CPU engine on ONNX Runtime (`ort`), the variant builders (`optimize`)
//! and the GPU engine (`cuda`).
//!
//! Every variant is loaded through one loader ([`loader::load_all`]) from a plan that places each on
//! a backend ([`backend`]: cpu, cuda, kserve, vertex); a loaded [`backend::Model`] runs and says what
//! it is ([`backend::ModelInfo`]).
//!
//! ```no_run
//! # #[cfg(feature = "ort")] fn demo() -> engine::Result<()> {
//! use engine::{backend::Backend, variants::VARIANTS, preprocess};
//! let backend = engine::loader::backend_for_name("cpu", &Default::default())?;
//! let model = backend.load(&VARIANTS[0], std::path::Path::new("models/resnet50-baseline.onnx"))?;
//! let input = preprocess::preprocess(&std::fs::read("cat.jpg")?)?;
//! let logits = model.run(&input.data, 1)?;
//! let top5 = engine::classify::top_k(&logits, 5);
//! # Ok(()) }
//! ```

pub mod backend;
pub mod build_status;
pub mod cam;
pub mod classify;
pub mod drift;
pub mod error;
pub mod labels;
pub mod loader;
pub mod preprocess;
pub mod stages;
pub mod variants;

#[cfg(feature = "onnx")]
pub mod import;
#[cfg(feature = "onnx")]
pub mod int8;
#[cfg(feature = "onnx")]
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx_io;

#[cfg(feature = "ort")]
pub mod cpu;

#[cfg(feature = "optimize")]
pub mod optimize;

pub mod cuda;

#[cfg(feature = "batch")]
pub mod batcher;
/// The KServe v2 wire format, shared by the remote client, the server and `bench`.
#[cfg(feature = "kserve-wire")]
pub mod kserve_wire;
#[cfg(feature = "remote")]
pub mod remote;

pub use error::{Error, Result};

/// Side of the square input the network takes.
pub const INPUT_SIZE: usize = 224;
/// Number of ImageNet classes.
pub const NUM_CLASSES: usize = 1000;
/// Floats in one preprocessed image (3 × 224 × 224).
pub const INPUT_LEN: usize = 3 * INPUT_SIZE * INPUT_SIZE;

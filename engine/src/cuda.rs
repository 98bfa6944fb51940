//! The co-hosted GPU backend (engine feature `cuda`): ResNet50 variants on an NVIDIA GPU through
//! cudarc — cuDNN convolutions in fp16 NHWC on the tensor cores, the engine's own NVRTC kernels, the FC
//! layer on cuBLASLt, one CUDA graph per batch size (see [`net`] for the design). Every variant loaded
//! on one backend shares the GPU: each gets its own stream, buffers and graphs, so the server's dynamic
//! batcher runs them side by side.
//!
//! Without the feature, or on a machine without a usable GPU, [`backend`] is a clear
//! [`crate::Error::BackendUnavailable`], never a silent fallback to the CPU.
//!
//! ```no_run
//! # fn demo() -> engine::Result<()> {
//! use engine::backend::{backend_for, BackendKind};
//! let gpu = backend_for(BackendKind::Cuda, &Default::default())?; // Err without a GPU
//! let model = gpu.load(&engine::variants::VARIANTS[0], "models/resnet50-baseline.onnx".as_ref())?;
//! let logits = model.run(&vec![0.0; engine::INPUT_LEN], 1)?;
//! # Ok(()) }
//! ```
//!
//! Precision per variant: baseline, pruned (smaller shapes) and 2:4 sparse run dense fp16 (the 2:4
//! zeros are kept but not exploited: see docs/gpu.md for the cuSPARSELt measurement); the INT8 variant
//! runs on the int8 tensor cores with its QDQ file's integer arithmetic ([`int8net`]), or, where that
//! path cannot take the network, its dequantized weights in fp16. [`GpuModel::path`] says which.

use std::sync::Arc;

use crate::backend::{Backend, BackendOptions};
#[cfg(not(feature = "cuda"))]
use crate::error::Error;
use crate::error::Result;

#[cfg(feature = "cuda")]
pub mod fusion;
#[cfg(feature = "cuda")]
pub mod int8net;
#[cfg(feature = "cuda")]
pub mod io;
#[cfg(feature = "cuda")]
pub mod kernels;
#[cfg(feature = "cuda")]
pub mod net;
#[cfg(feature = "cuda")]
pub mod pack;

#[cfg(feature = "cuda")]
pub use gpu::{probe, CudaBackend, Exec, GpuModel};

/// The CUDA backend on GPU `opts.device`, or why there is none.
#[cfg(feature = "cuda")]
pub fn backend(opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(CudaBackend::new(
        opts.device,
        net::GpuOptions::default(),
    )?))
}

/// The CUDA backend, or why there is none.
#[cfg(not(feature = "cuda"))]
pub fn backend(_opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    Err(Error::BackendUnavailable {
        backend: "cuda".into(),
        reason: "this build of inferscope has no GPU support (rebuild with `--features cuda`)"
            .into(),
    })
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use cudarc::driver::CudaContext;

    use super::int8net::Int8Net;
    use super::kernels::Kernels;
    use super::net::{GpuNet, GpuOptions, LayerPlan};
    use crate::backend::{check_input, Backend, BackendKind, Model};
    use crate::error::{Error, Result};
    use crate::model::ResNet;
    use crate::variants::VariantSpec;

    fn unavailable(reason: impl Into<String>) -> Error {
        Error::BackendUnavailable {
            backend: "cuda".into(),
            reason: reason.into(),
        }
    }

    /// Checks that the NVIDIA libraries can be loaded (cudarc's lazy loaders would panic instead).
    fn check_libraries() -> Result<()> {
        // SAFETY: each probe only tries to dlopen the library by its candidate names.
        let libs = [
            ("libcuda (the NVIDIA driver)", unsafe {
                cudarc::driver::sys::is_culib_present()
            }),
            ("libnvrtc (CUDA runtime compiler)", unsafe {
                cudarc::nvrtc::sys::is_culib_present()
            }),
            ("libcudnn (cuDNN 9)", unsafe {
                cudarc::cudnn::sys::is_culib_present()
            }),
            ("libcublasLt (cuBLAS)", unsafe {
                cudarc::cublaslt::sys::is_culib_present()
            }),
        ];
        match libs.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(unavailable(format!(
                "{name} not found (no NVIDIA GPU stack on this machine, or LD_LIBRARY_PATH misses it)"
            ))),
            None => Ok(()),
        }
    }

    fn open(device: usize) -> Result<Arc<CudaContext>> {
        check_libraries()?;
        let count =
            CudaContext::device_count().map_err(|e| unavailable(format!("CUDA driver: {e:?}")))?;
        if device >= count.max(0) as usize {
            return Err(unavailable(format!(
                "GPU {device} requested, {count} present"
            )));
        }
        CudaContext::new(device).map_err(|e| unavailable(format!("GPU {device}: {e:?}")))
    }

    /// Checks that the NVIDIA libraries can be loaded and GPU `device` exists; returns its name.
    /// Never panics.
    pub fn probe(device: usize) -> Result<String> {
        open(device)?
            .name()
            .map_err(|e| unavailable(format!("GPU {device}: {e:?}")))
    }

    /// One GPU, shared by every variant loaded through it.
    pub struct CudaBackend {
        ctx: Arc<CudaContext>,
        kernels: Kernels,
        opts: GpuOptions,
        name: String,
    }

    impl CudaBackend {
        /// Opens GPU `device` and compiles the engine's kernels for it.
        pub fn new(device: usize, opts: GpuOptions) -> Result<Self> {
            let name = probe(device)?;
            let ctx = CudaContext::new(device)
                .map_err(|e| unavailable(format!("GPU {device}: {e:?}")))?;
            // Each network runs on its own stream and never shares buffers across streams, so cudarc's
            // per-buffer event tracking (which also gets in the way of graph capture) is not needed.
            // SAFETY: called before any buffer of this context exists.
            unsafe { ctx.disable_event_tracking() };
            let kernels = Kernels::compile(&ctx)?;
            tracing::info!(gpu = %name, device, "CUDA backend ready");
            Ok(CudaBackend {
                ctx,
                kernels,
                opts,
                name,
            })
        }

        /// The GPU's name, e.g. `NVIDIA H200`.
        pub fn device_name(&self) -> &str {
            &self.name
        }

        /// The cuDNN library in use, e.g. `91300` for 9.13.0.
        pub fn cudnn_version(&self) -> usize {
            cudarc::cudnn::result::get_version()
        }

        /// Loads a network already in memory (a pack, a test network). A quantized network runs on the
        /// int8 tensor cores ([`Int8Net`]) unless `GpuOptions::int8` is `None`, or if it is not a network
        /// that path runs (then in fp16 with its dequantized weights, and [`GpuModel::path`] says why).
        pub fn load_net(&self, spec: &VariantSpec, net: &ResNet) -> Result<GpuModel> {
            self.load_net_with(spec, net, self.opts.int8)
        }

        /// [`CudaBackend::load_net`] with the int8 setting given here (benchmarks compare them).
        pub fn load_net_with(
            &self,
            spec: &VariantSpec,
            net: &ResNet,
            int8: Option<super::int8net::Residual>,
        ) -> Result<GpuModel> {
            let fp16 = || -> Result<Exec> {
                Ok(Exec::Fp16(Box::new(GpuNet::new(
                    &self.ctx,
                    &self.kernels,
                    net,
                    self.opts.clone(),
                )?)))
            };
            let (path, exec) = match (&net.quant, int8) {
                (Some(_), Some(residual)) => {
                    match Int8Net::new(&self.ctx, &self.kernels, net, self.opts.max_batch, residual)
                    {
                        Ok(n) => (
                            format!(
                                "int8 tensor cores (cuBLASLt int8 GEMMs, {} residual)",
                                match residual {
                                    super::int8net::Residual::Exact => "exact",
                                    super::int8net::Residual::Fused => "fused",
                                }
                            ),
                            Exec::Int8(Box::new(n)),
                        ),
                        Err(e) => {
                            tracing::warn!(variant = spec.id, error = %e, "int8 path unavailable; fp16");
                            (
                                format!("fp16 cuDNN (INT8 weights dequantized: {e})"),
                                fp16()?,
                            )
                        }
                    }
                }
                (Some(_), None) => (
                    "fp16 cuDNN (INT8 weights dequantized; no int8 arithmetic)".to_string(),
                    fp16()?,
                ),
                (None, _) => ("fp16 cuDNN, tensor cores".to_string(), fp16()?),
            };
            Ok(GpuModel {
                spec: *spec,
                path,
                net: Mutex::new(exec),
            })
        }
    }

    /// A loaded network: the fp16 executor or the int8 one.
    pub enum Exec {
        Fp16(Box<GpuNet>),
        Int8(Box<Int8Net>),
    }

    impl Exec {
        pub fn run(&mut self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
            match self {
                Exec::Fp16(n) => n.run(input, batch),
                Exec::Int8(n) => n.run(input, batch),
            }
        }
        pub fn run_eager(&mut self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
            match self {
                Exec::Fp16(n) => n.run_eager(input, batch),
                Exec::Int8(n) => n.run_eager(input, batch),
            }
        }
        pub fn prepare(&mut self, batch: usize) -> Result<()> {
            match self {
                Exec::Fp16(n) => n.prepare(batch),
                Exec::Int8(n) => n.prepare(batch),
            }
        }
        pub fn set_input(&mut self, input: &[f32]) -> Result<()> {
            match self {
                Exec::Fp16(n) => n.set_input(input),
                Exec::Int8(n) => n.set_input(input),
            }
        }
        pub fn time_graph(&mut self, batch: usize, per: usize, samples: usize) -> Result<Vec<f32>> {
            match self {
                Exec::Fp16(n) => n.time_graph(batch, per, samples),
                Exec::Int8(n) => n.time_graph(batch, per, samples),
            }
        }
        pub fn plan(&self, batch: usize) -> Option<Vec<LayerPlan>> {
            match self {
                Exec::Fp16(n) => n.plan(batch),
                Exec::Int8(n) => n.plan(batch),
            }
        }
        /// How the graph of `batch` images was searched (fp16: the search level it ended on).
        pub fn search(&self, batch: usize) -> Option<String> {
            match self {
                Exec::Fp16(n) => n.search(batch).map(|s| format!("{s:?}")),
                Exec::Int8(n) => n.plan(batch).map(|_| "int8".to_string()),
            }
        }
        pub fn macs(&self) -> u64 {
            match self {
                Exec::Fp16(n) => n.macs(),
                Exec::Int8(n) => n.macs(),
            }
        }
        pub fn rejected_candidates(&self) -> usize {
            match self {
                Exec::Fp16(n) => n.rejected_candidates(),
                Exec::Int8(n) => n.rejected_candidates(),
            }
        }
    }

    impl Backend for CudaBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::Cuda
        }

        fn load(&self, spec: &VariantSpec, path: &Path) -> Result<Arc<dyn Model>> {
            let net = crate::onnx_io::load(path)?;
            let model = self.load_net(spec, &net)?;
            // Build the batch-1 graph now (search + capture take seconds): the first request is then
            // as fast as the rest, and a GPU problem shows at load time. Larger buckets are built the
            // first time a batch needs them.
            model.lock()?.prepare(1)?;
            tracing::info!(variant = spec.id, path = model.path(), "loaded on the GPU");
            Ok(Arc::new(model))
        }
    }

    /// A variant on the GPU. Requests are serialized per variant (one stream, one set of buffers);
    /// different variants run concurrently.
    pub struct GpuModel {
        spec: VariantSpec,
        path: String,
        net: Mutex<Exec>,
    }

    impl GpuModel {
        /// How this variant computes (precision, libraries).
        pub fn path(&self) -> &str {
            &self.path
        }

        /// Logits and softmax probabilities (`batch × 1000` each).
        pub fn run_with_probs(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
            check_input(input, batch)?;
            self.lock()?.run(input, batch)
        }

        /// Direct access to the executor (benchmarks, tests).
        pub fn lock(&self) -> Result<std::sync::MutexGuard<'_, Exec>> {
            self.net
                .lock()
                .map_err(|_| Error::Runtime("GPU model lock poisoned".into()))
        }
    }

    impl Model for GpuModel {
        fn spec(&self) -> &VariantSpec {
            &self.spec
        }

        fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
            Ok(self.run_with_probs(input, batch)?.0)
        }
    }
}

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
//! use engine::backend::BackendKind;
//! use engine::loader::backend_for;
//! let gpu = backend_for(BackendKind::Cuda, &Default::default())?; // Err without a GPU
//! let model = gpu.load(&engine::variants::VARIANTS[0], "models/resnet50-baseline.onnx".as_ref())?;
//! let logits = model.run(&vec![0.0; engine::INPUT_LEN], 1)?;
//! # Ok(()) }
//! ```
//!
//! Precision per variant: baseline and pruned (smaller shapes) run dense fp16; the 2:4 variant's 1×1
//! convolutions also try cuSPARSELt on the sparse tensor cores per layer and batch size ([`sparse`]),
//! kept where faster and equal to the dense result, dense elsewhere; the INT8 variant
//! runs on the int8 tensor cores with its QDQ file's integer arithmetic ([`int8net`]), or, where that
//! path cannot take the network, its dequantized weights in fp16. [`GpuModel::path`] says which.

use std::sync::Arc;

use crate::backend::{Backend, BackendOptions};
#[cfg(not(feature = "cuda"))]
use crate::error::Error;
use crate::error::Result;

#[cfg(feature = "cuda")]
pub mod dev;
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
pub mod sparse;

#[cfg(feature = "cuda")]
pub use gpu::{device_count, probe, CudaBackend, GpuModel};

/// The CUDA backend on GPU `opts.device`, or why there is none.
#[cfg(feature = "cuda")]
pub fn backend(opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(CudaBackend::new(
        opts.device,
        net::GpuOptions::default(),
    )?))
}

/// How many GPUs the CUDA driver sees, or why it cannot say.
#[cfg(not(feature = "cuda"))]
pub fn device_count() -> Result<usize> {
    Err(Error::BackendUnavailable {
        backend: "cuda".into(),
        reason: "this build of inferscope has no GPU support (rebuild with `--features cuda`)"
            .into(),
    })
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
    use super::io::{Executor, Images, Staged, Staging};
    use super::kernels::Kernels;
    use super::net::{GpuNet, GpuOptions};
    use crate::backend::{check_input, Backend, BackendKind, Model, ModelInfo, LOCAL};
    use crate::cam::{Classifier, Explained};
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

    /// How many GPUs the CUDA driver sees, or why it cannot say (no driver library). Never panics.
    pub fn device_count() -> Result<usize> {
        check_libraries()?;
        let count =
            CudaContext::device_count().map_err(|e| unavailable(format!("CUDA driver: {e:?}")))?;
        Ok(count.max(0) as usize)
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
        device: usize,
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
                device,
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
        /// int8 tensor cores ([`Int8Net`]) unless `GpuOptions::int8` is false, or if it is not a network
        /// that path runs (then in fp16 with its dequantized weights, and [`GpuModel::path`] says why).
        pub fn load_net(&self, spec: &VariantSpec, net: &ResNet) -> Result<GpuModel> {
            self.load_net_with(spec, net, self.opts.int8)
        }

        /// [`CudaBackend::load_net`] with the int8 setting given here (benchmarks compare both).
        pub fn load_net_with(
            &self,
            spec: &VariantSpec,
            net: &ResNet,
            int8: bool,
        ) -> Result<GpuModel> {
            self.load_net_with_options(
                spec,
                net,
                GpuOptions {
                    int8,
                    ..self.opts.clone()
                },
            )
        }

        /// [`CudaBackend::load_net`] with options of its own (benchmarks compare settings, e.g. 2:4
        /// layers on the sparse tensor cores against the same network dense).
        pub fn load_net_with_options(
            &self,
            spec: &VariantSpec,
            net: &ResNet,
            opts: GpuOptions,
        ) -> Result<GpuModel> {
            let int8 = opts.int8;
            let max_batch = opts.max_batch;
            let fp16 = || -> Result<Box<dyn Executor>> {
                Ok(Box::new(GpuNet::new(
                    &self.ctx,
                    &self.kernels,
                    net,
                    opts.clone(),
                )?))
            };
            let (path, exec): (String, Box<dyn Executor>) = match (&net.quant, int8) {
                (Some(_), true) => {
                    match Int8Net::new(&self.ctx, &self.kernels, net, opts.max_batch) {
                        Ok(n) => (
                            "int8 tensor cores (per layer the fastest of the engine's implicit-GEMM kernels (mma.sync; wgmma on Hopper) with requantization and residual inside, and cuBLASLt int8 GEMMs + requant; exact requantization)".into(),
                            Box::new(n),
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
                (Some(_), false) => (
                    "fp16 cuDNN (INT8 weights dequantized; no int8 arithmetic)".to_string(),
                    fp16()?,
                ),
                (None, _) => ("fp16 cuDNN, tensor cores".to_string(), fp16()?),
            };
            // The FC weights the CAM reads: the network's own (dequantized for an INT8 file, as the CPU
            // backend gives them), kept on the host; only the explained path hands them out.
            let classifier = Arc::new(Classifier::new(
                net.fc.out_features,
                net.fc.in_features,
                net.fc.weight.clone(),
                net.fc.bias.clone(),
            )?);
            Ok(GpuModel {
                spec: *spec,
                classifier,
                info: ModelInfo {
                    backend: BackendKind::Cuda,
                    device: format!("{} (GPU {})", self.name, self.device),
                    path,
                    location: LOCAL.into(),
                },
                net: Mutex::new(exec),
                max_batch,
                copy_threads: Staging::default().threads,
                staged: Mutex::new(Vec::new()),
            })
        }
    }

    impl Backend for CudaBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::Cuda
        }

        fn load(&self, spec: &VariantSpec, path: &Path) -> Result<Arc<dyn Model>> {
            let net = crate::onnx_io::load(path)?;
            let model = self.load_net(spec, &net)?;
            // Build every bucket's graph now (1, 2, 4, …, max_batch; the search + capture take
            // seconds each): no request later waits seconds behind a first batch of a new size (under
            // load, those stalls ran into the requests' deadlines), and a GPU problem shows at load.
            let t0 = std::time::Instant::now();
            {
                let mut net = model.lock()?;
                let max = net.max_batch();
                let mut b = 1;
                loop {
                    net.prepare(b.min(max))?;
                    if b >= max {
                        break;
                    }
                    b *= 2;
                }
            }
            tracing::info!(
                variant = spec.id,
                seconds = t0.elapsed().as_secs_f32(),
                path = %model.path(),
                "loaded on the GPU (graphs of every batch bucket built)"
            );
            Ok(Arc::new(model))
        }
    }

    /// A variant on the GPU. Requests are serialized per variant (one stream, one set of buffers);
    /// different variants run concurrently.
    pub struct GpuModel {
        spec: VariantSpec,
        /// The FC layer, for class activation maps.
        classifier: Arc<Classifier>,
        /// `info.path` says how this variant computes.
        info: ModelInfo,
        net: Mutex<Box<dyn Executor>>,
        max_batch: usize,
        /// Threads that fill a [`Staged`] buffer (`Staging::default()`'s).
        copy_threads: usize,
        /// Pinned byte buffers not in use (one per caller that ran at once so far: a served variant's
        /// batcher workers), filled outside the executor's lock.
        staged: Mutex<Vec<Staged>>,
    }

    impl GpuModel {
        /// How this variant computes: precision and libraries, then for every batch-size bucket built
        /// so far what its convolutions actually ran on, counted per kernel family (e.g. `batch 256:
        /// 48 engine igemm (int8 mma.sync), 5 cuBLASLt int8`): the per-layer search decides that, so
        /// the path names what ran, not what could have.
        pub fn path(&self) -> String {
            match self.net.lock() {
                Ok(net) => describe(&self.info.path, net.as_ref()),
                Err(_) => self.info.path.clone(),
            }
        }

        /// Logits and softmax probabilities (`batch × 1000` each).
        pub fn run_with_probs(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
            check_input(input, batch)?;
            self.lock()?.run(input, batch)
        }

        /// Logits and softmax probabilities from image bytes: `batch` images of 224×224×3 u8 (HWC,
        /// RGB, what preprocessing produces before it normalizes), normalized on the GPU with the CPU's
        /// arithmetic (the same logits as [`GpuModel::run_with_probs`] on the normalized floats) at a
        /// quarter of the upload.
        pub fn run_u8_with_probs(
            &self,
            input: &[u8],
            batch: usize,
        ) -> Result<(Vec<f32>, Vec<f32>)> {
            self.lock()?.run_u8(input, batch)
        }

        /// Logits from image bytes (see [`GpuModel::run_u8_with_probs`]; the probabilities are not
        /// copied back).
        pub fn run_u8(&self, input: &[u8], batch: usize) -> Result<Vec<f32>> {
            self.lock()?.run_logits(Images::U8(input), batch)
        }

        /// Logits, softmax probabilities and each image's last feature map (see
        /// [`Model::run_explained`]): the same graph as [`GpuModel::run_with_probs`], then the map the
        /// global average pool read is converted to f32 NCHW on the device and copied back.
        pub fn run_explained_with_probs(
            &self,
            input: &[f32],
            batch: usize,
        ) -> Result<(Vec<f32>, Vec<f32>, Explained)> {
            check_input(input, batch)?;
            let (logits, probs, maps) = self.lock()?.run_explained(Images::F32(input), batch)?;
            Ok((logits, probs, self.explained(maps)))
        }

        /// [`GpuModel::run_explained_with_probs`] from image bytes (see [`GpuModel::run_u8`]).
        pub fn run_u8_explained_with_probs(
            &self,
            pixels: &[u8],
            batch: usize,
        ) -> Result<(Vec<f32>, Vec<f32>, Explained)> {
            crate::backend::check_pixels(pixels, batch)?;
            let (logits, probs, maps) = self.lock()?.run_explained(Images::U8(pixels), batch)?;
            Ok((logits, probs, self.explained(maps)))
        }

        /// A free staging buffer, or a new one (allocated for `max_batch` images on the executor's
        /// stream).
        fn take_staged(&self) -> Result<Staged> {
            let free = self
                .staged
                .lock()
                .map_err(|_| Error::Runtime("staging buffers lock poisoned".into()))?
                .pop();
            if let Some(s) = free {
                return Ok(s);
            }
            let (ctx, stream) = {
                let net = self.lock()?;
                (net.ctx().clone(), net.stream().clone())
            };
            ctx.bind_to_thread()
                .map_err(|e| Error::Runtime(format!("binding the CUDA context: {e:?}")))?;
            Staged::new(&ctx, &stream, self.max_batch)
        }

        fn explained(&self, maps: Vec<crate::cam::FeatureMap>) -> Explained {
            Explained {
                maps,
                classifier: Arc::clone(&self.classifier),
            }
        }

        /// Direct access to the executor (benchmarks, tests).
        pub fn lock(&self) -> Result<std::sync::MutexGuard<'_, Box<dyn Executor>>> {
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
            check_input(input, batch)?;
            self.lock()?.run_logits(Images::F32(input), batch)
        }

        /// The page's bytes, normalized on the GPU (a quarter of the upload, the CPU's arithmetic).
        fn run_u8(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
            crate::backend::check_pixels(pixels, batch)?;
            GpuModel::run_u8(self, pixels, batch)
        }

        /// A served batch's requests, each copied straight into a pinned buffer (no joined batch
        /// first) **before** the executor is locked: while one batcher worker's batch runs on the GPU,
        /// another's bytes are being copied. The same bucket, graph and logits as
        /// [`Model::run_u8`] on their concatenation.
        fn run_u8_parts(&self, parts: &[&[u8]], batch: usize) -> Result<Vec<f32>> {
            Images::U8Parts(parts).check(batch)?;
            if batch > self.max_batch {
                return self.lock()?.run_logits(Images::U8Parts(parts), batch);
            }
            let mut staged = self.take_staged()?;
            // (The pinned buffer's event is waited for on this thread: the context must be current.)
            staged
                .host_context()
                .bind_to_thread()
                .map_err(|e| Error::Runtime(format!("binding the CUDA context: {e:?}")))?;
            let result = staged
                .fill(parts, self.copy_threads)
                .and_then(|()| self.lock()?.run_staged_u8(&staged));
            if let Ok(mut free) = self.staged.lock() {
                free.push(staged);
            }
            result
        }

        /// Every network the GPU engine runs ends in global average pooling + FC, whose input it reads
        /// back on request.
        fn explains(&self) -> std::result::Result<(), String> {
            Ok(())
        }

        fn run_explained(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Explained)> {
            let (logits, _, explained) = self.run_explained_with_probs(input, batch)?;
            Ok((logits, explained))
        }

        /// The page's bytes, normalized on the GPU, as [`Model::run_u8`] does here.
        fn run_u8_explained(&self, pixels: &[u8], batch: usize) -> Result<(Vec<f32>, Explained)> {
            let (logits, _, explained) = self.run_u8_explained_with_probs(pixels, batch)?;
            Ok((logits, explained))
        }

        /// With [`GpuModel::path`]'s per-bucket account when the network is not busy (a request
        /// in flight holds it: then the static description, rather than waiting).
        fn info(&self) -> ModelInfo {
            let mut info = self.info.clone();
            if let Ok(net) = self.net.try_lock() {
                info.path = describe(&self.info.path, net.as_ref());
            }
            info
        }
    }

    /// `base`, then per built bucket how many convolutions ran on each kernel family.
    fn describe(base: &str, net: &dyn Executor) -> String {
        let mut buckets = Vec::new();
        let mut b = 1;
        loop {
            let b_now = b.min(net.max_batch());
            if let Some(plan) = net.plan(b_now) {
                let mut families: Vec<(&'static str, usize)> = Vec::new();
                for l in &plan {
                    let f = family(&l.algo);
                    match families.iter_mut().find(|(n, _)| *n == f) {
                        Some((_, c)) => *c += 1,
                        None => families.push((f, 1)),
                    }
                }
                let list: Vec<String> = families.iter().map(|(f, c)| format!("{c} {f}")).collect();
                let eager = match net.eager_reason(b_now) {
                    Some(why) => format!(" (run eagerly, without a CUDA graph: {why})"),
                    None => String::new(),
                };
                buckets.push(format!("batch {b_now}{eager}: {}", list.join(", ")));
            }
            if b_now >= net.max_batch() {
                break;
            }
            b *= 2;
        }
        let base = match net.note() {
            Some(note) => format!("{base}; {note}"),
            None => base.to_string(),
        };
        if buckets.is_empty() {
            base
        } else {
            format!("{base}; convolutions ran on: {}", buckets.join("; "))
        }
    }

    /// The kernel family of a [`io::LayerPlan::algo`] label.
    fn family(algo: &str) -> &'static str {
        if algo.starts_with("cuSPARSELt") {
            "cuSPARSELt 2:4 (sparse tensor cores)"
        } else if algo.starts_with("igemm") && algo.contains("wgmma") {
            "engine igemm (int8 wgmma, Hopper)"
        } else if algo.starts_with("igemm") {
            "engine igemm (int8 mma.sync)"
        } else if algo.starts_with("cuBLASLt") {
            "cuBLASLt int8"
        } else if algo.starts_with("cuDNN int8") {
            "cuDNN int8"
        } else if algo.starts_with("graph#") {
            "cuDNN graph API fp16"
        } else {
            "cuDNN legacy fp16"
        }
    }
}

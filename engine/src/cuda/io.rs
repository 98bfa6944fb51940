//! What the fp16 ([`super::net::GpuNet`]) and int8 ([`super::int8net::Int8Net`]) executors share: the
//! input/output buffers with their pinned host copies, the FC + softmax head, capturing the CUDA graph of
//! a batch-size bucket, and running, checking and timing it.
//!
//! Image bytes (`run_u8`) reach the GPU through pinned memory: the caller's buffer is pageable, so each
//! batch is first copied into a pinned buffer by a small pool of threads ([`Staging::threads`]) while
//! each finished part's DMA is already queued. A request of several chunks (more images than
//! `max_batch`, or [`Staging::chunk`]) is *pipelined*: two pinned and device byte buffers take turns,
//! the bytes go up on a copy stream of their own, and the host copies chunk `i + 1` while the GPU runs
//! chunk `i` (events order the streams). Every chunk runs the same bucket, normalization and graph as
//! when it is run alone, so the logits are the same bits.

use std::sync::Arc;

use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{
    result as drv_result, sys as drv_sys, CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream,
    DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use half::f16;

use super::dev::Dev;
use super::kernels::{blocks, Kernels, BLOCK};
use crate::cam::FeatureMap;
use crate::error::{Error, Result};
use crate::model::Linear;
use crate::preprocess::{MEAN, STD};
use crate::stages::{self, Stage};
use crate::{INPUT_LEN, INPUT_SIZE, NUM_CLASSES};

/// What was chosen for one layer at one batch size (for reports).
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub name: String,
    pub algo: String,
    /// Bias, residual and ReLU inside the cuDNN call (false: plain convolution + `bias_act` kernel).
    pub fused: bool,
    /// Time of the chosen algorithm during the search, ms.
    pub ms: f32,
    /// fp16 executor: the fastest dense candidate's time, and the cuSPARSELt candidate's for a 2:4
    /// layer where it ran and matched the reference (which of the two won is `algo`).
    pub dense_ms: Option<f32>,
    pub sparse_ms: Option<f32>,
}

fn rt<E: std::fmt::Debug>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error::Runtime(format!("{what}: {e:?}"))
}

/// The network's f32 input and its f32 logits and probabilities on the device, for `max_batch` images,
/// with pinned host buffers for the copies; and the image bytes (u8 HWC), a quarter of the f32 upload,
/// which the `normalize_u8` kernel turns into the f32 input on the device.
pub struct Io {
    pub input32: CudaSlice<f32>,
    input8: CudaSlice<u8>,
    host_in8: PinnedHostSlice<u8>,
    normalize: cudarc::driver::CudaFunction,
    pub logits32: CudaSlice<f32>,
    pub probs32: CudaSlice<f32>,
    host_in: PinnedHostSlice<f32>,
    host_out: PinnedHostSlice<f32>,
    to_nchw: cudarc::driver::CudaFunction,
    /// The explained path's feature maps (f32 NCHW on the device and its pinned host copy), allocated
    /// on the first explained call for the images it holds and grown when a larger one comes: the
    /// plain path never allocates or copies them.
    maps: Option<(CudaSlice<f32>, PinnedHostSlice<f32>)>,
    /// How image bytes are copied and chunked (settable at run time: benchmarks compare settings).
    pub staging: Staging,
    /// The second set of byte and output buffers, the copy stream and the events of a pipelined
    /// `run_u8`, allocated on the first call that has two chunks or more.
    pipe: Option<Pipe>,
}

/// How image bytes travel from the caller's (pageable) memory to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staging {
    /// Threads that copy one part of a batch into pinned memory at once (1 = the calling thread
    /// alone; more come from a process-wide pool of at most [`MAX_COPY_THREADS`]).
    pub threads: usize,
    /// Images per chunk of a pipelined `run_u8` (0: `max_batch`). A request of more images than
    /// this runs as chunks whose host copies overlap the previous chunk's upload and graph. Each
    /// chunk runs in its own bucket, exactly as if it were a request of its own: with a chunk below
    /// `max_batch`, a batch that would have run in one large bucket runs in smaller ones, whose fp16
    /// kernels may round differently (the int8 path is integer arithmetic up to its fp16 FC).
    pub chunk: usize,
    /// Bytes per part of a staged copy (each part's DMA is queued as soon as it is copied; the last
    /// part's transfer is what the graph waits for after the copy): 0 = [`PART_BYTES`].
    pub part_bytes: usize,
}

impl Default for Staging {
    /// [`DEFAULT_COPY_THREADS`], or `INFERSCOPE_COPY_THREADS` (1..=[`MAX_COPY_THREADS`]) where it is
    /// set — how a served benchmark compares thread counts in one process tree; chunks of `max_batch`.
    fn default() -> Self {
        let threads = std::env::var("INFERSCOPE_COPY_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|t| (1..=MAX_COPY_THREADS).contains(t))
            .unwrap_or(DEFAULT_COPY_THREADS);
        Staging {
            threads,
            chunk: 0,
            part_bytes: 0,
        }
    }
}

/// Image bytes of one batch in pinned memory, with a device buffer for them, kept outside the
/// executor (and its lock): a caller fills one ([`Staged::fill`]) while another caller's batch runs on
/// the GPU, then hands it to [`Executor::run_staged_u8`]. How a served GPU variant with two batcher
/// workers keeps the device busy while the next batch's bytes are being copied.
pub struct Staged {
    host: PinnedHostSlice<u8>,
    dev: CudaSlice<u8>,
    /// Bytes filled.
    len: usize,
}

impl Staged {
    /// Buffers for `images` images (allocated on `stream`, the executor's).
    pub fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>, images: usize) -> Result<Self> {
        let bytes = images * INPUT_LEN;
        // SAFETY: written by `fill` before any read (`len` says how far).
        let host = unsafe {
            ctx.alloc_pinned_with_flags::<u8>(bytes, drv_sys::CU_MEMHOSTALLOC_WRITECOMBINED)
        }
        .map_err(rt("allocating pinned memory"))?;
        let dev = stream
            .alloc_zeros::<u8>(bytes)
            .map_err(rt("allocating GPU memory"))?;
        stream.synchronize().map_err(rt("allocating GPU memory"))?;
        Ok(Staged { host, dev, len: 0 })
    }

    /// Copies `parts` (in order) into the pinned buffer with up to `threads` threads of the copy
    /// pool. Nothing goes to the device yet.
    pub fn fill(&mut self, parts: &[&[u8]], threads: usize) -> Result<()> {
        let src = Gather::new(parts);
        if src.len > self.host.len() {
            return Err(Error::Shape(format!(
                "{} bytes of images do not fit the {}-byte staging buffer",
                src.len,
                self.host.len()
            )));
        }
        let copying = stages::start();
        let host = &mut self.host.as_mut_slice().map_err(rt("pinned input"))?[..src.len];
        let pool = copy_pool().filter(|_| threads > 1 && src.len > PART_BYTES / 4);
        match pool {
            None => src.copy_to(0, host),
            Some(pool) => {
                let threads = threads.min(pool.current_num_threads()).max(1);
                let stripe = src.len.div_ceil(threads);
                let src = &src;
                pool.in_place_scope(|scope| {
                    for (t, h) in host.chunks_mut(stripe).enumerate() {
                        scope.spawn(move |_| src.copy_to(t * stripe, h));
                    }
                });
            }
        }
        self.len = src.len;
        stages::since(Stage::StageCopy, copying);
        Ok(())
    }

    /// The context of the pinned buffer.
    pub fn host_context(&self) -> &Arc<CudaContext> {
        self.host.context()
    }

    /// The images filled.
    pub fn images(&self) -> usize {
        self.len / INPUT_LEN
    }
}

/// Slot 1 of the pipelined upload (slot 0 is [`Io`]'s own buffers), the copy stream, and per slot
/// an event after its bytes are on the device and one after its outputs are in pinned memory.
struct Pipe {
    copy: Arc<CudaStream>,
    host_in8: PinnedHostSlice<u8>,
    input8: CudaSlice<u8>,
    host_out: PinnedHostSlice<f32>,
    uploaded: [CudaEvent; 2],
    done: [CudaEvent; 2],
}

/// The buffers and events of one slot of the pipelined upload, with the copy stream.
struct PipeSlot<'a> {
    copy: &'a Arc<CudaStream>,
    host_in8: &'a mut PinnedHostSlice<u8>,
    input8: &'a CudaSlice<u8>,
    host_out: &'a mut PinnedHostSlice<f32>,
    uploaded: &'a CudaEvent,
    done: &'a CudaEvent,
}

/// Slot `slot` of the pipeline (0: [`Io`]'s own buffers, given as `own_*`; 1: the [`Pipe`]'s). The
/// one place that maps a slot to its buffers (the three pipelined steps each did it themselves).
fn pipe_slot<'a>(
    pipe: &'a mut Option<Pipe>,
    own_in8: &'a mut PinnedHostSlice<u8>,
    own_dev8: &'a CudaSlice<u8>,
    own_out: &'a mut PinnedHostSlice<f32>,
    slot: usize,
) -> Result<PipeSlot<'a>> {
    let Pipe {
        copy,
        host_in8,
        input8,
        host_out,
        uploaded,
        done,
    } = pipe
        .as_mut()
        .ok_or_else(|| Error::Runtime("pipeline buffers".into()))?;
    let (host_in8, input8, host_out) = if slot == 0 {
        (own_in8, own_dev8, own_out)
    } else {
        (host_in8, &*input8, host_out)
    };
    Ok(PipeSlot {
        copy,
        host_in8,
        input8,
        host_out,
        uploaded: &uploaded[slot],
        done: &done[slot],
    })
}

/// Where an executor's last feature map (the global average pool's input) lies on the device after a
/// forward pass, and in which form: NHWC `[n, hw, c]`.
#[derive(Debug, Clone, Copy)]
pub struct LastMap {
    pub ptr: drv_sys::CUdeviceptr,
    pub hw: usize,
    pub c: usize,
    pub form: MapForm,
}

/// The element type of a [`LastMap`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MapForm {
    F16,
    /// int8 in storage form (`u8 − 128`), real value `scale · (q − zero)`.
    I8 {
        scale: f32,
        zero: i32,
    },
}

impl LastMap {
    /// Values of one image's map.
    pub fn len(&self) -> usize {
        self.hw * self.c
    }

    /// Whether the map is empty (never, for a network that loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Side of the square map (ResNet50 at 224×224: 7).
    fn side(&self) -> Result<usize> {
        let s = (self.hw as f64).sqrt().round() as usize;
        if s * s != self.hw {
            return Err(Error::Shape(format!(
                "a last feature map of {} cells is not square",
                self.hw
            )));
        }
        Ok(s)
    }
}

/// A batch's input, as the two upload paths take it.
#[derive(Debug, Clone, Copy)]
pub enum Images<'a> {
    /// NCHW f32, torchvision-normalized.
    F32(&'a [f32]),
    /// 224×224×3 u8 HWC (normalized on the device).
    U8(&'a [u8]),
    /// [`Images::U8`] in several parts (the requests of a served batch, in order, each whole
    /// images): copied from each part straight into the pinned staging buffer.
    U8Parts(&'a [&'a [u8]]),
}

impl Images<'_> {
    fn images(&self) -> usize {
        match self {
            Images::F32(x) => x.len() / INPUT_LEN,
            Images::U8(x) => x.len() / INPUT_LEN,
            Images::U8Parts(p) => p.iter().map(|x| x.len()).sum::<usize>() / INPUT_LEN,
        }
    }

    /// Checks the element count against `batch` images.
    pub fn check(&self, batch: usize) -> Result<()> {
        match self {
            Images::F32(x) => crate::backend::check_input(x, batch),
            Images::U8(x) => check_bytes(x, batch),
            Images::U8Parts(p) => {
                let total: usize = p.iter().map(|x| x.len()).sum();
                if batch == 0
                    || total != batch * INPUT_LEN
                    || p.iter().any(|x| x.len() % INPUT_LEN != 0)
                {
                    return Err(Error::Shape(format!(
                        "{total} bytes in {} parts is not {batch} images of {INPUT_LEN} bytes (whole images per part)",
                        p.len()
                    )));
                }
                Ok(())
            }
        }
    }
}

impl Io {
    /// Allocates everything; the input starts as a fixed pattern of normalized-pixel-like values, so
    /// that algorithm searches run on varied data before any image arrives.
    pub fn new(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        kernels: &Kernels,
        max_batch: usize,
    ) -> Result<Self> {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let pattern: Vec<f32> = (0..max_batch * INPUT_LEN)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<f32>(n)
                .map_err(rt("allocating GPU memory"))
        };
        // SAFETY: both pinned buffers are fully written before they are read (`upload`, `download`).
        let host_in = unsafe {
            ctx.alloc_pinned_with_flags::<f32>(
                max_batch * INPUT_LEN,
                drv_sys::CU_MEMHOSTALLOC_WRITECOMBINED,
            )
        }
        .map_err(rt("allocating pinned memory"))?;
        // SAFETY: as above.
        let host_in8 = unsafe {
            ctx.alloc_pinned_with_flags::<u8>(
                max_batch * INPUT_LEN,
                drv_sys::CU_MEMHOSTALLOC_WRITECOMBINED,
            )
        }
        .map_err(rt("allocating pinned memory"))?;
        // SAFETY: as above.
        let host_out =
            unsafe { ctx.alloc_pinned_with_flags::<f32>(2 * max_batch * NUM_CLASSES, 0) }
                .map_err(rt("allocating pinned memory"))?;
        Ok(Io {
            input32: stream
                .clone_htod(&pattern)
                .map_err(rt("allocating GPU memory"))?,
            input8: stream
                .alloc_zeros::<u8>(max_batch * INPUT_LEN)
                .map_err(rt("allocating GPU memory"))?,
            host_in8,
            normalize: kernels.normalize_u8.clone(),
            logits32: alloc(max_batch * NUM_CLASSES)?,
            probs32: alloc(max_batch * NUM_CLASSES)?,
            host_in,
            host_out,
            to_nchw: kernels.feature_map_nchw.clone(),
            maps: None,
            staging: Staging::default(),
            pipe: None,
        })
    }

    /// Enqueues the conversion of the first `n` images' last feature maps (`map`, NHWC fp16 or int8 on
    /// the device) into f32 NCHW and their copy to pinned host memory; [`Io::download`] then waits for
    /// them with the logits, and [`Io::take_maps`] reads them.
    pub fn enqueue_maps(
        &mut self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        map: &LastMap,
        n: usize,
    ) -> Result<()> {
        let len = n * map.len();
        if self.maps.as_ref().is_none_or(|(d, _)| d.len() < len) {
            // Sized for the bucket of `n`, so that batches of similar sizes do not reallocate.
            let cap = n.next_power_of_two() * map.len();
            self.maps = None;
            let dev = stream
                .alloc_zeros::<f32>(cap)
                .map_err(rt("allocating the feature maps"))?;
            // SAFETY: written by the copy below before it is read (`take_maps` after `download`).
            let host = unsafe { ctx.alloc_pinned_with_flags::<f32>(cap, 0) }
                .map_err(rt("allocating pinned memory"))?;
            self.maps = Some((dev, host));
        }
        let Some((dev, host)) = self.maps.as_mut() else {
            return Err(Error::Runtime("feature-map buffers".into()));
        };
        let (fmt, scale, zero) = match map.form {
            MapForm::F16 => (0i32, 1.0f32, 0i32),
            MapForm::I8 { scale, zero } => (1, scale, zero),
        };
        let (nn, hw, c) = (n as i32, map.hw as i32, map.c as i32);
        let (y, _sync) = dev.device_ptr(stream);
        let mut k = stream.launch_builder(&self.to_nchw);
        k.arg(&map.ptr)
            .arg(&y)
            .arg(&nn)
            .arg(&hw)
            .arg(&c)
            .arg(&fmt)
            .arg(&scale)
            .arg(&zero);
        let cfg = LaunchConfig {
            grid_dim: (blocks(len), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads `len` elements of the executor's last activation (allocated for `max_batch`
        // images of it, `n ≤ max_batch`) and writes `len` floats of a buffer of at least that size.
        unsafe { k.launch(cfg) }.map_err(rt("feature_map_nchw"))?;
        let h = host.as_mut_slice().map_err(rt("pinned feature maps"))?;
        // SAFETY: both hold ≥ len floats; the host buffer is read only after the stream's sync.
        unsafe { drv_result::memcpy_dtoh_async(&mut h[..len], y, stream.cu_stream()) }
            .map_err(rt("downloading the feature maps"))?;
        Ok(())
    }

    /// The feature maps of the first `n` images that [`Io::enqueue_maps`] copied, one per image
    /// (call after [`Io::download`], which waits for the copy).
    pub fn take_maps(&mut self, map: &LastMap, n: usize) -> Result<Vec<FeatureMap>> {
        let side = map.side()?;
        let (_, host) = self
            .maps
            .as_mut()
            .ok_or_else(|| Error::Runtime("no feature maps were copied".into()))?;
        let h = host.as_mut_slice().map_err(rt("pinned feature maps"))?;
        h[..n * map.len()]
            .chunks_exact(map.len())
            .map(|m| FeatureMap::new(map.c, side, side, m.to_vec()))
            .collect()
    }

    /// Copies up to `max_batch` images into the input buffer (asynchronously, from pinned memory).
    pub fn upload(&mut self, stream: &Arc<CudaStream>, chunk: &[f32]) -> Result<()> {
        let staging = self.staging;
        let host = self.host_in.as_mut_slice().map_err(rt("pinned input"))?;
        let (dst, _sync) = self.input32.device_ptr(stream);
        // SAFETY: `chunk.len() ≤ max_batch × INPUT_LEN`, the size of both buffers; the host buffer is not
        // touched again before the stream is synchronized in `download`.
        unsafe { staged_upload(host, &[chunk], dst, stream, staging) }
    }

    /// Copies up to `max_batch` images as bytes (u8 HWC, RGB, 224×224) into the device and normalizes
    /// them into the f32 input buffer there (asynchronously).
    pub fn upload_u8(&mut self, stream: &Arc<CudaStream>, chunk: &[u8]) -> Result<()> {
        self.upload_u8_parts(stream, &[chunk])
    }

    /// [`Io::upload_u8`] of a batch given as several parts (in order): each part is copied straight
    /// into its place in the pinned buffer, no joined copy first.
    pub fn upload_u8_parts(&mut self, stream: &Arc<CudaStream>, parts: &[&[u8]]) -> Result<()> {
        let staging = self.staging;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.input8.len() {
            return Err(Error::Shape(format!(
                "{len} bytes of images do not fit the {}-byte input buffer",
                self.input8.len()
            )));
        }
        let host = self.host_in8.as_mut_slice().map_err(rt("pinned input"))?;
        let (dst, _sync) = self.input8.device_ptr(stream);
        // SAFETY: the parts hold `len ≤ max_batch × INPUT_LEN` bytes, the size of both buffers; the
        // host buffer is not touched again before the stream is synchronized in `download`.
        let copying = stages::start();
        unsafe { staged_upload(host, parts, dst, stream, staging) }?;
        stages::since(Stage::StageCopy, copying);
        self.normalize_u8(stream, dst, len / 3)
    }

    /// Enqueues the transfer of `staged`'s bytes (already in pinned memory) to its device buffer and
    /// their normalization into the input buffer.
    fn upload_staged(&mut self, stream: &Arc<CudaStream>, staged: &Staged) -> Result<()> {
        let host = staged.host.as_slice().map_err(rt("pinned input"))?;
        let (dst, _sync) = staged.dev.device_ptr(stream);
        // SAFETY: `staged.len` bytes lie in both buffers; the pinned buffer is not written again
        // before the stream is synchronized (`download_outputs`, or the error path of
        // `run_staged_u8`).
        unsafe { drv_result::memcpy_htod_async(dst, &host[..staged.len], stream.cu_stream()) }
            .map_err(rt("uploading the input"))?;
        self.normalize_u8(stream, dst, staged.len / 3)
    }

    /// Enqueues `normalize_u8`: `pixels` RGB pixels of bytes at `src` on the device into the f32
    /// NCHW input buffer.
    fn normalize_u8(
        &self,
        stream: &Arc<CudaStream>,
        src: drv_sys::CUdeviceptr,
        pixels: usize,
    ) -> Result<()> {
        let (y, _sync) = self.input32.device_ptr(stream);
        let (px, hw) = (pixels as i64, (INPUT_SIZE * INPUT_SIZE) as i32);
        let mut k = stream.launch_builder(&self.normalize);
        k.arg(&src).arg(&y).arg(&px).arg(&hw);
        for v in MEAN.iter().chain(&STD) {
            k.arg(v);
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks(pixels), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads `3 × pixels` bytes and writes as many floats, both within `max_batch` images.
        unsafe { k.launch(cfg) }.map_err(rt("normalize_u8"))?;
        Ok(())
    }

    /// Allocates the pipeline's second buffers, its copy stream and its events (once).
    fn ensure_pipe(&mut self, ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<()> {
        if self.pipe.is_some() {
            return Ok(());
        }
        let bytes = self.input8.len();
        // SAFETY: written before read, as the slot-0 buffers (`stage_chunk`, `enqueue_outputs`).
        let host_in8 = unsafe {
            ctx.alloc_pinned_with_flags::<u8>(bytes, drv_sys::CU_MEMHOSTALLOC_WRITECOMBINED)
        }
        .map_err(rt("allocating pinned memory"))?;
        // SAFETY: as above.
        let host_out = unsafe { ctx.alloc_pinned_with_flags::<f32>(self.host_out.len(), 0) }
            .map_err(rt("allocating pinned memory"))?;
        let event = || ctx.new_event(None).map_err(rt("creating an event"));
        self.pipe = Some(Pipe {
            copy: ctx.new_stream().map_err(rt("creating the copy stream"))?,
            host_in8,
            input8: stream
                .alloc_zeros::<u8>(bytes)
                .map_err(rt("allocating GPU memory"))?,
            host_out,
            uploaded: [event()?, event()?],
            done: [event()?, event()?],
        });
        // The new device buffer is allocated in `stream`'s order; the copy stream writes it next.
        stream.synchronize().map_err(rt("allocating GPU memory"))
    }

    /// Pipelined upload of one chunk into `slot`: copies the bytes into the slot's pinned buffer
    /// (the calling thread returns when they are all there), queues their DMA on the copy stream, and
    /// on `stream` waits for it and normalizes them into the input buffer. The slot's previous chunk
    /// must be finished ([`Io::take_outputs`] waited for it).
    fn stage_chunk(&mut self, stream: &Arc<CudaStream>, slot: usize, chunk: &[u8]) -> Result<()> {
        let staging = self.staging;
        let s = pipe_slot(
            &mut self.pipe,
            &mut self.host_in8,
            &self.input8,
            &mut self.host_out,
            slot,
        )?;
        let host = s.host_in8.as_mut_slice().map_err(rt("pinned input"))?;
        let dst = {
            let (dst, _sync) = s.input8.device_ptr(s.copy);
            dst
        };
        // SAFETY: `chunk.len() ≤ max_batch × INPUT_LEN`, the size of both buffers; the slot's
        // previous transfer and the normalization that read its device bytes are finished (the caller
        // waited for the slot's `done` event), and the host buffer is written again only after this
        // chunk's `done` event.
        unsafe { staged_upload(host, &[chunk], dst, s.copy, staging) }?;
        s.uploaded
            .record(s.copy)
            .map_err(rt("recording an event"))?;
        stream
            .wait(s.uploaded)
            .map_err(rt("waiting for the upload"))?;
        self.normalize_u8(stream, dst, chunk.len() / 3)
    }

    /// Enqueues the copy of the first `n` images' logits and probabilities into `slot`'s pinned
    /// output buffer and records the slot's `done` event.
    fn enqueue_outputs(
        &mut self,
        stream: &Arc<CudaStream>,
        slot: usize,
        n: usize,
        probs: bool,
    ) -> Result<()> {
        let len = n * NUM_CLASSES;
        let s = pipe_slot(
            &mut self.pipe,
            &mut self.host_in8,
            &self.input8,
            &mut self.host_out,
            slot,
        )?;
        let host = s.host_out.as_mut_slice().map_err(rt("pinned output"))?;
        let (lp, _s1) = self.logits32.device_ptr(stream);
        let (pp, _s2) = self.probs32.device_ptr(stream);
        let (l, p) = host.split_at_mut(host.len() / 2);
        // SAFETY: both device buffers hold ≥ len floats (n ≤ max_batch), each host half max_batch ×
        // 1000; the host reads them only after the `done` event below.
        unsafe {
            drv_result::memcpy_dtoh_async(&mut l[..len], lp, stream.cu_stream())
                .map_err(rt("downloading logits"))?;
            if probs {
                drv_result::memcpy_dtoh_async(&mut p[..len], pp, stream.cu_stream())
                    .map_err(rt("downloading probabilities"))?;
            }
        }
        s.done.record(stream).map_err(rt("recording an event"))
    }

    /// Waits for `slot`'s outputs ([`Io::enqueue_outputs`]) and appends its `n` images' logits and
    /// probabilities.
    fn take_outputs(
        &mut self,
        slot: usize,
        n: usize,
        logits: &mut Vec<f32>,
        probs: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let len = n * NUM_CLASSES;
        let s = pipe_slot(
            &mut self.pipe,
            &mut self.host_in8,
            &self.input8,
            &mut self.host_out,
            slot,
        )?;
        s.done.synchronize().map_err(rt("running the network"))?;
        let host = s.host_out.as_mut_slice().map_err(rt("pinned output"))?;
        let (l, p) = host.split_at(host.len() / 2);
        logits.extend_from_slice(&l[..len]);
        if let Some(probs) = probs {
            probs.extend_from_slice(&p[..len]);
        }
        Ok(())
    }

    /// After a failed pipelined call: waits for whatever it left in flight on the copy stream, so
    /// that no transfer still reads a buffer the next call writes.
    fn settle(&self) {
        if let Some(pipe) = &self.pipe {
            let _ = pipe.copy.synchronize();
        }
    }

    /// Copies the logits and probabilities of the first `n` images back and waits for the stream.
    pub fn download(&mut self, stream: &Arc<CudaStream>, n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.download_outputs(stream, n, true)
    }

    /// [`Io::download`], the probabilities only if `probs` (else an empty `Vec`: callers that want
    /// the logits alone skip a copy of 4 KB an image each way).
    pub fn download_outputs(
        &mut self,
        stream: &Arc<CudaStream>,
        n: usize,
        probs: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let len = n * NUM_CLASSES;
        let host = self.host_out.as_mut_slice().map_err(rt("pinned output"))?;
        let (lp, _s1) = self.logits32.device_ptr(stream);
        let (pp, _s2) = self.probs32.device_ptr(stream);
        let (l, p) = host.split_at_mut(len);
        // SAFETY: both device buffers hold ≥ len floats; the host halves are `len` long.
        unsafe {
            drv_result::memcpy_dtoh_async(l, lp, stream.cu_stream())
                .map_err(rt("downloading logits"))?;
            if probs {
                drv_result::memcpy_dtoh_async(&mut p[..len], pp, stream.cu_stream())
                    .map_err(rt("downloading probabilities"))?;
            }
        }
        let waiting = stages::start();
        stream.synchronize().map_err(rt("running the network"))?;
        stages::since(Stage::DeviceWait, waiting);
        let p = if probs { p[..len].to_vec() } else { Vec::new() };
        Ok((l.to_vec(), p))
    }
}

/// Bytes per part of a staged upload unless [`Staging::part_bytes`] says otherwise.
pub const PART_BYTES: usize = 2 << 20;
/// Threads copying one part into pinned memory unless [`Staging::threads`] says otherwise.
pub const DEFAULT_COPY_THREADS: usize = 8;
/// Size of the process-wide pool of copy threads (and the most [`Staging::threads`] can use).
pub const MAX_COPY_THREADS: usize = 16;

/// The threads that copy image bytes into pinned memory, shared by every network in the process
/// (`min(cores, MAX_COPY_THREADS)` of them, started on first use: spawning threads per call cost
/// tens of µs each, per chunk of a pipelined call); `None` if the pool cannot be built (then the
/// calling thread copies alone).
fn copy_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_COPY_THREADS);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("inferscope-stage-{i}"))
            .build()
            .map_err(
                |e| tracing::warn!(error = %e, "no staging-copy threads; copying on the caller"),
            )
            .ok()
    })
    .as_ref()
}

/// Copies `src` into the pinned `host` buffer and queues its upload to `dst` on `stream`, the two
/// overlapped. End to end from the host, the copy into pinned memory was the largest cost after the
/// network itself (38.5 MB of image bytes at batch 256: several ms on one core against a 7–10 ms
/// graph). So a large input is copied in parts of [`Staging::part_bytes`], each part by up to
/// [`Staging::threads`] threads of [`copy_pool`], and each part's transfer is queued as soon as it is in pinned memory:
/// the DMA of one part runs while the next is copied. Small inputs (batch 1: 150 KB) take one plain
/// copy. Returns when every part is copied and queued.
///
/// # Safety
/// `dst` must hold `src.len()` elements, `host` at least as many; `host` must not be written again
/// before the stream has finished the transfer (callers synchronize in [`Io::download`], or wait for
/// the pipeline slot's event).
unsafe fn staged_upload<T: Copy + Send + Sync>(
    host: &mut [T],
    src: &[&[T]],
    dst: drv_sys::CUdeviceptr,
    stream: &Arc<CudaStream>,
    staging: Staging,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let size = std::mem::size_of::<T>();
    let src = Gather::new(src);
    let len = src.len;
    let host = &mut host[..len];
    let threads = staging.threads;
    let part_bytes = if staging.part_bytes == 0 {
        PART_BYTES
    } else {
        staging.part_bytes
    };
    let part = (part_bytes / size).max(1);
    let pool = copy_pool().filter(|_| threads > 1 && len > part);
    let Some(pool) = pool else {
        src.copy_to(0, host);
        // SAFETY: the caller's contract.
        return unsafe { drv_result::memcpy_htod_async(dst, host, stream.cu_stream()) }
            .map_err(rt("uploading the input"));
    };
    let threads = threads.min(pool.current_num_threads()).max(1);
    // Every slice below comes from this one pointer: the stripes the threads write are disjoint, and
    // a part is read (by the DMA) only after all its stripes are written.
    let base = host.as_mut_ptr() as usize;
    let parts = len.div_ceil(part);
    let done: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
    let mut expected = Vec::with_capacity(parts);
    // Task `t` copies the `t`-th stripe (offset, length) of every part, in part order.
    let mut work: Vec<Vec<(usize, usize, usize)>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..parts {
        let (p0, pn) = (i * part, part.min(len - i * part));
        let stripe = pn.div_ceil(threads);
        let mut count = 0;
        for (t, s0) in (p0..p0 + pn).step_by(stripe).enumerate() {
            work[t].push((i, s0, stripe.min(p0 + pn - s0)));
            count += 1;
        }
        expected.push(count);
    }
    // The tasks run on the pool; this thread queues each part's DMA as soon as its stripes are in.
    pool.in_place_scope(|scope| {
        for list in work {
            let (done, src) = (&done, &src);
            scope.spawn(move |_| {
                for (i, off, n) in list {
                    // SAFETY: a stripe of `host` no other task writes, read by nobody before
                    // its count is published below.
                    let h =
                        unsafe { std::slice::from_raw_parts_mut((base + off * size) as *mut T, n) };
                    src.copy_to(off, h);
                    done[i].fetch_add(1, Ordering::Release);
                }
            });
        }
        let mut result = Ok(());
        for (i, &want) in expected.iter().enumerate() {
            while done[i].load(Ordering::Acquire) < want {
                std::hint::spin_loop();
            }
            if result.is_err() {
                continue;
            }
            let off = i * part;
            let n = part.min(len - off);
            // SAFETY: part `i` is fully written (its stripes' counts were released and acquired
            // here) and no longer written; it lies within `host` and, shifted by `off` elements,
            // within `dst`.
            result = unsafe {
                let src_part = std::slice::from_raw_parts((base + off * size) as *const T, n);
                drv_result::memcpy_htod_async(
                    dst + (off * size) as u64,
                    src_part,
                    stream.cu_stream(),
                )
            }
            .map_err(rt("uploading the input"));
        }
        result
    })
}

/// A source of [`staged_upload`] in several parts, read as their concatenation.
struct Gather<'a, T> {
    parts: &'a [&'a [T]],
    /// Where each part starts in the concatenation.
    starts: Vec<usize>,
    len: usize,
}

impl<'a, T: Copy> Gather<'a, T> {
    fn new(parts: &'a [&'a [T]]) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for p in parts {
            starts.push(len);
            len += p.len();
        }
        Gather { parts, starts, len }
    }

    /// Copies elements `off .. off + out.len()` of the concatenation into `out`.
    fn copy_to(&self, mut off: usize, mut out: &mut [T]) {
        // The last part that starts at or before `off`.
        let mut i = self.starts.partition_point(|&s| s <= off).saturating_sub(1);
        while !out.is_empty() {
            let part = &self.parts[i][off - self.starts[i]..];
            let n = part.len().min(out.len());
            let (head, rest) = out.split_at_mut(n);
            head.copy_from_slice(&part[..n]);
            out = rest;
            off += n;
            i += 1;
        }
    }
}

/// The FC layer (fp16 cuBLASLt GEMM with the bias epilogue) and the softmax, from the pooled fp16
/// features in `gap` to `Io`'s f32 logits and probabilities.
pub struct Head {
    /// The executor's global-average-pooling output, `[max_batch][in_features]` fp16.
    pub gap: CudaSlice<f16>,
    fc_in: usize,
    fc_w: CudaSlice<f16>,
    fc_b: CudaSlice<f16>,
    logits16: CudaSlice<f16>,
    blas: CudaBlasLT,
}

impl Head {
    pub fn new(stream: &Arc<CudaStream>, fc: &Linear, max_batch: usize) -> Result<Self> {
        if fc.out_features != NUM_CLASSES {
            return Err(Error::Shape(format!(
                "fc has {} outputs, expected {NUM_CLASSES}",
                fc.out_features
            )));
        }
        let up = |v: &[f32]| {
            stream
                .clone_htod(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>())
                .map_err(rt("uploading the fc layer"))
        };
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<f16>(n)
                .map_err(rt("allocating GPU memory"))
        };
        Ok(Head {
            gap: alloc(max_batch * fc.in_features)?,
            fc_in: fc.in_features,
            fc_w: up(&fc.weight)?,
            fc_b: up(&fc.bias)?,
            logits16: alloc(max_batch * NUM_CLASSES)?,
            blas: CudaBlasLT::new(stream.clone()).map_err(rt("creating a cuBLASLt handle"))?,
        })
    }

    /// Enqueues the FC layer and the softmax for `n` images, into `io`'s logits and probabilities.
    pub fn enqueue(&self, stream: &Arc<CudaStream>, k: &Kernels, io: &Io, n: usize) -> Result<()> {
        // Column-major: logitsᵀ [1000 × n] = W [in × 1000]ᵀ · gapᵀ [in × n] + bias.
        let cfg = MatmulConfig {
            transa: true,
            transb: false,
            transc: false,
            m: NUM_CLASSES as u64,
            n: n as u64,
            k: self.fc_in as u64,
            alpha: 1.0,
            lda: self.fc_in as i64,
            ldb: self.fc_in as i64,
            beta: 0.0,
            ldc: NUM_CLASSES as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        let w = Dev::of(&self.fc_w, stream);
        let g = Dev::of(&self.gap, stream);
        let b = Dev::of(&self.fc_b, stream);
        let mut out = Dev::of(&self.logits16, stream);
        // SAFETY: shapes as allocated (`n ≤ max_batch`).
        unsafe { self.blas.matmul(cfg, &w, &g, &mut out, Some(&b), None) }
            .map_err(rt("fc (cuBLASLt)"))?;
        let x = Dev::of(&self.logits16, stream);
        let l = Dev::of(&io.logits32, stream);
        let p = Dev::of(&io.probs32, stream);
        let classes = NUM_CLASSES as i32;
        let mut launch = stream.launch_builder(&k.logits_softmax);
        launch.arg(&x.ptr).arg(&l.ptr).arg(&p.ptr).arg(&classes);
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one block per row of 1000.
        unsafe { launch.launch(cfg) }.map_err(rt("logits_softmax"))?;
        Ok(())
    }
}

/// Runs `enqueue` once eagerly (which also loads every kernel), then captures it as a CUDA graph.
pub fn capture(stream: &Arc<CudaStream>, enqueue: impl Fn() -> Result<()>) -> Result<CudaGraph> {
    enqueue()?;
    stream.synchronize().map_err(rt("eager forward pass"))?;
    stream
        .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        .map_err(rt("starting graph capture"))?;
    let enqueued = enqueue();
    let captured = stream.end_capture(drv_sys::CUgraphInstantiate_flags(0));
    enqueued?;
    captured
        .map_err(rt("capturing the graph"))?
        .ok_or_else(|| Error::Runtime("empty graph".into()))
}

/// A network on the GPU with one CUDA graph per batch-size bucket (1, 2, 4, …, `max_batch`): the
/// fp16 executor and the int8 one. The provided methods run, check and time the graphs the same way for
/// both. Not thread-safe by itself: callers serialize (see [`super::GpuModel`]).
pub trait Executor: Send {
    fn ctx(&self) -> &Arc<CudaContext>;
    fn stream(&self) -> &Arc<CudaStream>;
    fn io(&mut self) -> &mut Io;
    fn max_batch(&self) -> usize;
    /// Builds the graph of exactly `batch` images (1 ≤ batch ≤ max_batch) if it does not exist yet.
    fn prepare(&mut self, batch: usize) -> Result<()>;
    /// The graph of a prepared bucket.
    fn graph(&self, batch: usize) -> Option<&CudaGraph>;
    /// Enqueues the forward pass of a prepared bucket without its graph (the same choices).
    fn enqueue_eager(&mut self, batch: usize) -> Result<()>;
    /// What each convolution runs in the graph of `batch` images, if built.
    fn plan(&self, batch: usize) -> Option<Vec<LayerPlan>>;
    /// How the graph of `batch` images was searched, if built (for reports).
    fn search(&self, batch: usize) -> Option<String>;
    /// Multiply-accumulates per image.
    fn macs(&self) -> u64;
    /// Candidates that ran but computed something else than the reference they are checked against.
    fn rejected_candidates(&self) -> usize;
    /// Something the path description must say beyond the per-bucket choices (e.g. what became of
    /// 2:4 layers).
    fn note(&self) -> Option<String> {
        None
    }
    /// Why a prepared bucket runs its plans eagerly instead of a CUDA graph, if it does.
    fn eager_reason(&self, _batch: usize) -> Option<String> {
        None
    }
    /// Device time (ms) of each step of a prepared bucket's forward pass, each step enqueued eagerly on
    /// its own and timed (for the per-layer tables of docs/gpu.md); `None` where the executor cannot
    /// split its pass or the bucket is not built.
    fn profile(&self, _batch: usize) -> Option<Result<Vec<(String, f32)>>> {
        None
    }

    /// Runs the forward pass of a prepared bucket on whatever the input buffer holds: its graph, or
    /// its plans enqueued eagerly where the graph failed the replay check.
    fn forward(&mut self, batch: usize) -> Result<()> {
        match self.graph(batch) {
            Some(g) => g.launch().map_err(rt("launching the graph")),
            None => self.enqueue_eager(batch),
        }
    }

    /// Where the last feature map lies after a forward pass (the global average pool's input).
    fn last_map(&self) -> LastMap;

    /// Logits and softmax probabilities of `batch` images (NCHW, torchvision-normalized),
    /// `batch × 1000` each; requests larger than `max_batch` are split.
    fn run(&mut self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        crate::backend::check_input(input, batch)?;
        let (logits, probs, _) = run_images(self, Images::F32(input), false, true)?;
        Ok((logits, probs))
    }

    /// [`Executor::run`] from image bytes: `batch` images of 224×224×3 u8 (HWC, RGB, what preprocessing
    /// produces before it normalizes). A quarter of the f32 upload; normalized on the device with the
    /// CPU's arithmetic, so the logits equal those of the f32 path.
    fn run_u8(&mut self, input: &[u8], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        check_bytes(input, batch)?;
        let (logits, probs, _) = run_images(self, Images::U8(input), false, true)?;
        Ok((logits, probs))
    }

    /// The logits alone of [`Executor::run`] or [`Executor::run_u8`] (what `Model::run` and
    /// `Model::run_u8` return): the same graph, without copying the probabilities back.
    fn run_logits(&mut self, input: Images<'_>, batch: usize) -> Result<Vec<f32>> {
        input.check(batch)?;
        Ok(run_images(self, input, false, false)?.0)
    }

    /// [`Executor::run`] or [`Executor::run_u8`], and each image's last feature map (f32
    /// `[channels, h, w]`, dequantized for the int8 executor), read from the device buffer the global
    /// average pool reads, after the same graph: one extra kernel and copy, on this path only.
    fn run_explained(
        &mut self,
        input: Images<'_>,
        batch: usize,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<FeatureMap>)> {
        input.check(batch)?;
        run_images(self, input, true, true)
    }

    /// The logits of the images `staged` holds (filled outside this executor's lock): their
    /// transfer, normalization, bucket and graph, the logits back — the same bits as
    /// [`Executor::run_logits`] on the same bytes. A staged batch larger than a chunk
    /// ([`Staging::chunk`], `max_batch`) takes that path instead.
    fn run_staged_u8(&mut self, staged: &Staged) -> Result<Vec<f32>> {
        bind(self.ctx())?;
        let batch = staged.images();
        if batch == 0 {
            return Err(Error::Shape("no images staged".into()));
        }
        if batch > chunk_images(self.max_batch(), self.io().staging.chunk) {
            let host = staged.host.as_slice().map_err(rt("pinned input"))?;
            return self.run_logits(Images::U8(&host[..staged.len]), batch);
        }
        let bucket = bucket_for(self.max_batch(), batch);
        self.prepare(bucket)?;
        let stream = self.stream().clone();
        let mut run = || -> Result<Vec<f32>> {
            self.io().upload_staged(&stream, staged)?;
            self.forward(bucket)?;
            Ok(self.io().download_outputs(&stream, batch, false)?.0)
        };
        let result = run();
        if result.is_err() {
            // Nothing may still read the staged buffers when the caller refills them.
            let _ = stream.synchronize();
        }
        result
    }

    /// The forward pass of exactly `batch` images without the graph, for checking the graph against.
    fn run_eager(&mut self, input: &[f32], batch: usize) -> Result<Vec<f32>> {
        crate::backend::check_input(input, batch)?;
        bind(self.ctx())?;
        self.prepare(batch)?;
        let stream = self.stream().clone();
        self.io().upload(&stream, input)?;
        self.enqueue_eager(batch)?;
        Ok(self.io().download(&stream, batch)?.0)
    }

    /// Puts `input` (at most `max_batch` images) into the input buffer for
    /// [`Executor::time_graph`].
    fn set_input(&mut self, input: &[f32]) -> Result<()> {
        if input.is_empty()
            || !input.len().is_multiple_of(INPUT_LEN)
            || input.len() > self.max_batch() * INPUT_LEN
        {
            return Err(Error::Shape(format!(
                "{} floats is not 1..={} images",
                input.len(),
                self.max_batch()
            )));
        }
        bind(self.ctx())?;
        let stream = self.stream().clone();
        self.io().upload(&stream, input)?;
        stream.synchronize().map_err(rt("uploading the input"))
    }

    /// Replays the graph of exactly `batch` images (built if needed) on whatever the input buffer
    /// holds: `samples` device-time measurements (CUDA events), each the mean of `per_sample`
    /// back-to-back replays, in ms per replay. Three untimed replays come first.
    fn time_graph(&mut self, batch: usize, per_sample: usize, samples: usize) -> Result<Vec<f32>> {
        bind(self.ctx())?;
        self.prepare(batch)?;
        let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
        let e0 = self
            .ctx()
            .new_event(flags)
            .map_err(rt("creating an event"))?;
        let e1 = self
            .ctx()
            .new_event(flags)
            .map_err(rt("creating an event"))?;
        for _ in 0..3 {
            self.forward(batch)?;
        }
        let per = per_sample.max(1);
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            e0.record(self.stream()).map_err(rt("event"))?;
            for _ in 0..per {
                self.forward(batch)?;
            }
            e1.record(self.stream()).map_err(rt("event"))?;
            e1.synchronize().map_err(rt("running the graph"))?;
            out.push(e0.elapsed_ms(&e1).map_err(rt("event"))? / per as f32);
        }
        Ok(out)
    }
}

fn check_bytes(input: &[u8], batch: usize) -> Result<()> {
    if batch == 0 || input.len() != batch * INPUT_LEN {
        return Err(Error::Shape(format!(
            "{} bytes is not {batch} images of {INPUT_LEN} bytes",
            input.len()
        )));
    }
    Ok(())
}

/// The one run loop: in chunks of at most `max_batch` images (or [`Staging::chunk`]), upload, run the
/// chunk's bucket, and copy the logits and probabilities (and, with `maps`, the last feature maps)
/// back. Image bytes of two chunks or more take the pipelined path ([`run_pipelined`]); otherwise
/// chunk after chunk, each waited for.
fn run_images<E: Executor + ?Sized>(
    exec: &mut E,
    input: Images<'_>,
    maps: bool,
    want_probs: bool,
) -> Result<(Vec<f32>, Vec<f32>, Vec<FeatureMap>)> {
    bind(exec.ctx())?;
    let batch = input.images();
    let chunk = chunk_images(exec.max_batch(), exec.io().staging.chunk);
    if let Images::U8Parts(parts) = input {
        if batch > chunk || maps {
            // More than one chunk (not what the server sends): the joined bytes' path.
            return run_images(exec, Images::U8(&parts.concat()), maps, want_probs);
        }
    }
    if let (Images::U8(x), false) = (input, maps) {
        if batch > chunk {
            let (logits, probs) = run_pipelined(exec, x, chunk, want_probs)?;
            return Ok((logits, probs, Vec::new()));
        }
    }
    let mut logits = Vec::with_capacity(batch * NUM_CLASSES);
    let mut probs = Vec::with_capacity(batch * NUM_CLASSES);
    let mut features = Vec::with_capacity(if maps { batch } else { 0 });
    let per = chunk * INPUT_LEN;
    let mut start = 0;
    while start < batch * INPUT_LEN {
        let end = (start + per).min(batch * INPUT_LEN);
        let n = (end - start) / INPUT_LEN;
        let bucket = bucket_for(exec.max_batch(), n);
        exec.prepare(bucket)?;
        let stream = exec.stream().clone();
        match input {
            Images::F32(x) => exec.io().upload(&stream, &x[start..end])?,
            Images::U8(x) => exec.io().upload_u8(&stream, &x[start..end])?,
            // One chunk (above): the whole batch, each part copied straight into pinned memory.
            Images::U8Parts(p) => exec.io().upload_u8_parts(&stream, p)?,
        }
        exec.forward(bucket)?;
        let last = maps.then(|| exec.last_map());
        if let Some(last) = &last {
            let ctx = exec.ctx().clone();
            exec.io().enqueue_maps(&ctx, &stream, last, n)?;
        }
        let (l, p) = exec.io().download_outputs(&stream, n, want_probs)?;
        if logits.is_empty() {
            (logits, probs) = (l, p);
        } else {
            logits.extend(l);
            probs.extend(p);
        }
        if let Some(last) = &last {
            features.extend(exec.io().take_maps(last, n)?);
        }
        start = end;
    }
    Ok((logits, probs, features))
}

/// Images per chunk of a request: `max_batch`, or the staging setting's chunk if it is smaller.
fn chunk_images(max_batch: usize, chunk: usize) -> usize {
    if chunk == 0 {
        max_batch
    } else {
        chunk.min(max_batch)
    }
}

/// Image bytes of several chunks, pipelined: chunk `i` goes into buffer slot `i % 2` (pinned bytes,
/// device bytes, pinned outputs); the host copies chunk `i` while the GPU still runs chunk `i − 1`,
/// the bytes go up on the copy stream, and the network's stream waits for them (an event) before it
/// normalizes them into the input buffer — after chunk `i − 1`'s graph, which read that buffer. Before
/// slot `s` is written again, the host waits for the slot's last chunk to be done and takes its
/// outputs. Each chunk runs the bucket, normalization and graph it would run alone, in order.
fn run_pipelined<E: Executor + ?Sized>(
    exec: &mut E,
    x: &[u8],
    chunk: usize,
    want_probs: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let batch = x.len() / INPUT_LEN;
    let chunks: Vec<(usize, usize)> = (0..batch)
        .step_by(chunk)
        .map(|s| (s, chunk.min(batch - s)))
        .collect();
    for &(_, n) in &chunks {
        exec.prepare(bucket_for(exec.max_batch(), n))?;
    }
    let ctx = exec.ctx().clone();
    let stream = exec.stream().clone();
    exec.io().ensure_pipe(&ctx, &stream)?;
    let mut logits = Vec::with_capacity(batch * NUM_CLASSES);
    let mut probs = Vec::with_capacity(batch * NUM_CLASSES);
    let mut run = || -> Result<()> {
        for (i, &(s, n)) in chunks.iter().enumerate() {
            let slot = i % 2;
            if i >= 2 {
                let p = want_probs.then_some(&mut probs);
                exec.io()
                    .take_outputs(slot, chunks[i - 2].1, &mut logits, p)?;
            }
            exec.io()
                .stage_chunk(&stream, slot, &x[s * INPUT_LEN..(s + n) * INPUT_LEN])?;
            exec.forward(bucket_for(exec.max_batch(), n))?;
            exec.io().enqueue_outputs(&stream, slot, n, want_probs)?;
        }
        let last = chunks.len().saturating_sub(2);
        for (i, &(_, n)) in chunks.iter().enumerate().skip(last) {
            let p = want_probs.then_some(&mut probs);
            exec.io().take_outputs(i % 2, n, &mut logits, p)?;
        }
        Ok(())
    };
    let result = run();
    if result.is_err() {
        exec.io().settle();
        let _ = stream.synchronize();
    }
    result.map(|()| (logits, probs))
}

/// The bucket a batch of `n` images runs in.
pub fn bucket_for(max_batch: usize, n: usize) -> usize {
    let mut b = 1;
    while b < n.min(max_batch) {
        b *= 2;
    }
    b.min(max_batch)
}

fn bind(ctx: &Arc<CudaContext>) -> Result<()> {
    ctx.bind_to_thread().map_err(rt("binding the CUDA context"))
}

//! What the fp16 ([`super::net::GpuNet`]) and int8 ([`super::int8net::Int8Net`]) executors share: the
//! input/output buffers with their pinned host copies, and running, checking and timing the CUDA graph
//! of a batch-size bucket.

use std::sync::Arc;

use cudarc::driver::{
    result as drv_result, sys as drv_sys, CudaContext, CudaGraph, CudaSlice, CudaStream, DevicePtr,
    PinnedHostSlice,
};

use crate::error::{Error, Result};
use crate::{INPUT_LEN, NUM_CLASSES};

fn rt<E: std::fmt::Debug>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error::Runtime(format!("{what}: {e:?}"))
}

/// The network's f32 input and its f32 logits and probabilities on the device, for `max_batch` images,
/// with pinned host buffers for the copies.
pub struct Io {
    pub input32: CudaSlice<f32>,
    pub logits32: CudaSlice<f32>,
    pub probs32: CudaSlice<f32>,
    host_in: PinnedHostSlice<f32>,
    host_out: PinnedHostSlice<f32>,
}

impl Io {
    /// Allocates everything; the input starts as a fixed pattern of normalized-pixel-like values, so
    /// that algorithm searches run on varied data before any image arrives.
    pub fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>, max_batch: usize) -> Result<Self> {
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
        let host_out =
            unsafe { ctx.alloc_pinned_with_flags::<f32>(2 * max_batch * NUM_CLASSES, 0) }
                .map_err(rt("allocating pinned memory"))?;
        Ok(Io {
            input32: stream
                .clone_htod(&pattern)
                .map_err(rt("allocating GPU memory"))?,
            logits32: alloc(max_batch * NUM_CLASSES)?,
            probs32: alloc(max_batch * NUM_CLASSES)?,
            host_in,
            host_out,
        })
    }

    /// Copies up to `max_batch` images into the input buffer (asynchronously, from pinned memory).
    pub fn upload(&mut self, stream: &Arc<CudaStream>, chunk: &[f32]) -> Result<()> {
        let host = self.host_in.as_mut_slice().map_err(rt("pinned input"))?;
        host[..chunk.len()].copy_from_slice(chunk);
        let (dst, _sync) = self.input32.device_ptr(stream);
        // SAFETY: `chunk.len() ≤ max_batch × INPUT_LEN`, the size of both buffers; the host buffer is not
        // touched again before the stream is synchronized in `download`.
        unsafe { drv_result::memcpy_htod_async(dst, &host[..chunk.len()], stream.cu_stream()) }
            .map_err(rt("uploading the input"))
    }

    /// Copies the logits and probabilities of the first `n` images back and waits for the stream.
    pub fn download(&mut self, stream: &Arc<CudaStream>, n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let len = n * NUM_CLASSES;
        let host = self.host_out.as_mut_slice().map_err(rt("pinned output"))?;
        let (lp, _s1) = self.logits32.device_ptr(stream);
        let (pp, _s2) = self.probs32.device_ptr(stream);
        let (l, p) = host.split_at_mut(len);
        // SAFETY: both device buffers hold ≥ len floats; the host halves are `len` long.
        unsafe {
            drv_result::memcpy_dtoh_async(l, lp, stream.cu_stream())
                .map_err(rt("downloading logits"))?;
            drv_result::memcpy_dtoh_async(&mut p[..len], pp, stream.cu_stream())
                .map_err(rt("downloading probabilities"))?;
        }
        stream.synchronize().map_err(rt("running the network"))?;
        Ok((l.to_vec(), p[..len].to_vec()))
    }
}

/// A network with one CUDA graph per batch-size bucket (1, 2, 4, …, `max_batch`).
pub trait Executor {
    fn ctx(&self) -> &Arc<CudaContext>;
    fn stream(&self) -> &Arc<CudaStream>;
    fn io(&mut self) -> &mut Io;
    fn max_batch(&self) -> usize;
    /// Builds the graph of exactly `batch` images if it does not exist yet.
    fn prepare(&mut self, batch: usize) -> Result<()>;
    /// The graph of a prepared bucket.
    fn graph(&self, batch: usize) -> Option<&CudaGraph>;
    /// Enqueues the forward pass of a prepared bucket without its graph (the same choices).
    fn enqueue_eager(&mut self, batch: usize) -> Result<()>;
}

/// The bucket a batch of `n` images runs in.
pub fn bucket_for(max_batch: usize, n: usize) -> usize {
    let mut b = 1;
    while b < n.min(max_batch) {
        b *= 2;
    }
    b.min(max_batch)
}

fn bind<E: Executor>(e: &E) -> Result<()> {
    e.ctx()
        .bind_to_thread()
        .map_err(rt("binding the CUDA context"))
}

fn launch<E: Executor>(e: &E, batch: usize) -> Result<()> {
    e.graph(batch)
        .ok_or_else(|| Error::Runtime(format!("no graph for batch {batch}")))?
        .launch()
        .map_err(rt("launching the graph"))
}

/// Logits and softmax probabilities of `batch` images (NCHW, torchvision-normalized), `batch × 1000`
/// each; requests larger than `max_batch` are split.
pub fn run<E: Executor>(e: &mut E, input: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    crate::backend::check_input(input, batch)?;
    bind(e)?;
    let mut logits = Vec::with_capacity(batch * NUM_CLASSES);
    let mut probs = Vec::with_capacity(batch * NUM_CLASSES);
    for chunk in input.chunks(e.max_batch() * INPUT_LEN) {
        let n = chunk.len() / INPUT_LEN;
        let bucket = bucket_for(e.max_batch(), n);
        e.prepare(bucket)?;
        let stream = e.stream().clone();
        e.io().upload(&stream, chunk)?;
        launch(e, bucket)?;
        let (l, p) = e.io().download(&stream, n)?;
        logits.extend(l);
        probs.extend(p);
    }
    Ok((logits, probs))
}

/// The forward pass of exactly `batch` images without the graph, for checking the graph against.
pub fn run_eager<E: Executor>(e: &mut E, input: &[f32], batch: usize) -> Result<Vec<f32>> {
    crate::backend::check_input(input, batch)?;
    bind(e)?;
    e.prepare(batch)?;
    let stream = e.stream().clone();
    e.io().upload(&stream, input)?;
    e.enqueue_eager(batch)?;
    Ok(e.io().download(&stream, batch)?.0)
}

/// Puts `input` (at most `max_batch` images) into the input buffer for [`time_graph`].
pub fn set_input<E: Executor>(e: &mut E, input: &[f32]) -> Result<()> {
    if input.is_empty()
        || !input.len().is_multiple_of(INPUT_LEN)
        || input.len() > e.max_batch() * INPUT_LEN
    {
        return Err(Error::Shape(format!(
            "{} floats is not 1..={} images",
            input.len(),
            e.max_batch()
        )));
    }
    bind(e)?;
    let stream = e.stream().clone();
    e.io().upload(&stream, input)?;
    stream.synchronize().map_err(rt("uploading the input"))
}

/// Replays the graph of exactly `batch` images (built if needed) on whatever the input buffer holds:
/// `samples` device-time measurements (CUDA events), each the mean of `per_sample` back-to-back
/// replays, in ms per replay. Three untimed replays come first.
pub fn time_graph<E: Executor>(
    e: &mut E,
    batch: usize,
    per_sample: usize,
    samples: usize,
) -> Result<Vec<f32>> {
    bind(e)?;
    e.prepare(batch)?;
    let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
    let e0 = e.ctx().new_event(flags).map_err(rt("creating an event"))?;
    let e1 = e.ctx().new_event(flags).map_err(rt("creating an event"))?;
    for _ in 0..3 {
        launch(e, batch)?;
    }
    let per = per_sample.max(1);
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        e0.record(e.stream()).map_err(rt("event"))?;
        for _ in 0..per {
            launch(e, batch)?;
        }
        e1.record(e.stream()).map_err(rt("event"))?;
        e1.synchronize().map_err(rt("running the graph"))?;
        out.push(e0.elapsed_ms(&e1).map_err(rt("event"))? / per as f32);
    }
    Ok(out)
}

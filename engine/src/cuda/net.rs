//! The fp16 ResNet executor: cuDNN convolutions with bias, residual and ReLU fused into one call, the
//! engine's own kernels for the rest, the FC layer on cuBLASLt, the whole forward captured in one CUDA
//! graph per batch size.
//!
//! ## Design
//! - Layout NHWC (channels fastest) in fp16 with fp32 accumulation (cuDNN's "pseudo half"
//!   configuration), which is what the tensor cores want. The 3-channel input is padded to
//!   [`GpuOptions::stem_channels`] channels (zeros) so the stem convolution also runs on tensor cores.
//! - Every convolution is one `cudnnConvolutionBiasActivationForward`: `y = act(conv(x) + bias + z)`,
//!   with `z` the shortcut for a block's last convolution (so the residual add and its ReLU cost no
//!   extra pass) and `act` ReLU or identity. The algorithm is chosen per layer and batch size by timing
//!   every candidate on the device, the way `cudnnFind` does. A layer for which no fused algorithm
//!   exists falls back to a plain convolution plus the `bias_act` kernel (reported by [`GpuNet::plan`]).
//! - Weights are uploaded once; all activation buffers are allocated once for
//!   [`GpuOptions::max_batch`] and shared by every batch size (runs are serialized by the caller).
//! - A batch of `n` images runs in the graph of the smallest bucket (1, 2, 4, …, `max_batch`) that holds
//!   it; the rows past `n` hold stale data whose outputs are ignored (images never interact). A graph is
//!   built the first time its bucket is needed: descriptors, algorithm search, one eager run, capture.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::cudnn::{
    sys as dnn_sys, ActivationDescriptor, ConvBiasActivationForward, ConvDescriptor, ConvForward,
    Cudnn, FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{
    sys as drv_sys, CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr,
    DevicePtrMut, DeviceSlice, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use half::f16;

use super::fusion::{
    Bound, ConvShape, Fusion, Plan, Ptrs, NOTE_CUBLASLT_DEPENDENCY, NOTE_RUNTIME_COMPILATION,
};
use super::io::{self, Executor, Head, Io};
use super::kernels::{blocks, Kernels, BLOCK};
use crate::error::{Error, Result};
use crate::model::{Conv, ResNet};
use crate::INPUT_SIZE;

use dnn_sys::cudnnConvolutionFwdAlgo_t as Algo;

/// Settings of one loaded network.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Largest batch one graph runs; larger requests are split. Activation memory is about
    /// `max_batch × 9.6 MB` for ResNet50.
    pub max_batch: usize,
    /// Input channels after padding (3 real ones + zeros): 4 or 8.
    pub stem_channels: usize,
    /// cuDNN workspace, bytes (algorithms that need more are skipped).
    pub workspace_bytes: usize,
    /// Also try cuDNN's graph API (see [`super::fusion`]) for every layer and keep what is fastest.
    pub graph_api: bool,
    /// A quantized (INT8) network runs on the int8 tensor cores (default), or with `false` its
    /// dequantized weights in fp16.
    pub int8: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            max_batch: 64,
            stem_channels: 8,
            workspace_bytes: 256 << 20,
            graph_api: true,
            int8: true,
        }
    }
}

/// Every forward algorithm cuDNN's legacy API has, in the order they are tried.
const ALGOS: [Algo; 8] = [
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
    Algo::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
];

fn rt<E: std::fmt::Debug>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error::Runtime(format!("{what}: {e:?}"))
}

/// A view of device memory owned elsewhere in [`GpuNet`], so that one call can take several views of
/// buffers that may alias (cuDNN's `z` is `y` when a layer has no residual input).
pub(super) struct Dev<T> {
    pub(super) ptr: drv_sys::CUdeviceptr,
    len: usize,
    stream: Arc<CudaStream>,
    _t: PhantomData<T>,
}

impl<T> Dev<T> {
    pub(super) fn of(slice: &CudaSlice<T>, stream: &Arc<CudaStream>) -> Self {
        let (ptr, _sync) = slice.device_ptr(stream);
        Dev {
            ptr,
            len: slice.len(),
            stream: stream.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Dev<T> {
    /// The first `len` elements.
    fn prefix(mut self, len: usize) -> Self {
        self.len = self.len.min(len);
        self
    }
}

impl<T> DeviceSlice<T> for Dev<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl<T> DevicePtr<T> for Dev<T> {
    fn device_ptr<'a>(&'a self, _stream: &'a CudaStream) -> (drv_sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}

impl<T> DevicePtrMut<T> for Dev<T> {
    fn device_ptr_mut<'a>(
        &'a mut self,
        _stream: &'a CudaStream,
    ) -> (drv_sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}

/// The activation buffers (NHWC fp16, each `max_batch ×` the largest activation of one image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buf {
    /// The padded fp16 input.
    X,
    /// Block input/output, ping-pong.
    A,
    B,
    /// Inside a block.
    T1,
    T2,
    /// Projection shortcut.
    S,
}

const BUFS: [Buf; 6] = [Buf::X, Buf::A, Buf::B, Buf::T1, Buf::T2, Buf::S];

/// One convolution's weights and batch-independent descriptors.
struct ConvLayer {
    name: String,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    relu: bool,
    w: CudaSlice<f16>,
    b: CudaSlice<f16>,
    conv: ConvDescriptor<f32>,
    filter: FilterDescriptor<f16>,
    bias: TensorDescriptor<f16>,
    act: ActivationDescriptor<f32>,
}

/// A step of the forward pass.
#[derive(Debug, Clone, Copy)]
enum Op {
    Input,
    Conv {
        layer: usize,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
        h: usize,
        oh: usize,
    },
    MaxPool {
        src: Buf,
        dst: Buf,
        h: usize,
        c: usize,
        oh: usize,
    },
    Gap {
        src: Buf,
        hw: usize,
        c: usize,
    },
    /// FC + softmax (`Head`).
    Head,
}

/// How one layer runs at one batch size.
struct ConvPlan {
    x: TensorDescriptor<f16>,
    y: TensorDescriptor<f16>,
    /// Elements of the output at this batch size.
    out_elems: usize,
    choice: Choice,
    ms: f32,
}

/// How a layer's convolution runs.
enum Choice {
    /// cuDNN's legacy API; `fused`: bias, residual and ReLU inside the call.
    Legacy { algo: Algo, fused: bool },
    /// cuDNN's graph API; `epilogue`: bias, residual and ReLU inside the graph.
    Graph { bound: Bound, epilogue: bool },
}

struct Bucket {
    /// Declared first: the graph goes before the descriptors it was built with.
    graph: CudaGraph,
    plans: Vec<ConvPlan>,
    search: Search,
}

/// Which candidates a bucket's algorithm search considers. Some graph-API engines compute correctly
/// on their own, and in a CUDA graph of their own, but not when several of them share one captured
/// graph (seen on an H200 with cuDNN 9.14 at batch 4, 8 and 32); `prepare` then searches again
/// without the suspects, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Legacy algorithms and every suitable graph-API engine.
    Full,
    /// Without graph-API engines that call cuBLASLt.
    NoCublasLt,
    /// Without graph-API engines that call cuBLASLt or compile at run time.
    Strict,
    /// Legacy algorithms only.
    Legacy,
}

impl Search {
    fn excluded_behavior(self) -> &'static [u32] {
        match self {
            Search::Full | Search::Legacy => &[],
            Search::NoCublasLt => &[NOTE_CUBLASLT_DEPENDENCY],
            Search::Strict => &[NOTE_CUBLASLT_DEPENDENCY, NOTE_RUNTIME_COMPILATION],
        }
    }
}

/// What was chosen for one layer at one batch size (for reports).
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub name: String,
    pub algo: String,
    /// Bias, residual and ReLU inside the cuDNN call (false: plain convolution + `bias_act` kernel).
    pub fused: bool,
    /// Time of the chosen algorithm during the search, ms.
    pub ms: f32,
}

/// A ResNet on the GPU, ready to run. Not thread-safe by itself: callers serialize (see
/// [`super::GpuModel`]).
pub struct GpuNet {
    // Graphs first: dropped before the buffers and handles they use.
    buckets: BTreeMap<usize, Bucket>,
    /// After the buckets: their plans use its handle.
    fusion: Fusion,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    dnn: Arc<Cudnn>,
    k: Kernels,
    opts: GpuOptions,
    layers: Vec<ConvLayer>,
    ops: Vec<Op>,
    input_offset: [f32; 3],
    bufs: Vec<CudaSlice<f16>>,
    io: Io,
    head: Head,
    workspace: CudaSlice<u8>,
    /// A layer's output by a legacy algorithm, which graph-API candidates must reproduce.
    scratch: CudaSlice<f16>,
    diff: CudaSlice<u32>,
    /// Graph-API candidates that ran but computed something else (see `choose`).
    rejected: usize,
    macs: u64,
}

// SAFETY: the cuDNN/cuBLASLt handles, descriptors and graphs are plain handles that CUDA allows to be
// used from any thread as long as calls on one handle are not concurrent. `GpuNet` methods take
// `&mut self`, and the only shared owner (`GpuModel`) keeps it behind a `Mutex`; every entry point binds
// the context to the calling thread first.
unsafe impl Send for GpuNet {}

impl GpuNet {
    /// Uploads the network and allocates every buffer. `net.quant` is ignored: a quantized network runs
    /// here with its dequantized weights in fp16.
    pub fn new(
        ctx: &Arc<CudaContext>,
        kernels: &Kernels,
        net: &ResNet,
        opts: GpuOptions,
    ) -> Result<Self> {
        net.validate()
            .map_err(|e| Error::Shape(format!("invalid network: {e}")))?;
        if opts.max_batch == 0 || !(3..=8).contains(&opts.stem_channels) {
            return Err(Error::Runtime(format!("bad GPU options {opts:?}")));
        }
        ctx.bind_to_thread()
            .map_err(rt("binding the CUDA context"))?;
        let stream = ctx.new_stream().map_err(rt("creating a stream"))?;
        let dnn = Cudnn::new(stream.clone()).map_err(rt("creating a cuDNN handle"))?;

        // Layers and the op list, tracking spatial sizes.
        let mut layers = Vec::new();
        let mut ops = vec![Op::Input];
        let mut max_act = INPUT_SIZE * INPUT_SIZE * opts.stem_channels;
        let mut add_conv = |c: &Conv,
                            cin: usize,
                            relu: bool,
                            src,
                            dst,
                            z,
                            h: usize,
                            ops: &mut Vec<Op>|
         -> Result<usize> {
            let oh = c.out_size(h);
            max_act = max_act.max(oh * oh * c.out_ch);
            layers.push(ConvLayer::new(&dnn, &stream, c, cin, relu)?);
            ops.push(Op::Conv {
                layer: layers.len() - 1,
                src,
                dst,
                z,
                h,
                oh,
            });
            Ok(oh)
        };
        let s = add_conv(
            &net.stem,
            opts.stem_channels,
            net.stem.relu,
            Buf::X,
            Buf::T1,
            None,
            INPUT_SIZE,
            &mut ops,
        )?;
        let ps = (s + 2 - 3) / 2 + 1;
        ops.push(Op::MaxPool {
            src: Buf::T1,
            dst: Buf::A,
            h: s,
            c: net.stem.out_ch,
            oh: ps,
        });
        let (mut cur, mut other, mut s) = (Buf::A, Buf::B, ps);
        for b in net.blocks() {
            let s1 = add_conv(
                &b.conv1,
                b.conv1.in_ch,
                b.conv1.relu,
                cur,
                Buf::T1,
                None,
                s,
                &mut ops,
            )?;
            let s2 = add_conv(
                &b.conv2,
                b.conv2.in_ch,
                b.conv2.relu,
                Buf::T1,
                Buf::T2,
                None,
                s1,
                &mut ops,
            )?;
            let short = match &b.downsample {
                Some(d) => {
                    let sd = add_conv(d, d.in_ch, false, cur, Buf::S, None, s, &mut ops)?;
                    if sd != b.conv3.out_size(s2) {
                        return Err(Error::Shape(format!(
                            "{}: shortcut {sd}² vs residual {s2}²",
                            b.name
                        )));
                    }
                    Buf::S
                }
                None => cur,
            };
            // The block's ReLU follows the residual add: fused into conv3.
            let s3 = add_conv(
                &b.conv3,
                b.conv3.in_ch,
                true,
                Buf::T2,
                other,
                Some(short),
                s2,
                &mut ops,
            )?;
            std::mem::swap(&mut cur, &mut other);
            s = s3;
        }
        let last_c = net.fc.in_features;
        ops.push(Op::Gap {
            src: cur,
            hw: s * s,
            c: last_c,
        });
        ops.push(Op::Head);

        let n = opts.max_batch;
        let alloc_f16 = |len: usize| {
            stream
                .alloc_zeros::<f16>(len)
                .map_err(rt("allocating GPU memory"))
        };
        let bufs = BUFS
            .iter()
            .map(|_| alloc_f16(n * max_act))
            .collect::<Result<Vec<_>>>()?;
        // A pseudo-random input until the first real one: searches and checks never run on zeros.
        let io = Io::new(ctx, &stream, n)?;
        let head = Head::new(&stream, &net.fc, n)?;
        let workspace = stream
            .alloc_zeros::<u8>(opts.workspace_bytes)
            .map_err(rt("allocating the workspace"))?;
        let fusion = Fusion::new(&stream)?;
        let scratch = alloc_f16(n * max_act)?;
        let diff = stream
            .alloc_zeros::<u32>(4)
            .map_err(rt("allocating GPU memory"))?;
        let gpu = GpuNet {
            buckets: BTreeMap::new(),
            fusion,
            ctx: ctx.clone(),
            stream,
            dnn,
            k: kernels.clone(),
            opts,
            layers,
            ops,
            input_offset: net.input_offset,
            bufs,
            io,
            head,
            workspace,
            scratch,
            diff,
            rejected: 0,
            macs: net.macs(INPUT_SIZE),
        };
        // Never search algorithms or time on zeros.
        for i in 0..gpu.bufs.len() {
            gpu.fill(i)?;
        }
        gpu.stream
            .synchronize()
            .map_err(rt("initializing buffers"))?;
        Ok(gpu)
    }

    /// The options this network was loaded with.
    pub fn options(&self) -> &GpuOptions {
        &self.opts
    }

    fn fill(&self, i: usize) -> Result<()> {
        let buf = Dev::of(&self.bufs[i], &self.stream);
        let total = buf.len as i64;
        let seed = 0x9e37_79b9u32.wrapping_mul(i as u32 + 1);
        let mut l = self.stream.launch_builder(&self.k.fill_pattern);
        l.arg(&buf.ptr).arg(&total).arg(&seed);
        // SAFETY: the kernel writes `total` fp16 values into a buffer of that length.
        unsafe { l.launch(cfg1d(buf.len)) }.map_err(rt("fill_pattern"))?;
        Ok(())
    }

    fn buf(&self, b: Buf) -> Dev<f16> {
        let i = BUFS.iter().position(|&x| x == b).unwrap_or(0);
        Dev::of(&self.bufs[i], &self.stream)
    }

    /// Builds the graph for exactly `batch` images (1 ≤ batch ≤ max_batch) if it does not exist yet.
    pub fn prepare(&mut self, batch: usize) -> Result<()> {
        if batch == 0 || batch > self.opts.max_batch {
            return Err(Error::Shape(format!(
                "batch {batch} outside 1..={}",
                self.opts.max_batch
            )));
        }
        if self.buckets.contains_key(&batch) {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(rt("binding the CUDA context"))?;
        let modes: &[Search] = if self.opts.graph_api {
            &[
                Search::Full,
                Search::NoCublasLt,
                Search::Strict,
                Search::Legacy,
            ]
        } else {
            &[Search::Legacy]
        };
        for &mode in modes {
            let (plans, graph) = self.build(batch, mode)?;
            // The replayed graph must compute exactly what the same plans compute enqueued one by one
            // (they are deterministic). Some graph-API engines break that when several of them share
            // one captured graph; then search again without the suspects, at worst legacy only.
            if self.replay_matches_eager(&plans, &graph, batch)? || mode == Search::Legacy {
                graph.upload().map_err(rt("uploading the graph"))?;
                self.buckets.insert(
                    batch,
                    Bucket {
                        graph,
                        plans,
                        search: mode,
                    },
                );
                return Ok(());
            }
            tracing::warn!(
                batch,
                ?mode,
                "CUDA graph replay differs from the eager pass; searching again"
            );
        }
        Err(Error::Runtime(format!("no working plan for batch {batch}")))
    }

    /// Descriptors, algorithm search and capture of the graph for `batch` images.
    fn build(&mut self, batch: usize, mode: Search) -> Result<(Vec<ConvPlan>, CudaGraph)> {
        let nhwc = dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
        let mut plans = Vec::with_capacity(self.layers.len());
        for op in &self.ops {
            if let Op::Conv { layer, h, oh, .. } = *op {
                let l = &self.layers[layer];
                let d = |c: usize, s: usize| [batch as i32, c as i32, s as i32, s as i32];
                let x = self
                    .dnn
                    .create_4d_tensor::<f16>(nhwc, d(l.cin, h))
                    .map_err(rt("tensor descriptor"))?;
                let y = self
                    .dnn
                    .create_4d_tensor::<f16>(nhwc, d(l.cout, oh))
                    .map_err(rt("tensor descriptor"))?;
                plans.push(ConvPlan {
                    x,
                    y,
                    out_elems: batch * oh * oh * l.cout,
                    choice: Choice::Legacy {
                        algo: ALGOS[0],
                        fused: true,
                    },
                    ms: 0.0,
                });
            }
        }
        for op in self.ops.clone() {
            if let Op::Conv {
                layer,
                src,
                dst,
                z,
                h,
                oh,
            } = op
            {
                self.choose(&mut plans[layer], layer, src, dst, z, batch, h, oh, mode)?;
            }
        }
        let graph = io::capture(&self.stream, || self.enqueue(&plans, batch))?;
        Ok((plans, graph))
    }

    /// Runs the plans eagerly and the graph, on whatever the input buffer holds, and compares the
    /// logits (equal up to 1e-3 of the largest: the plans are deterministic).
    fn replay_matches_eager(
        &mut self,
        plans: &[ConvPlan],
        graph: &CudaGraph,
        batch: usize,
    ) -> Result<bool> {
        self.enqueue(plans, batch)?;
        let stream = self.stream.clone();
        let (eager, _) = self.io.download(&stream, batch)?;
        graph.launch().map_err(rt("launching the graph"))?;
        let (replayed, _) = self.io.download(&stream, batch)?;
        let scale = eager.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = eager
            .iter()
            .zip(&replayed)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        Ok(diff <= 1e-3 * scale)
    }

    /// Times `f` (after one untimed call): `None` if the first call fails.
    fn time_op(
        &self,
        e0: &CudaEvent,
        e1: &CudaEvent,
        f: impl Fn() -> Result<()>,
    ) -> Result<Option<f32>> {
        const REPS: usize = 3;
        if f().is_err() {
            return Ok(None);
        }
        self.stream
            .synchronize()
            .map_err(rt("trying a convolution algorithm"))?;
        e0.record(&self.stream).map_err(rt("event"))?;
        for _ in 0..REPS {
            f()?;
        }
        e1.record(&self.stream).map_err(rt("event"))?;
        e1.synchronize().map_err(rt("event"))?;
        Ok(Some(e0.elapsed_ms(e1).map_err(rt("event"))? / REPS as f32))
    }

    /// Times every way to run one layer at one batch size — the legacy API's algorithms (fused
    /// first), then the graph API's engine configurations with and without the fused epilogue — and
    /// keeps the fastest.
    #[allow(clippy::too_many_arguments)]
    fn choose(
        &mut self,
        plan: &mut ConvPlan,
        layer: usize,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
        batch: usize,
        h: usize,
        oh: usize,
        mode: Search,
    ) -> Result<()> {
        let (e0, e1) = (self.event()?, self.event()?);
        let graph_api = mode != Search::Legacy;
        let excluded = mode.excluded_behavior();
        let mut best: Option<(Algo, bool, f32)> = None;
        for fused in [true, false] {
            for algo in ALGOS {
                let need = if fused {
                    self.fused_op(plan, layer).get_workspace_size(algo)
                } else {
                    self.plain_op(plan, layer).get_workspace_size(algo)
                };
                match need {
                    Ok(bytes) if bytes <= self.workspace.len() => {}
                    _ => continue,
                }
                let t = self.time_op(&e0, &e1, || {
                    self.run_legacy(plan, layer, algo, fused, src, dst, z)
                })?;
                if let Some(ms) = t {
                    if best.is_none_or(|(_, _, b)| ms < b) {
                        best = Some((algo, fused, ms));
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }

        // The legacy result is the reference every graph-API candidate must match.
        let reference = match best {
            Some((algo, fused, _)) if graph_api => {
                self.run_legacy(plan, layer, algo, fused, src, dst, z)?;
                let from = self.buf(dst).prefix(plan.out_elems);
                let mut to = Dev::of(&self.scratch, &self.stream).prefix(plan.out_elems);
                self.stream
                    .memcpy_dtod(&from, &mut to)
                    .map_err(rt("copying a reference output"))?;
                true
            }
            _ => false,
        };
        let mut best_graph: Option<(Bound, bool, f32)> = None;
        let mut rejected = 0;
        if graph_api {
            let l = &self.layers[layer];
            let base = ConvShape {
                n: batch,
                cin: l.cin,
                h,
                cout: l.cout,
                oh,
                k: l.k,
                stride: l.stride,
                pad: l.pad,
                epilogue: true,
                residual: z.is_some(),
                relu: l.relu,
                int8: false,
            };
            let ptrs = Ptrs {
                x: self.buf(src).ptr,
                w: Dev::of(&l.w, &self.stream).ptr,
                y: self.buf(dst).ptr,
                b: Dev::of(&l.b, &self.stream).ptr,
                z: z.map(|b| self.buf(b).ptr).unwrap_or(0),
                workspace: Dev::of(&self.workspace, &self.stream).ptr,
            };
            let mut learned = Vec::new();
            for epilogue in [true, false] {
                let shape = ConvShape { epilogue, ..base };
                let candidates = match self.fusion.cached(&shape, excluded) {
                    Some(known) => known.into_iter().collect(),
                    None => self
                        .fusion
                        .candidates(&shape, self.workspace.len(), excluded)
                        .unwrap_or_default(),
                };
                let mut best_here: Option<(Arc<Plan>, f32)> = None;
                for p in candidates {
                    let Ok(bound) = self.fusion.bind(&p, &shape, ptrs) else {
                        continue;
                    };
                    let t = self.time_op(&e0, &e1, || {
                        self.run_graph(&bound, epilogue, layer, plan.out_elems, dst, z)
                    })?;
                    let Some(ms) = t else { continue };
                    if reference
                        && !self.graph_candidate_ok(
                            &bound,
                            epilogue,
                            layer,
                            plan.out_elems,
                            dst,
                            z,
                        )?
                    {
                        rejected += 1;
                        continue;
                    }
                    if best_here.as_ref().is_none_or(|(_, b)| ms < *b) {
                        best_here = Some((p.clone(), ms));
                    }
                    if best_graph.as_ref().is_none_or(|(_, _, b)| ms < *b) {
                        best_graph = Some((bound, epilogue, ms));
                    }
                }
                learned.push((shape, best_here.map(|(p, _)| p)));
            }
            for (shape, p) in learned {
                self.fusion.remember(shape, excluded, p);
            }
        }
        self.rejected += rejected;

        let legacy_ms = best.map(|b| b.2).unwrap_or(f32::INFINITY);
        match (best, best_graph) {
            (_, Some((bound, epilogue, ms))) if ms < legacy_ms => {
                plan.choice = Choice::Graph { bound, epilogue };
                plan.ms = ms;
            }
            (Some((algo, fused, ms)), _) => {
                plan.choice = Choice::Legacy { algo, fused };
                plan.ms = ms;
            }
            _ => {
                return Err(Error::Runtime(format!(
                    "cuDNN has no algorithm for {} at batch {batch}",
                    self.layers[layer].name
                )))
            }
        }
        Ok(())
    }

    fn event(&self) -> Result<CudaEvent> {
        self.ctx
            .new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(rt("creating an event"))
    }

    fn fused_op<'a>(
        &'a self,
        plan: &'a ConvPlan,
        layer: usize,
    ) -> ConvBiasActivationForward<'a, f16, f32, f32, f16> {
        let l = &self.layers[layer];
        ConvBiasActivationForward {
            conv: &l.conv,
            act: &l.act,
            x: &plan.x,
            w: &l.filter,
            z: &plan.y,
            bias: &l.bias,
            y: &plan.y,
        }
    }

    fn plain_op<'a>(&'a self, plan: &'a ConvPlan, layer: usize) -> ConvForward<'a, f16, f32, f16> {
        let l = &self.layers[layer];
        ConvForward {
            conv: &l.conv,
            x: &plan.x,
            w: &l.filter,
            y: &plan.y,
        }
    }

    /// How far the first `n` values of buffer `dst` are from `scratch`: (max |y − s| / max |s|,
    /// ‖y − s‖ / ‖s‖).
    fn diff_to_scratch(&self, dst: Buf, n: usize) -> Result<(f32, f32)> {
        let mut d = Dev::of(&self.diff, &self.stream);
        self.stream.memset_zeros(&mut d).map_err(rt("memset"))?;
        let (y, r) = (self.buf(dst).ptr, Dev::of(&self.scratch, &self.stream).ptr);
        let sums = d.ptr + 8;
        let count = n as i64;
        let mut k = self.stream.launch_builder(&self.k.max_diff);
        k.arg(&y).arg(&r).arg(&count).arg(&d.ptr).arg(&sums);
        let cfg = LaunchConfig {
            grid_dim: (blocks(n).min(1024), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: both buffers hold ≥ n values; `diff` holds 4 words.
        unsafe { k.launch(cfg) }.map_err(rt("max_diff"))?;
        let mut host = [0u32; 4];
        self.stream
            .memcpy_dtoh(&d, &mut host)
            .map_err(rt("reading max_diff"))?;
        self.stream.synchronize().map_err(rt("max_diff"))?;
        let max = f32::from_bits(host[0]) / f32::from_bits(host[1]).max(1e-3);
        let l2 = (f32::from_bits(host[2]) / f32::from_bits(host[3]).max(1e-12)).sqrt();
        Ok((max, l2))
    }

    /// Whether a graph-API candidate reproduces the legacy reference in `scratch`, both as just run
    /// eagerly and replayed from a CUDA graph of its own (into a poisoned output buffer), within fp16
    /// rounding: max error ≤ 1e-2 of the largest value, relative L2 error ≤ 1e-3.
    fn graph_candidate_ok(
        &self,
        bound: &Bound,
        epilogue: bool,
        layer: usize,
        out_elems: usize,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<bool> {
        let close = |(max, l2): (f32, f32)| max <= 1e-2 && l2 <= 1e-3;
        if !close(self.diff_to_scratch(dst, out_elems)?) {
            return Ok(false);
        }
        self.fill(BUFS.iter().position(|&b| b == dst).unwrap_or(0))?;
        self.stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(rt("starting graph capture"))?;
        let ran = self.run_graph(bound, epilogue, layer, out_elems, dst, z);
        let graph = self
            .stream
            .end_capture(drv_sys::CUgraphInstantiate_flags(0));
        let graph = match (ran, graph) {
            (Ok(()), Ok(Some(g))) => g,
            _ => return Ok(false),
        };
        graph.launch().map_err(rt("launching a test graph"))?;
        Ok(close(self.diff_to_scratch(dst, out_elems)?))
    }

    /// Runs a layer through the legacy API.
    #[allow(clippy::too_many_arguments)]
    fn run_legacy(
        &self,
        plan: &ConvPlan,
        layer: usize,
        algo: Algo,
        fused: bool,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        let l = &self.layers[layer];
        let x = self.buf(src);
        let mut y = self.buf(dst);
        let zz = self.buf(z.unwrap_or(dst));
        let w = Dev::of(&l.w, &self.stream);
        let mut ws = Dev::of(&self.workspace, &self.stream);
        let err = |e| Error::Runtime(format!("{} ({algo:?}, fused {fused}): {e:?}", l.name));
        if fused {
            let b = Dev::of(&l.b, &self.stream);
            let alpha2 = if z.is_some() { f16::ONE } else { f16::ZERO };
            // SAFETY: descriptors match the buffers (NHWC fp16, sized for max_batch ≥ batch).
            unsafe {
                self.fused_op(plan, layer).launch(
                    algo,
                    Some(&mut ws),
                    (f16::ONE, alpha2),
                    &x,
                    &w,
                    &zz,
                    &b,
                    &mut y,
                )
            }
            .map_err(err)?;
        } else {
            // SAFETY: as above.
            unsafe {
                self.plain_op(plan, layer).launch(
                    algo,
                    Some(&mut ws),
                    (f16::ONE, f16::ZERO),
                    &x,
                    &w,
                    &mut y,
                )
            }
            .map_err(err)?;
            self.bias_act(layer, plan.out_elems, dst, z)?;
        }
        Ok(())
    }

    /// Runs a layer through a graph-API plan (and the `bias_act` kernel when the graph has no
    /// epilogue).
    fn run_graph(
        &self,
        bound: &Bound,
        epilogue: bool,
        layer: usize,
        out_elems: usize,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        self.fusion.execute(bound)?;
        if !epilogue {
            self.bias_act(layer, out_elems, dst, z)?;
        }
        Ok(())
    }

    /// `y = act(y + bias (+ z))` in place.
    fn bias_act(&self, layer: usize, total: usize, dst: Buf, z: Option<Buf>) -> Result<()> {
        let l = &self.layers[layer];
        let y = self.buf(dst);
        let b = Dev::of(&l.b, &self.stream);
        let zp: u64 = z.map(|z| self.buf(z).ptr).unwrap_or(0);
        let (n, c, relu) = (total as i64, l.cout as i32, i32::from(l.relu));
        let mut k = self.stream.launch_builder(&self.k.bias_act);
        k.arg(&y.ptr)
            .arg(&b.ptr)
            .arg(&zp)
            .arg(&n)
            .arg(&c)
            .arg(&relu);
        // SAFETY: y and z hold `total` values, bias `c`.
        unsafe { k.launch(cfg1d(total)) }.map_err(rt("bias_act"))?;
        Ok(())
    }

    /// Runs a layer the way its plan says.
    fn enqueue_conv(
        &self,
        plan: &ConvPlan,
        layer: usize,
        src: Buf,
        dst: Buf,
        z: Option<Buf>,
    ) -> Result<()> {
        match &plan.choice {
            Choice::Legacy { algo, fused } => {
                self.run_legacy(plan, layer, *algo, *fused, src, dst, z)
            }
            Choice::Graph { bound, epilogue } => {
                self.run_graph(bound, *epilogue, layer, plan.out_elems, dst, z)
            }
        }
    }

    /// Enqueues the whole forward pass for `batch` images on the stream.
    fn enqueue(&self, plans: &[ConvPlan], batch: usize) -> Result<()> {
        let n = batch as i32;
        for op in &self.ops {
            match *op {
                Op::Input => {
                    let x = Dev::of(&self.io.input32, &self.stream);
                    let y = self.buf(Buf::X);
                    let [o0, o1, o2] = self.input_offset;
                    let hw = (INPUT_SIZE * INPUT_SIZE) as i32;
                    let c = self.opts.stem_channels as i32;
                    let mut k = self.stream.launch_builder(&self.k.input_to_nhwc);
                    k.arg(&x.ptr)
                        .arg(&y.ptr)
                        .arg(&o0)
                        .arg(&o1)
                        .arg(&o2)
                        .arg(&n)
                        .arg(&hw)
                        .arg(&c);
                    // SAFETY: reads batch × 3 × 224² floats, writes batch × 224² × c halves; both fit.
                    unsafe { k.launch(cfg1d(batch * INPUT_SIZE * INPUT_SIZE)) }
                        .map_err(rt("input_to_nhwc"))?;
                }
                Op::Conv {
                    layer, src, dst, z, ..
                } => {
                    self.enqueue_conv(&plans[layer], layer, src, dst, z)?;
                }
                Op::MaxPool { src, dst, h, c, oh } => {
                    let (x, y) = (self.buf(src), self.buf(dst));
                    let (hh, cc, ohh) = (h as i32, c as i32, oh as i32);
                    let mut k = self.stream.launch_builder(&self.k.maxpool3s2);
                    k.arg(&x.ptr)
                        .arg(&y.ptr)
                        .arg(&n)
                        .arg(&hh)
                        .arg(&hh)
                        .arg(&cc)
                        .arg(&ohh)
                        .arg(&ohh);
                    // SAFETY: shapes as allocated.
                    unsafe { k.launch(cfg1d(batch * oh * oh * c)) }.map_err(rt("maxpool3s2"))?;
                }
                Op::Gap { src, hw, c } => {
                    let x = self.buf(src);
                    let y = Dev::of(&self.head.gap, &self.stream);
                    let (hww, cc) = (hw as i32, c as i32);
                    let mut k = self.stream.launch_builder(&self.k.global_avg_pool);
                    k.arg(&x.ptr).arg(&y.ptr).arg(&n).arg(&hww).arg(&cc);
                    // SAFETY: shapes as allocated.
                    unsafe { k.launch(cfg1d(batch * c)) }.map_err(rt("global_avg_pool"))?;
                }
                Op::Head => self.head.enqueue(&self.stream, &self.k, &self.io, batch)?,
            }
        }
        Ok(())
    }

    /// Which search built the graph of `batch` images, if built.
    pub fn search(&self, batch: usize) -> Option<Search> {
        self.buckets.get(&batch).map(|b| b.search)
    }

    /// What was chosen for each layer in the graph of `batch` images, if built.
    pub fn plan(&self, batch: usize) -> Option<Vec<LayerPlan>> {
        let bucket = self.buckets.get(&batch)?;
        Some(
            self.layers
                .iter()
                .zip(&bucket.plans)
                .map(|(l, p)| {
                    let (algo, fused) = match &p.choice {
                        Choice::Legacy { algo, fused } => (
                            format!("{algo:?}")
                                .trim_start_matches("CUDNN_CONVOLUTION_FWD_ALGO_")
                                .to_string(),
                            *fused,
                        ),
                        Choice::Graph { bound, epilogue } => {
                            (format!("graph#{}", bound.plan.rank), *epilogue)
                        }
                    };
                    LayerPlan {
                        name: l.name.clone(),
                        algo,
                        fused,
                        ms: p.ms,
                    }
                })
                .collect(),
        )
    }
}

impl Executor for GpuNet {
    fn ctx(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    fn io(&mut self) -> &mut Io {
        &mut self.io
    }
    fn max_batch(&self) -> usize {
        self.opts.max_batch
    }
    fn prepare(&mut self, batch: usize) -> Result<()> {
        GpuNet::prepare(self, batch)
    }
    fn graph(&self, batch: usize) -> Option<&CudaGraph> {
        self.buckets.get(&batch).map(|b| &b.graph)
    }
    fn enqueue_eager(&mut self, batch: usize) -> Result<()> {
        let bucket = self
            .buckets
            .get(&batch)
            .ok_or_else(|| Error::Runtime(format!("no plans for batch {batch}")))?;
        self.enqueue(&bucket.plans, batch)
    }
    fn plan(&self, batch: usize) -> Option<Vec<LayerPlan>> {
        GpuNet::plan(self, batch)
    }
    fn search(&self, batch: usize) -> Option<String> {
        GpuNet::search(self, batch).map(|s| format!("{s:?}"))
    }
    fn macs(&self) -> u64 {
        self.macs
    }
    fn rejected_candidates(&self) -> usize {
        self.rejected
    }
}

fn cfg1d(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks(total), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl ConvLayer {
    fn new(
        dnn: &Arc<Cudnn>,
        stream: &Arc<CudaStream>,
        c: &Conv,
        cin: usize,
        relu: bool,
    ) -> Result<Self> {
        let k = c.kernel;
        // OIHW f32 → OHWI fp16 (cuDNN's NHWC filter layout), input channels zero-padded to `cin`.
        let mut w = vec![f16::ZERO; c.out_ch * k * k * cin];
        for o in 0..c.out_ch {
            for i in 0..c.in_ch {
                for y in 0..k {
                    for x in 0..k {
                        w[((o * k + y) * k + x) * cin + i] = f16::from_f32(c.w(o, i, y, x));
                    }
                }
            }
        }
        let bias: Vec<f16> = c.bias.iter().map(|&v| f16::from_f32(v)).collect();
        let what = |s: &str| format!("{} {s}", c.name);
        let mut conv = dnn
            .create_conv2d::<f32>(
                [c.pad as i32; 2],
                [c.stride as i32; 2],
                [1, 1],
                dnn_sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(rt(what("convolution descriptor")))?;
        conv.set_math_type(dnn_sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH)
            .map_err(rt(what("math type")))?;
        let filter = dnn
            .create_4d_filter::<f16>(
                dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC,
                [c.out_ch as i32, cin as i32, k as i32, k as i32],
            )
            .map_err(rt(what("filter descriptor")))?;
        let bias_desc = dnn
            .create_4d_tensor::<f16>(
                dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                [1, c.out_ch as i32, 1, 1],
            )
            .map_err(rt(what("bias descriptor")))?;
        let mode = if relu {
            dnn_sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU
        } else {
            dnn_sys::cudnnActivationMode_t::CUDNN_ACTIVATION_IDENTITY
        };
        let act = dnn
            .create_activation::<f32>(
                mode,
                dnn_sys::cudnnNanPropagation_t::CUDNN_NOT_PROPAGATE_NAN,
                0.0,
            )
            .map_err(rt(what("activation descriptor")))?;
        Ok(ConvLayer {
            name: c.name.clone(),
            cin,
            cout: c.out_ch,
            k,
            stride: c.stride,
            pad: c.pad,
            relu,
            w: stream.clone_htod(&w).map_err(rt(what("weights upload")))?,
            b: stream.clone_htod(&bias).map_err(rt(what("bias upload")))?,
            conv,
            filter,
            bias: bias_desc,
            act,
        })
    }
}

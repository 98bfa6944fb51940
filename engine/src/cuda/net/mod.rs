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
use std::sync::Arc;

use cudarc::cudnn::{
    sys as dnn_sys, ActivationDescriptor, ConvBiasActivationForward, ConvDescriptor, ConvForward,
    Cudnn, FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{
    sys as drv_sys, CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream, LaunchConfig,
    PushKernelArg,
};
use half::f16;

use super::fusion::{
    Bound, ConvShape, Fusion, Plan, Ptrs, NOTE_CUBLASLT_DEPENDENCY, NOTE_RUNTIME_COMPILATION,
};
pub use super::io::LayerPlan;
use super::io::{self, Executor, Head, Io, LastMap, MapForm};
use super::kernels::{blocks, Kernels, BLOCK};
use super::sparse::{GemmPtrs, SparseGemm, SparseLt, SparseWeights};
use crate::error::{Error, Result};
use crate::model::{Conv, ResNet};
use crate::INPUT_SIZE;

use dnn_sys::cudnnConvolutionFwdAlgo_t as Algo;

mod exec;
mod layer;
mod search;

pub(super) use super::dev::Dev;

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
    /// 2:4 layers (1×1, stride 1, weights 2:4 along the input channels) also try cuSPARSELt on the
    /// sparse tensor cores in the per-layer search ([`super::sparse`]); `false` runs them dense.
    pub sparse: bool,
    /// Take a cuSPARSELt candidate that matched the reference even where it is slower than dense
    /// (tests: makes the sparse path run on every layer it can take).
    pub prefer_sparse: bool,
    /// Run each bucket from its captured CUDA graph (default). `false` enqueues the same plans
    /// eagerly on every call — what a bucket whose graph fails the replay check does anyway.
    pub graphs: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            max_batch: 64,
            stem_channels: 8,
            workspace_bytes: 256 << 20,
            graph_api: true,
            int8: true,
            sparse: true,
            prefer_sparse: false,
            graphs: true,
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
    /// A 1×1 stride-1 convolution whose weights are 2:4 along the input channels.
    two_four: bool,
    /// Its weights compressed for cuSPARSELt (at load, when the library is there).
    sparse_w: Option<SparseWeights>,
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
    /// The fastest dense candidate's time, and the cuSPARSELt candidate's where one ran and matched.
    dense_ms: f32,
    sparse_ms: Option<f32>,
}

/// How a layer's convolution runs.
enum Choice {
    /// cuDNN's legacy API; `fused`: bias, residual and ReLU inside the call.
    Legacy { algo: Algo, fused: bool },
    /// cuDNN's graph API; `epilogue`: bias, residual and ReLU inside the graph.
    Graph { bound: Bound, epilogue: bool },
    /// cuSPARSELt on the sparse tensor cores (bias, residual and ReLU in its epilogue).
    Sparse { gemm: SparseGemm },
}

struct Bucket {
    /// Declared first: the graph goes before the descriptors it was built with. `None`: even the most
    /// conservative plans' graph replayed differently from the eager pass, so the bucket runs eagerly.
    graph: Option<CudaGraph>,
    plans: Vec<ConvPlan>,
    search: Search,
    /// Why the bucket runs eagerly, when it does.
    eager: Option<&'static str>,
}

/// Which candidates a bucket's algorithm search considers. Some graph-API engines compute correctly
/// on their own, and in a CUDA graph of their own, but not when several of them share one captured
/// graph (seen on an H200 with cuDNN 9.14 at batch 4, 8 and 32); `prepare` then searches again
/// without the suspects, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Legacy algorithms, every suitable graph-API engine and, for 2:4 layers, cuSPARSELt.
    Full,
    /// `Full` without cuSPARSELt (only tried for networks with 2:4 layers).
    Dense,
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
            Search::Full | Search::Dense | Search::Legacy => &[],
            Search::NoCublasLt => &[NOTE_CUBLASLT_DEPENDENCY],
            Search::Strict => &[NOTE_CUBLASLT_DEPENDENCY, NOTE_RUNTIME_COMPILATION],
        }
    }
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
    /// What became of the 2:4 layers (for [`Executor::note`]); `None` for a dense network.
    sparse_note: Option<String>,
    /// Declared last: dropped after every plan and compressed weight made with it.
    sparse: Option<SparseLt>,
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
        let io = Io::new(ctx, &stream, kernels, n)?;
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
            sparse_note: None,
            sparse: None,
        };
        let mut gpu = gpu;
        gpu.setup_sparse();
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

    /// For a network with 2:4 layers: loads cuSPARSELt and compresses those layers' weights once (the
    /// search then tries them per batch size), or notes why they run dense.
    fn setup_sparse(&mut self) {
        let eligible = self.layers.iter().filter(|l| l.two_four).count();
        if eligible == 0 {
            return;
        }
        let total = self.layers.len();
        if !self.opts.sparse {
            self.sparse_note = Some(format!(
                "{eligible} of {total} convolutions are 2:4 1×1 layers; run dense (sparse tensor cores off in the options)"
            ));
            return;
        }
        let lt = match SparseLt::new() {
            Ok(lt) => lt,
            Err(e) => {
                tracing::warn!(error = %e, "2:4 layers run dense");
                self.sparse_note = Some(format!("2:4 layers run dense: {e}"));
                return;
            }
        };
        let mut failed = Vec::new();
        for l in self.layers.iter_mut().filter(|l| l.two_four) {
            match SparseWeights::compress(&lt, &self.stream, &l.w, l.cout, l.cin) {
                Ok(w) => l.sparse_w = Some(w),
                Err(e) => failed.push(format!("{}: {e}", l.name)),
            }
        }
        let ready = eligible - failed.len();
        let mut note = format!(
            "cuSPARSELt {}: {ready} of {total} convolutions (the 2:4 1×1 ones) try the sparse tensor cores per batch size, dense elsewhere",
            lt.version_string()
        );
        if !failed.is_empty() {
            note.push_str(&format!("; not compressed: {}", failed.join(", ")));
        }
        self.sparse_note = Some(note);
        self.sparse = Some(lt);
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
        let mut modes = vec![Search::Legacy];
        if self.opts.graph_api {
            modes = vec![
                Search::Full,
                Search::NoCublasLt,
                Search::Strict,
                Search::Legacy,
            ];
            if self.sparse.is_some() {
                modes.insert(1, Search::Dense);
            }
        }
        for (i, &mode) in modes.iter().enumerate() {
            let last = i + 1 == modes.len();
            let (plans, graph) = match self.build(batch, mode) {
                Ok(built) => built,
                Err(e) if !last => {
                    tracing::warn!(batch, ?mode, error = %e, "building the graph failed; searching again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Several replays of the graph must compute exactly what the same plans compute enqueued
            // one by one (they are deterministic). Some graph-API engines break that when several of
            // them share one captured graph, at times only on some replays; then search again
            // without the suspects, and if even the legacy plans' graph differs, run eagerly.
            let diff = self.replay_differs(&plans, &graph, batch)?;
            match diff {
                None if !self.opts.graphs => {
                    self.buckets.insert(
                        batch,
                        Bucket {
                            graph: None,
                            plans,
                            search: mode,
                            eager: Some("CUDA graphs off in the options"),
                        },
                    );
                    return Ok(());
                }
                None => {
                    graph.upload().map_err(rt("uploading the graph"))?;
                    self.buckets.insert(
                        batch,
                        Bucket {
                            graph: Some(graph),
                            plans,
                            search: mode,
                            eager: None,
                        },
                    );
                    return Ok(());
                }
                Some(d) if last => {
                    tracing::warn!(
                        batch,
                        ?mode,
                        max_abs_diff = d,
                        "CUDA graph replay differs from the eager pass even with legacy plans; this batch size runs eagerly"
                    );
                    self.buckets.insert(
                        batch,
                        Bucket {
                            graph: None,
                            plans,
                            search: mode,
                            eager: Some("its CUDA graph's replays differed from the eager pass"),
                        },
                    );
                    return Ok(());
                }
                Some(d) => tracing::warn!(
                    batch,
                    ?mode,
                    max_abs_diff = d,
                    "CUDA graph replay differs from the eager pass; searching again"
                ),
            }
        }
        Err(Error::Runtime(format!("no working plan for batch {batch}")))
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
                        Choice::Sparse { gemm } => {
                            (format!("cuSPARSELt 2:4 alg {}", gemm.alg_id), true)
                        }
                    };
                    LayerPlan {
                        name: l.name.clone(),
                        algo,
                        fused,
                        ms: p.ms,
                        dense_ms: Some(p.dense_ms),
                        sparse_ms: p.sparse_ms,
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
        self.buckets.get(&batch).and_then(|b| b.graph.as_ref())
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
    fn note(&self) -> Option<String> {
        self.sparse_note.clone()
    }
    fn last_map(&self) -> LastMap {
        let (src, hw, c) = self
            .ops
            .iter()
            .find_map(|op| match *op {
                Op::Gap { src, hw, c } => Some((src, hw, c)),
                _ => None,
            })
            .expect("the op list ends in a global average pool (built in `new`)");
        LastMap {
            ptr: self.buf(src).ptr,
            hw,
            c,
            form: MapForm::F16,
        }
    }
    fn eager_reason(&self, batch: usize) -> Option<String> {
        self.buckets
            .get(&batch)
            .and_then(|b| b.eager)
            .map(str::to_string)
    }
}

fn cfg1d(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks(total), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

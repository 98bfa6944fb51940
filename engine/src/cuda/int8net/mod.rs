//! The INT8 variant on the int8 tensor cores: every convolution is an int8 × int8 → int32 GEMM on
//! cuBLASLt (im2col first where the kernel is larger than 1×1 or strided) whose epilogue requantizes to
//! int8 per output channel, with the arithmetic of [`crate::int8`] (checked there against ONNX Runtime).
//!
//! ## Per layer and batch size
//! - Activations are NHWC int8 in storage form (`u8 − 128`); a GEMM is, in cuBLASLt's column-major
//!   terms, `Y[cout × M] = Wᵀ[cout × K] · X[K × M]` with `M = n·oh·ow`, the "TN" int8 layout.
//! - Two ways to requantize, both tried, the faster kept ([`Tier`]):
//!   [`Tier::Fused`]: int8 output from cuBLASLt itself, `α[c]` as a device vector and the bias
//!   epilogue (`y = sat8(rint(α·acc + bias))`); [`Tier::Int32`]: int32 output and the engine's
//!   `requant` kernel (the reference; always available). A fused candidate must reproduce the int32 tier
//!   within one step on every element.
//! - With `INFERSCOPE_INT8_CUDNN=1`, 1×1 layers also try cuDNN's int8 convolutions with the
//!   requantization in their epilogue (see [`cudnn_allowed`] for why that is off by default).
//! - A block's last convolution quantizes its own output, then the `qadd` kernel adds the shortcut
//!   exactly like the file's `QLinearAdd`.
//! - The stem's input is quantized inside its im2col kernel; max pool runs on int8; global average
//!   pooling dequantizes, quantizes like the file's FC input and hands fp16 to the fp16 cuBLASLt FC.
//! - The whole forward is captured in one CUDA graph per bucket, like the fp16 path.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::{result as lt, sys as lts};
use cudarc::driver::{
    result as drv_result, sys as drv_sys, CudaContext, CudaFunction, CudaGraph, CudaSlice,
    CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::fusion::{Bound, ConvShape, Fusion, Ptrs};
use super::io::LayerPlan;
use super::io::{self, Executor, Head, Io, LastMap, MapForm};
use super::kernels::{blocks, Kernels, BLOCK};
use crate::error::{Error, Result};
use crate::int8::{QConv, QNet};
use crate::model::ResNet;
use crate::INPUT_SIZE;

mod cublaslt;
mod igemm;
mod kernels;
mod search;

use cublaslt::{lt_err, LtGemm, Tier};
use igemm::{ConvArgs, Igemm};
use kernels::Int8Kernels;

fn rt<E: std::fmt::Debug>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error::Runtime(format!("{what}: {e:?}"))
}

fn cfg1d(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks(total), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The activation buffers (int8, NHWC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buf {
    Col,
    A,
    B,
    T1,
    T2,
    S,
    Q3,
}
const BUFS: [Buf; 7] = [Buf::Col, Buf::A, Buf::B, Buf::T1, Buf::T2, Buf::S, Buf::Q3];

/// A convolution layer on the device.
struct Layer {
    q: QConv,
    /// Input side.
    h: usize,
    oh: usize,
    w: CudaSlice<i8>,
    ofs: CudaSlice<i32>,
    mult: CudaSlice<f32>,
    /// [`QConv::requant_bias`]: the requantization as `acc·mult + bias`, for the libraries that apply
    /// it in their epilogue (cuBLASLt's bias, cuDNN's per-channel addend).
    bias: CudaSlice<f32>,
    /// The activation this layer reads (the stem reads the f32 input).
    input: Buf,
    /// The GEMM reads the im2col buffer (filled from `input` first) instead of `input`.
    im2col: bool,
    dst: Buf,
    /// A block's last convolution: the shortcut it adds and where the block's output goes.
    add: Option<(Buf, Buf)>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Conv(usize),
    MaxPool {
        h: usize,
        oh: usize,
        c: usize,
    },
    Add {
        layer: usize,
        short: Buf,
        dst: Buf,
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
enum Choice {
    /// cuBLASLt on the im2col matrix (or the activation itself for a 1×1 stride-1 layer).
    Lt(LtGemm),
    /// A cuDNN graph-API int8 convolution with the requantization in its epilogue (no im2col); the
    /// plan is bound to the layer's buffers.
    Dnn(Bound),
    /// The engine's implicit-GEMM kernel with tile shape `tile` (see [`igemm`]); `add`: it also adds
    /// the shortcut and writes the block's output (the `qadd` pass is skipped).
    Own {
        tile: usize,
        name: &'static str,
        /// `mma.sync` or `wgmma` (Hopper).
        instr: &'static str,
        add: bool,
    },
}

impl Choice {
    fn label(&self) -> String {
        match self {
            Choice::Lt(g) => match g.tier {
                Tier::Fused => "cuBLASLt int8 →int8 (α vector + bias epilogue)".to_string(),
                Tier::Int32 => "cuBLASLt int8 →int32 + requant kernel".to_string(),
            },
            Choice::Dnn(b) => format!("cuDNN int8 graph#{} (scale + bias epilogue)", b.plan.rank),
            Choice::Own {
                name, instr, add, ..
            } => format!(
                "igemm {name} int8 {instr} (requant{} epilogue)",
                if *add { " + residual" } else { "" }
            ),
        }
    }

    /// Writes the block's output itself (residual add inside the kernel).
    fn adds(&self) -> bool {
        matches!(self, Choice::Own { add: true, .. })
    }

    /// Requantizes inside the library call (no int32 round trip).
    fn fused(&self) -> bool {
        match self {
            Choice::Lt(g) => g.tier == Tier::Fused,
            Choice::Dnn(_) | Choice::Own { .. } => true,
        }
    }
}

/// One bucket's choices and graph.
struct Bucket {
    graph: CudaGraph,
    gemms: Vec<Choice>,
    ms: Vec<f32>,
}

/// The INT8 network on the device. Not thread-safe by itself: callers serialize (see
/// [`super::GpuModel`]).
pub struct Int8Net {
    buckets: BTreeMap<usize, Bucket>,
    /// After the buckets: their cuDNN plans use its handle.
    fusion: Fusion,
    /// Try cuDNN's int8 convolutions (false after a graph built with them failed its replay check).
    use_cudnn: bool,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    handle: lts::cublasLtHandle_t,
    k: Kernels,
    ik: Int8Kernels,
    max_batch: usize,
    qnet: QNet,
    layers: Vec<Layer>,
    ops: Vec<Op>,
    bufs: Vec<CudaSlice<i8>>,
    acc: CudaSlice<i32>,
    check: CudaSlice<i8>,
    /// The reference of a block's output (int32 tier + `qadd`) for the fused-residual candidates.
    check_add: CudaSlice<i8>,
    /// The engine's implicit-GEMM kernels (absent before compute capability 8.0).
    ig: Option<Igemm>,
    diff: CudaSlice<u32>,
    workspace: CudaSlice<u8>,
    io: Io,
    head: Head,
    macs: u64,
    /// Fused candidates that computed something else than the int32 tier.
    rejected: usize,
}

// SAFETY: as for `GpuNet`: handles are used under the owner's lock, one call at a time, after binding the
// context to the calling thread.
unsafe impl Send for Int8Net {}

impl Drop for Int8Net {
    fn drop(&mut self) {
        self.buckets.clear();
        // SAFETY: created in `new`, destroyed once, after the graphs and descriptors that used it.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

const WORKSPACE: usize = 32 << 20;

/// cuDNN's int8 convolutions are tried only with `INFERSCOPE_INT8_CUDNN=1`, and only for unpadded (1×1)
/// layers, whose requantization is one per-channel scale and bias. Measured on the H200 with cuDNN 9.14
/// (docs/gpu.md): for padded layers, whose border taps need a per-position addend, the engines its
/// heuristics propose executed with CUDA_ERROR_MISALIGNED_ADDRESS, an error that ends the whole CUDA
/// context (so they cannot be tried and rejected like other candidates). The 1×1 ones run and are faster
/// at small batches, but about 1% of each layer's outputs land one step away from the file's rounding,
/// which adds up to a 2e-2 relative error of the logits against ONNX Runtime (4e-4 on cuBLASLt alone).
fn cudnn_allowed() -> bool {
    std::env::var("INFERSCOPE_INT8_CUDNN").is_ok_and(|v| v == "1")
}

/// The stem with its GEMM depth laid out in whole pixels of 4 bytes — reduction index
/// `(ky·k + kx)·4 + c`, zero weights for the 4th byte and the padding — so that its im2col copies one
/// 32-bit word per tap from `stem_quant`'s NHWC4 map instead of gathering single bytes (2026-11-30e:
/// the byte gathers made the stem's im2col ~1 ms at batch 256). The same products as the file's
/// `(ky·k + kx)·3 + c` layout; only zeros are added.
fn stem_pixels_of_4(q: &QConv) -> QConv {
    let taps = q.k * q.k;
    let kdim = (taps * 4).div_ceil(16) * 16;
    let mut w = vec![0i8; q.cout * kdim];
    for o in 0..q.cout {
        for t in 0..taps {
            for c in 0..q.cin.min(4) {
                w[o * kdim + t * 4 + c] = q.w[o * q.kdim + t * q.cin + c];
            }
        }
    }
    QConv {
        kdim,
        w,
        ..q.clone()
    }
}

impl Int8Net {
    /// Uploads the INT8 network (it must carry a complete quantization table: [`QNet::new`]).
    pub fn new(
        ctx: &Arc<CudaContext>,
        kernels: &Kernels,
        net: &ResNet,
        max_batch: usize,
    ) -> Result<Self> {
        let qnet = QNet::new(net)?;
        if max_batch == 0 {
            return Err(Error::Runtime("max_batch 0".into()));
        }
        ctx.bind_to_thread()
            .map_err(rt("binding the CUDA context"))?;
        let stream = ctx.new_stream().map_err(rt("creating a stream"))?;
        let ik = Int8Kernels::compile(ctx)?;
        let handle = lt::create_handle().map_err(lt_err("handle"))?;

        let mut layers = Vec::new();
        let mut ops = Vec::new();
        let mut adds = Vec::new();
        let (mut max_act, mut max_col) = (0usize, 0usize);
        let mut add =
            |q: &QConv, h: usize, src: Buf, dst: Buf, ops: &mut Vec<Op>| -> Result<usize> {
                let oh = q.out_size(h);
                max_act = max_act.max(oh * oh * q.cout).max(h * h * q.cin);
                if src == Buf::Col {
                    // The stem's quantized input (NHWC, 4 bytes a pixel) lies in `Buf::A` first.
                    max_act = max_act.max(h * h * 4);
                }
                let im2col = src == Buf::Col || q.k > 1 || q.stride > 1;
                if im2col {
                    max_col = max_col.max(oh * oh * q.kdim);
                }
                let up = |v: &[f32]| stream.clone_htod(v).map_err(rt("uploading parameters"));
                layers.push(Layer {
                    q: q.clone(),
                    h,
                    oh,
                    w: stream.clone_htod(&q.w).map_err(rt("uploading weights"))?,
                    ofs: stream.clone_htod(&q.ofs).map_err(rt("uploading offsets"))?,
                    mult: up(&q.mult)?,
                    bias: up(&q.requant_bias())?,
                    input: src,
                    im2col,
                    dst,
                    add: None,
                });
                ops.push(Op::Conv(layers.len() - 1));
                Ok(oh)
            };
        let s = add(
            &stem_pixels_of_4(&qnet.stem),
            INPUT_SIZE,
            Buf::Col,
            Buf::T1,
            &mut ops,
        )?;
        let ps = (s + 2 - 3) / 2 + 1;
        ops.push(Op::MaxPool {
            h: s,
            oh: ps,
            c: qnet.stem.cout,
        });
        let (mut cur, mut other, mut s) = (Buf::A, Buf::B, ps);
        for b in &qnet.blocks {
            let s1 = add(&b.conv1, s, cur, Buf::T1, &mut ops)?;
            let s2 = add(&b.conv2, s1, Buf::T1, Buf::T2, &mut ops)?;
            let short = match &b.downsample {
                Some(d) => {
                    add(d, s, cur, Buf::S, &mut ops)?;
                    Buf::S
                }
                None => cur,
            };
            s = add(&b.conv3, s2, Buf::T2, Buf::Q3, &mut ops)?;
            let Some(&Op::Conv(layer)) = ops.last() else {
                return Err(Error::Runtime("op list".into()));
            };
            adds.push((layer, short, other));
            ops.push(Op::Add {
                layer,
                short,
                dst: other,
            });
            std::mem::swap(&mut cur, &mut other);
        }
        for (layer, short, out) in adds {
            layers[layer].add = Some((short, out));
        }
        ops.push(Op::Gap {
            src: cur,
            hw: s * s,
            c: qnet.fc_in,
        });
        ops.push(Op::Head);

        // The element-wise kernels index threads with 32 bits (one per byte of an activation at most).
        if max_batch * max_col.max(max_act) > i32::MAX as usize {
            return Err(Error::Runtime(format!(
                "int8 path: a batch of {max_batch} images is too large for its kernels' 32-bit indices"
            )));
        }
        let alloc_i8 = |n: usize| stream.alloc_zeros::<i8>(n).map_err(rt("allocating"));
        let bufs = BUFS
            .iter()
            .map(|b| alloc_i8(max_batch * if *b == Buf::Col { max_col } else { max_act }))
            .collect::<Result<Vec<_>>>()?;
        let macs = net.macs(INPUT_SIZE);
        let io = Io::new(ctx, &stream, kernels, max_batch)?;
        let fusion = Fusion::new(&stream)?;
        Ok(Int8Net {
            buckets: BTreeMap::new(),
            fusion,
            use_cudnn: cudnn_allowed(),
            acc: stream
                .alloc_zeros::<i32>(max_batch * max_act)
                .map_err(rt("allocating"))?,
            check: alloc_i8(max_batch * max_act)?,
            check_add: alloc_i8(max_batch * max_act)?,
            ig: Igemm::compile(ctx),
            diff: stream.alloc_zeros::<u32>(2).map_err(rt("allocating"))?,
            workspace: stream
                .alloc_zeros::<u8>(WORKSPACE)
                .map_err(rt("allocating"))?,
            io,
            head: Head::new(&stream, &net.fc, max_batch)?,
            bufs,
            ctx: ctx.clone(),
            stream,
            handle,
            k: kernels.clone(),
            ik,
            max_batch,
            qnet,
            layers,
            ops,
            macs,
            rejected: 0,
        })
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> drv_sys::CUdeviceptr {
        let (p, _sync) = s.device_ptr(&self.stream);
        p
    }

    fn buf(&self, b: Buf) -> drv_sys::CUdeviceptr {
        let i = BUFS.iter().position(|&x| x == b).unwrap_or(0);
        self.ptr(&self.bufs[i])
    }

    fn go(&self, mut l: cudarc::driver::LaunchArgs<'_>, total: usize, what: &str) -> Result<()> {
        // SAFETY: every kernel bounds-checks against `total`, and the buffers are allocated for
        // `max_batch` images of the largest shape.
        unsafe { l.launch(cfg1d(total)) }.map_err(rt(what))?;
        Ok(())
    }

    /// The im2col step of layer `i` (none for a 1×1 stride-1 layer).
    fn im2col(&self, i: usize, n: usize) -> Result<()> {
        let l = &self.layers[i];
        if !l.im2col {
            return Ok(());
        }
        let q = &l.q;
        let col = self.buf(Buf::Col);
        if i == 0 {
            // Quantize the f32 input once into `Buf::A` (free until the max pool writes it; NHWC with 4
            // bytes a pixel), then gather the stem's rows from it.
            let x = self.ptr(&self.io.input32);
            let q4 = self.buf(Buf::A);
            let [o0, o1, o2] = self.qnet.input_offset;
            let (scale, zero) = (q.input.scale, q.input.zero);
            let (nn, hw) = (n as i32, (l.h * l.h) as i32);
            {
                let mut a = self.stream.launch_builder(&self.ik.stem_quant);
                a.arg(&x)
                    .arg(&q4)
                    .arg(&o0)
                    .arg(&o1)
                    .arg(&o2)
                    .arg(&scale)
                    .arg(&zero)
                    .arg(&nn)
                    .arg(&hw);
                self.go(a, n * l.h * l.h, "stem_quant")
            }?;
            let ints = [n, l.h, q.k, q.stride, q.pad, l.oh, q.kdim].map(|v| v as i32);
            return {
                let mut a = self.stream.launch_builder(&self.ik.stem_im2col);
                a.arg(&q4).arg(&col).arg(&zero);
                for v in &ints {
                    a.arg(v);
                }
                self.go(a, n * l.oh * l.oh * q.kdim / 16, "stem_im2col")
            };
        }
        let x = self.buf(l.input);
        let [a0, a1, a2, a3, a4, a5, a6] =
            [n, l.h, q.cin, q.k, q.stride, q.pad, l.oh].map(|v| v as i32);
        let ints = [a0, a1, a2, a3, a4, a5, a6, q.input.zero];
        {
            let mut a = self.stream.launch_builder(&self.ik.im2col);
            a.arg(&x).arg(&col);
            for v in &ints {
                a.arg(v);
            }
            self.go(a, n * l.oh * l.oh * q.kdim / 16, "im2col_s8")
        }
    }

    /// Layer `i`'s GEMM with `g`, output into `dst` (int8) — through `acc` + `requant` for the int32 tier.
    fn run_choice(&self, i: usize, c: &Choice, dst: drv_sys::CUdeviceptr, n: usize) -> Result<()> {
        match c {
            Choice::Lt(g) => self.gemm(i, g, dst, n),
            Choice::Dnn(b) => self.fusion.execute(b),
            Choice::Own { tile, add, .. } => {
                let to = match (*add, self.layers[i].add) {
                    (true, Some((_, out))) => self.buf(out),
                    _ => dst,
                };
                self.own(i, *tile, *add, to, n)
            }
        }
    }

    /// Whether layer `i` with choice `c` reads the im2col buffer (which must be filled first): cuBLASLt
    /// on a 3×3 or strided layer, and every choice for the stem (its im2col quantizes the f32 input).
    fn needs_im2col(&self, i: usize, c: &Choice) -> bool {
        let l = &self.layers[i];
        l.im2col && (matches!(c, Choice::Lt(_)) || l.input == Buf::Col)
    }

    /// Layer `i` on the implicit-GEMM kernel with tile shape `tile`, into `dst` (with `add`: the block's
    /// output, the shortcut added).
    fn own(
        &self,
        i: usize,
        tile: usize,
        add: bool,
        dst: drv_sys::CUdeviceptr,
        n: usize,
    ) -> Result<()> {
        let ig = self
            .ig
            .as_ref()
            .ok_or_else(|| Error::Runtime("no implicit-GEMM kernels".into()))?;
        let l = &self.layers[i];
        let q = &l.q;
        // The stem runs as a 1×1 convolution over its im2col matrix (`kdim` channels).
        let (h, c, ks, stride, pad) = if l.input == Buf::Col {
            (l.oh, q.kdim, 1, 1, 0)
        } else {
            (l.h, q.cin, q.k, q.stride, q.pad)
        };
        let (sc, s3, z3, ss, zs, so, zo) = match (add, q.residual, l.add) {
            (true, Some(r), Some((short, _))) => (
                self.buf(short),
                q.output.scale,
                q.output.zero,
                r.short.scale,
                r.short.zero,
                r.out.scale,
                r.out.zero,
            ),
            (true, ..) => return Err(Error::Runtime(format!("{}: no residual", q.name))),
            _ => (0, 0.0, 0, 0.0, 0, 1.0, 0),
        };
        let a = ConvArgs {
            x: self.buf(l.input),
            w: self.ptr(&l.w),
            ofs: self.ptr(&l.ofs),
            mult: self.ptr(&l.mult),
            y: dst,
            sc,
            m: (n * l.oh * l.oh) as i32,
            h: h as i32,
            wd: h as i32,
            c: c as i32,
            oh: l.oh as i32,
            ow: l.oh as i32,
            cout: q.cout as i32,
            ks: ks as i32,
            stride: stride as i32,
            pad: pad as i32,
            padv: q.input.zero,
            kdim: q.kdim as i32,
            zy: q.output.zero,
            s3,
            z3,
            ss,
            zs,
            so,
            zo,
            rso: 1.0 / so,
        };
        ig.launch(&self.stream, tile, &a)
    }

    /// Enqueues the forward pass for `n` images with each layer's choice.
    fn enqueue(&self, gemms: &[Choice], n: usize) -> Result<()> {
        self.enqueue_ops(&self.ops, gemms, n)
    }

    fn enqueue_ops(&self, ops: &[Op], gemms: &[Choice], n: usize) -> Result<()> {
        let nn = n as i32;
        for op in ops {
            match *op {
                Op::Conv(i) => {
                    if self.needs_im2col(i, &gemms[i]) {
                        self.im2col(i, n)?;
                    }
                    self.run_choice(i, &gemms[i], self.buf(self.layers[i].dst), n)?;
                }
                Op::MaxPool { h, oh, c } => {
                    let (x, y) = (self.buf(Buf::T1), self.buf(Buf::A));
                    let ints = [nn, h as i32, c as i32, oh as i32];
                    // 16 channels a thread where the channel count allows.
                    let (f, per) = if c.is_multiple_of(16) {
                        (&self.ik.maxpool16, 16)
                    } else {
                        (&self.ik.maxpool, 1)
                    };
                    {
                        let mut a = self.stream.launch_builder(f);
                        a.arg(&x).arg(&y);
                        for v in &ints {
                            a.arg(v);
                        }
                        self.go(a, n * oh * oh * c / per, "maxpool_s8")
                    }?;
                }
                Op::Add { layer, short, dst } => {
                    // A fused-residual kernel wrote the block's output already.
                    if !gemms.get(layer).is_some_and(Choice::adds) {
                        self.add_into(layer, self.buf(Buf::Q3), short, self.buf(dst), n)?;
                    }
                }
                Op::Gap { src, hw, c } => {
                    let x = self.buf(src);
                    let y = self.ptr(&self.head.gap);
                    let (s, z) = (self.qnet.last.scale, self.qnet.last.zero);
                    let (qs, qz) = self.qnet.gap.map_or((0.0f32, 0i32), |g| (g.scale, g.zero));
                    let (hww, cc) = (hw as i32, c as i32);
                    {
                        let mut a = self.stream.launch_builder(&self.ik.gap);
                        a.arg(&x)
                            .arg(&y)
                            .arg(&nn)
                            .arg(&hww)
                            .arg(&cc)
                            .arg(&s)
                            .arg(&z)
                            .arg(&qs)
                            .arg(&qz);
                        self.go(a, n * c, "gap_s8")
                    }?;
                }
                Op::Head => self.head.enqueue(&self.stream, &self.k, &self.io, n)?,
            }
        }
        Ok(())
    }

    /// One op that is not a convolution, eagerly.
    fn enqueue_one(&self, op: Op, n: usize) -> Result<()> {
        self.enqueue_ops(&[op], &[], n)
    }

    /// The exact residual add of layer `i` (its quantized output at `q3`, the shortcut `short`) into
    /// `dst`.
    fn add_into(
        &self,
        i: usize,
        q3: drv_sys::CUdeviceptr,
        short: Buf,
        dst: drv_sys::CUdeviceptr,
        n: usize,
    ) -> Result<()> {
        let l = &self.layers[i];
        let r =
            l.q.residual
                .ok_or_else(|| Error::Runtime("add without residual".into()))?;
        let (a, b) = (q3, self.buf(short));
        let (sa, za) = (l.q.output.scale, l.q.output.zero);
        let (sb, zb) = (r.short.scale, r.short.zero);
        let (so, zo) = (r.out.scale, r.out.zero);
        let total = n * l.oh * l.oh * l.q.cout;
        let tot = total as i64;
        {
            let mut k = self.stream.launch_builder(&self.ik.qadd);
            k.arg(&a)
                .arg(&b)
                .arg(&dst)
                .arg(&sa)
                .arg(&za)
                .arg(&sb)
                .arg(&zb)
                .arg(&so)
                .arg(&zo)
                .arg(&tot);
            self.go(k, total, "qadd")
        }
    }

    /// What each layer runs in the graph of `batch` images, if built.
    pub fn plan(&self, batch: usize) -> Option<Vec<LayerPlan>> {
        let b = self.buckets.get(&batch)?;
        Some(
            self.layers
                .iter()
                .zip(&b.gemms)
                .zip(&b.ms)
                .map(|((l, g), &ms)| LayerPlan {
                    name: l.q.name.clone(),
                    algo: g.label(),
                    fused: g.fused(),
                    ms,
                    dense_ms: None,
                    sparse_ms: None,
                })
                .collect(),
        )
    }
}

impl Executor for Int8Net {
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
        self.max_batch
    }
    fn prepare(&mut self, batch: usize) -> Result<()> {
        Int8Net::prepare(self, batch)
    }
    fn graph(&self, batch: usize) -> Option<&CudaGraph> {
        self.buckets.get(&batch).map(|b| &b.graph)
    }
    fn enqueue_eager(&mut self, batch: usize) -> Result<()> {
        let bucket = self
            .buckets
            .get(&batch)
            .ok_or_else(|| Error::Runtime(format!("no plans for batch {batch}")))?;
        self.enqueue(&bucket.gemms, batch)
    }
    fn plan(&self, batch: usize) -> Option<Vec<LayerPlan>> {
        Int8Net::plan(self, batch)
    }
    fn profile(&self, batch: usize) -> Option<Result<Vec<(String, f32)>>> {
        let b = self.buckets.get(&batch)?;
        let mut steps = Vec::new();
        for op in &self.ops {
            let name = match *op {
                Op::Conv(i) => format!(
                    "{}{}: {}",
                    self.layers[i].q.name,
                    if self.needs_im2col(i, &b.gemms[i]) {
                        " (+ im2col)"
                    } else {
                        ""
                    },
                    b.gemms[i].label()
                ),
                Op::MaxPool { .. } => "max pool (int8)".to_string(),
                // Inside the convolution's kernel: no step of its own.
                Op::Add { layer, .. } if b.gemms[layer].adds() => continue,
                Op::Add { layer, .. } => format!("{}: qadd", self.layers[layer].q.name),
                Op::Gap { .. } => "global average pool".to_string(),
                Op::Head => "FC + softmax (fp16 cuBLASLt)".to_string(),
            };
            match self.time(|| self.enqueue_ops(std::slice::from_ref(op), &b.gemms, batch)) {
                Ok(ms) => steps.push((name, ms)),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(steps))
    }
    fn search(&self, batch: usize) -> Option<String> {
        self.buckets.get(&batch).map(|_| "int8".to_string())
    }
    /// The last block's int8 output, with the scale and zero point the file dequantizes it with.
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
            ptr: self.buf(src),
            hw,
            c,
            form: MapForm::I8 {
                scale: self.qnet.last.scale,
                zero: self.qnet.last.zero,
            },
        }
    }
    fn macs(&self) -> u64 {
        self.macs
    }
    fn rejected_candidates(&self) -> usize {
        self.rejected
    }
}

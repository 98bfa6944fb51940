//! Convolutions through cuDNN's graph ("backend") API: one operation graph per layer and batch size,
//! `conv_fprop → +bias [→ +z] [→ ReLU]`, with the engine configurations cuDNN's heuristics propose timed
//! on the device. This reaches the same Hopper kernels PyTorch gets from cuDNN (the legacy API used in
//! [`super::net`] maps to older kernels that are slow at small batch sizes), and the fused epilogue when
//! an engine supports it. A conv-only graph (epilogue done by the engine's `bias_act` kernel) is the
//! second candidate; the caller keeps whichever is faster, legacy calls included.
//!
//! Descriptors are raw `cudnnBackendDescriptor_t` handles wrapped in [`Desc`] (destroyed on drop).
//! Execution plans do not depend on data pointers, so layers of the same shape share one plan; each
//! layer has its own variant pack (its buffers), built once, since all buffers are fixed.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cudnn::{result as dnn_result, sys};
use cudarc::driver::CudaStream;

use crate::error::{Error, Result};

use sys::cudnnBackendAttributeName_t as A;
use sys::cudnnBackendAttributeType_t as T;
use sys::cudnnBackendDescriptorType_t as D;

fn check(st: sys::cudnnStatus_t, what: &str) -> Result<()> {
    st.result()
        .map_err(|e| Error::Runtime(format!("cuDNN graph API, {what}: {e:?}")))
}

/// A backend descriptor.
pub struct Desc(sys::cudnnBackendDescriptor_t);

impl Drop for Desc {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by cudnnBackendCreateDescriptor, destroyed once.
            unsafe { sys::cudnnBackendDestroyDescriptor(self.0) };
        }
    }
}

impl Desc {
    fn new(t: D) -> Result<Self> {
        let mut d = std::ptr::null_mut();
        // SAFETY: out-pointer to a descriptor handle.
        check(
            unsafe { sys::cudnnBackendCreateDescriptor(t, &mut d) },
            "create descriptor",
        )?;
        Ok(Desc(d))
    }

    fn set<V>(&self, attr: A, ty: T, vals: &[V]) -> Result<()> {
        // SAFETY: `vals` holds `vals.len()` elements of the C type that `ty` names.
        let st = unsafe {
            sys::cudnnBackendSetAttribute(
                self.0,
                attr,
                ty,
                vals.len() as i64,
                vals.as_ptr() as *const c_void,
            )
        };
        check(st, &format!("set {attr:?}"))
    }

    fn set_descs(&self, attr: A, descs: &[&Desc]) -> Result<()> {
        let raw: Vec<sys::cudnnBackendDescriptor_t> = descs.iter().map(|d| d.0).collect();
        self.set(attr, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw)
    }

    fn finalize(&self, what: &str) -> Result<()> {
        // SAFETY: a descriptor with its attributes set.
        check(
            unsafe { sys::cudnnBackendFinalize(self.0) },
            &format!("finalize {what}"),
        )
    }
}

/// Element types of the tensors in a convolution graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Half,
    Float,
    Int8,
    Int32,
}

impl DType {
    fn cudnn(self) -> sys::cudnnDataType_t {
        match self {
            DType::Half => sys::cudnnDataType_t::CUDNN_DATA_HALF,
            DType::Float => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            DType::Int8 => sys::cudnnDataType_t::CUDNN_DATA_INT8,
            DType::Int32 => sys::cudnnDataType_t::CUDNN_DATA_INT32,
        }
    }
}

/// Unique ids of the tensors a variant pack binds.
const X: i64 = 1;
const W: i64 = 2;
const Y: i64 = 3;
const B: i64 = 4;
const Z: i64 = 5;
/// Int8 graphs: the per-channel multiplier and addend.
const SCALE: i64 = 6;
const ADDEND: i64 = 7;

/// The shape of one convolution at one batch size, and which epilogue the graph carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub cout: usize,
    pub oh: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// `y = act(conv + bias (+ z))` inside the graph; false: the graph is the convolution alone.
    pub epilogue: bool,
    pub residual: bool,
    pub relu: bool,
    /// An int8 graph (see [`op_graph`]): int8 `x`, `w`, `y`, int32 accumulation, then
    /// `y = int8(conv · scale[c] + addend[c])`; the other epilogue fields are ignored.
    pub int8: bool,
}

fn nhwc(n: usize, c: usize, h: usize, w: usize) -> ([i64; 4], [i64; 4]) {
    let (n, c, h, w) = (n as i64, c as i64, h as i64, w as i64);
    ([n, c, h, w], [h * w * c, 1, w * c, c])
}

fn tensor(uid: i64, (dims, strides): ([i64; 4], [i64; 4]), dt: DType, virt: bool) -> Result<Desc> {
    let t = Desc::new(D::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
    t.set(
        A::CUDNN_ATTR_TENSOR_DATA_TYPE,
        T::CUDNN_TYPE_DATA_TYPE,
        &[dt.cudnn()],
    )?;
    t.set(A::CUDNN_ATTR_TENSOR_DIMENSIONS, T::CUDNN_TYPE_INT64, &dims)?;
    t.set(A::CUDNN_ATTR_TENSOR_STRIDES, T::CUDNN_TYPE_INT64, &strides)?;
    t.set(A::CUDNN_ATTR_TENSOR_UNIQUE_ID, T::CUDNN_TYPE_INT64, &[uid])?;
    t.set(
        A::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
        T::CUDNN_TYPE_INT64,
        &[16i64],
    )?;
    if virt {
        t.set(
            A::CUDNN_ATTR_TENSOR_IS_VIRTUAL,
            T::CUDNN_TYPE_BOOLEAN,
            &[true],
        )?;
    }
    t.finalize("tensor")?;
    Ok(t)
}

fn pointwise(
    mode: sys::cudnnPointwiseMode_t,
    x: &Desc,
    b: Option<&Desc>,
    y: &Desc,
) -> Result<(Desc, Desc)> {
    let pw = Desc::new(D::CUDNN_BACKEND_POINTWISE_DESCRIPTOR)?;
    pw.set(
        A::CUDNN_ATTR_POINTWISE_MODE,
        T::CUDNN_TYPE_POINTWISE_MODE,
        &[mode],
    )?;
    pw.set(
        A::CUDNN_ATTR_POINTWISE_MATH_PREC,
        T::CUDNN_TYPE_DATA_TYPE,
        &[DType::Float.cudnn()],
    )?;
    pw.finalize("pointwise")?;
    let op = Desc::new(D::CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)?;
    op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, &[&pw])?;
    op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_XDESC, &[x])?;
    if let Some(b) = b {
        op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_BDESC, &[b])?;
    }
    op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_YDESC, &[y])?;
    op.finalize("pointwise operation")?;
    Ok((pw, op))
}

/// An operation graph and every descriptor it refers to.
struct OpGraph {
    graph: Desc,
    _parts: Vec<Desc>,
}

// SAFETY: finalized descriptors are immutable; they are only read by cuDNN calls made under the owning
// network's lock.
unsafe impl Send for OpGraph {}
unsafe impl Sync for OpGraph {}

fn op_graph(handle: sys::cudnnHandle_t, s: &ConvShape) -> Result<OpGraph> {
    let mut parts = Vec::new();
    let dt = if s.int8 { DType::Int8 } else { DType::Half };
    let x = tensor(X, nhwc(s.n, s.cin, s.h, s.h), dt, false)?;
    let w = tensor(W, nhwc(s.cout, s.cin, s.k, s.k), dt, false)?;
    let out = nhwc(s.n, s.cout, s.oh, s.oh);
    let y = tensor(Y, out, dt, false)?;

    let conv = Desc::new(D::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
    let (st, pd) = (s.stride as i64, s.pad as i64);
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
        T::CUDNN_TYPE_INT64,
        &[2i64],
    )?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
        T::CUDNN_TYPE_DATA_TYPE,
        &[if s.int8 { DType::Int32 } else { DType::Float }.cudnn()],
    )?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
        T::CUDNN_TYPE_CONVOLUTION_MODE,
        &[sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION],
    )?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_DILATIONS,
        T::CUDNN_TYPE_INT64,
        &[1i64, 1],
    )?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
        T::CUDNN_TYPE_INT64,
        &[st, st],
    )?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
        T::CUDNN_TYPE_INT64,
        &[pd, pd],
    )?;
    conv.set(
        A::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
        T::CUDNN_TYPE_INT64,
        &[pd, pd],
    )?;
    conv.finalize("convolution")?;

    let mut ops = Vec::new();
    let conv_out = if s.epilogue || s.int8 {
        tensor(100, out, DType::Float, true)?
    } else {
        tensor(Y, out, DType::Half, false)?
    };
    let fwd = Desc::new(D::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR)?;
    fwd.set_descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, &[&x])?;
    fwd.set_descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, &[&w])?;
    fwd.set_descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, &[&conv_out])?;
    fwd.set_descs(
        A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
        &[&conv],
    )?;
    fwd.set(
        A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
        T::CUDNN_TYPE_FLOAT,
        &[1.0f32],
    )?;
    fwd.set(
        A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
        T::CUDNN_TYPE_FLOAT,
        &[0.0f32],
    )?;
    fwd.finalize("convolution forward")?;
    ops.push(fwd);

    if s.int8 {
        // conv (int32, as float) · scale[c] + addend[c] → int8 y.
        let scale = tensor(SCALE, nhwc(1, s.cout, 1, 1), DType::Float, false)?;
        let addend = tensor(ADDEND, nhwc(1, s.cout, 1, 1), DType::Float, false)?;
        let scaled = tensor(101, out, DType::Float, true)?;
        let (pw1, op1) = pointwise(
            sys::cudnnPointwiseMode_t::CUDNN_POINTWISE_MUL,
            &conv_out,
            Some(&scale),
            &scaled,
        )?;
        let (pw2, op2) = pointwise(
            sys::cudnnPointwiseMode_t::CUDNN_POINTWISE_ADD,
            &scaled,
            Some(&addend),
            &y,
        )?;
        ops.push(op1);
        ops.push(op2);
        parts.extend([pw1, pw2, scale, addend, scaled, conv_out]);
    } else if s.epilogue {
        use sys::cudnnPointwiseMode_t as M;
        let bias = tensor(B, nhwc(1, s.cout, 1, 1), DType::Half, false)?;
        let mut cur = conv_out;
        let mut next_uid = 101;
        // Each step's output is virtual except the last one, which is y.
        let steps: Vec<(M, Option<Desc>)> = [
            Some((M::CUDNN_POINTWISE_ADD, Some(bias))),
            if s.residual {
                Some((
                    M::CUDNN_POINTWISE_ADD,
                    Some(tensor(Z, out, DType::Half, false)?),
                ))
            } else {
                None
            },
            if s.relu {
                Some((M::CUDNN_POINTWISE_RELU_FWD, None))
            } else {
                None
            },
        ]
        .into_iter()
        .flatten()
        .collect();
        let n_steps = steps.len();
        for (i, (mode, operand)) in steps.into_iter().enumerate() {
            let dst = if i + 1 == n_steps {
                None
            } else {
                next_uid += 1;
                Some(tensor(next_uid, out, DType::Float, true)?)
            };
            let (pw, op) = pointwise(mode, &cur, operand.as_ref(), dst.as_ref().unwrap_or(&y))?;
            parts.push(pw);
            ops.push(op);
            parts.extend(operand);
            if let Some(d) = dst {
                parts.push(std::mem::replace(&mut cur, d));
            }
        }
        parts.push(cur);
    } else {
        parts.push(conv_out);
    }

    let graph = Desc::new(D::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
    graph.set_descs(
        A::CUDNN_ATTR_OPERATIONGRAPH_OPS,
        &ops.iter().collect::<Vec<_>>(),
    )?;
    graph.set(
        A::CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
        T::CUDNN_TYPE_HANDLE,
        &[handle],
    )?;
    graph.finalize("operation graph")?;
    parts.extend([x, w, y, conv]);
    parts.extend(ops);
    Ok(OpGraph {
        graph,
        _parts: parts,
    })
}

/// `cudnnBackendNumericalNote_t` values an engine must not carry: DOWN_CONVERT_INPUTS,
/// REDUCED_PRECISION_REDUCTION, NONDETERMINISTIC.
const EXCLUDED_NOTES: [u32; 3] = [1, 2, 4];

/// `cudnnBackendBehaviorNote_t` values: RUNTIME_COMPILATION.
pub const NOTE_RUNTIME_COMPILATION: u32 = 0;
/// `cudnnBackendBehaviorNote_t` values: CUBLASLT_DEPENDENCY.
pub const NOTE_CUBLASLT_DEPENDENCY: u32 = 4;

/// The numerical and behavior notes of an engine configuration's engine (raw enum values).
fn engine_notes(cfg: &Desc) -> Result<(Vec<u32>, Vec<u32>)> {
    let engine = Desc::new(D::CUDNN_BACKEND_ENGINE_DESCRIPTOR)?;
    let mut raw = engine.0;
    let mut n = 0i64;
    // SAFETY: one created engine descriptor for cuDNN to fill.
    check(
        unsafe {
            sys::cudnnBackendGetAttribute(
                cfg.0,
                A::CUDNN_ATTR_ENGINECFG_ENGINE,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                1,
                &mut n,
                &mut raw as *mut sys::cudnnBackendDescriptor_t as *mut c_void,
            )
        },
        "engine of a configuration",
    )?;
    let read = |attr: A, ty: T| -> Result<Vec<u32>> {
        let mut notes = [0u32; 16];
        let mut k = 0i64;
        // SAFETY: room for 16 enum values (4 bytes each).
        check(
            unsafe {
                sys::cudnnBackendGetAttribute(
                    engine.0,
                    attr,
                    ty,
                    notes.len() as i64,
                    &mut k,
                    notes.as_mut_ptr() as *mut c_void,
                )
            },
            "engine notes",
        )?;
        Ok(notes[..(k.clamp(0, 16) as usize)].to_vec())
    };
    Ok((
        read(
            A::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
            T::CUDNN_TYPE_NUMERICAL_NOTE,
        )?,
        read(
            A::CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
            T::CUDNN_TYPE_BEHAVIOR_NOTE,
        )?,
    ))
}

/// A finalized execution plan (with what it refers to).
pub struct Plan {
    plan: Desc,
    _cfg: Desc,
    _graph: Arc<OpGraph>,
    /// Workspace bytes.
    pub workspace: usize,
    /// Index of the engine configuration in the heuristics' list (for reports).
    pub rank: usize,
    /// The engine's behavior notes (raw `cudnnBackendBehaviorNote_t` values).
    pub behavior: Vec<u32>,
}

// SAFETY: plans are immutable after finalization and only used while the owning network's lock is held.
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

/// A plan bound to one layer's buffers.
pub struct Bound {
    pub plan: Arc<Plan>,
    pack: Desc,
}

// SAFETY: as for `Plan`.
unsafe impl Send for Bound {}

/// Device pointers a layer's graph reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct Ptrs {
    pub x: u64,
    pub w: u64,
    pub y: u64,
    pub b: u64,
    pub z: u64,
    pub workspace: u64,
}

impl Ptrs {
    /// An int8 graph's buffers ([`ConvShape::int8`]): `b` is the scale, `z` the addend.
    pub fn int8(x: u64, w: u64, y: u64, scale: u64, addend: u64, workspace: u64) -> Self {
        Ptrs {
            x,
            w,
            y,
            b: scale,
            z: addend,
            workspace,
        }
    }
}

/// The graph-API side of one network: its own cuDNN handle on the network's stream and the plans
/// found so far (by shape).
pub struct Fusion {
    handle: sys::cudnnHandle_t,
    plans: HashMap<(ConvShape, Vec<u32>), Option<Arc<Plan>>>,
    /// Engine configurations tried per graph, best-ranked first.
    pub candidates: usize,
}

// SAFETY: the handle is used only by the network that owns this, under its lock.
unsafe impl Send for Fusion {}

impl Drop for Fusion {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created in `new`, destroyed once, after every plan using it.
        let _ = unsafe { dnn_result::destroy_handle(self.handle) };
    }
}

impl Fusion {
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let handle = dnn_result::create_handle()
            .map_err(|e| Error::Runtime(format!("cuDNN handle: {e:?}")))?;
        // SAFETY: a live handle and stream.
        unsafe { dnn_result::set_stream(handle, stream.cu_stream() as *mut _) }
            .map_err(|e| Error::Runtime(format!("cuDNN stream: {e:?}")))?;
        Ok(Fusion {
            handle,
            plans: HashMap::new(),
            candidates: 6,
        })
    }

    /// The execution plans cuDNN's heuristics propose for this shape (up to `candidates`, each
    /// finalized). Skipped: engines with an excluded numerical note, engines with one of
    /// `excluded_behavior`'s behavior notes, configurations that fail to finalize or need more than
    /// `max_workspace`.
    pub fn candidates(
        &self,
        s: &ConvShape,
        max_workspace: usize,
        excluded_behavior: &[u32],
    ) -> Result<Vec<Arc<Plan>>> {
        let graph = Arc::new(op_graph(self.handle, s)?);
        let heur = Desc::new(D::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
        heur.set_descs(A::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &[&graph.graph])?;
        heur.set(
            A::CUDNN_ATTR_ENGINEHEUR_MODE,
            T::CUDNN_TYPE_HEUR_MODE,
            &[sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A],
        )?;
        heur.finalize("heuristics")?;
        let mut count = 0i64;
        // SAFETY: asks for the number of results only.
        check(
            unsafe {
                sys::cudnnBackendGetAttribute(
                    heur.0,
                    A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
                    T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                    0,
                    &mut count,
                    std::ptr::null_mut(),
                )
            },
            "heuristics count",
        )?;
        let want = count.max(0) as usize;
        let cfgs = (0..want)
            .map(|_| Desc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
            .collect::<Result<Vec<_>>>()?;
        let mut raw: Vec<_> = cfgs.iter().map(|c| c.0).collect();
        let mut got = 0i64;
        // SAFETY: `raw` holds `want` created engine-config descriptors for cuDNN to fill.
        check(
            unsafe {
                sys::cudnnBackendGetAttribute(
                    heur.0,
                    A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
                    T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                    want as i64,
                    &mut got,
                    raw.as_mut_ptr() as *mut c_void,
                )
            },
            "heuristics results",
        )?;
        let mut out = Vec::new();
        for (rank, cfg) in cfgs.into_iter().enumerate().take(got.max(0) as usize) {
            if out.len() >= self.candidates {
                break;
            }
            // Same numbers as a plain fp32-accumulating convolution, every run: no engines that
            // down-convert inputs, reduce in reduced precision, or are nondeterministic.
            let Ok((numerical, behavior)) = engine_notes(&cfg) else {
                continue;
            };
            if numerical.iter().any(|n| EXCLUDED_NOTES.contains(n))
                || behavior.iter().any(|b| excluded_behavior.contains(b))
            {
                continue;
            }
            let Ok(plan) = Desc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR) else {
                continue;
            };
            let ok = plan
                .set_descs(A::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[&cfg])
                .is_ok()
                && plan
                    .set(
                        A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                        T::CUDNN_TYPE_HANDLE,
                        &[self.handle],
                    )
                    .is_ok()
                && plan.finalize("execution plan").is_ok();
            if !ok {
                continue;
            }
            let mut ws = 0i64;
            let mut n = 0i64;
            // SAFETY: one int64 out-value.
            let st = unsafe {
                sys::cudnnBackendGetAttribute(
                    plan.0,
                    A::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                    T::CUDNN_TYPE_INT64,
                    1,
                    &mut n,
                    &mut ws as *mut i64 as *mut c_void,
                )
            };
            if st.result().is_err() || ws < 0 || ws as usize > max_workspace {
                continue;
            }
            out.push(Arc::new(Plan {
                plan,
                _cfg: cfg,
                _graph: graph.clone(),
                workspace: ws as usize,
                rank,
                behavior,
            }));
        }
        Ok(out)
    }

    /// Binds a plan to buffers.
    pub fn bind(&self, plan: &Arc<Plan>, s: &ConvShape, p: Ptrs) -> Result<Bound> {
        let mut uids = vec![X, W, Y];
        let mut ptrs = vec![p.x, p.w, p.y];
        if s.int8 {
            uids.extend([SCALE, ADDEND]);
            ptrs.extend([p.b, p.z]);
        } else if s.epilogue {
            uids.push(B);
            ptrs.push(p.b);
            if s.residual {
                uids.push(Z);
                ptrs.push(p.z);
            }
        }
        let ptrs: Vec<*mut c_void> = ptrs.into_iter().map(|v| v as *mut c_void).collect();
        let pack = Desc::new(D::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
        pack.set(
            A::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
            T::CUDNN_TYPE_INT64,
            &uids,
        )?;
        pack.set(
            A::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
            T::CUDNN_TYPE_VOID_PTR,
            &ptrs,
        )?;
        pack.set(
            A::CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
            T::CUDNN_TYPE_VOID_PTR,
            &[p.workspace as *mut c_void],
        )?;
        pack.finalize("variant pack")?;
        Ok(Bound {
            plan: plan.clone(),
            pack,
        })
    }

    /// Enqueues a bound plan on the stream.
    pub fn execute(&self, b: &Bound) -> Result<()> {
        // SAFETY: plan and pack are finalized; the pointers are live buffers of the owning network.
        check(
            unsafe { sys::cudnnBackendExecute(self.handle, b.plan.plan.0, b.pack.0) },
            "execute",
        )
    }

    /// The plan chosen earlier for this shape (`Some(None)`: known to have none).
    pub fn cached(&self, s: &ConvShape, excluded_behavior: &[u32]) -> Option<Option<Arc<Plan>>> {
        self.plans.get(&(*s, excluded_behavior.to_vec())).cloned()
    }

    pub fn remember(&mut self, s: ConvShape, excluded_behavior: &[u32], plan: Option<Arc<Plan>>) {
        self.plans.insert((s, excluded_behavior.to_vec()), plan);
    }
}

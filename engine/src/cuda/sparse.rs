//! 2:4 structured sparsity on the sparse tensor cores through cuSPARSELt (issue 12, item 2).
//!
//! cudarc has no cuSPARSELt bindings, so the library is loaded at run time here (like cudarc loads the
//! other NVIDIA libraries): `libcusparseLt.so.0` from the loader's path, or the file named by
//! `INFERSCOPE_CUSPARSELT`. Without it the 2:4 variant runs dense and its path says why.
//!
//! How a convolution maps onto cuSPARSELt: a 1×1, stride-1 convolution in NHWC is the GEMM
//! `Y[pixels, cout] = X[pixels, cin] · Wᵀ`. In cuSPARSELt's column-major terms that is
//! `Yᵀ (cout × pixels, ld cout) = W (cout × cin, row-major: the OHWI weights as they are) · Xᵀ (cin ×
//! pixels, column-major with ld cin: the NHWC activation as it is)` — the weights are the structured
//! operand (2:4 along cin, the reduction axis, which is how the variant builder prunes), compressed once
//! per layer with `cusparseLtSpMMACompress2`; no transposes, no copies. The epilogue does the rest of
//! what the dense path fuses: `D = ReLU(W·X + β·Z + bias)` with `Z` the block's shortcut (β = 1) for its
//! last convolution. 3×3 and strided convolutions are not GEMMs over the activation as it lies (they
//! would need an im2col copy that costs more than the dense convolution), so they stay on cuDNN.
//!
//! Every cuSPARSELt candidate is checked and timed against the dense choice per layer and batch size
//! in the fp16 executor's search ([`super::net`]): it runs only where it is faster and computes the same.

use std::sync::{Arc, OnceLock};

use cudarc::driver::{sys as drv_sys, CudaSlice, CudaStream};
use half::f16;

use super::dev::Dev;
use crate::error::{Error, Result};

type Status = i32;
type Handle = Opaque;
/// cuSPARSELt's handles and descriptors are caller-allocated opaque structs (512 or 1,024 bytes,
/// depending on the version, aligned to 16): 16 KiB covers every version.
#[repr(C, align(16))]
pub struct Opaque([u8; 16384]);

impl Opaque {
    fn boxed() -> Box<Opaque> {
        Box::new(Opaque([0; 16384]))
    }
    fn p(&self) -> *const Opaque {
        self as *const Opaque
    }
    fn m(&mut self) -> *mut Opaque {
        self as *mut Opaque
    }
}

type O = *const Opaque;
type M = *mut Opaque;
type V = *const std::ffi::c_void;
type Vm = *mut std::ffi::c_void;
type Stream = drv_sys::CUstream;

// Values of cuSPARSE's / CUDA's enums that cuSPARSELt takes.
const ORDER_COL: i32 = 1;
const ORDER_ROW: i32 = 2;
const OP_N: i32 = 0;
const R_16F: i32 = 2;
const COMPUTE_32F: i32 = 2;
const SPARSITY_50: i32 = 0;
const ATTR_RELU: i32 = 0;
const ATTR_BIAS_POINTER: i32 = 8;
const ALG_DEFAULT: i32 = 0;

/// The entry points the engine uses (cuSPARSELt ≥ 0.5 signatures).
#[allow(clippy::type_complexity)]
struct Lib {
    _lib: libloading::Library,
    init: unsafe extern "C" fn(M) -> Status,
    destroy: unsafe extern "C" fn(O) -> Status,
    version: unsafe extern "C" fn(O, *mut i32) -> Status,
    dense: unsafe extern "C" fn(O, M, i64, i64, i64, u32, i32, i32) -> Status,
    structured: unsafe extern "C" fn(O, M, i64, i64, i64, u32, i32, i32, i32) -> Status,
    mat_destroy: unsafe extern "C" fn(O) -> Status,
    matmul_init: unsafe extern "C" fn(O, M, i32, i32, O, O, O, O, i32) -> Status,
    matmul_set: unsafe extern "C" fn(O, M, i32, V, usize) -> Status,
    alg_init: unsafe extern "C" fn(O, M, O, i32) -> Status,
    alg_destroy: unsafe extern "C" fn(O) -> Status,
    plan_init: unsafe extern "C" fn(O, M, O, O) -> Status,
    plan_destroy: unsafe extern "C" fn(O) -> Status,
    workspace: unsafe extern "C" fn(O, O, *mut usize) -> Status,
    matmul: unsafe extern "C" fn(O, O, V, V, V, V, V, Vm, Vm, *mut Stream, i32) -> Status,
    compressed_size: unsafe extern "C" fn(O, O, *mut usize, *mut usize) -> Status,
    compress: unsafe extern "C" fn(O, O, i32, i32, V, Vm, Vm, Stream) -> Status,
}

// SAFETY: function pointers into a loaded library, which stays loaded while `Lib` lives (forever: it
// sits in a static).
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

fn load() -> std::result::Result<Lib, String> {
    let names: Vec<String> = match std::env::var("INFERSCOPE_CUSPARSELT") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["libcusparseLt.so.0".into(), "libcusparseLt.so".into()],
    };
    let mut why = Vec::new();
    for name in &names {
        // SAFETY: loading a shared library runs its initializers; cuSPARSELt's only set up its state.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return symbols(lib).map_err(|e| format!("{name}: {e}")),
            Err(e) => why.push(format!("{name}: {e}")),
        }
    }
    Err(format!(
        "cuSPARSELt not found ({}; set LD_LIBRARY_PATH or INFERSCOPE_CUSPARSELT)",
        why.join("; ")
    ))
}

fn symbols(lib: libloading::Library) -> std::result::Result<Lib, String> {
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol's type is the one cuSPARSELt's header declares for it.
            *unsafe { lib.get($name) }.map_err(|e| {
                format!(
                    "{}: {e}",
                    String::from_utf8_lossy(&$name[..$name.len() - 1])
                )
            })?
        };
    }
    Ok(Lib {
        init: sym!(b"cusparseLtInit\0"),
        destroy: sym!(b"cusparseLtDestroy\0"),
        version: sym!(b"cusparseLtGetVersion\0"),
        dense: sym!(b"cusparseLtDenseDescriptorInit\0"),
        structured: sym!(b"cusparseLtStructuredDescriptorInit\0"),
        mat_destroy: sym!(b"cusparseLtMatDescriptorDestroy\0"),
        matmul_init: sym!(b"cusparseLtMatmulDescriptorInit\0"),
        matmul_set: sym!(b"cusparseLtMatmulDescSetAttribute\0"),
        alg_init: sym!(b"cusparseLtMatmulAlgSelectionInit\0"),
        alg_destroy: sym!(b"cusparseLtMatmulAlgSelectionDestroy\0"),
        plan_init: sym!(b"cusparseLtMatmulPlanInit\0"),
        plan_destroy: sym!(b"cusparseLtMatmulPlanDestroy\0"),
        workspace: sym!(b"cusparseLtMatmulGetWorkspace\0"),
        matmul: sym!(b"cusparseLtMatmul\0"),
        compressed_size: sym!(b"cusparseLtSpMMACompressedSize2\0"),
        compress: sym!(b"cusparseLtSpMMACompress2\0"),
        _lib: lib,
    })
}

fn lib() -> std::result::Result<&'static Lib, String> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|e| e.clone())
}

fn check(what: &str, s: Status) -> Result<()> {
    if s == 0 {
        Ok(())
    } else {
        Err(Error::Runtime(format!("cuSPARSELt {what}: status {s}")))
    }
}

/// Whether a convolution's fp16 weights, `[cout][k·k·cin]` (OHWI), are 2:4 along the input channels:
/// at most two non-zeros in every group of four consecutive ones.
pub fn is_two_four(w: &[f16], cin: usize) -> bool {
    if cin == 0 || !cin.is_multiple_of(4) || w.is_empty() {
        return false;
    }
    w.chunks(4)
        .all(|g| g.iter().filter(|v| v.to_f32() != 0.0).count() <= 2)
}

/// A cuSPARSELt handle (one per network, on its stream's device).
pub struct SparseLt {
    lib: &'static Lib,
    handle: Box<Handle>,
    /// `major·1000000 + minor·100 + patch`, e.g. 801 for 0.8.1 (the older `major·1000` encoding
    /// gives the same number for every 0.x release).
    pub version: i32,
}

// SAFETY: the handle is used by one thread at a time (the network that owns it is behind a mutex).
unsafe impl Send for SparseLt {}

impl SparseLt {
    /// Loads the library (once per process) and creates a handle on the current device.
    pub fn new() -> std::result::Result<Self, String> {
        let lib = lib()?;
        let mut handle = Opaque::boxed();
        // SAFETY: `handle` is a caller-allocated opaque struct larger than the library's.
        let s = unsafe { (lib.init)(handle.m()) };
        if s != 0 {
            return Err(format!("cusparseLtInit: status {s}"));
        }
        let mut version = 0;
        // SAFETY: an initialized handle.
        unsafe { (lib.version)(handle.p(), &mut version) };
        Ok(SparseLt {
            lib,
            handle,
            version,
        })
    }

    /// `0.8.1`-style version string.
    pub fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", v / 1_000_000, (v % 1_000_000) / 100, v % 100)
    }
}

impl Drop for SparseLt {
    fn drop(&mut self) {
        // SAFETY: every descriptor and plan made with this handle is dropped before it (owners keep
        // the order: plans, layers, then the handle).
        unsafe { (self.lib.destroy)(self.handle.p()) };
    }
}

/// A layer's weights as cuSPARSELt's structured operand: the descriptor of `W` (cout × K, row-major)
/// and the compressed values + metadata, made once at load.
pub struct SparseWeights {
    lib: &'static Lib,
    desc: Box<Opaque>,
    compressed: CudaSlice<u8>,
    pub cout: usize,
    pub k: usize,
}

// SAFETY: see `SparseLt`.
unsafe impl Send for SparseWeights {}

impl SparseWeights {
    /// Compresses `w` (fp16, `cout × k` row-major, 2:4 along `k`) on `stream`.
    pub fn compress(
        lt: &SparseLt,
        stream: &Arc<CudaStream>,
        w: &CudaSlice<f16>,
        cout: usize,
        k: usize,
    ) -> Result<Self> {
        let lib = lt.lib;
        let h = lt.handle.p();
        let mut desc = Opaque::boxed();
        // SAFETY: opaque structs owned here; sizes as declared.
        unsafe {
            check(
                "structured descriptor",
                (lib.structured)(
                    h,
                    desc.m(),
                    cout as i64,
                    k as i64,
                    k as i64,
                    16,
                    R_16F,
                    ORDER_ROW,
                    SPARSITY_50,
                ),
            )?;
        }
        let mut this = SparseWeights {
            lib,
            desc,
            compressed: stream
                .alloc_zeros::<u8>(1)
                .map_err(|e| Error::Runtime(format!("allocating GPU memory: {e:?}")))?,
            cout,
            k,
        };
        let (mut size, mut buf) = (0usize, 0usize);
        // SAFETY: as above.
        unsafe {
            check(
                "compressed size",
                (lib.compressed_size)(h, this.desc.p(), &mut size, &mut buf),
            )?
        };
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<u8>(n.max(1))
                .map_err(|e| Error::Runtime(format!("allocating GPU memory: {e:?}")))
        };
        this.compressed = alloc(size)?;
        let buffer = alloc(buf)?;
        let src = Dev::of(w, stream).ptr;
        let dst = Dev::of(&this.compressed, stream).ptr;
        let bp = Dev::of(&buffer, stream).ptr;
        // SAFETY: `w` holds cout × k halves; `compressed`/`buffer` the sizes the library asked for.
        unsafe {
            check(
                "compress",
                (lib.compress)(
                    h,
                    this.desc.p(),
                    1,
                    OP_N,
                    src as V,
                    dst as Vm,
                    bp as Vm,
                    stream.cu_stream(),
                ),
            )?
        };
        stream
            .synchronize()
            .map_err(|e| Error::Runtime(format!("cuSPARSELt compress: {e:?}")))?;
        Ok(this)
    }
}

impl Drop for SparseWeights {
    fn drop(&mut self) {
        // SAFETY: made by the structured-descriptor init.
        unsafe { (self.lib.mat_destroy)(self.desc.p()) };
    }
}

/// One layer's sparse GEMM at one batch size: `D = act(W·X + β·Z + bias)` with `pixels` columns.
pub struct SparseGemm {
    lib: &'static Lib,
    x: Box<Opaque>,
    y: Box<Opaque>,
    matmul: Box<Opaque>,
    alg: Box<Opaque>,
    plan: Box<Opaque>,
    /// Workspace bytes the plan needs.
    pub workspace: usize,
    /// The algorithm: cuSPARSELt's default for the shape (0). `cusparseLtMatmulSearch` is not used:
    /// on the H200 with cuSPARSELt 0.8.0 it failed with status 7 on every ResNet50 shape, and in the
    /// engine's process it left the CUDA context broken (`CUDA_ERROR_ILLEGAL_INSTRUCTION`), which no
    /// candidate may do (`scripts/gpu/cslt_probe.py`, docs/gpu.md).
    pub alg_id: i32,
    residual: bool,
    /// Which of x, y, alg, plan were initialized (only those are destroyed).
    made: [bool; 4],
}

// SAFETY: see `SparseLt`.
unsafe impl Send for SparseGemm {}

/// The device pointers of one call.
#[derive(Clone, Copy)]
pub struct GemmPtrs {
    pub x: drv_sys::CUdeviceptr,
    pub y: drv_sys::CUdeviceptr,
    /// The shortcut (`β = 1`), or 0.
    pub z: drv_sys::CUdeviceptr,
    pub workspace: drv_sys::CUdeviceptr,
}

impl SparseGemm {
    /// Descriptors and plan for `pixels` output positions; `bias` (fp16, cout) and the ReLU in the
    /// epilogue. Errors when cuSPARSELt does not take the shape (e.g. a column count that is not a
    /// multiple of 8 at small batches).
    pub fn new(
        lt: &SparseLt,
        w: &SparseWeights,
        pixels: usize,
        bias: drv_sys::CUdeviceptr,
        relu: bool,
        residual: bool,
    ) -> Result<Self> {
        let lib = lt.lib;
        let h = lt.handle.p();
        let mut g = SparseGemm {
            lib,
            x: Opaque::boxed(),
            y: Opaque::boxed(),
            matmul: Opaque::boxed(),
            alg: Opaque::boxed(),
            plan: Opaque::boxed(),
            workspace: 0,
            alg_id: 0,
            residual,
            made: [false; 4],
        };
        let (k, cout, n) = (w.k as i64, w.cout as i64, pixels as i64);
        // SAFETY: opaque structs owned by `g`; the plan is made from descriptors that live as long.
        // Drop destroys only what was made (`made`).
        unsafe {
            check(
                "dense descriptor (activation)",
                (lib.dense)(h, g.x.m(), k, n, k, 16, R_16F, ORDER_COL),
            )?;
            g.made[0] = true;
            check(
                "dense descriptor (output)",
                (lib.dense)(h, g.y.m(), cout, n, cout, 16, R_16F, ORDER_COL),
            )?;
            g.made[1] = true;
            check(
                "matmul descriptor",
                (lib.matmul_init)(
                    h,
                    g.matmul.m(),
                    OP_N,
                    OP_N,
                    w.desc.p(),
                    g.x.p(),
                    g.y.p(),
                    g.y.p(),
                    COMPUTE_32F,
                ),
            )?;
            let on: i32 = i32::from(relu);
            check(
                "ReLU epilogue",
                (lib.matmul_set)(
                    h,
                    g.matmul.m(),
                    ATTR_RELU,
                    &on as *const i32 as V,
                    std::mem::size_of::<i32>(),
                ),
            )?;
            check(
                "bias epilogue",
                (lib.matmul_set)(
                    h,
                    g.matmul.m(),
                    ATTR_BIAS_POINTER,
                    &bias as *const u64 as V,
                    std::mem::size_of::<u64>(),
                ),
            )?;
            check(
                "algorithm selection",
                (lib.alg_init)(h, g.alg.m(), g.matmul.p(), ALG_DEFAULT),
            )?;
            g.made[2] = true;
            check(
                "plan",
                (lib.plan_init)(h, g.plan.m(), g.matmul.p(), g.alg.p()),
            )?;
            g.made[3] = true;
            check(
                "workspace size",
                (lib.workspace)(h, g.plan.p(), &mut g.workspace),
            )?;
        }
        Ok(g)
    }

    /// Enqueues the GEMM on `stream` (capturable into a CUDA graph: no allocation, no sync).
    pub fn run(
        &self,
        lt: &SparseLt,
        w: &SparseWeights,
        p: GemmPtrs,
        stream: &Arc<CudaStream>,
    ) -> Result<()> {
        let (alpha, beta) = (1f32, if self.residual { 1f32 } else { 0f32 });
        let wp = Dev::of(&w.compressed, stream).ptr;
        let mut s = stream.cu_stream();
        let c = if self.residual { p.z } else { p.y };
        // SAFETY: pointers to buffers holding the plan's matrices (checked by the caller against the
        // plan's shapes); the workspace holds at least `self.workspace` bytes.
        unsafe {
            check(
                "matmul",
                (self.lib.matmul)(
                    lt.handle.p(),
                    self.plan.p(),
                    &alpha as *const f32 as V,
                    wp as V,
                    p.x as V,
                    &beta as *const f32 as V,
                    c as V,
                    p.y as Vm,
                    p.workspace as Vm,
                    &mut s,
                    1,
                ),
            )
        }
    }
}

impl Drop for SparseGemm {
    fn drop(&mut self) {
        // SAFETY: each was made by its init function above (`made`).
        unsafe {
            if self.made[3] {
                (self.lib.plan_destroy)(self.plan.p());
            }
            if self.made[2] {
                (self.lib.alg_destroy)(self.alg.p());
            }
            if self.made[0] {
                (self.lib.mat_destroy)(self.x.p());
            }
            if self.made[1] {
                (self.lib.mat_destroy)(self.y.p());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_four_detection() {
        let z = f16::ZERO;
        let o = f16::ONE;
        assert!(is_two_four(&[o, z, o, z, z, z, z, o], 8));
        assert!(!is_two_four(&[o, o, o, z, z, z, z, o], 8));
        assert!(
            !is_two_four(&[o, z, z, z, z, z], 6),
            "cin not a multiple of 4"
        );
        assert!(!is_two_four(&[], 4));
    }
}

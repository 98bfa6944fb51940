//! The engine's own int8 convolution (`igemm.cu`): an implicit GEMM on the int8 tensor cores
//! (`mma.sync` m16n8k32, Ampere and later) that reads the NHWC int8 activation directly — no im2col
//! buffer, 3×3 and strided layers included — and applies the file's requantization, and for a block's
//! last convolution also the `QLinearAdd` with the shortcut, before it stores int8. No int32 tensor goes
//! to memory (cuBLASLt offers no int8-output GEMM with a per-channel multiplier on the H200: see
//! docs/gpu.md). Several tile shapes are compiled; the search times each per layer and batch size
//! against cuBLASLt and checks its output against the int32 reference.
//!
//! On Hopper (compute capability 9.0) a second module of the same source is compiled for `compute_90a`
//! with `IGEMM_WGMMA` defined: the same loads and the same epilogue, but the products on
//! `wgmma.mma_async` (int8 m64nNk32, operands from swizzled shared memory), which `mma.sync` cannot
//! reach there (~400 int8 TOPS against ~650 on the 3×3 layers, docs/gpu.md). Its tiles join the search
//! like the others; every other device keeps the portable `mma.sync` kernels alone.

use cudarc::driver::DeviceRepr;

use super::*;

const SOURCE: &str = include_str!("igemm.cu");

/// Which tensor-core instruction a tile shape runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Instr {
    /// `mma.sync` m16n8k32 (compute capability ≥ 8.0): kernel `igemm_<name>`.
    MmaSync,
    /// Hopper's `wgmma.mma_async` (sm_90a only), `depth` bytes of every row per pipeline stage:
    /// kernel `wgmma_<name without the "wg">`.
    Wgmma { depth: u32 },
}

/// One compiled tile shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tile {
    pub(super) name: &'static str,
    pub(super) instr: Instr,
    bm: u32,
    bn: u32,
    threads: u32,
    stages: u32,
}

impl Tile {
    /// The kernel's dynamic shared memory: the pipeline's stages (and, for wgmma, 1024 bytes to align
    /// them for the swizzle).
    fn shared_bytes(&self) -> u32 {
        match self.instr {
            Instr::MmaSync => (self.bm + self.bn) * ROW * self.stages,
            Instr::Wgmma { depth } => (self.bm + self.bn) * depth * self.stages + 1024,
        }
    }

    fn function(&self) -> String {
        match self.instr {
            Instr::MmaSync => format!("igemm_{}", self.name),
            Instr::Wgmma { .. } => format!("wgmma_{}", self.name.trim_start_matches("wg")),
        }
    }

    /// The instruction, as the layer plans name it.
    pub(super) fn instr_label(&self) -> &'static str {
        match self.instr {
            Instr::MmaSync => "mma.sync",
            Instr::Wgmma { .. } => "wgmma",
        }
    }
}

/// The shapes `igemm.cu` instantiates (kernel `igemm_<bm>x<bn>`).
const TILES: [Tile; 5] = [
    Tile {
        instr: Instr::MmaSync,
        name: "128x128",
        bm: 128,
        bn: 128,
        threads: 256,
        stages: 2,
    },
    Tile {
        instr: Instr::MmaSync,
        name: "128x64",
        bm: 128,
        bn: 64,
        threads: 128,
        stages: 3,
    },
    Tile {
        instr: Instr::MmaSync,
        name: "64x128",
        bm: 64,
        bn: 128,
        threads: 128,
        stages: 3,
    },
    Tile {
        instr: Instr::MmaSync,
        name: "64x64",
        bm: 64,
        bn: 64,
        threads: 128,
        stages: 4,
    },
    Tile {
        instr: Instr::MmaSync,
        name: "32x64",
        bm: 32,
        bn: 64,
        threads: 128,
        stages: 4,
    },
];

/// The Hopper shapes (`wgmma_*` in `igemm.cu`). Measured on the H200 at batch 256
/// (`scripts/gpu/igemm_bench.py`, docs/gpu.md): 128×128 with 64-byte stages wins most layers, 128×256
/// the compute-bound ones with 256+ output channels and a deep K, 128×64 those with 64 channels; the
/// one-warpgroup 64×128 / 64×64 give small batches more CTAs.
const WG_TILES: [Tile; 5] = [
    Tile {
        name: "wg128x128k64",
        instr: Instr::Wgmma { depth: 64 },
        bm: 128,
        bn: 128,
        threads: 256,
        stages: 6,
    },
    Tile {
        name: "wg128x256",
        instr: Instr::Wgmma { depth: 128 },
        bm: 128,
        bn: 256,
        threads: 256,
        stages: 4,
    },
    Tile {
        name: "wg128x64k64",
        instr: Instr::Wgmma { depth: 64 },
        bm: 128,
        bn: 64,
        threads: 256,
        stages: 6,
    },
    Tile {
        name: "wg64x128",
        instr: Instr::Wgmma { depth: 128 },
        bm: 64,
        bn: 128,
        threads: 128,
        stages: 4,
    },
    Tile {
        name: "wg64x64",
        instr: Instr::Wgmma { depth: 128 },
        bm: 64,
        bn: 64,
        threads: 128,
        stages: 4,
    },
];

/// Row pitch of a shared-memory tile row in `igemm.cu` (64 bytes + 16 of padding).
const ROW: u32 = 80;

/// The kernel's parameter block (`ConvArgs` in `igemm.cu`, same field order and C layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvArgs {
    pub(super) x: u64,
    pub(super) w: u64,
    pub(super) ofs: u64,
    pub(super) mult: u64,
    pub(super) y: u64,
    /// The shortcut (0: no residual add).
    pub(super) sc: u64,
    pub(super) m: i32,
    pub(super) h: i32,
    pub(super) wd: i32,
    pub(super) c: i32,
    pub(super) oh: i32,
    pub(super) ow: i32,
    pub(super) cout: i32,
    pub(super) ks: i32,
    pub(super) stride: i32,
    pub(super) pad: i32,
    pub(super) padv: i32,
    pub(super) kdim: i32,
    pub(super) zy: i32,
    pub(super) s3: f32,
    pub(super) z3: i32,
    pub(super) ss: f32,
    pub(super) zs: i32,
    pub(super) so: f32,
    pub(super) zo: i32,
    /// `1 / so`, rounded to nearest (the epilogue's exact division).
    pub(super) rso: f32,
}

// SAFETY: plain old data with the C layout of the kernel's parameter struct.
unsafe impl DeviceRepr for ConvArgs {}

/// The compiled tile shapes.
pub(super) struct Igemm {
    funcs: Vec<(Tile, CudaFunction)>,
}

impl Igemm {
    /// Compiles the kernels for the context's device; `None` (with the reason logged) where the device
    /// has no int8 `mma.sync` (before compute capability 8.0) or NVRTC refuses the source, and the
    /// int8 path then runs on cuBLASLt alone.
    pub(super) fn compile(ctx: &Arc<CudaContext>) -> Option<Self> {
        let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
        if major < 8 {
            tracing::info!(major, "no int8 mma.sync before compute capability 8.0");
            return None;
        }
        let module = match super::super::kernels::load_module(ctx, SOURCE, "int8 implicit GEMM") {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("int8 implicit-GEMM kernels unavailable: {e}");
                return None;
            }
        };
        let mut funcs = Vec::new();
        for t in TILES {
            match module.load_function(&t.function()) {
                Ok(f) => funcs.push((t, f)),
                Err(e) => tracing::warn!(tile = t.name, "int8 implicit GEMM: {e}"),
            }
        }
        if (major, minor) == (9, 0) {
            funcs.extend(Self::hopper(ctx));
        }
        (!funcs.is_empty()).then_some(Igemm { funcs })
    }

    /// The `wgmma` tiles (compute capability 9.0 exactly: `sm_90a` code runs on no other device);
    /// none, with the reason logged, where NVRTC or the driver refuses them.
    fn hopper(ctx: &Arc<CudaContext>) -> Vec<(Tile, CudaFunction)> {
        let source = format!("#define IGEMM_WGMMA\n{SOURCE}");
        let module = match super::super::kernels::load_module_for(
            ctx,
            &source,
            "int8 implicit GEMM (wgmma)",
            Some("compute_90a"),
        ) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("int8 wgmma kernels unavailable: {e}");
                return Vec::new();
            }
        };
        let mut funcs = Vec::new();
        for t in WG_TILES {
            let f = module.load_function(&t.function()).and_then(|f| {
                f.set_attribute(
                    drv_sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    t.shared_bytes() as i32,
                )?;
                Ok(f)
            });
            match f {
                Ok(f) => funcs.push((t, f)),
                Err(e) => tracing::warn!(tile = t.name, "int8 wgmma: {e}"),
            }
        }
        funcs
    }

    /// How many tile shapes there are (indices for [`Igemm::launch`]).
    pub(super) fn len(&self) -> usize {
        self.funcs.len()
    }

    pub(super) fn tile(&self, i: usize) -> Tile {
        self.funcs[i].0
    }

    /// Enqueues one convolution with tile shape `i`.
    pub(super) fn launch(&self, stream: &Arc<CudaStream>, i: usize, a: &ConvArgs) -> Result<()> {
        let (t, f) = &self.funcs[i];
        let cfg = LaunchConfig {
            grid_dim: (
                (a.m as u32).div_ceil(t.bm),
                (a.cout as u32).div_ceil(t.bn),
                1,
            ),
            block_dim: (t.threads, 1, 1),
            shared_mem_bytes: t.shared_bytes(),
        };
        let mut l = stream.launch_builder(f);
        l.arg(a);
        // SAFETY: the caller's `ConvArgs` describe buffers of at least `m × cout` outputs, an input of
        // `n × h × wd × c` and weights of `cout × kdim`, with `c` and `cout` multiples of 16 (checked
        // by `QNet::new` and `Int8Net::new`); the kernel bounds-checks rows and columns.
        unsafe { l.launch(cfg) }.map_err(rt(t.function()))?;
        Ok(())
    }
}

//! The engine's own small kernels (everything that is not a convolution or the FC layer), compiled once
//! per process with NVRTC. fp16 values travel as raw 16-bit words and are converted with PTX `cvt`, so
//! the source needs no CUDA headers. All tensors are NHWC (channels fastest); every kernel is
//! memory-bound and written for coalesced access along the channel axis.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use crate::error::{Error, Result};

const SOURCE: &str = r#"
typedef unsigned short half_t;

__device__ __forceinline__ float h2f(half_t h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ half_t f2h(float f) {
    half_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}

// NCHW float32 [n, 3, hw] (torchvision-normalized) minus the per-channel input offset
// -> NHWC fp16 [n, hw, c_pad], channels 3.. zero.
extern "C" __global__ void input_to_nhwc(const float* __restrict__ x, half_t* __restrict__ y,
                                         float o0, float o1, float o2, int n, int hw, int c_pad) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)n * hw;
    if (i >= total) return;
    long long img = i / hw;
    long long p = i - img * hw;
    const float* src = x + img * 3 * hw + p;
    half_t* dst = y + i * c_pad;
    dst[0] = f2h(src[0] - o0);
    dst[1] = f2h(src[hw] - o1);
    dst[2] = f2h(src[2 * hw] - o2);
    for (int c = 3; c < c_pad; ++c) dst[c] = 0;
}

// Image bytes -> the network's f32 input: u8 HWC [n, hw, 3] (RGB, what preprocessing produces before
// normalizing) -> NCHW float32 (x / 255 - mean) / std, with exactly the CPU's IEEE operations (no
// contraction), so the rest of the forward pass sees the same floats as from the f32 path.
extern "C" __global__ void normalize_u8(const unsigned char* __restrict__ x, float* __restrict__ y,
                                        long long pixels, int hw, float m0, float m1, float m2,
                                        float s0, float s1, float s2) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pixels) return;
    long long img = i / hw;
    long long p = i - img * hw;
    const unsigned char* src = x + i * 3;
    float* dst = y + img * 3 * hw + p;
    dst[0] = __fdiv_rn(__fsub_rn(__fdiv_rn((float)src[0], 255.0f), m0), s0);
    dst[hw] = __fdiv_rn(__fsub_rn(__fdiv_rn((float)src[1], 255.0f), m1), s1);
    dst[2 * hw] = __fdiv_rn(__fsub_rn(__fdiv_rn((float)src[2], 255.0f), m2), s2);
}

// 3x3 stride-2 max pool with padding 1 (padding never wins), NHWC fp16.
extern "C" __global__ void maxpool3s2(const half_t* __restrict__ x, half_t* __restrict__ y,
                                      int n, int h, int w, int c, int oh, int ow) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)n * oh * ow * c;
    if (i >= total) return;
    int ch = (int)(i % c);
    long long t = i / c;
    int ox = (int)(t % ow); t /= ow;
    int oy = (int)(t % oh);
    long long img = t / oh;
    float m = -65504.0f;
    for (int dy = 0; dy < 3; ++dy) {
        int iy = oy * 2 - 1 + dy;
        if (iy < 0 || iy >= h) continue;
        for (int dx = 0; dx < 3; ++dx) {
            int ix = ox * 2 - 1 + dx;
            if (ix < 0 || ix >= w) continue;
            m = fmaxf(m, h2f(x[((img * h + iy) * w + ix) * c + ch]));
        }
    }
    y[i] = f2h(m);
}

// y = act(y + bias[c] (+ z)), in place, NHWC fp16: the epilogue for a layer whose fused cuDNN call
// was not available.
extern "C" __global__ void bias_act(half_t* __restrict__ y, const half_t* __restrict__ bias,
                                    const half_t* __restrict__ z, long long total, int c, int relu) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = h2f(y[i]) + h2f(bias[i % c]);
    if (z) v += h2f(z[i]);
    if (relu) v = fmaxf(v, 0.0f);
    y[i] = f2h(v);
}

// Global average pooling: NHWC fp16 [n, hw, c] -> fp16 [n, c], float accumulation.
extern "C" __global__ void global_avg_pool(const half_t* __restrict__ x, half_t* __restrict__ y,
                                           int n, int hw, int c) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    long long img = i / c;
    int ch = (int)(i - img * c);
    const half_t* src = x + img * hw * c + ch;
    float s = 0.0f;
    for (int p = 0; p < hw; ++p) s += h2f(src[(long long)p * c]);
    y[i] = f2h(s / (float)hw);
}

// One block per row: fp16 logits -> float32 logits and softmax probabilities.
extern "C" __global__ void logits_softmax(const half_t* __restrict__ x, float* __restrict__ logits,
                                          float* __restrict__ probs, int classes) {
    __shared__ float red[32];
    const half_t* row = x + (long long)blockIdx.x * classes;
    float* lrow = logits + (long long)blockIdx.x * classes;
    float* prow = probs + (long long)blockIdx.x * classes;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;

    float m = -3.0e38f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) {
        float v = h2f(row[j]);
        lrow[j] = v;
        m = fmaxf(m, v);
    }
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    if (lane == 0) red[warp] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = red[0];
        for (int k = 1; k < warps; ++k) t = fmaxf(t, red[k]);
        red[0] = t;
    }
    __syncthreads();
    m = red[0];
    __syncthreads();

    float s = 0.0f;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) s += __expf(h2f(row[j]) - m);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    if (lane == 0) red[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int k = 0; k < warps; ++k) t += red[k];
        red[0] = t;
    }
    __syncthreads();
    float inv = 1.0f / red[0];
    for (int j = threadIdx.x; j < classes; j += blockDim.x) prow[j] = __expf(h2f(row[j]) - m) * inv;
}

// out[0] = max |a - ref|, out[1] = max |ref| (non-negative floats compare like their bit patterns;
// NaN and infinities count as huge); sums[0] += (a - ref)^2, sums[1] += ref^2.
extern "C" __global__ void max_diff(const half_t* __restrict__ a, const half_t* __restrict__ ref,
                                    long long n, unsigned int* __restrict__ out, float* __restrict__ sums) {
    float d = 0.0f, r = 0.0f, sd = 0.0f, sr = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = h2f(a[i]), y = h2f(ref[i]);
        float e = fabsf(x - y);
        if (!(e <= 3.0e38f)) e = 3.0e38f;
        d = fmaxf(d, e);
        r = fmaxf(r, fabsf(y));
        sd += fminf(e * e, 1.0e30f);
        sr += y * y;
    }
    for (int o = 16; o > 0; o >>= 1) {
        d = fmaxf(d, __shfl_xor_sync(0xffffffff, d, o));
        r = fmaxf(r, __shfl_xor_sync(0xffffffff, r, o));
        sd += __shfl_xor_sync(0xffffffff, sd, o);
        sr += __shfl_xor_sync(0xffffffff, sr, o);
    }
    if ((threadIdx.x & 31) == 0) {
        atomicMax(out, __float_as_uint(d));
        atomicMax(out + 1, __float_as_uint(r));
        atomicAdd(sums, sd);
        atomicAdd(sums + 1, sr);
    }
}

// The last feature map, for class activation maps (only on the explained path): NHWC [n, hw, c] ->
// NCHW float32 [n, c, hw], what `engine::cam::FeatureMap` holds. `fmt` 0: fp16 values; 1: int8 in
// storage form (`u8 - 128`), dequantized as `s * (q - z)` (the file's DequantizeLinear: one rounding).
// One thread per output value, so the writes are coalesced; the reads stride by `c` but the whole map
// is 200 KB (fp16) a photo.
extern "C" __global__ void feature_map_nchw(const void* __restrict__ x, float* __restrict__ y, int n,
                                            int hw, int c, int fmt, float s, int z) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per = (long long)hw * c;
    if (i >= (long long)n * per) return;
    long long img = i / per;
    long long r = i - img * per;
    int ch = (int)(r / hw);
    int p = (int)(r - (long long)ch * hw);
    long long src = (img * hw + p) * c + ch;
    if (fmt == 0) {
        y[i] = h2f(((const half_t*)x)[src]);
    } else {
        y[i] = __fmul_rn(s, (float)((int)((const signed char*)x)[src] - z));
    }
}

// Deterministic pseudo-random fp16 fill in [0, 1) (buffers are never timed on zeros).
extern "C" __global__ void fill_pattern(half_t* __restrict__ y, long long total, unsigned int seed) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    unsigned int v = (unsigned int)i * 2654435761u ^ seed;
    v ^= v >> 15; v *= 2246822519u; v ^= v >> 13;
    y[i] = f2h((float)(v & 0xffff) / 65536.0f);
}
"#;

/// Handles to the compiled kernels.
#[derive(Clone)]
pub struct Kernels {
    pub input_to_nhwc: CudaFunction,
    pub normalize_u8: CudaFunction,
    pub maxpool3s2: CudaFunction,
    pub bias_act: CudaFunction,
    pub global_avg_pool: CudaFunction,
    pub logits_softmax: CudaFunction,
    pub fill_pattern: CudaFunction,
    pub max_diff: CudaFunction,
    pub feature_map_nchw: CudaFunction,
}

impl Kernels {
    /// Compiles the kernels for the context's device and loads them.
    pub fn compile(ctx: &Arc<CudaContext>) -> Result<Self> {
        let module = load_module(ctx, SOURCE, "kernels")?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| Error::Runtime(format!("kernel {name}: {e}")))
        };
        Ok(Kernels {
            input_to_nhwc: f("input_to_nhwc")?,
            normalize_u8: f("normalize_u8")?,
            maxpool3s2: f("maxpool3s2")?,
            bias_act: f("bias_act")?,
            global_avg_pool: f("global_avg_pool")?,
            logits_softmax: f("logits_softmax")?,
            fill_pattern: f("fill_pattern")?,
            max_diff: f("max_diff")?,
            feature_map_nchw: f("feature_map_nchw")?,
        })
    }
}

/// Compiles CUDA C `source` with NVRTC for the context's device and loads it.
pub(super) fn load_module(
    ctx: &Arc<CudaContext>,
    source: &str,
    what: &str,
) -> Result<Arc<CudaModule>> {
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| Error::Runtime(format!("compute capability: {e}")))?;
    load_module_for(ctx, source, what, arch_for(major, minor))
}

/// [`load_module`] for an explicit NVRTC `--gpu-architecture` (e.g. `compute_90a` for Hopper-only
/// instructions; `None`: NVRTC's default).
pub(super) fn load_module_for(
    ctx: &Arc<CudaContext>,
    source: &str,
    what: &str,
    arch: Option<&'static str>,
) -> Result<Arc<CudaModule>> {
    let opts = CompileOptions {
        arch,
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, opts)
        .map_err(|e| Error::Runtime(format!("NVRTC ({what}): {e}")))?;
    ctx.load_module(ptx)
        .map_err(|e| Error::Runtime(format!("loading {what}: {e}")))
}

/// NVRTC's `--gpu-architecture` for a device (a PTX target the driver finalizes at load).
fn arch_for(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        _ => return None,
    })
}

/// Threads per block for the element-wise kernels.
pub const BLOCK: u32 = 256;

/// Blocks for `total` elements.
pub fn blocks(total: usize) -> u32 {
    total.div_ceil(BLOCK as usize) as u32
}

//! The int8 path's element-wise kernels (im2col, pooling, requantization, residual add), compiled
//! once per network with NVRTC.

use super::*;

const SOURCE: &str = r#"
typedef signed char i8;
typedef unsigned short half_t;

__device__ __forceinline__ half_t f2h(float f) {
    half_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ i8 sat8(float v) {
    return (i8)(int)fminf(fmaxf(v, -128.0f), 127.0f);
}

// Thread indices of the kernels below are 32-bit (64-bit division is a long software sequence: it made
// the stem's im2col take ~1 ms at batch 256); `Int8Net::new` keeps every launch under 2^31 threads.

// The stem's input quantization: NCHW float32 (torchvision-normalized) minus the offset, quantized
// (round half to even, the file's rounding) -> NHWC int8 with 4 channels (the 4th is never read). Once per
// input element; the im2col below then only gathers bytes (quantizing inside the im2col divided every
// element once per tap that reads it, ~12 times).
extern "C" __global__ void stem_quant(const float* __restrict__ x, unsigned* __restrict__ q,
                                      float o0, float o1, float o2, float scale, int zero, int n, int hw) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (unsigned)n * hw) return;
    const unsigned img = i / hw, p = i - img * hw;
    const float* b = x + (long long)img * 3 * hw + p;
    const unsigned q0 = (unsigned char)sat8(rintf((b[0] - o0) / scale) + (float)zero);
    const unsigned q1 = (unsigned char)sat8(rintf((b[hw] - o1) / scale) + (float)zero);
    const unsigned q2 = (unsigned char)sat8(rintf((b[2 * hw] - o2) / scale) + (float)zero);
    q[i] = q0 | (q1 << 8) | (q2 << 16);
}

// The stem's im2col from stem_quant's NHWC4 map -> [n*oh*oh, kdim] int8 with the reduction index
// (ky*k + kx)*4 + c (whole pixels: `stem_pixels_of_4` lays the weights out so), padding = the stored
// zero, taps past k*k = 0. One thread per 16 bytes (4 taps) of a row (kdim % 16 == 0), written at once.
extern "C" __global__ void stem_im2col(const unsigned* __restrict__ x, i8* __restrict__ col, int zero,
                                       int n, int h, int k, int stride, int pad, int oh, int kdim) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned chunks = kdim / 16;
    if (i >= (unsigned)n * oh * oh * chunks) return;
    const unsigned m = i / chunks;
    const int e0 = (int)(i - m * chunks) * 16;
    const unsigned t = m / oh, img = t / oh;
    const int ox = (int)(m - t * oh), oy = (int)(t - img * oh);
    const unsigned* base = x + (long long)img * h * h;
    const unsigned zw = (unsigned)(zero & 0xff) * 0x01010101u;
    int tap = e0 / 4;
    int ky = tap / k, kx = tap - ky * k;
    unsigned w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        unsigned v = 0;
        if (ky < k) {
            const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
            v = (iy >= 0 && iy < h && ix >= 0 && ix < h) ? base[iy * h + ix] : zw;
        }
        w[j] = v;
        if (++kx == k) { kx = 0; ++ky; }
    }
    *(uint4*)(col + (long long)m * kdim + e0) = make_uint4(w[0], w[1], w[2], w[3]);
}

// im2col of an NHWC int8 map with c % 16 == 0: one thread per 16 bytes of a row of [n*oh*oh, k*k*c].
extern "C" __global__ void im2col_s8(const i8* __restrict__ x, i8* __restrict__ col, int n, int h,
                                     int c, int k, int stride, int pad, int oh, int padv) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const int kdim = k * k * c;
    const unsigned chunks = kdim / 16;
    if (i >= (unsigned)n * oh * oh * chunks) return;
    const unsigned mm = i / chunks;
    const int e = (int)(i - mm * chunks) * 16;
    const unsigned t = mm / oh, im = t / oh;
    const int ox = (int)(mm - t * oh), oy = (int)(t - im * oh);
    const long long m = mm, img = im;
    int tap = e / c, ci = e % c;
    int iy = oy * stride - pad + tap / k, ix = ox * stride - pad + tap % k;
    unsigned long long a, b;
    if (iy >= 0 && iy < h && ix >= 0 && ix < h) {
        const unsigned long long* src =
            (const unsigned long long*)(x + ((img * h + iy) * (long long)h + ix) * c + ci);
        a = src[0]; b = src[1];
    } else {
        unsigned long long p = (unsigned long long)(padv & 0xff) * 0x0101010101010101ull;
        a = p; b = p;
    }
    unsigned long long* dst = (unsigned long long*)(col + m * kdim + e);
    dst[0] = a; dst[1] = b;
}

// 3x3 stride-2 max pool with padding 1 on int8 (padding never wins).
extern "C" __global__ void maxpool_s8(const i8* __restrict__ x, i8* __restrict__ y,
                                      int n, int h, int c, int oh) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)n * oh * oh * c;
    if (i >= total) return;
    int ch = (int)(i % c); long long t = i / c;
    int ox = (int)(t % oh); t /= oh;
    int oy = (int)(t % oh); long long img = t / oh;
    int m = -128;
    for (int dy = 0; dy < 3; ++dy) {
        int iy = oy * 2 - 1 + dy;
        if (iy < 0 || iy >= h) continue;
        for (int dx = 0; dx < 3; ++dx) {
            int ix = ox * 2 - 1 + dx;
            if (ix < 0 || ix >= h) continue;
            int v = x[((img * h + iy) * h + ix) * c + ch];
            m = v > m ? v : m;
        }
    }
    y[i] = (i8)m;
}

// The same for c % 16 == 0, 16 channels a thread: 16-byte loads and stores, per-byte signed max.
extern "C" __global__ void maxpool_s8x16(const i8* __restrict__ x, i8* __restrict__ y,
                                         int n, int h, int c, int oh) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned c16 = c / 16;
    if (i >= (unsigned)n * oh * oh * c16) return;
    const unsigned t0 = i / c16, t1 = t0 / oh, im = t1 / oh;
    const int ch = (int)(i - t0 * c16) * 16, ox = (int)(t0 - t1 * oh), oy = (int)(t1 - im * oh);
    const long long img = im;
    uint4 m = make_uint4(0x80808080u, 0x80808080u, 0x80808080u, 0x80808080u);
    for (int dy = 0; dy < 3; ++dy) {
        int iy = oy * 2 - 1 + dy;
        if (iy < 0 || iy >= h) continue;
        for (int dx = 0; dx < 3; ++dx) {
            int ix = ox * 2 - 1 + dx;
            if (ix < 0 || ix >= h) continue;
            const uint4 v = *(const uint4*)(x + ((img * h + iy) * h + ix) * c + ch);
            m.x = __vmaxs4(m.x, v.x); m.y = __vmaxs4(m.y, v.y);
            m.z = __vmaxs4(m.z, v.z); m.w = __vmaxs4(m.w, v.w);
        }
    }
    *(uint4*)(y + (long long)i * 16) = m;
}

// int32 accumulators -> int8: y = sat8(rint((acc + ofs[c]) * mult[c]) + zero).
extern "C" __global__ void requant(const int* __restrict__ acc, i8* __restrict__ y,
                                   const int* __restrict__ ofs, const float* __restrict__ mult,
                                   int zero, long long total, int c) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int ch = (int)(i % c);
    y[i] = sat8(rintf((float)(acc[i] + ofs[ch]) * mult[ch]) + (float)zero);
}

// The residual add of the file (QLinearAdd): y = sat8(rint((sa(a - za) + sb(b - zb)) / so) + zo).
extern "C" __global__ void qadd(const i8* __restrict__ a, const i8* __restrict__ b, i8* __restrict__ y,
                                float sa, int za, float sb, int zb, float so, int zo, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    // Explicit round-to-nearest operations: no FMA contraction, the CPU reference's arithmetic.
    float s = __fadd_rn(__fmul_rn(sa, (float)((int)a[i] - za)), __fmul_rn(sb, (float)((int)b[i] - zb)));
    y[i] = sat8(rintf(__fdiv_rn(s, so)) + (float)zo);
}

// Global average pooling of stored int8 [n, hw, c] -> fp16 [n, c], the mean quantized like the FC
// input when qs > 0 (and dequantized again).
extern "C" __global__ void gap_s8(const i8* __restrict__ x, half_t* __restrict__ y, int n, int hw,
                                  int c, float s, int z, float qs, int qz) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    int ch = (int)(i % c);
    long long img = i / c;
    float sum = 0.0f;
    for (int p = 0; p < hw; ++p) sum += s * (float)((int)x[(img * hw + p) * c + ch] - z);
    float mean = sum / (float)hw;
    if (qs > 0.0f) {
        float q = fminf(fmaxf(rintf(mean / qs) + (float)qz, -128.0f), 127.0f);
        mean = qs * (q - (float)qz);
    }
    y[i] = f2h(mean);
}

// One thread that waits `ns` nanoseconds: enqueued before a timed region so that the host queues the
// timed launches while the device is busy, and the events measure device time, not launch rate.
extern "C" __global__ void spin(long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while ((long long)(t - t0) < ns);
}

// Largest |a - b| of two int8 buffers, and how many elements differ at all.
extern "C" __global__ void diff_s8(const i8* __restrict__ a, const i8* __restrict__ b, long long total,
                                   unsigned int* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int d = (int)a[i] - (int)b[i];
    if (d != 0) {
        atomicMax(out, (unsigned int)(d < 0 ? -d : d));
        atomicAdd(out + 1, 1u);
    }
}
"#;

/// The int8 path's kernels.
pub(super) struct Int8Kernels {
    pub(super) stem_quant: CudaFunction,
    pub(super) stem_im2col: CudaFunction,
    pub(super) im2col: CudaFunction,
    pub(super) maxpool: CudaFunction,
    pub(super) maxpool16: CudaFunction,
    pub(super) requant: CudaFunction,
    pub(super) qadd: CudaFunction,
    pub(super) gap: CudaFunction,
    pub(super) diff: CudaFunction,
    pub(super) spin: CudaFunction,
}

impl Int8Kernels {
    pub(super) fn compile(ctx: &Arc<CudaContext>) -> Result<Self> {
        let module = super::super::kernels::load_module(ctx, SOURCE, "int8 kernels")?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| Error::Runtime(format!("kernel {name}: {e}")))
        };
        Ok(Int8Kernels {
            stem_quant: f("stem_quant")?,
            stem_im2col: f("stem_im2col")?,
            im2col: f("im2col_s8")?,
            maxpool: f("maxpool_s8")?,
            maxpool16: f("maxpool_s8x16")?,
            requant: f("requant")?,
            qadd: f("qadd")?,
            gap: f("gap_s8")?,
            diff: f("diff_s8")?,
            spin: f("spin")?,
        })
    }
}

// The engine's int8 implicit-GEMM convolution (see igemm.rs): NHWC int8 activations in storage form
// read directly (no im2col buffer), int8 weights [cout][kdim] (OHWI), int32 accumulation on the tensor
// cores (mma.sync m16n8k32, sm_80+), and the file's requantization (+ the QLinearAdd residual and the
// ReLU clamp) before the one int8 store. Compiled by NVRTC at load; no CUDA headers.
//
// GEMM view: rows m = output positions (n·oh·ow), columns = output channels, depth k = (ky·ks + kx)·C + ci.
// A CTA computes a BM × BN tile with (BM/WM)·(BN/WN) warps; the depth advances 64 bytes a stage through
// an STAGES-deep cp.async pipeline in shared memory (rows padded to 80 bytes: conflict-free
// ldmatrix fragment loads). Every 16-byte chunk of a row lies inside one tap because C % 16 == 0; taps
// outside the input are written as the input's stored zero (`padv`), the padding value of the file. The
// epilogue stages the int8 tile in shared memory and stores (and reads the shortcut) 16 bytes at a time,
// so cout % 16 == 0 too.

typedef signed char i8;

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    unsigned r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}
__device__ __forceinline__ void cp16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
}
// Four 8x8 b16 matrices from shared memory (each lane gives one row address): exactly the
// m16n8k32 s8 fragments (a 16-byte row = 8 b16 = 16 int8).
__device__ __forceinline__ void ldsm4(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void mma_s8(int* c, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// The epilogue's float <-> int steps without the conversion unit (a quarter of the ALU rate on sm_90,
// which bound the epilogue): exact for the magnitudes they see.
// rint (half to even) of x as an int: x is first clamped to +-1024 (beyond that every result saturates
// the same way), then 1.5 * 2^23 is added, which rounds to an integer in round-to-nearest-even.
__device__ __forceinline__ int rint_small(float x) {
    x = fminf(fmaxf(x, -1024.0f), 1024.0f);
    return __float_as_int(__fadd_rn(x, 12582912.0f)) - 0x4B400000;
}
// (float)i for |i| < 2^22.
__device__ __forceinline__ float small_i2f(int i) {
    return __fsub_rn(__int_as_float(0x4B400000 + i), 12582912.0f);
}
__device__ __forceinline__ int sat8i(int v) { return min(max(v, -128), 127); }

struct ConvArgs {
    const i8* x;        // [n, h, w, c] int8
    const i8* w;        // [cout][kdim] int8
    const int* ofs;     // [cout]
    const float* mult;  // [cout]
    i8* y;              // [m, cout] int8
    const i8* sc;       // [m, cout] shortcut (residual layers) or null
    int m, h, wd, c, oh, ow, cout, ks, stride, pad, padv, kdim;
    int zy;                 // this conv's output zero (storage form)
    float s3; int z3;       // residual: this conv's output quantization ...
    float ss; int zs;       // ... the shortcut's ...
    float so; int zo;       // ... and the block output's
    float rso;              // RN(1 / so)
};

#define BK 64
#define ROW 80

template <int BM, int BN, int WM, int WN, int STAGES>
__device__ __forceinline__ void igemm(const ConvArgs& p) {
    constexpr int WARPS_N = BN / WN;
    constexpr int NTHR = (BM / WM) * WARPS_N * 32;
    constexpr int MT = WM / 16, NT = WN / 8;
    constexpr int A_IT = BM * 4 / NTHR, B_IT = BN * 4 / NTHR;
    constexpr int STAGE_BYTES = (BM + BN) * ROW;
    extern __shared__ __align__(16) unsigned char smem[];

    const int tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int kc = tid & 3;  // this thread's 16-byte chunk of every row it loads

    // Rows of A this thread loads: the input image and the top-left tap of each.
    const i8* a_img[A_IT];
    int a_iy[A_IT], a_ix[A_IT];
    const int ohw = p.oh * p.ow;
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
        int m = m0 + (tid >> 2) + i * (NTHR / 4);
        if (m < p.m) {
            int img = m / ohw, r = m - img * ohw;
            int oy = r / p.ow, ox = r - oy * p.ow;
            a_img[i] = p.x + (long long)img * p.h * p.wd * p.c;
            a_iy[i] = oy * p.stride - p.pad;
            a_ix[i] = ox * p.stride - p.pad;
        } else {
            a_img[i] = p.x;
            a_iy[i] = -(1 << 28);
            a_ix[i] = 0;
        }
    }
    const unsigned padw = (unsigned)(p.padv & 0xff) * 0x01010101u;
    const uint4 pad4 = make_uint4(padw, padw, padw, padw);
    const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);

    auto load = [&](int stage, int kt) {
        unsigned char* As = smem + stage * STAGE_BYTES;
        unsigned char* Bs = As + BM * ROW;
        int kk = kt * BK + kc * 16;
        bool kin = kk < p.kdim;
        int tap = 0, ci = kk;
        if (p.ks > 1) { tap = kk / p.c; ci = kk - tap * p.c; }
        int ky = tap / p.ks, kx = tap - ky * p.ks;
#pragma unroll
        for (int i = 0; i < A_IT; ++i) {
            int r = (tid >> 2) + i * (NTHR / 4);
            unsigned char* dst = As + r * ROW + kc * 16;
            int iy = a_iy[i] + ky, ix = a_ix[i] + kx;
            if (!kin) {
                *(uint4*)dst = zero4;
            } else if (iy >= 0 && iy < p.h && ix >= 0 && ix < p.wd) {
                cp16(dst, a_img[i] + ((long long)iy * p.wd + ix) * p.c + ci);
            } else {
                *(uint4*)dst = pad4;
            }
        }
#pragma unroll
        for (int i = 0; i < B_IT; ++i) {
            int r = (tid >> 2) + i * (NTHR / 4);
            unsigned char* dst = Bs + r * ROW + kc * 16;
            int n = n0 + r;
            if (kin && n < p.cout) {
                cp16(dst, p.w + (long long)n * p.kdim + kk);
            } else {
                *(uint4*)dst = zero4;
            }
        }
    };

    int acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

    const int KT = (p.kdim + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load(s, s);
        cp_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        cp_wait<STAGES - 2>();
        __syncthreads();
        int nk = kt + STAGES - 1;
        if (nk < KT) load(nk % STAGES, nk);
        cp_commit();
        const unsigned char* As = smem + (kt % STAGES) * STAGE_BYTES;
        const unsigned char* Bs = As + BM * ROW;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
            unsigned a[MT][4], b[NT][2];
            // A: lanes 0-15 address rows 0-15 at byte 0, lanes 16-31 the same rows at byte 16.
#pragma unroll
            for (int i = 0; i < MT; ++i)
                ldsm4(a[i], As + (wm * WM + i * 16 + (lane & 15)) * ROW + ks * 32 + (lane >> 4) * 16);
            // B, two n8 blocks at a time: lanes 0-7 rows of block j at byte 0, 8-15 the same at byte 16,
            // 16-31 likewise for block j + 1.
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                unsigned r[4];
                ldsm4(r, Bs + (wn * WN + j * 8 + (lane >> 4) * 8 + (lane & 7)) * ROW + ks * 32 +
                             ((lane >> 3) & 1) * 16);
                b[j][0] = r[0]; b[j][1] = r[1]; b[j + 1][0] = r[2]; b[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NT; ++j) mma_s8(acc[i][j], a[i], b[j]);
        }
    }
    cp_wait<0>();
    __syncthreads();  // the pipeline's shared memory is reused for the output tile

    // A block's last convolution: load this thread's shortcut chunks now (16 bytes each, coalesced), so
    // that their latency overlaps the requantization below.
    constexpr int RC = BN / 16;
    constexpr int CHUNKS = (BM * RC + NTHR - 1) / NTHR;
    union Bytes16 { uint4 u; signed char b[16]; };
    Bytes16 sv[CHUNKS];
    if (p.sc) {
#pragma unroll
        for (int k = 0; k < CHUNKS; ++k) {
            const int idx = tid + k * NTHR;
            const int r = idx / RC, cc = idx - (idx / RC) * RC;
            const int m = m0 + r, n = n0 + cc * 16;
            if (idx < BM * RC && m < p.m && n < p.cout)
                sv[k].u = *(const uint4*)(p.sc + (long long)m * p.cout + n);
        }
    }

    // Epilogue, 1: y = sat8(rint((acc + ofs)·mult) + zy) per element into an int8 tile in shared memory.
    // Exactly the CPU reference's float operations (no contraction).
    constexpr int CP = BN + 16;
    unsigned char* Cs = smem;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const int nl = wn * WN + j * 8 + t * 2;
        const int n = n0 + nl;
        if (n >= p.cout) continue;  // cout % 16 == 0: n + 1 < cout too
        const int o0 = p.ofs[n], o1 = p.ofs[n + 1];
        const float f0 = p.mult[n], f1 = p.mult[n + 1];
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int rl = wm * WM + i * 16 + g + hh * 8;
                char2 q;
                q.x = (signed char)sat8i(rint_small(__fmul_rn((float)(acc[i][j][hh * 2] + o0), f0)) + p.zy);
                q.y = (signed char)sat8i(rint_small(__fmul_rn((float)(acc[i][j][hh * 2 + 1] + o1), f1)) + p.zy);
                *(char2*)(Cs + rl * CP + nl) = q;
            }
        }
    }
    __syncthreads();
    // 2: 16-byte rows of the tile to global memory (coalesced), for a block's last convolution after
    // the QLinearAdd with the shortcut.
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
        const int idx = tid + k * NTHR;
        const int r = idx / RC, cc = idx - (idx / RC) * RC;
        const int m = m0 + r, n = n0 + cc * 16;
        if (idx >= BM * RC || m >= p.m || n >= p.cout) continue;
        Bytes16 v;
        v.u = *(const uint4*)(Cs + r * CP + cc * 16);
        if (p.sc) {
#pragma unroll
            for (int e = 0; e < 16; ++e) {
                float a = __fadd_rn(__fmul_rn(p.s3, small_i2f((int)v.b[e] - p.z3)),
                                    __fmul_rn(p.ss, small_i2f((int)sv[k].b[e] - p.zs)));
                // a / so correctly rounded without the divide sequence (Markstein: rso = RN(1/so),
                // q faithful, one FMA correction), as the CPU's IEEE division.
                const float q = __fmul_rn(a, p.rso);
                const float r = __fmaf_rn(-q, p.so, a);
                v.b[e] = (signed char)sat8i(rint_small(__fmaf_rn(r, p.rso, q)) + p.zo);
            }
        }
        *(uint4*)(p.y + (long long)m * p.cout + n) = v.u;
    }
}

// The configurations the search times per layer and batch size (name: BM x BN; warp tile, stages).
// Measured on the H200 at batch 256 (scripts/gpu/igemm_bench.py): 128x128 wins the layers with
// N >= 128, 128x64 those with N = 64; 64x64 and 32x64 give small batches more CTAs. Larger warp tiles
// (64x64) and 2-stage variants of the others were no faster.
extern "C" __global__ void __launch_bounds__(256) igemm_128x128(ConvArgs p) { igemm<128, 128, 64, 32, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) igemm_128x64(ConvArgs p) { igemm<128, 64, 64, 32, 3>(p); }
extern "C" __global__ void __launch_bounds__(128) igemm_64x128(ConvArgs p) { igemm<64, 128, 32, 64, 3>(p); }
extern "C" __global__ void __launch_bounds__(128) igemm_64x64(ConvArgs p) { igemm<64, 64, 32, 32, 4>(p); }
extern "C" __global__ void __launch_bounds__(128) igemm_32x64(ConvArgs p) { igemm<32, 64, 16, 32, 4>(p); }

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
//
// Under IGEMM_WGMMA (a second module, compute_90a, on Hopper only) the same loads and the same epilogue
// (`store_tile`) run around Hopper's wgmma.mma_async instead: `wgemm` at the end of the file.

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
// The epilogue's float <-> int steps without the conversion unit (a quarter of the ALU rate on sm_90)
// and with as few instructions as the exact arithmetic allows (the residual layers' epilogue bounds them).
// sat8(rint(x) + z) (rint: half to even) as the LOW BYTE of the returned word: x is clamped to
// [-128 - z, 127 - z] first (integer bounds, so clamping before rounding equals saturating after), then
// 1.5 * 2^23 is added, which rounds to an integer in round-to-nearest-even and leaves it in the low
// mantissa bits; + z and the low byte is the two's-complement int8 result.
struct Round8 {
    float lo, hi;
    int z;
    __device__ __forceinline__ explicit Round8(int zz) : lo((float)(-128 - zz)), hi((float)(127 - zz)), z(zz) {}
    __device__ __forceinline__ unsigned operator()(float x) const {
        return (unsigned)(__float_as_int(__fadd_rn(fminf(fmaxf(x, lo), hi), 12582912.0f)) + z);
    }
};
// Byte permute (d = bytes of {b, a} chosen by the selector's nibbles).
__device__ __forceinline__ unsigned prmt(unsigned a, unsigned b, unsigned sel) {
    unsigned d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}
// The low bytes of four words as one word.
__device__ __forceinline__ unsigned pack4(unsigned t0, unsigned t1, unsigned t2, unsigned t3) {
    return prmt(prmt(t0, t1, 0x0040u), prmt(t2, t3, 0x0040u), 0x5410u);
}
// (float)(b - z) for the int8 byte e of w, exactly: wx = w ^ 0x80808080 holds b + 128 as unsigned bytes;
// the float with bits 0x4B4000uu is 1.5 * 2^23 + u, and subtracting c = 1.5 * 2^23 + 128 + z is exact.
__device__ __forceinline__ float byte_f(unsigned wx, int e, float c) {
    return __fsub_rn(__int_as_float((int)prmt(wx, 0x4B400000u, 0x7650u + (unsigned)e)), c);
}

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

// A block's last convolution: this thread's 16-byte chunks of the shortcut for the CTA's BM × BN output
// tile (what `store_tile` adds), loaded right before the epilogue so that their latency overlaps the
// requantization. (Loaded before the main loop instead, mma.sync tiles lost occupancy and wgmma ones
// gained nothing: igemm_bench.py, 2026-11-30e.)
union Bytes16 { uint4 u; signed char b[16]; };
template <int BM, int BN, int NTHR> struct Shortcut {
    static constexpr int RC = BN / 16;
    static constexpr int CHUNKS = (BM * RC + NTHR - 1) / NTHR;
    Bytes16 v[CHUNKS];
    __device__ __forceinline__ void load(const ConvArgs& p) {
        if (!p.sc) return;
        const int tid = threadIdx.x;
        const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
#pragma unroll
        for (int k = 0; k < CHUNKS; ++k) {
            const int idx = tid + k * NTHR;
            const int r = idx / RC, cc = idx - (idx / RC) * RC;
            const int m = m0 + r, n = n0 + cc * 16;
            if (idx < BM * RC && m < p.m && n < p.cout)
                v[k].u = *(const uint4*)(p.sc + (long long)m * p.cout + n);
        }
    }
};

// The epilogue shared by both kernels. `acc[i][j][e]` is the m16n8 accumulator fragment layout (mma.sync's,
// and wgmma's per warp): row rbase + i·16 + g (+8 for e >= 2), column cbase + j·8 + 2t (+1 for odd e) of
// the CTA's BM × BN tile at (blockIdx.x·BM, blockIdx.y·BN). `smem` must hold BM × (BN + 16) bytes and be
// free (every thread past the main loop's last shared-memory read); `sv` holds the loaded shortcut.
template <int BM, int BN, int NTHR, int MT, int NT>
__device__ __forceinline__ void store_tile(const ConvArgs& p, int (&acc)[MT][NT][4], int rbase, int cbase,
                                           unsigned char* smem, const Shortcut<BM, BN, NTHR>& sc) {
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    constexpr int RC = BN / 16;
    constexpr int CHUNKS = Shortcut<BM, BN, NTHR>::CHUNKS;
    const Bytes16* sv = sc.v;

    // Epilogue, 1: y = sat8(rint((acc + ofs)·mult) + zy) per element into an int8 tile in shared memory.
    // Exactly the CPU reference's float operations (no contraction).
    constexpr int CP = BN + 16;
    unsigned char* Cs = smem;
    const Round8 round_y(p.zy);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const int nl = cbase + j * 8 + t * 2;
        const int n = n0 + nl;
        if (n >= p.cout) continue;  // cout % 16 == 0: n + 1 < cout too
        const int o0 = p.ofs[n], o1 = p.ofs[n + 1];
        const float f0 = p.mult[n], f1 = p.mult[n + 1];
#pragma unroll
        for (int i = 0; i < MT; ++i) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int rl = rbase + i * 16 + g + hh * 8;
                const unsigned q0 = round_y(__fmul_rn((float)(acc[i][j][hh * 2] + o0), f0));
                const unsigned q1 = round_y(__fmul_rn((float)(acc[i][j][hh * 2 + 1] + o1), f1));
                *(unsigned short*)(Cs + rl * CP + nl) = (unsigned short)prmt(q0, q1, 0x0040u);
            }
        }
    }
    __syncthreads();
    // 2: 16-byte rows of the tile to global memory (coalesced), for a block's last convolution after
    // the QLinearAdd with the shortcut: sat8(rint((s3·(q3 - z3) + ss·(sc - zs)) / so) + zo).
    const float c3 = 12582912.0f + (float)(128 + p.z3), cs = 12582912.0f + (float)(128 + p.zs);
    const Round8 round_o(p.zo);
#pragma unroll
    for (int k = 0; k < CHUNKS; ++k) {
        const int idx = tid + k * NTHR;
        const int r = idx / RC, cc = idx - (idx / RC) * RC;
        const int m = m0 + r, n = n0 + cc * 16;
        if (idx >= BM * RC || m >= p.m || n >= p.cout) continue;
        Bytes16 v;
        v.u = *(const uint4*)(Cs + r * CP + cc * 16);
        if (p.sc) {
            unsigned w[4] = {v.u.x, v.u.y, v.u.z, v.u.w};
            const unsigned sw[4] = {sv[k].u.x, sv[k].u.y, sv[k].u.z, sv[k].u.w};
#pragma unroll
            for (int h = 0; h < 4; ++h) {
                const unsigned wx = w[h] ^ 0x80808080u, sx = sw[h] ^ 0x80808080u;
                unsigned tb[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float a = __fadd_rn(__fmul_rn(p.s3, byte_f(wx, e, c3)), __fmul_rn(p.ss, byte_f(sx, e, cs)));
                    // a / so correctly rounded without the divide sequence (Markstein: rso = RN(1/so),
                    // q faithful, one FMA correction), as the CPU's IEEE division.
                    const float q = __fmul_rn(a, p.rso);
                    const float rr = __fmaf_rn(-q, p.so, a);
                    tb[e] = round_o(__fmaf_rn(rr, p.rso, q));
                }
                w[h] = pack4(tb[0], tb[1], tb[2], tb[3]);
            }
            v.u = make_uint4(w[0], w[1], w[2], w[3]);
        }
        *(uint4*)(p.y + (long long)m * p.cout + n) = v.u;
    }
}

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

    Shortcut<BM, BN, NTHR> sc;

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
    sc.load(p);
    cp_wait<0>();
    __syncthreads();  // the pipeline's shared memory is reused for the output tile
    store_tile<BM, BN, NTHR, MT, NT>(p, acc, wm * WM, wn * WN, smem, sc);
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

#ifdef IGEMM_WGMMA
// Hopper (sm_90a only: compiled as a second module with IGEMM_WGMMA defined and --gpu-architecture=
// compute_90a). The same implicit GEMM, loads and epilogue, but the products run on `wgmma.mma_async`
// (m64nNk32 s8·s8 → s32, both operands from shared memory through descriptors), which reaches about twice
// mma.sync's int8 rate on H100/H200. A CTA is WG warpgroups (each owns 64 rows × BN columns); the depth
// advances DK bytes a stage (DK = 128: one 128-byte swizzled row per GEMM row; DK = 64: 64-byte rows for
// the layers with a depth of 64) through a STAGES-deep cp.async pipeline. Shared-memory rows are written
// in the layout wgmma's K-major 128B/64B swizzle expects: 16-byte chunk c of row r goes to chunk
// c ^ (r mod 8) (128B) or c ^ ((r / 2) mod 4) (64B), in 1024-byte aligned stages. One wgmma group stays
// in flight while the next stage's loads are issued.

__device__ __forceinline__ unsigned long long wg_desc(unsigned addr, unsigned sbo, unsigned swz) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | (1ull << 16) |
           ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | ((unsigned long long)swz << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory");
}
// Makes this thread's shared-memory writes (st.shared and completed cp.async) visible to wgmma's reads.
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator reads/writes across the asynchronous wgmma.
__device__ __forceinline__ void reg_fence(int& r) { asm volatile("" : "+r"(r) :: "memory"); }

template <int N> struct Wg;
template <> struct Wg<64> {
    static __device__ __forceinline__ void mma(int* d, unsigned long long a, unsigned long long b) {
        asm volatile(
            "{ .reg .pred p; setp.ne.b32 p, %34, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
            "%32, %33, p; }\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31])
            : "l"(a), "l"(b), "r"(1));
    }
};
template <> struct Wg<128> {
    static __device__ __forceinline__ void mma(int* d, unsigned long long a, unsigned long long b) {
        asm volatile(
            "{ .reg .pred p; setp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
            "%64, %65, p; }\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
            : "l"(a), "l"(b), "r"(1));
    }
};
template <> struct Wg<256> {
    static __device__ __forceinline__ void mma(int* d, unsigned long long a, unsigned long long b) {
        asm volatile(
            "{ .reg .pred p; setp.ne.b32 p, %130, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
            "%128, %129, p; }\n"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]), "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]), "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]), "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]), "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]), "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]), "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]), "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]), "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
            : "l"(a), "l"(b), "r"(1));
    }
};

template <int WG, int BN, int DK, int STAGES>
__device__ __forceinline__ void wgemm(const ConvArgs& p) {
    constexpr int BM = 64 * WG, NTHR = 128 * WG;
    constexpr int CPR = DK / 16;        // 16-byte chunks per row and stage
    constexpr int RSTEP = NTHR / CPR;   // rows one load pass covers
    static_assert(BM % RSTEP == 0 && BN % RSTEP == 0, "tile rows must be a multiple of a load pass");
    constexpr int A_IT = BM / RSTEP, B_IT = BN / RSTEP;
    constexpr unsigned SWZ = DK == 128 ? 1 : 2;  // descriptor layout: 128B / 64B swizzle
    constexpr int RSH = DK == 128 ? 0 : 1, SMASK = DK == 128 ? 7 : 3;
    constexpr int STAGE_BYTES = (BM + BN) * DK;
    constexpr int NT = BN / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const unsigned raw = smem_u32(smem_raw);
    unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
    const unsigned sbase = smem_u32(smem);

    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int kc = tid % CPR;
    const int r0 = tid / CPR;

    const i8* a_img[A_IT];
    int a_iy[A_IT], a_ix[A_IT];
    const int ohw = p.oh * p.ow;
#pragma unroll
    for (int i = 0; i < A_IT; ++i) {
        int m = m0 + r0 + i * RSTEP;
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
    // Swizzled byte offset of this thread's chunk in row r.
    auto soff = [&](int r) { return r * DK + ((kc ^ ((r >> RSH) & SMASK)) << 4); };

    auto load = [&](int stage, int kt) {
        unsigned char* As = smem + stage * STAGE_BYTES;
        unsigned char* Bs = As + BM * DK;
        int kk = kt * DK + kc * 16;
        bool kin = kk < p.kdim;
        int tap = 0, ci = kk;
        if (p.ks > 1) { tap = kk / p.c; ci = kk - tap * p.c; }
        int ky = tap / p.ks, kx = tap - ky * p.ks;
#pragma unroll
        for (int i = 0; i < A_IT; ++i) {
            int r = r0 + i * RSTEP;
            unsigned char* dst = As + soff(r);
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
            int r = r0 + i * RSTEP;
            unsigned char* dst = Bs + soff(r);
            int n = n0 + r;
            if (kin && n < p.cout) {
                cp16(dst, p.w + (long long)n * p.kdim + kk);
            } else {
                *(uint4*)dst = zero4;
            }
        }
    };

    Shortcut<BM, BN, NTHR> sc;
    int acc[1][NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[0][j][e] = 0;

    // Stage s holds depth tile kt with s = kt % STAGES. Iteration kt loads tile kt + STAGES - 2 into the
    // stage tile kt - 2 used: every warpgroup waited for its wgmma of tile kt - 2 (wait_group 1 after
    // issuing kt - 1) before the barrier at the top of iteration kt.
    const int KT = (p.kdim + DK - 1) / DK;
#pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
        if (s < KT) load(s, s);
        cp_commit();
    }
    const unsigned a_off = (unsigned)((warp >> 2) * 64 * DK);
    for (int kt = 0; kt < KT; ++kt) {
        cp_wait<STAGES - 3>();
        fence_async_smem();
        __syncthreads();
        const int nk = kt + STAGES - 2;
        if (nk < KT) load(nk % STAGES, nk);
        cp_commit();
        const unsigned st = sbase + (unsigned)((kt % STAGES) * STAGE_BYTES);
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) reg_fence(acc[0][j][e]);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < DK / 32; ++ks)
            Wg<BN>::mma(&acc[0][0][0], wg_desc(st + a_off + ks * 32, 8 * DK, SWZ),
                        wg_desc(st + BM * DK + ks * 32, 8 * DK, SWZ));
        wg_commit();
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) reg_fence(acc[0][j][e]);
        wg_wait<1>();
    }
    wg_wait<0>();
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) reg_fence(acc[0][j][e]);
    sc.load(p);  // (before the main loop it was no faster, 2026-11-30e)
    cp_wait<0>();
    __syncthreads();  // the pipeline's shared memory is reused for the output tile
    store_tile<BM, BN, NTHR, 1, NT>(p, acc, warp * 16, 0, smem, sc);
}

// The Hopper configurations (name: BM x BN [k64: 64-byte stages], stages; igemm.rs's WG_TILES). Shared
// memory: (BM + BN)·DK·STAGES + 1024 bytes (alignment). Batch 256 on the H200 (igemm_bench.py): 128x128k64
// wins most layers, 128x256 the deep ones with N >= 256, 128x64k64 those with N = 64; 128-byte stages for
// 128x128 / 128x64 were slower everywhere.
extern "C" __global__ void __launch_bounds__(256) wgmma_128x128k64(ConvArgs p) { wgemm<2, 128, 64, 6>(p); }
extern "C" __global__ void __launch_bounds__(256) wgmma_128x256(ConvArgs p) { wgemm<2, 256, 128, 4>(p); }
extern "C" __global__ void __launch_bounds__(256) wgmma_128x64k64(ConvArgs p) { wgemm<2, 64, 64, 6>(p); }
extern "C" __global__ void __launch_bounds__(128) wgmma_64x128(ConvArgs p) { wgemm<1, 128, 128, 4>(p); }
extern "C" __global__ void __launch_bounds__(128) wgmma_64x64(ConvArgs p) { wgemm<1, 64, 128, 4>(p); }
#endif

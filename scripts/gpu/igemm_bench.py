#!/usr/bin/env python3
"""Stand-alone check and timing of the engine's int8 implicit-GEMM convolution (engine/src/cuda/int8net/
igemm.cu) on every ResNet50 layer shape, with CuPy (NVRTC), no Rust build needed: each tile shape is
checked bit for bit against an int32 reference with the same requantization (and residual add), then
timed with CUDA events at the given batch sizes. Prints per layer the best tile and its time, and the
network total (layers weighted by how often they occur).

The Hopper kernels (`wgmma_*`, under IGEMM_WGMMA in the same file) are compiled by nvcc for sm_90a (with
ptxas's register report) when the device is compute capability 9.0; `--tiles` names the ones to time.

usage: python3 igemm_bench.py --src igemm.cu [--batches 1,256] [--tiles 128x128,wg128x256] [--out igemm.json]
"""
import argparse, json, os, re, subprocess, sys, tempfile
import numpy as np
import cupy as cp

TILES = {  # name: (BM, BN, WM, WN, STAGES)
    "128x128": (128, 128, 64, 32, 2), "128x64": (128, 64, 64, 32, 3), "64x128": (64, 128, 32, 64, 3),
    "64x64": (64, 64, 32, 32, 4), "32x64": (32, 64, 16, 32, 4), "64x128s2": (64, 128, 32, 64, 2),
    "128x64s2": (128, 64, 64, 32, 2), "128x128w": (128, 128, 64, 64, 2), "64x128w": (64, 128, 64, 64, 3),
    "128x128s3": (128, 128, 64, 32, 3), "128x128s4": (128, 128, 64, 32, 4), "128x64s4": (128, 64, 64, 32, 4),
}
WG_TILES = {  # name: (warpgroups, BN, BK, STAGES) of wgemm<> (sm_90a)
    "wg128x256": (2, 256, 128, 4), "wg128x256s3": (2, 256, 128, 3), "wg128x128": (2, 128, 128, 4),
    "wg128x64": (2, 64, 128, 4), "wg64x128": (1, 128, 128, 4), "wg64x256": (1, 256, 128, 4),
    "wg128x128k64": (2, 128, 64, 6), "wg128x64k64": (2, 64, 64, 6), "wg64x64": (1, 64, 128, 4),
    "wg128x128s6": (2, 128, 128, 6),
}

def geometry(n):
    """(BM, BN, threads, dynamic shared memory bytes) of a tile."""
    if n in WG_TILES:
        wg, bn, bk, st = WG_TILES[n]
        return 64 * wg, bn, 128 * wg, (64 * wg + bn) * bk * st + 1024
    bm, bn, wm, wn, st = TILES[n]
    return bm, bn, (bm // wm) * (bn // wn) * 32, (bm + bn) * 80 * st

def layers():
    """(name, count, h_in, cin, cout, k, stride, pad, residual) of ResNet50 v1 (stride on the 1x1)."""
    out = [("stem(col)", 1, 112, 160, 64, 1, 1, 0, False)]
    h, cin = 56, 64
    for stage, (mid, n, s) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
        cout = mid * 4
        ho = h // s
        out.append((f"l{stage}.0.conv1", 1, h, cin, mid, 1, s, 0, False))
        out.append((f"l{stage}.0.ds", 1, h, cin, cout, 1, s, 0, False))
        out.append((f"l{stage}.x.conv2", n, ho, mid, mid, 3, 1, 1, False))
        out.append((f"l{stage}.x.conv3+add", n, ho, mid, cout, 1, 1, 0, True))
        if n > 1:
            out.append((f"l{stage}.x.conv1", n - 1, ho, cout, mid, 1, 1, 0, False))
        h, cin = ho, cout
    return out

def wrappers(names):
    args = ("const i8* x, const i8* w, const int* ofs, const float* mult, i8* y, const i8* sc, int m, int h, "
            "int wd, int c, int oh, int ow, int cout, int ks, int stride, int pad, int padv, int kdim, int zy, "
            "float s3, int z3, float ss, int zs, float so, int zo, float rso")
    init = "ConvArgs p = {x, w, ofs, mult, y, sc, m, h, wd, c, oh, ow, cout, ks, stride, pad, padv, kdim, zy, s3, z3, ss, zs, so, zo, rso};"
    src = ""
    for n in names:
        if n in WG_TILES:
            wg, bn, bk, st = WG_TILES[n]
            src += (f'extern "C" __global__ void __launch_bounds__({128 * wg}) h_{n}({args}) {{ {init} '
                    f'wgemm<{wg}, {bn}, {bk}, {st}>(p); }}\n')
            continue
        bm, bn, wm, wn, st = TILES[n]
        thr = (bm // wm) * (bn // wn) * 32
        src += (f'extern "C" __global__ void __launch_bounds__({thr}) h_{n}({args}) {{ {init} '
                f'igemm<{bm}, {bn}, {wm}, {wn}, {st}>(p); }}\n')
    return src

def compile_wgmma(src, names):
    """The sm_90a module: nvcc (cubin, ptxas -v printed) as the engine's NVRTC would compile it."""
    d = tempfile.mkdtemp()
    cu, cubin = os.path.join(d, "wg.cu"), os.path.join(d, "wg.cubin")
    open(cu, "w").write("#define IGEMM_WGMMA\n" + src + wrappers(names))
    r = subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o", cubin, cu],
                       capture_output=True, text=True)
    print(r.stdout + r.stderr, flush=True)
    if r.returncode != 0:
        sys.exit("nvcc failed")
    return cp.RawModule(path=cubin)

def reference(x, w, ofs, mult, zy, ks, stride, pad, padv, res):
    """int32 conv (NHWC, weights [cout][k*k*cin]) + the file's requantization (+ QLinearAdd), in float32
    numpy with the CPU reference's operation order."""
    n, h, _, c = x.shape
    cout = w.shape[0]
    oh = (h + 2 * pad - ks) // stride + 1
    xp = np.full((n, h + 2 * pad, h + 2 * pad, c), padv, np.int64)
    xp[:, pad:pad + h, pad:pad + h] = x
    acc = np.zeros((n, oh, oh, cout), np.int64)
    W = w.reshape(cout, ks, ks, c).astype(np.int64)
    for ky in range(ks):
        for kx in range(ks):
            patch = xp[:, ky:ky + stride * oh:stride, kx:kx + stride * oh:stride, :]
            acc += np.einsum("nhwc,oc->nhwo", patch, W[:, ky, kx, :])
    acc = acc.reshape(-1, cout)
    q = np.clip(np.rint(((acc + ofs).astype(np.float32) * mult).astype(np.float32)) + np.float32(zy), -128, 127)
    if res is None:
        return q.astype(np.int8)
    sc, s3, z3, ss, zs, so, zo = res
    v = (np.float32(s3) * (q - z3).astype(np.float32)).astype(np.float32) + \
        (np.float32(ss) * (sc.astype(np.int32) - zs).astype(np.float32)).astype(np.float32)
    v = v.astype(np.float32)
    return np.clip(np.rint((v / np.float32(so)).astype(np.float32)) + np.float32(zo), -128, 127).astype(np.int8)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--tiles", default=",".join(TILES))
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    names = a.tiles.split(",")
    src = open(a.src).read()
    src = re.sub(r'extern "C" __global__ void __launch_bounds__.*\n', "", src)
    old = [n for n in names if n in TILES]
    new = [n for n in names if n in WG_TILES]
    ks_ = {}
    if old:
        mod = cp.RawModule(code=src + wrappers(old), options=("--std=c++17",))
        ks_.update({n: mod.get_function(f"h_{n}") for n in old})
    if new:
        if cp.cuda.Device().compute_capability != "90":
            sys.exit("wgmma tiles need compute capability 9.0")
        mod2 = compile_wgmma(src, new)
        ks_.update({n: mod2.get_function(f"h_{n}") for n in new})
    for n in names:  # more than 48 KB of dynamic shared memory must be asked for
        smem = geometry(n)[3]
        if smem > 48 * 1024:
            ks_[n].max_dynamic_shared_size_bytes = smem
    dev = cp.cuda.Device()
    print("device", cp.cuda.runtime.getDeviceProperties(0)["name"].decode(), "cc", dev.compute_capability)
    rng = np.random.default_rng(1)
    result = {}
    for batch in [int(b) for b in a.batches.split(",")]:
        total = {n: 0.0 for n in names}
        best_total = 0.0
        rows = []
        for (lname, count, h, cin, cout, k, stride, pad, residual) in layers():
            oh = (h + 2 * pad - k) // stride + 1
            kdim = k * k * cin
            nimg = batch
            m = nimg * oh * oh
            x = rng.integers(-128, 128, (nimg, h, h, cin), dtype=np.int8)
            w = rng.integers(-63, 64, (cout, kdim), dtype=np.int8)
            ofs = rng.integers(-20000, 20000, cout).astype(np.int32)
            mult = (rng.random(cout, dtype=np.float32) * 2e-4 + 1e-5).astype(np.float32)
            zy = -128 if not residual else 3
            sc = rng.integers(-128, 128, (m, cout), dtype=np.int8) if residual else None
            res = (sc, 0.031, 3, 0.027, -5, 0.045, -128) if residual else None
            dx, dw, dofs, dmult = cp.asarray(x), cp.asarray(w), cp.asarray(ofs), cp.asarray(mult)
            dsc = cp.asarray(sc) if residual else None
            dy = cp.zeros((m, cout), cp.int8)
            # correctness on the first 2 images (the reference is numpy)
            nchk = min(nimg, 2)
            mchk = nchk * oh * oh
            want = reference(x[:nchk], w, ofs, mult, zy, k, stride, pad, -128 + 17, None if not residual else (sc[:mchk],) + res[1:])
            times = {}
            for n in names:
                bm, bn, thr, smem = geometry(n)
                grid = ((m + bm - 1) // bm, (cout + bn - 1) // bn)
                s3, z3, ss, zs, so, zo = res[1:] if residual else (0.0, 0, 0.0, 0, 1.0, 0)
                args = (dx, dw, dofs, dmult, dy, dsc if residual else np.uint64(0), np.int32(m), np.int32(h), np.int32(h),
                        np.int32(cin), np.int32(oh), np.int32(oh), np.int32(cout), np.int32(k), np.int32(stride),
                        np.int32(pad), np.int32(-128 + 17), np.int32(kdim), np.int32(zy), np.float32(s3), np.int32(z3),
                        np.float32(ss), np.int32(zs), np.float32(so), np.int32(zo),
                        np.float32(1.0) / np.float32(so))
                f = ks_[n]
                dy.fill(0)
                f(grid, (thr,), args, shared_mem=smem)
                got = cp.asnumpy(dy[:mchk])
                bad = int(np.sum(got != want))
                diffmax = int(np.max(np.abs(got.astype(np.int32) - want.astype(np.int32)))) if bad else 0
                e0, e1 = cp.cuda.Event(), cp.cuda.Event()
                reps = 20 if batch >= 64 else 200
                for _ in range(3):
                    f(grid, (thr,), args, shared_mem=smem)
                e0.record()
                for _ in range(reps):
                    f(grid, (thr,), args, shared_mem=smem)
                e1.record(); e1.synchronize()
                ms = cp.cuda.get_elapsed_time(e0, e1) / reps
                times[n] = (ms, bad, diffmax)
                total[n] += ms * count
            ok = {n: t for n, t in times.items() if t[1] == 0}
            bn_ = min(ok, key=lambda n: ok[n][0]) if ok else None
            macs = m * cout * kdim
            if bn_:
                best_total += ok[bn_][0] * count
            row = {"layer": lname, "count": count, "m": m, "n": cout, "k": kdim, "best": bn_,
                   "ms": ok[bn_][0] if bn_ else None, "tops": 2 * macs / ok[bn_][0] / 1e9 if bn_ else None,
                   "all": {n: t for n, t in times.items()}}
            rows.append(row)
            print(f"bs{batch} {lname:<16} x{count} M={m:>8} N={cout:>5} K={kdim:>5}  best {bn_} "
                  f"{row['ms'] if row['ms'] else float('nan'):.4f} ms  {row['tops'] or 0:.0f} TOPS  "
                  + " ".join(f"{n}:{t[0]:.4f}{'' if t[1] == 0 else f'!{t[1]}/{t[2]}'}" for n, t in times.items()),
                  flush=True)
            del dx, dw, dy, dsc
            cp.get_default_memory_pool().free_all_blocks()
        print(f"bs{batch} convolutions total (best tile per layer): {best_total:.3f} ms = "
              f"{batch / best_total * 1000:.0f} img/s if nothing else ran; per tile: "
              + " ".join(f"{n}:{t:.3f}" for n, t in total.items()), flush=True)
        result[f"bs{batch}"] = {"best_total_ms": best_total, "per_tile_total_ms": total, "layers": rows}
    if a.out:
        json.dump(result, open(a.out, "w"), indent=1)

if __name__ == "__main__":
    main()

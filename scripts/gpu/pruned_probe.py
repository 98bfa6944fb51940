#!/usr/bin/env python3
"""Which channel counts the kernels want (issue 12, item 3): times ResNet50 layers whose inner width is
pruned to ~70% and rounded to different multiples, at batch 256 on the GPU — fp16 through PyTorch's
cuDNN (channels_last, cudnn.benchmark: the same library family as the engine's fp16 path) and int8
through the engine's implicit-GEMM kernel (igemm.cu, best tile; widths that are multiples of 16 only).

usage: python3 pruned_probe.py --src igemm.cu [--out pruned_probe.json]
"""
import argparse, json, re
import numpy as np
import cupy as cp
import torch

import igemm_bench as ib

def time_torch(x, w, stride, pad, reps=20):
    f = lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
    for _ in range(5):
        f()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(reps):
        f()
    e1.record(); torch.cuda.synchronize()
    return e0.elapsed_time(e1) / reps

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    names = ["128x128", "128x64", "64x128", "64x64"]
    src = open(a.src).read()
    src = re.sub(r'extern "C" __global__ void __launch_bounds__.*\n', "", src) + ib.wrappers(names)
    mod = cp.RawModule(code=src, options=("--std=c++17",))
    fns = {n: mod.get_function(f"h_{n}") for n in names}
    n = a.batch
    # (layer, h, cin, cout, k, which side is pruned)
    cases = []
    for c in [128, 88, 90, 96, 112]:
        cases.append(("l2.conv2 3x3", 28, c, c, 3))
    for c in [256, 176, 180, 184, 192]:
        cases.append(("l3.conv2 3x3", 14, c, c, 3))
        cases.append(("l3.conv1 1x1", 14, 1024, c, 1))
        cases.append(("l3.conv3 1x1", 14, c, 1024, 1))
    for c in [64, 40, 44, 45, 48]:
        cases.append(("l1.conv2 3x3", 56, c, c, 3))
    rows = []
    for (name, h, cin, cout, k) in cases:
        pad = k // 2
        x16 = torch.randn(n, cin, h, h, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
        w16 = torch.randn(cout, cin, k, k, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
        t16 = time_torch(x16, w16, 1, pad)
        t8 = None
        if cin % 16 == 0 and cout % 16 == 0:
            m = n * h * h
            dx = cp.zeros((n, h, h, cin), cp.int8); dw = cp.zeros((cout, k * k * cin), cp.int8)
            dofs = cp.zeros(cout, cp.int32); dmult = cp.full(cout, 1e-3, cp.float32)
            dy = cp.zeros((m, cout), cp.int8)
            best = None
            for nm in names:
                bm, bn, wm, wn, st = ib.TILES[nm]
                thr = (bm // wm) * (bn // wn) * 32
                args = (dx, dw, dofs, dmult, dy, np.uint64(0), np.int32(m), np.int32(h), np.int32(h), np.int32(cin),
                        np.int32(h), np.int32(h), np.int32(cout), np.int32(k), np.int32(1), np.int32(pad),
                        np.int32(-128), np.int32(k * k * cin), np.int32(-128), np.float32(0), np.int32(0),
                        np.float32(0), np.int32(0), np.float32(1), np.int32(0), np.float32(1))
                grid = ((m + bm - 1) // bm, (cout + bn - 1) // bn)
                f = fns[nm]
                for _ in range(3):
                    f(grid, (thr,), args, shared_mem=(bm + bn) * 80 * st)
                e0, e1 = cp.cuda.Event(), cp.cuda.Event()
                e0.record()
                for _ in range(20):
                    f(grid, (thr,), args, shared_mem=(bm + bn) * 80 * st)
                e1.record(); e1.synchronize()
                t = cp.cuda.get_elapsed_time(e0, e1) / 20
                best = t if best is None else min(best, t)
            t8 = best
        gmac = n * h * h * cout * k * k * cin / 1e9
        rows.append({"layer": name, "cin": cin, "cout": cout, "gmac": gmac, "fp16_ms": t16, "int8_ms": t8})
        print(f"{name:<14} cin {cin:>5} cout {cout:>5} {gmac:7.1f} GMAC  fp16 cuDNN {t16:.4f} ms"
              f" ({2 * gmac / t16:.0f} TFLOP/s)  int8 igemm " + (f"{t8:.4f} ms ({2 * gmac / t8:.0f} TOPS)" if t8 else "-"),
              flush=True)
    if a.out:
        json.dump(rows, open(a.out, "w"), indent=1)

if __name__ == "__main__":
    main()

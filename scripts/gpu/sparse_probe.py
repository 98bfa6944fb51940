#!/usr/bin/env python3
"""2:4 on the sparse tensor cores, per ResNet50 layer (issue 12, item 2): cuSPARSELt called directly
through PyTorch's private bindings (`torch._cslt_compress` / `torch._cslt_sparse_mm`), the weights
[cout, k] as the structured operand, the NHWC activation [M, k] as the dense column-major operand
(`x.t()`, a view: no transpose copy) and the result written [M, cout] (`transpose_result`), its algorithm
chosen by `torch._cslt_sparse_mm_search`; against the dense fp16 GEMM `x @ w.t()` (cuBLAS). Batch 256,
every convolution shape as the GEMM it is (3x3 layers as their im2col GEMM, im2col itself not timed).

usage: python3 sparse_probe.py [--batch 256] [--out sparse_probe.json]
"""
import argparse, json
import torch

import igemm_bench as ib

def timed(f, reps=20):
    for _ in range(3):
        f()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(reps):
        f()
    e1.record(); torch.cuda.synchronize()
    return e0.elapsed_time(e1) / reps

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    print("torch", torch.__version__, "cuSPARSELt", getattr(torch.backends.cusparselt, "version", lambda: "?")())
    rows, dense_t, sparse_t = [], 0.0, 0.0
    for (name, count, h, cin, cout, k, stride, pad, _res) in ib.layers()[1:]:
        oh = (h + 2 * pad - k) // stride + 1
        m = a.batch * oh * oh
        kd = k * k * cin
        w = torch.randn(cout, kd, device="cuda", dtype=torch.half)
        g = w.view(cout, kd // 4, 4)
        idx = g.abs().topk(2, dim=2).indices
        w24 = (g * torch.zeros_like(g, dtype=torch.bool).scatter_(2, idx, True)).view(cout, kd)
        x = torch.randn(m, kd, device="cuda", dtype=torch.half)
        dense = timed(lambda: x @ w24.t())
        try:
            c = torch._cslt_compress(w24)
            alg = torch._cslt_sparse_mm_search(c, x.t())
            sparse = timed(lambda: torch._cslt_sparse_mm(c, x.t(), alg_id=alg, transpose_result=True))
            ref = x @ w24.t()
            got = torch._cslt_sparse_mm(c, x.t(), alg_id=alg, transpose_result=True)
            err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
        except Exception as e:  # reported, not fatal
            print(f"{name}: cuSPARSELt failed: {e}")
            sparse, err, alg = float("nan"), float("nan"), -1
        dense_t += dense * count
        sparse_t += min(dense, sparse) * count if sparse == sparse else dense * count
        rows.append({"layer": name, "count": count, "m": m, "k": kd, "n": cout, "dense_ms": dense,
                     "sparse_ms": sparse, "alg": alg, "rel_err": err})
        print(f"{name:<16} x{count} M={m:>8} K={kd:>5} N={cout:>5}  dense {dense:.4f} ms  2:4 {sparse:.4f} ms "
              f"x{dense / sparse:.2f}  (alg {alg}, rel. err {err:.1e})", flush=True)
    print(f"all convolutions as GEMMs, batch {a.batch}: dense {dense_t:.3f} ms; the faster of the two per "
          f"layer {sparse_t:.3f} ms ({dense_t / sparse_t:.2f}x)")
    if a.out:
        json.dump(rows, open(a.out, "w"), indent=1)

if __name__ == "__main__":
    main()

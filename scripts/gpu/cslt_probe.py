#!/usr/bin/env python3
"""cuSPARSELt per ResNet50 1x1 layer, called exactly as the engine calls it (engine/src/cuda/sparse.rs),
through ctypes: the weights [cout, cin] row-major as the structured operand (compressed with
cusparseLtSpMMACompress2), the NHWC activation as the dense column-major operand [cin, pixels] (ld cin),
the output column-major [cout, pixels] (ld cout) = NHWC, fp16 in/out, fp32 compute, and optionally the
engine's epilogue (bias pointer, ReLU attribute, the shortcut as C with beta = 1) and cuSPARSELt's own
algorithm search. Each configuration runs in a process of its own (a CUDA error that ends the context
takes only that one), so the configuration that breaks shows, and the working one is checked against
torch (fp32 reference) and timed at batch 256 next to cuDNN's dense 1x1 convolution.

usage: python3 cslt_probe.py [--batch 256] [--out cslt_probe.json]          (parent)
       python3 cslt_probe.py --child CONFIG --batch B --start I                  (one configuration)
"""
import argparse, ctypes, json, os, subprocess, sys

LIB = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt/lib/libcusparseLt.so.0"
# name, spatial size of the output, cin, cout, relu, residual (ResNet50 v1.5, stride-1 1x1 layers)
SHAPES = [
    ("l1.0.conv1", 56, 64, 64, 1, 0), ("l1.x.conv3+add", 56, 64, 256, 1, 1), ("l1.x.conv1", 56, 256, 64, 1, 0),
    ("l2.0.conv1", 56, 256, 128, 1, 0), ("l2.x.conv3+add", 28, 128, 512, 1, 1), ("l2.x.conv1", 28, 512, 128, 1, 0),
    ("l3.0.conv1", 28, 512, 256, 1, 0), ("l3.x.conv3+add", 14, 256, 1024, 1, 1), ("l3.x.conv1", 14, 1024, 256, 1, 0),
    ("l4.0.conv1", 14, 1024, 512, 1, 0), ("l4.x.conv3+add", 7, 512, 2048, 1, 1), ("l4.x.conv1", 7, 2048, 512, 1, 0),
]
# configuration: (search, bias dtype or None, set relu attribute, residual as C)
CONFIGS = {
    "plain": (0, None, 0, 0), "relu": (0, None, 1, 0), "bias16": (0, "half", 0, 0), "bias32": (0, "float", 0, 0),
    "residual": (0, None, 0, 1), "search": (1, None, 0, 0), "engine": (1, "half", 1, 1),
    "engine-nosearch": (0, "half", 1, 1),
}


def child(cfg, batch, start):
    import torch
    search, bias_t, relu_attr, res_attr = CONFIGS[cfg]
    lt = ctypes.CDLL(LIB)
    P, I64, I32, U32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_uint32
    lt.cusparseLtStructuredDescriptorInit.argtypes = [P, P, I64, I64, I64, U32, I32, I32, I32]
    lt.cusparseLtDenseDescriptorInit.argtypes = [P, P, I64, I64, I64, U32, I32, I32]
    lt.cusparseLtMatmulDescriptorInit.argtypes = [P, P, I32, I32, P, P, P, P, I32]
    lt.cusparseLtMatmulDescSetAttribute.argtypes = [P, P, I32, P, ctypes.c_size_t]
    lt.cusparseLtMatmulAlgSelectionInit.argtypes = [P, P, P, I32]
    lt.cusparseLtMatmulPlanInit.argtypes = [P, P, P, P]
    lt.cusparseLtMatmulGetWorkspace.argtypes = [P, P, P]
    lt.cusparseLtSpMMACompressedSize2.argtypes = [P, P, P, P]
    lt.cusparseLtSpMMACompress2.argtypes = [P, P, I32, I32, P, P, P, P]
    mm_args = [P, P, P, P, P, P, P, P, P, P, I32]
    lt.cusparseLtMatmul.argtypes = mm_args
    lt.cusparseLtMatmulSearch.argtypes = mm_args
    buf = lambda: ctypes.create_string_buffer(16384)

    def ok(what, s):
        if s != 0:
            raise RuntimeError(f"{what}: status {s}")

    h = buf()
    ok("init", lt.cusparseLtInit(h))
    v = ctypes.c_int()
    lt.cusparseLtGetVersion(h, ctypes.byref(v))
    stream = torch.cuda.current_stream().cuda_stream
    ws = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for i, (name, s, cin, cout, relu, res) in enumerate(SHAPES):
        if i < start:
            continue
        res = res and res_attr
        relu = relu and relu_attr
        m = batch * s * s
        torch.manual_seed(i)
        w = torch.randn(cout, cin, device="cuda", dtype=torch.half)
        g = w.view(cout, cin // 4, 4)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.abs().topk(2, dim=2).indices, True)
        w = (g * keep).view(cout, cin).contiguous()
        x = torch.randn(m, cin, device="cuda", dtype=torch.half)
        z = torch.randn(m, cout, device="cuda", dtype=torch.half) if res else None
        bias = torch.randn(cout, device="cuda", dtype=getattr(torch, bias_t)) if bias_t else None
        y = torch.full((m, cout), float("nan"), device="cuda", dtype=torch.half)
        A, B, C, MM, ALG, PLAN = buf(), buf(), buf(), buf(), buf(), buf()
        ok("structured", lt.cusparseLtStructuredDescriptorInit(h, A, cout, cin, cin, 16, 2, 2, 0))
        size, cbuf = ctypes.c_size_t(), ctypes.c_size_t()
        ok("compressed size", lt.cusparseLtSpMMACompressedSize2(h, A, ctypes.byref(size), ctypes.byref(cbuf)))
        comp = torch.empty(max(size.value, 1), dtype=torch.uint8, device="cuda")
        cb = torch.empty(max(cbuf.value, 1), dtype=torch.uint8, device="cuda")
        ok("compress", lt.cusparseLtSpMMACompress2(h, A, 1, 0, w.data_ptr(), comp.data_ptr(), cb.data_ptr(), stream))
        ok("dense x", lt.cusparseLtDenseDescriptorInit(h, B, cin, m, cin, 16, 2, 1))
        ok("dense y", lt.cusparseLtDenseDescriptorInit(h, C, cout, m, cout, 16, 2, 1))
        ok("matmul", lt.cusparseLtMatmulDescriptorInit(h, MM, 0, 0, A, B, C, C, 2))
        if relu_attr:
            one = ctypes.c_int(int(relu))
            ok("relu", lt.cusparseLtMatmulDescSetAttribute(h, MM, 0, ctypes.byref(one), 4))
        if bias is not None:
            bp = ctypes.c_void_p(bias.data_ptr())
            ok("bias", lt.cusparseLtMatmulDescSetAttribute(h, MM, 8, ctypes.byref(bp), 8))
        ok("alg", lt.cusparseLtMatmulAlgSelectionInit(h, ALG, MM, 0))
        ok("plan", lt.cusparseLtMatmulPlanInit(h, PLAN, MM, ALG))
        wsz = ctypes.c_size_t()
        ok("workspace", lt.cusparseLtMatmulGetWorkspace(h, PLAN, ctypes.byref(wsz)))
        alpha, beta = ctypes.c_float(1.0), ctypes.c_float(1.0 if res else 0.0)
        st = ctypes.c_void_p(stream)
        cp = z.data_ptr() if res else y.data_ptr()
        args = lambda: (h, PLAN, ctypes.byref(alpha), comp.data_ptr(), x.data_ptr(), ctypes.byref(beta), cp,
                        y.data_ptr(), ws.data_ptr(), ctypes.byref(st), 1)
        if search:
            ok("search", lt.cusparseLtMatmulSearch(*args()))
            ok("workspace", lt.cusparseLtMatmulGetWorkspace(h, PLAN, ctypes.byref(wsz)))
        y.fill_(float("nan"))
        ok("run", lt.cusparseLtMatmul(*args()))
        torch.cuda.synchronize()
        ref = x.float() @ w.float().t()
        if bias is not None:
            ref += bias.float()
        if res:
            ref += z.float()
        if relu:
            ref = ref.relu()
        err = ((y.float() - ref).norm() / ref.norm()).item()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(3):
            lt.cusparseLtMatmul(*args())
        e0.record()
        for _ in range(20):
            lt.cusparseLtMatmul(*args())
        e1.record(); torch.cuda.synchronize()
        ms = e0.elapsed_time(e1) / 20
        # dense: cuDNN's 1x1 convolution, channels_last, bias (+ shortcut and ReLU as extra passes)
        xc = x.view(batch, s, s, cin).permute(0, 3, 1, 2)
        wc = w.view(cout, cin, 1, 1).contiguous(memory_format=torch.channels_last)
        bd = torch.randn(cout, device="cuda", dtype=torch.half)
        import torch.nn.functional as F
        torch.backends.cudnn.benchmark = True
        f = lambda: F.conv2d(xc, wc, bd)
        for _ in range(3):
            f()
        e0.record()
        for _ in range(20):
            f()
        e1.record(); torch.cuda.synchronize()
        dense = e0.elapsed_time(e1) / 20
        print(json.dumps({"cfg": cfg, "i": i, "layer": name, "m": m, "k": cin, "n": cout, "rel_err": err,
                          "sparse_ms": ms, "dense_conv_ms": dense, "workspace": wsz.value,
                          "version": v.value}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--child", default="")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--configs", default="plain,relu,bias16,bias32,residual,search,engine-nosearch,engine")
    ap.add_argument("--diag-batch", type=int, default=32)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.batch, a.start)
    rows = []
    for cfg in a.configs.split(","):
        batch = a.batch if cfg in ("engine", "engine-nosearch") else a.diag_batch
        start = 0
        while start < len(SHAPES):
            try:
                p = subprocess.run([sys.executable, __file__, "--child", cfg, "--batch", str(batch), "--start",
                                    str(start)], capture_output=True, text=True, timeout=90)
                out, err, rc = p.stdout, p.stderr, p.returncode
            except subprocess.TimeoutExpired as e:
                out, err, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout", -9
            done = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
            for r in done:
                r["batch"] = batch
                rows.append(r)
                print(f"{cfg:<16} b{batch:<4} {r['layer']:<16} M={r['m']:>7} K={r['k']:>5} N={r['n']:>5} err {r['rel_err']:.1e} "
                      f"2:4 {r['sparse_ms']:.4f} ms  cuDNN dense {r['dense_conv_ms']:.4f} ms  x{r['dense_conv_ms'] / r['sparse_ms']:.2f}", flush=True)
            start = (done[-1]["i"] + 1) if done else start
            if rc != 0:
                last = (err.strip().splitlines() or ["?"])[-1]
                print(f"{cfg:<16} b{batch:<4} {SHAPES[start][0]:<16} FAILED (rc {rc}): {last[:300]}", flush=True)
                rows.append({"cfg": cfg, "batch": batch, "layer": SHAPES[start][0], "failed": last[:500]})
                start += 1
    if a.out:
        json.dump(rows, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()

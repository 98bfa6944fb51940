#!/usr/bin/env python3
"""PyTorch reference for the GPU benchmark (docs/gpu.md), run on the GPU machine by scripts/gpu/run.sh.

Builds each variant from the same fp16 pack the Rust engine loads (`engine::cuda::pack`: safetensors,
structure in the `inferscope` metadata), so both time the identical network; checks its logits against
the CPU engine's reference logits (ref-<variant>.f32), then times it the way the engine is timed:
fp16, channels_last, cudnn.benchmark, the whole forward captured in a CUDA graph; batch 1 latency (300
single replays, median) and batch 8/32/256 throughput (CUDA events around back-to-back replays).
Optional: torch.compile (mode reduce-overhead) and a 2:4 sparse probe (cuSPARSELt through
torch.sparse.to_sparse_semi_structured) over the network's 1x1 convolutions as GEMMs.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

VARIANTS = ["resnet50-baseline", "resnet50-pruned", "resnet50-sparse24", "resnet50-int8"]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_pack(path):
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["inferscope"])
        t = {k: f.get_tensor(k) for k in f.keys()}

    def weight(name):
        if name + ".weight" in t:
            return t[name + ".weight"].float()
        q, s = t[name + ".weight_q"].double(), t[name + ".weight_scale"].double()
        return (q * s.view(-1, *([1] * (q.dim() - 1)))).float()

    return meta, t, weight


class Net(nn.Module):
    def __init__(self, meta, t, weight):
        super().__init__()
        self.register_buffer("offset", torch.tensor(meta["input_offset"]).view(1, 3, 1, 1))

        def conv(m):
            w = weight(m["name"])
            c = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], m["stride"], m["pad"], bias=True)
            c.weight.data.copy_(w)
            c.bias.data.copy_(t[m["name"] + ".bias"])
            return c

        self.stem = conv(meta["stem"])
        self.blocks = nn.ModuleList()
        for stage in meta["stages"]:
            for b in stage:
                m = nn.Module()
                m.c1, m.c2, m.c3 = conv(b["conv1"]), conv(b["conv2"]), conv(b["conv3"])
                m.ds = conv(b["downsample"]) if b["downsample"] else None
                self.blocks.append(m)
        w = weight("fc")
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        self.fc.weight.data.copy_(w)
        self.fc.bias.data.copy_(t["fc.bias"])

    def forward(self, x):
        x = F.relu(self.stem(x - self.offset))
        x = F.max_pool2d(x, 3, 2, 1)
        for b in self.blocks:
            h = F.relu(b.c2(F.relu(b.c1(x))))
            x = F.relu(b.c3(h) + (b.ds(x) if b.ds is not None else x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def inputs(d):
    raw = np.fromfile(os.path.join(d, "inputs.u8"), dtype=np.uint8).reshape(-1, 3, 224, 224)
    # engine::preprocess's table: (v / 255 - mean) / std in float32.
    table = ((np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)) - MEAN[:, None]) / STD[:, None]
    x = np.stack([table[c][raw[:, c]] for c in range(3)], axis=1)
    return torch.from_numpy(x)


def tiled(x, n):
    reps = (n + x.shape[0] - 1) // x.shape[0]
    return x.repeat(reps, 1, 1, 1)[:n]


def time_replays(fn, per, samples):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(samples):
        e0.record()
        for _ in range(per):
            fn()
        e1.record()
        e1.synchronize()
        out.append(e0.elapsed_time(e1) / per)
    return statistics.median(out), sorted(out)[int(round((len(out) - 1) * 0.9))]


def graphed(model, x):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        out = model(x)
    return g, out


def plan(b):
    return (1, 300) if b == 1 else (max(3, 64 // b), 15)


def bench_variant(name, path, x_all, ref, batches, compile_batches, deadline):
    meta, t, weight = load_pack(path)
    model = Net(meta, t, weight).cuda().half().to(memory_format=torch.channels_last).eval()
    res = {"variant": name}
    with torch.no_grad():
        logits = torch.cat([
            model(c.cuda().half().to(memory_format=torch.channels_last)).float().cpu()
            for c in x_all.split(25)
        ])
    if ref is not None:
        r = torch.from_numpy(ref).view(-1, 1000)
        err = ((logits - r).norm(dim=1) / r.norm(dim=1))
        agree = int((logits.argmax(1) == r.argmax(1)).sum())
        res["check"] = {"rel_err_max": float(err.max()), "rel_err_mean": float(err.mean()), "top1_agree": agree,
                        "photos": int(r.shape[0])}
        print(f"  vs CPU engine: rel. error max {err.max():.2e} mean {err.mean():.2e}; same top-1 {agree}/{r.shape[0]}")
    for b in batches:
        x = tiled(x_all, b).cuda().half().to(memory_format=torch.channels_last)
        g, _ = graphed(model, x)
        per, samples = plan(b)
        med, p90 = time_replays(g.replay, per, samples)
        res[f"bs{b}"] = {"graph_ms_median": med, "graph_ms_p90": p90, "img_per_s": b / med * 1000}
        print(f"  batch {b:>3}: fp16 channels_last + CUDA graph {med:.3f} ms (p90 {p90:.3f}) = {b / med * 1000:8.0f} img/s")
        del g
    for b in compile_batches:
        if time.time() > deadline:
            print(f"  torch.compile batch {b}: skipped (time budget)")
            continue
        try:
            torch._dynamo.reset()
            cm = torch.compile(model, mode="reduce-overhead", dynamic=False)
            x = tiled(x_all, b).cuda().half().to(memory_format=torch.channels_last)
            t0 = time.time()
            with torch.no_grad():
                for _ in range(3):
                    torch.compiler.cudagraph_mark_step_begin()
                    cm(x)
            torch.cuda.synchronize()
            ct = time.time() - t0

            def step():
                torch.compiler.cudagraph_mark_step_begin()
                with torch.no_grad():
                    cm(x)

            per, samples = plan(b)
            med, p90 = time_replays(step, per, samples)
            res[f"compile_bs{b}"] = {"ms_median": med, "img_per_s": b / med * 1000, "compile_s": ct}
            print(f"  batch {b:>3}: torch.compile reduce-overhead {med:.3f} ms = {b / med * 1000:8.0f} img/s (compile {ct:.0f} s)")
        except Exception as e:  # a failed compile is reported, not fatal
            print(f"  torch.compile batch {b} failed: {e}")
    return res


def sparse_probe(path, batch):
    """Dense fp16 GEMM vs 2:4 semi-structured (cuSPARSELt) for every 1x1 convolution of the network, as
    the GEMM [batch*H*W, cin] x [cin, cout] it is in NHWC."""
    from torch.sparse import to_sparse_semi_structured, SparseSemiStructuredTensor
    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    meta, t, weight = load_pack(path)
    out, dense_total, sparse_total = [], 0.0, 0.0
    # conv1/downsample see the block input, conv3 the block output.
    s_in = 56
    for stage in meta["stages"]:
        for b in stage:
            st = max(b["conv1"]["stride"], b["conv2"]["stride"])
            s_out = s_in // st
            for key, side in [("conv1", s_in // b["conv1"]["stride"]), ("conv3", s_out),
                              ("downsample", s_out)]:
                m = b[key]
                if not m:
                    continue
                w = weight(m["name"]).flatten(1).cuda().half()
                cout, cin = w.shape
                if cout % 64 or cin % 64:
                    continue
                # 2:4 mask by magnitude in each group of 4 along cin.
                g = w.view(cout, cin // 4, 4)
                idx = g.abs().topk(2, dim=2).indices
                mask = torch.zeros_like(g, dtype=torch.bool).scatter_(2, idx, True)
                w24 = (g * mask).view(cout, cin)
                x = torch.randn(batch * side * side, cin, device="cuda", dtype=torch.half)
                try:
                    ws = to_sparse_semi_structured(w24)
                    dense, _ = time_replays(lambda: F.linear(x, w24), 5, 7)
                    sparse, _ = time_replays(lambda: F.linear(x, ws), 5, 7)
                except Exception as e:
                    print(f"  sparse probe {m['name']}: {e}")
                    return None
                dense_total += dense
                sparse_total += sparse
                out.append({"layer": m["name"], "m": batch * side * side, "k": cin, "n": cout,
                            "dense_ms": dense, "sparse_ms": sparse})
            s_in = s_out
    print(f"  2:4 probe, batch {batch}, {len(out)} 1x1 convs as GEMMs: dense {dense_total:.3f} ms, "
          f"cuSPARSELt {sparse_total:.3f} ms (speed-up {dense_total / max(sparse_total, 1e-9):.2f}x)")
    for r in out:
        print(f"    {r['layer']:<22} M={r['m']:>7} K={r['k']:>4} N={r['n']:>4}  dense {r['dense_ms']:.3f}  "
              f"2:4 {r['sparse_ms']:.3f}  x{r['dense_ms'] / r['sparse_ms']:.2f}")
    return {"batch": batch, "dense_ms": dense_total, "sparse_ms": sparse_total, "layers": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".gpu")
    ap.add_argument("--out", default=".")
    ap.add_argument("--batches", default="1,8,32,256")
    ap.add_argument("--compile", default="", help="batch sizes for torch.compile, e.g. 1,256")
    ap.add_argument("--compile-variants", default="resnet50-baseline")
    ap.add_argument("--sparse-probe", type=int, default=0, help="batch size for the 2:4 probe (0: off)")
    ap.add_argument("--budget-s", type=float, default=240)
    a = ap.parse_args()
    deadline = time.time() + a.budget_s
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name()}")
    x_all = inputs(a.dir)
    batches = [int(b) for b in a.batches.split(",") if b]
    compile_batches = [int(b) for b in a.compile.split(",") if b]
    results = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "gpu": torch.cuda.get_device_name(), "results": []}
    for v in VARIANTS:
        path = os.path.join(a.dir, f"{v}.safetensors")
        if not os.path.exists(path):
            continue
        ref_path = os.path.join(a.dir, f"ref-{v}.f32")
        ref = np.fromfile(ref_path, dtype="<f4") if os.path.exists(ref_path) else None
        print(f"== {v} (PyTorch)")
        cb = compile_batches if v in a.compile_variants.split(",") else []
        results["results"].append(bench_variant(v, path, x_all, ref, batches, cb, deadline))
        json.dump(results, open(os.path.join(a.out, "torch.json"), "w"), indent=1)
    if a.sparse_probe:
        src = os.path.join(a.dir, "resnet50-baseline.safetensors")
        if os.path.exists(src):
            results["sparse_probe"] = sparse_probe(src, a.sparse_probe)
    json.dump(results, open(os.path.join(a.out, "torch.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())

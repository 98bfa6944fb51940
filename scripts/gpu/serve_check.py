#!/usr/bin/env python3
"""`inferscope serve --backend cuda` checked from the outside, on the GPU machine (docs/gpu.md).

Talks KServe v2 (JSON tensors) to a running server: for every variant it serves, sends the carried
photos one at a time (client-side latency, top-1 against the labels), then a burst of concurrent
single-image requests (which the server's dynamic batcher groups), and reads `/metrics` to show the batch
sizes the batcher formed. Standard library + numpy only. Writes serve.json into --out.
"""
import argparse
import concurrent.futures as cf
import json
import os
import re
import sys
import time
import urllib.request

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def post(url, body, timeout=60):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def inputs(d):
    raw = np.fromfile(os.path.join(d, "inputs.u8"), dtype=np.uint8).reshape(-1, 3, 224, 224)
    table = ((np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)) - MEAN[:, None]) / STD[:, None]
    return np.stack([table[c][raw[:, c]] for c in range(3)], axis=1)


def infer(url, model, x):
    # Triton's binary tensor extension (what tritonclient sends): a JSON header, then the raw FP32 bytes.
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    t = time.perf_counter()
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=header + raw, headers={
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    with urllib.request.urlopen(req, timeout=60) as r:
        out = r.read()
    ms = (time.perf_counter() - t) * 1e3
    res = json.loads(out)
    logits = np.array(res["outputs"][0]["data"], dtype=np.float32).reshape(x.shape[0], -1)
    return ms, logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:3000")
    ap.add_argument("--dir", default=".gpu")
    ap.add_argument("--out", default=".")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--burst", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()

    for _ in range(600):
        try:
            if get(f"{a.url}/v2/health/ready", 2)[0] == 200:
                break
        except Exception:
            pass
        time.sleep(0.5)
    else:
        sys.exit("server never became ready")
    _, idx = post(f"{a.url}/v2/repository/index", b"{}")
    models = [m["name"] for m in json.loads(idx) if m.get("state") == "READY"]
    print("ready models:", models)
    x = inputs(a.dir)
    classes = json.load(open(os.path.join(a.dir, "labels.json")))["classes"]
    n = min(a.photos, len(x))
    report = {"models": {}}
    for m in models:
        lat, correct = [], 0
        for i in range(n):
            ms, logits = infer(a.url, m, x[i:i + 1])
            lat.append(ms)
            correct += int(np.argmax(logits[0]) == classes[i])
        lat.sort()
        # Burst: concurrent single-image requests; once untimed (the first use of a batch size builds its
        # CUDA graph, seconds), then timed.
        with cf.ThreadPoolExecutor(a.concurrency) as ex:
            list(ex.map(lambda i: infer(a.url, m, x[i % len(x):i % len(x) + 1]), range(a.burst)))
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(a.concurrency) as ex:
            futs = [ex.submit(infer, a.url, m, x[i % len(x):i % len(x) + 1]) for i in range(a.burst)]
            results = [f.result() for f in futs]
        wall = time.perf_counter() - t0
        burst_ok = sum(int(np.argmax(l[0]) == classes[i % len(x)]) for i, (_, l) in enumerate(results))
        bl = sorted(ms for ms, _ in results)
        r = {"photos": n, "top1_correct": correct, "client_ms_p50": lat[len(lat) // 2],
             "client_ms_min": lat[0], "burst": a.burst, "concurrency": a.concurrency,
             "burst_img_per_s": a.burst / wall, "burst_ms_p50": bl[len(bl) // 2],
             "burst_ms_p99": bl[int(len(bl) * 0.99) - 1], "burst_top1_correct": burst_ok}
        report["models"][m] = r
        print(f"{m}: top-1 {correct}/{n}; one at a time p50 {r['client_ms_p50']:.2f} ms (min {lat[0]:.2f}); "
              f"burst {a.burst} x{a.concurrency}: {r['burst_img_per_s']:.0f} img/s, p50 {r['burst_ms_p50']:.1f} ms, "
              f"p99 {r['burst_ms_p99']:.1f} ms, top-1 {burst_ok}/{a.burst}")
    _, metrics = get(f"{a.url}/metrics")
    text = metrics.decode()
    for m in models:
        s = re.search(rf'inferscope_batch_size_sum{{variant="{re.escape(m)}"}} ([0-9.e+]+)', text)
        c = re.search(rf'inferscope_batch_size_count{{variant="{re.escape(m)}"}} ([0-9.e+]+)', text)
        if s and c and float(c.group(1)) > 0:
            mean = float(s.group(1)) / float(c.group(1))
            report["models"][m]["mean_batch"] = mean
            report["models"][m]["batches"] = float(c.group(1))
            print(f"{m}: {int(float(c.group(1)))} batches, mean batch size {mean:.2f} (from /metrics)")
    _, page = get(f"{a.url}/")
    report["page_bytes"] = len(page)
    report["page_lists_every_model"] = all(m.encode() in page for m in models)
    print(f"page: {len(page)} bytes, lists every model: {report['page_lists_every_model']}")
    json.dump(report, open(os.path.join(a.out, "serve.json"), "w"), indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Served logits for a fixed set of random images (issue 12, 2026-12-01a): sends N binary KServe v2
UINT8 requests (one image each) from T threads at once, so that the server batches them, and writes
the logits (N × 1000 float32, in image order) to OUT. `compare A B` prints how two such files differ.
Usage: served_logits.py URL MODEL OUT [N] [T] | served_logits.py compare A B"""
import http.client, json, struct, sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

if sys.argv[1] == "compare":
    a, b = (np.fromfile(p, dtype=np.float32).reshape(-1, 1000) for p in sys.argv[2:4])
    d = np.abs(a - b)
    print(f"{a.shape[0]} images: top-1 equal {int((a.argmax(1) == b.argmax(1)).sum())}, "
          f"bit-equal rows {int((a == b).all(1).sum())}, max |diff| {d.max():.3g}, "
          f"max |logit| {np.abs(a).max():.3g}")
    sys.exit(0)

url, model, out = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 192
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 48
host = url.split("//")[1]
rng = np.random.default_rng(20261201)
images = rng.integers(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
head = json.dumps({
    "inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 224, 224, 3],
                "parameters": {"binary_data_size": 224 * 224 * 3}}],
    "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
}).encode()


def one(i):
    c = http.client.HTTPConnection(host, timeout=60)
    c.request("POST", f"/v2/models/{model}/infer", head + images[i].tobytes(),
              {"Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream"})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:300])
    hl = int(r.getheader("Inference-Header-Content-Length"))
    logits = np.frombuffer(body[hl:], dtype="<f4")
    assert logits.size == 1000, logits.size
    return logits


with ThreadPoolExecutor(threads) as ex:
    rows = list(ex.map(one, range(n)))
np.stack(rows).astype(np.float32).tofile(out)
print(f"{n} images, {threads} threads: logits written to {out}")

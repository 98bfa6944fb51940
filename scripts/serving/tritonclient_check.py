#!/usr/bin/env python3
"""Talks to a running `inferscope serve` with NVIDIA's own KServe v2 client, `tritonclient[http]`
(PyPI, unmodified), the way a Triton user would, and checks every answer.

    PYTHONPATH=.tools/py python3 scripts/serving/tritonclient_check.py --url 127.0.0.1:3000 \
        --photo ~/.cache/inferscope/foolbox-images/imagenet_00_243.jpg:243 --photo ...:NNN

Each --photo is PATH:CLASS (the ImageNet class index the baseline must answer). The tensor inputs come
from the server's own preprocessing (`POST /api/preprocess`), as a client that preprocesses like the
server would send them. Prints one line per check and exits non-zero on the first failure.
"""

import argparse
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "resnet50-baseline"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def preprocess(url, photo):
    req = urllib.request.Request(f"http://{url}/api/preprocess", data=photo, method="POST")
    with urllib.request.urlopen(req) as res:
        return np.frombuffer(res.read(), dtype="<f4").reshape(1, 3, 224, 224)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="host:port of the server")
    ap.add_argument("--photo", action="append", required=True, help="PATH:CLASS")
    args = ap.parse_args()
    photos = []
    for p in args.photo:
        path, cls = p.rsplit(":", 1)
        photos.append((open(path, "rb").read(), int(cls)))

    client = httpclient.InferenceServerClient(url=args.url)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata()
    check(meta["name"] == "inferscope" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")
    index = client.get_model_repository_index()
    names = {m["name"]: m["state"] for m in index}
    check(names.get(MODEL) == "READY", f"repository index lists {MODEL} READY: {names}")
    check(client.is_model_ready(MODEL), f"{MODEL} ready")
    check(not client.is_model_ready("resnet51"), "an unknown model is not ready")
    mm = client.get_model_metadata(MODEL)
    check(mm["inputs"][0]["name"] == "input" and mm["outputs"][0]["shape"] == [-1, 1000], f"model metadata {mm}")
    cfg = client.get_model_config(MODEL)
    check(cfg["max_batch_size"] >= 2, f"model config max_batch_size {cfg['max_batch_size']}")

    tensors = np.concatenate([preprocess(args.url, photo) for photo, _ in photos])
    want = [cls for _, cls in photos]

    # 1. Binary tensors in and out (tritonclient's default), the whole batch in one request.
    inp = httpclient.InferInput("input", list(tensors.shape), "FP32")
    inp.set_data_from_numpy(tensors, binary_data=True)
    out = httpclient.InferRequestedOutput("logits", binary_data=True)
    res = client.infer(MODEL, [inp], outputs=[out], request_id="batch-1")
    logits = res.as_numpy("logits")
    check(logits.shape == (len(photos), 1000), f"binary: logits shape {logits.shape}")
    check(list(logits.argmax(axis=1)) == want, f"binary: top-1 {list(logits.argmax(axis=1))} == {want}")
    check(res.get_response()["id"] == "batch-1", "binary: the request id is echoed")

    # 2. JSON tensors in and out, one photo.
    inp = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(tensors[:1], binary_data=False)
    out = httpclient.InferRequestedOutput("logits", binary_data=False)
    res = client.infer(MODEL, [inp], outputs=[out])
    json_logits = res.as_numpy("logits")
    check(int(json_logits.reshape(-1, 1000)[0].argmax()) == want[0], "json: top-1")
    check(np.allclose(json_logits.reshape(-1, 1000)[0], logits[0], atol=1e-4), "json logits == binary logits")

    # 3. No outputs named: every output comes back binary (binary_data_output).
    inp = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(tensors[:1])
    res = client.infer(MODEL, [inp])
    check(int(res.as_numpy("logits")[0].argmax()) == want[0], "default outputs: top-1")

    # 4. Triton's classification extension: the top-3 as "value:index:label".
    inp = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(tensors[:1])
    out = httpclient.InferRequestedOutput("logits", binary_data=True, class_count=3)
    res = client.infer(MODEL, [inp], outputs=[out])
    top = [s.decode() for s in res.as_numpy("logits").reshape(-1)]
    check(len(top) == 3 and int(top[0].split(":")[1]) == want[0], f"classification: {top}")

    # 5. Encoded photos as BYTES (server-side preprocessing).
    photo_arr = np.array([photo for photo, _ in photos], dtype=np.object_)
    inp = httpclient.InferInput("input", [len(photos)], "BYTES")
    inp.set_data_from_numpy(photo_arr, binary_data=True)
    res = client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("logits")])
    check(list(res.as_numpy("logits").argmax(axis=1)) == want, "bytes: top-1 of encoded photos")

    # 6. Errors come back as InferenceServerException with the server's message.
    inp = httpclient.InferInput("input", [1, 3, 224, 225], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 224, 225), dtype=np.float32))
    try:
        client.infer(MODEL, [inp])
        check(False, "a wrong shape is refused")
    except InferenceServerException as e:
        check("shape" in str(e), f"a wrong shape is refused: {e}")
    try:
        client.infer("resnet51", [httpclient.InferInput("input", [1], "BYTES")])
        check(False, "an unknown model is refused")
    except InferenceServerException as e:
        check("unknown model" in str(e), f"an unknown model is refused: {e}")
    print("tritonclient: all checks passed", flush=True)


if __name__ == "__main__":
    main()

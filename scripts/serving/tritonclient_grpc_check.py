#!/usr/bin/env python3
"""Talks to a running `inferscope serve` over KServe v2 gRPC with NVIDIA's own client,
`tritonclient[grpc]` (PyPI, unmodified), the way a Triton user would, and checks every answer.

    PYTHONPATH=.tools/py python3 scripts/serving/tritonclient_grpc_check.py --grpc 127.0.0.1:8001 \
        --http 127.0.0.1:3000 --photo ~/.cache/inferscope/foolbox-images/imagenet_00_243.jpg:243 ...

Each --photo is PATH:CLASS (the ImageNet class index the baseline must answer). Tensor inputs come
from the server's own preprocessing (`POST /api/preprocess` on --http). --model picks the variant.
Prints one line per check and exits non-zero on the first failure.
"""

import argparse
import sys
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def preprocess(url, photo):
    req = urllib.request.Request(f"http://{url}/api/preprocess", data=photo, method="POST")
    with urllib.request.urlopen(req) as res:
        return np.frombuffer(res.read(), dtype="<f4").reshape(1, 3, 224, 224)


def refused(client, model, inputs, code, text, what, **kw):
    try:
        client.infer(model, inputs, **kw)
        check(False, what)
    except InferenceServerException as e:
        check(e.status() == code and text in e.message(), f"{what}: {e.status()} {e.message()}")


def check_token(client, model, args):
    """A server with --api-token: health stays open, every other call needs the token."""
    check(client.is_server_live(), "token: health is open")
    try:
        client.get_model_metadata(model)
        check(False, "token: metadata without the token is refused")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.UNAUTHENTICATED" and "--api-token" in e.message(),
              f"token: metadata without the token is refused: {e.status()} {e.message()}")
    photo, cls = args_photo(args)
    inp = grpcclient.InferInput("input", [1], "BYTES")
    inp.set_data_from_numpy(np.array([photo], dtype=np.object_))
    try:
        client.infer(model, [inp], headers={"authorization": "Bearer wrong"})
        check(False, "token: a wrong token is refused")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.UNAUTHENTICATED", f"token: a wrong token is refused: {e.status()}")
    res = client.infer(model, [inp], headers={"authorization": f"Bearer {args.token}"})
    check(int(res.as_numpy("logits")[0].argmax()) == cls, "token: with the token, the right class")
    print("tritonclient grpc: all checks passed", flush=True)


def args_photo(args):
    path, cls = args.photo[0].rsplit(":", 1)
    return open(path, "rb").read(), int(cls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True, help="host:port of the gRPC server")
    ap.add_argument("--http", required=True, help="host:port of the HTTP server (preprocessing)")
    ap.add_argument("--model", default="resnet50-baseline")
    ap.add_argument("--max-batch-size", type=int, default=8, help="the server's max_batch_size")
    ap.add_argument("--photo", action="append", required=True, help="PATH:CLASS")
    ap.add_argument("--token", help="the server's --api-token: check that calls need it, then stop")
    args = ap.parse_args()
    model = args.model
    photos = []
    for p in args.photo:
        path, cls = p.rsplit(":", 1)
        photos.append((open(path, "rb").read(), int(cls)))

    client = grpcclient.InferenceServerClient(url=args.grpc)
    if args.token:
        return check_token(client, model, args)
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata()
    check(meta.name == "inferscope" and "classification" in meta.extensions, f"server metadata {meta}")
    check(client.is_model_ready(model), f"{model} ready")
    check(not client.is_model_ready("resnet51"), "an unknown model is not ready")
    mm = client.get_model_metadata(model)
    check(
        mm.inputs[0].name == "input" and list(mm.inputs[0].shape) == [-1, 3, 224, 224]
        and list(mm.outputs[0].shape) == [-1, 1000],
        f"model metadata {mm.inputs[0].name} {list(mm.inputs[0].shape)} -> {list(mm.outputs[0].shape)}",
    )

    tensors = np.concatenate([preprocess(args.http, photo) for photo, _ in photos])
    want = [cls for _, cls in photos]

    # 1. Raw FP32 tensors (tritonclient's default), the whole batch in one request.
    inp = grpcclient.InferInput("input", list(tensors.shape), "FP32")
    inp.set_data_from_numpy(tensors)
    res = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("logits")], request_id="batch-1")
    logits = res.as_numpy("logits")
    check(logits.shape == (len(photos), 1000), f"raw: logits shape {logits.shape}")
    check(list(logits.argmax(axis=1)) == want, f"raw: top-1 {list(logits.argmax(axis=1))} == {want}")
    check(res.get_response().id == "batch-1", "raw: the request id is echoed")

    # 2. No outputs named: every output comes back; a client timeout within reach is fine.
    inp = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(tensors[:1])
    res = client.infer(model, [inp], timeout=30_000_000)
    check(np.allclose(res.as_numpy("logits")[0], logits[0], atol=1e-4), "default outputs: same logits")

    # 3. Triton's classification extension: the top-3 as "value:index:label".
    out = grpcclient.InferRequestedOutput("logits", class_count=3)
    res = client.infer(model, [inp], outputs=[out])
    top = [s.decode() for s in res.as_numpy("logits").reshape(-1)]
    check(len(top) == 3 and int(top[0].split(":")[1]) == want[0], f"classification: {top}")

    # 4. Encoded photos as BYTES (server-side preprocessing).
    photo_arr = np.array([photo for photo, _ in photos], dtype=np.object_)
    inp = grpcclient.InferInput("input", [len(photos)], "BYTES")
    inp.set_data_from_numpy(photo_arr)
    res = client.infer(model, [inp])
    check(list(res.as_numpy("logits").argmax(axis=1)) == want, "bytes: top-1 of encoded photos")

    # 5. Errors: the HTTP route's messages, as gRPC status codes.
    bad = grpcclient.InferInput("input", [1, 3, 224, 225], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 224, 225), dtype=np.float32))
    refused(client, model, [bad], "StatusCode.INVALID_ARGUMENT", "shape", "a wrong shape is refused")
    short = grpcclient.InferInput("input", [2, 3, 224, 224], "FP32")
    short.set_data_from_numpy(tensors[:1].repeat(2, axis=0))
    short._raw_content = short._raw_content[:-4]
    refused(client, model, [short], "StatusCode.INVALID_ARGUMENT", "bytes of FP32 data", "a short tensor is refused")
    nan = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
    nan.set_data_from_numpy(np.full((1, 3, 224, 224), np.nan, dtype=np.float32))
    refused(client, model, [nan], "StatusCode.INVALID_ARGUMENT", "non-finite", "a NaN is refused")
    junk = grpcclient.InferInput("input", [1], "BYTES")
    junk.set_data_from_numpy(np.array([b"not a photo"], dtype=np.object_))
    refused(client, model, [junk], "StatusCode.INVALID_ARGUMENT", "", "an undecodable photo is refused")
    n = args.max_batch_size + 1
    many = grpcclient.InferInput("input", [n, 3, 224, 224], "FP32")
    many.set_data_from_numpy(np.zeros((n, 3, 224, 224), dtype=np.float32))
    refused(client, model, [many], "StatusCode.INVALID_ARGUMENT", "max_batch_size", "more images than max_batch_size")
    # As many encoded photos: refused from the declared shape, before any photo is decoded.
    many = grpcclient.InferInput("input", [n], "BYTES")
    many.set_data_from_numpy(np.array([b"x"] * n, dtype=np.object_))
    refused(client, model, [many], "StatusCode.INVALID_ARGUMENT", "max_batch_size", "more photos than max_batch_size")
    refused(client, "resnet51", [inp], "StatusCode.NOT_FOUND", "unknown model", "an unknown model is refused")
    print("tritonclient grpc: all checks passed", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A minimal KServe v2 server in python: one ONNX file on python onnxruntime behind the standard
library's threading HTTP server. It is the comparison point of `inferscope bench` (docs/serving.md):
the same model file, the same machine, the same protocol (binary FP32 tensors in, binary logits out),
no batching.

    PYTHONPATH=.tools/ort python3 scripts/serving/ort_server.py --model models/resnet50-baseline.onnx \
        --port 8001 --threads 2

Answers GET /v2/health/ready and POST /v2/models/<any>/infer (binary or JSON FP32 input named `input`,
output `logits`).
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body, headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/v2/health"):
                self.reply(200, b"")
            else:
                self.reply(404, b'{"error": "not found"}')

        def do_POST(self):
            if not (self.path.startswith("/v2/models/") and self.path.endswith("/infer")):
                return self.reply(404, b'{"error": "not found"}')
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            n = int(self.headers.get("Inference-Header-Content-Length", len(body)))
            head = json.loads(body[:n])
            inp = head["inputs"][0]
            if "binary_data_size" in inp.get("parameters", {}):
                x = np.frombuffer(body[n:], dtype="<f4")
            else:
                x = np.asarray(inp["data"], dtype=np.float32)
            x = x.reshape(inp["shape"])
            logits = session.run(["logits"], {"input": x})[0].astype("<f4")
            out = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
            raw = logits.tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            head = json.dumps({"model_name": "ort", "outputs": [out]}).encode()
            self.reply(
                200,
                head + raw,
                [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(head)))],
            )

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

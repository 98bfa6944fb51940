#!/usr/bin/env python3
"""Prints the benchmark table (markdown) from gpu_bench.json and torch.json in the folder given."""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else {"results": []}


def main(d):
    eng, tor = load(d, "gpu_bench.json"), load(d, "torch.json")
    torch_by = {r["variant"]: r for r in tor["results"]}
    print("| variant | engine | GMAC | rel. err. max | same top-1 | bs1 ms | bs8 img/s | bs32 img/s | bs256 img/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")

    def row(name, who, gmac, chk, r, key="graph_ms_median"):
        def ips(b):
            x = r.get(f"bs{b}")
            return f"{x['img_per_s']:,.0f}" if x else "–"
        bs1 = r.get("bs1")
        err = f"{chk['rel_err_max']:.1e}" if chk else "–"
        agree = f"{chk['top1_agree']}/{chk['photos']}" if chk else "–"
        print(f"| {name} | {who} | {gmac} | {err} | {agree} | {bs1[key]:.3f} | {ips(8)} | {ips(32)} | {ips(256)} |"
              if bs1 else f"| {name} | {who} | {gmac} | {err} | {agree} | – | {ips(8)} | {ips(32)} | {ips(256)} |")

    for r in eng["results"]:
        v = r["variant"]
        path = r.get("path", "")
        who = ("inferscope int8 (cuBLASLt) + graph" if path.startswith("int8")
               else "inferscope fp16 (INT8 dequantized) + graph" if "dequantized" in path
               else "inferscope fp16 cuDNN + graph")
        row(v, who, f"{r['gmac']:.2f}", r.get("check"), r["graph"])
        t = torch_by.get(v)
        if t:
            row(v, "PyTorch fp16 + graph" + (" (dequantized)" if v.endswith("int8") else ""), "",
                t.get("check"), t)
            comp = {k[len("compile_"):]: x for k, x in t.items() if k.startswith("compile_")}
            if comp:
                row(v, "torch.compile", "", None, {k: {"graph_ms_median": x["ms_median"], **x} for k, x in comp.items()})
    for r in eng["results"]:
        e = r.get("end_to_end", {})
        if e:
            print(f"\n{r['variant']} end to end (Model::run, host f32 in → logits out): "
                  + ", ".join(f"{k} {x['ms_median']:.3f} ms ({x['img_per_s']:,.0f} img/s)" for k, x in e.items()))
    sp = tor.get("sparse_probe")
    if sp:
        print(f"\n2:4 probe (batch {sp['batch']}, 1x1 convs as GEMMs): dense {sp['dense_ms']:.3f} ms, "
              f"cuSPARSELt {sp['sparse_ms']:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

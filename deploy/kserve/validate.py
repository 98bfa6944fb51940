#!/usr/bin/env python3
"""Validates Kubernetes manifests offline, against schemas that come from package registries:

* core kinds (Deployment, Service, HorizontalPodAutoscaler, ...): PyPI `kubernetes-validate` (the
  Kubernetes OpenAPI schemas as JSON Schema, bundled per release), in strict mode (unknown fields fail);
* KServe's InferenceService: the models of PyPI `kserve`'s SDK (generated from KServe's CRD OpenAPI;
  read from the wheel as data, `--kserve-wheel`, not imported): every field must be one the SDK knows,
  with the type it declares, and the Kubernetes types inside it (containers, resources, probes, ...)
  are checked with kubernetes-validate's schema of that type.

    PYTHONPATH=.tools/py python3 deploy/kserve/validate.py --kserve-wheel .tools/py/wheels/kserve-*.whl \
        deploy/kserve/*.yaml

Prints one line per document and exits non-zero when any is invalid.
"""

import argparse
import ast
import re
import sys
import zipfile

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv

K8S_VERSION = "1.33.0"


class Invalid(Exception):
    pass


def k8s_schema_dir():
    version = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(K8S_VERSION)][-1]
    return f"kubernetes-json-schema/v{version}-local-strict"


def validate_k8s_type(value, type_name, where):
    """A Kubernetes API type by its SDK name (V1Container, V1ResourceRequirements, ...)."""
    m = re.fullmatch(r"V(\d+(?:(?:alpha|beta)\d+)?)(\w+)", type_name)
    if not m:
        raise Invalid(f"{where}: no schema for {type_name}")
    version, kind = m.groups()
    base = k8s_schema_dir()
    group = "-meta" if kind == "ObjectMeta" else ""
    try:
        schema = kv.schema_contents(f"{base}/{kind.lower()}{group}-v{version}.json", K8S_VERSION)
    except FileNotFoundError:
        raise Invalid(f"{where}: no Kubernetes schema for {type_name}")
    defs = kv.schema_contents(f"{base}/_definitions.json", K8S_VERSION)
    registry = referencing.Resource.from_contents(schema) @ referencing.Registry()
    registry = referencing.Resource.from_contents(defs) @ registry
    try:
        jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(value)
    except jsonschema.ValidationError as e:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        raise Invalid(f"{where}{path}: {e.message}")


class KserveModels:
    """`openapi_types` and `attribute_map` of every model class in the kserve wheel, read with ast."""

    def __init__(self, wheel):
        self.models = {}
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if not re.fullmatch(r"kserve/models/v1\w+\.py", name):
                    continue
                tree = ast.parse(z.read(name))
                for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
                    fields = {}
                    for stmt in cls.body:
                        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                            target = getattr(stmt.targets[0], "id", None)
                            if target in ("openapi_types", "attribute_map"):
                                fields[target] = ast.literal_eval(stmt.value)
                    if "openapi_types" in fields and "attribute_map" in fields:
                        self.models[cls.name] = fields
        if "V1beta1InferenceService" not in self.models:
            raise SystemExit(f"{wheel} has no V1beta1InferenceService model")

    def check(self, value, type_name, where):
        if type_name.startswith("list["):
            if not isinstance(value, list):
                raise Invalid(f"{where}: expected a list, got {type(value).__name__}")
            for i, item in enumerate(value):
                self.check(item, type_name[5:-1], f"{where}[{i}]")
        elif type_name.startswith("dict("):
            if not isinstance(value, dict):
                raise Invalid(f"{where}: expected a map, got {type(value).__name__}")
            inner = type_name[5:-1].split(",", 1)[1].strip()
            for k, v in value.items():
                self.check(v, inner, f"{where}.{k}")
        elif type_name in ("str", "ResourceQuantity"):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise Invalid(f"{where}: expected a string, got {value!r}")
        elif type_name == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise Invalid(f"{where}: expected an integer, got {value!r}")
        elif type_name == "bool":
            if not isinstance(value, bool):
                raise Invalid(f"{where}: expected true/false, got {value!r}")
        elif type_name == "object":
            pass
        elif type_name in self.models:
            model = self.models[type_name]
            if not isinstance(value, dict):
                raise Invalid(f"{where}: expected an object ({type_name}), got {value!r}")
            by_json = {json: attr for attr, json in model["attribute_map"].items()}
            for key, item in value.items():
                if key not in by_json:
                    known = ", ".join(sorted(by_json))
                    raise Invalid(f"{where}: unknown field `{key}` of {type_name} (fields: {known})")
                self.check(item, model["openapi_types"][by_json[key]], f"{where}.{key}")
        elif type_name == "V1ObjectMeta" or re.fullmatch(r"V\d\w+", type_name):
            validate_k8s_type(value, type_name, where)
        else:
            raise Invalid(f"{where}: cannot check type {type_name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kserve-wheel", required=True, help="the kserve SDK wheel (pip download --no-deps kserve)")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    kserve = KserveModels(args.kserve_wheel)
    failed = 0
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for doc in docs:
            what = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            try:
                if doc.get("apiVersion", "").startswith("serving.kserve.io/"):
                    version = doc["apiVersion"].split("/")[1]
                    model = f"V{version[1:]}{doc['kind']}"
                    if model not in kserve.models:
                        raise Invalid(f"{doc['apiVersion']} {doc['kind']} is not in the kserve SDK")
                    kserve.check(doc, model, doc["kind"])
                    if not doc.get("spec", {}).get("predictor"):
                        raise Invalid("an InferenceService needs spec.predictor")
                    used = f"kserve SDK {args.kserve_wheel.rsplit('/', 1)[-1]}"
                else:
                    version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                    used = f"Kubernetes {version} (strict)"
                print(f"valid: {what} ({used})")
            except (Invalid, kv.ValidationError, kv.SchemaNotFoundError) as e:
                failed += 1
                print(f"INVALID: {what}: {str(e).splitlines()[0]}")
    print(f"{len(args.files)} file(s), {failed} invalid")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

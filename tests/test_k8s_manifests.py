"""Offline validation of the cluster artefacts under k8s/ (no cluster, no network).

Three validators, each proven able to fail by a negative test:
- core kinds (Namespace, ConfigMap, ServiceAccount, Deployment, Service, HorizontalPodAutoscaler):
  `kubernetes-validate --strict` for Kubernetes 1.30, as a subprocess, exactly as a developer runs it;
- SeldonDeployment: the CRD's OpenAPI v3 schema (tests/schemas/seldondeployment-v1.openapi.json,
  vendored: see tests/schemas/README.md), made strict the way `kubectl apply --validate=strict`
  is: every object that names its properties gets `additionalProperties: false` unless the
  schema already says what extra keys may be (maps) or carries x-kubernetes-preserve-unknown-fields;
- ServiceMonitor: tests/schemas/servicemonitor-v1.schema.json, a strict subset written here (the
  Prometheus Operator CRDs are not bundled anywhere offline).
Every manifest document must be claimed by exactly one validator: an unknown kind fails the test
instead of passing unvalidated (kubernetes-validate only warns on kinds it has no schema for).
Then cross-references: the graph and the containers agree, traffic adds up, the request logger
reaches the detector Service, the ServiceMonitor finds the metrics Service, and so on.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

from pipelines.config import REPO_ROOT, PipelineConfig

K8S_DIR = os.path.join(REPO_ROOT, "k8s")
K8S_VERSION = "1.30.0"
BIN_DIR = os.path.dirname(sys.executable)
KUBERNETES_VALIDATE = os.path.join(BIN_DIR, "kubernetes-validate")
SELDON_SCHEMA_PATH = os.path.join(REPO_ROOT, "tests", "schemas", "seldondeployment-v1.openapi.json")
SERVICEMONITOR_SCHEMA_PATH = os.path.join(REPO_ROOT, "tests", "schemas", "servicemonitor-v1.schema.json")

CORE_KINDS = {
    ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "ServiceAccount"), ("v1", "Service"),
    ("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler"), ("batch/v1", "CronJob"),
}
SELDON = ("machinelearning.seldon.io/v1", "SeldonDeployment")
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
# Its alert rules: the PrometheusRule CRD's own schema, vendored and made strict (tests/test_monitoring.py).
PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")
# The Open Inference Protocol on a cluster: KServe and Seldon Core v2 kinds, each with the CRD schema
# of its own project, vendored (tests/schemas/README.md) and made strict like the SeldonDeployment's.
V2_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve-inferenceservice-v1beta1.openapi.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "kserve-servingruntime-v1alpha1.openapi.json",
    ("mlops.seldon.io/v1alpha1", "Server"): "seldon-v2-server-v1alpha1.openapi.json",
    ("mlops.seldon.io/v1alpha1", "Model"): "seldon-v2-model-v1alpha1.openapi.json",
}



def serving_settings() -> set:
    """CD4ML_* names the servers read (the `setting("CD4ML_...")` calls in serving/)."""
    found = set()
    for path in glob.glob(os.path.join(REPO_ROOT, "serving", "*.py")):
        with open(path) as fh:
            found |= set(re.findall(r"""setting\(\s*["'](CD4ML_\w+)["']""", fh.read()))
    assert {"CD4ML_REGISTRY", "CD4ML_SERVING_VERSION", "CD4ML_MAX_REQUEST_BYTES"} <= found, found
    return found


SERVING_IMAGE = "cd4ml-serving"
OVERLAYS = ["default", "canary", "shadow", "ab"]

# ---------------------------------------------------------------- loading

@dataclasses.dataclass
class Doc:
    path: str
    index: int
    body: dict

    @property
    def key(self) -> tuple[str, str]:
        return self.body.get("apiVersion"), self.body.get("kind")

    @property
    def name(self) -> str:
        return self.body.get("metadata", {}).get("name", "")

    def __repr__(self):
        return f"{os.path.relpath(self.path, REPO_ROOT)}#{self.index} {self.key[1]}/{self.name}"


def manifest_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(K8S_DIR, "**", "*.yaml"), recursive=True))
    return [f for f in files if os.path.basename(f) != "kustomization.yaml"]


def load_docs(paths=None) -> list[Doc]:
    docs = []
    for path in paths or manifest_files():
        with open(path) as fh:
            for i, body in enumerate(yaml.safe_load_all(fh)):
                if body is not None:
                    docs.append(Doc(path, i, body))
    return docs


def by_kind(docs: list[Doc], key) -> list[Doc]:
    return [d for d in docs if d.key == key]


# ---------------------------------------------------------------- validators

def kubernetes_validate(cases: dict[str, dict], tmpdir: str, strict: bool = True) -> tuple[int, dict[str, str]]:
    """Run the kubernetes-validate CLI once over one file per case; return (rc, output per case).

    One process for everything: each run spends seconds importing and loading schemas.
    """
    files = {}
    for name, body in cases.items():
        path = os.path.join(tmpdir, f"{name}.yaml")
        with open(path, "w") as fh:
            yaml.safe_dump(body, fh)
        files[name] = path
    cmd = [KUBERNETES_VALIDATE, "-k", K8S_VERSION] + (["--strict"] if strict else []) + list(files.values())
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    lines = (proc.stdout + proc.stderr).splitlines()
    per_case = {name: "\n".join(line for line in lines if f" {path} " in line) for name, path in files.items()}
    return proc.returncode, per_case


def assert_passed(body: dict, output: str):
    # The CLI only warns on a kind it has no schema for: require its "passed" line.
    line = f"passed for resource {body['kind'].lower()}/{body['metadata']['name']} "
    assert line in output and "ERROR" not in output, output


def strict_objects(schema: dict) -> dict:
    """A copy of an OpenAPI v3 structural schema that rejects properties it does not name: objects
    with `properties` and no `additionalProperties` get `additionalProperties: false`, unless they
    carry x-kubernetes-preserve-unknown-fields (then anything goes, as in the API); maps
    (`additionalProperties` given) keep their rule."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def strictify(schema: dict) -> dict:
    """The SeldonDeployment schema made strict (strict_objects), plus two repairs of that CRD:

    - the CRD truncates the recursive inference graph (`graph.children.items` is `{}`): children
      are validated as graph nodes again, through a $ref;
    - the top-level ObjectMeta is an untyped object in the CRD: it gets the ObjectMeta the CRD
      itself copies for componentSpecs[].metadata.
    """
    schema = copy.deepcopy(schema)
    predictor = schema["properties"]["spec"]["properties"]["predictors"]["items"]
    schema["properties"]["metadata"] = copy.deepcopy(
        predictor["properties"]["componentSpecs"]["items"]["properties"]["metadata"])
    schema = strict_objects(schema)
    predictor = schema["properties"]["spec"]["properties"]["predictors"]["items"]
    graph = predictor["properties"]["graph"]
    assert graph["properties"]["children"]["items"] == {}, "CRD graph.children changed: revisit strictify"
    schema["$defs"] = {"graph": graph}
    graph["properties"]["children"]["items"] = {"$ref": "#/$defs/graph"}
    predictor["properties"]["graph"] = {"$ref": "#/$defs/graph"}
    schema["properties"]["metadata"].setdefault("required", []).append("name")
    return schema


def schema_errors(schema: dict, body: dict) -> list[str]:
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = validator_cls(schema)
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))]


@pytest.fixture(scope="module")
def seldon_schema() -> dict:
    with open(SELDON_SCHEMA_PATH) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def strict_seldon_schema(seldon_schema) -> dict:
    return strictify(seldon_schema)


@pytest.fixture(scope="module")
def servicemonitor_schema() -> dict:
    with open(SERVICEMONITOR_SCHEMA_PATH) as fh:
        schema = json.load(fh)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load_docs()


def render(overlay: str) -> list[dict]:
    proc = subprocess.run(["kubectl", "kustomize", os.path.join(K8S_DIR, "overlays", overlay)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [b for b in yaml.safe_load_all(proc.stdout) if b]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if shutil.which("kubectl") is None:
        return {}
    return {overlay: render(overlay) for overlay in OVERLAYS}


def _deployment(docs) -> dict:
    return copy.deepcopy(next(d.body for d in docs if d.key == ("apps/v1", "Deployment")))


def negative_core_cases(docs) -> dict[str, dict]:
    misspelt = _deployment(docs)
    misspelt["spec"]["revisionHistoryLimt"] = misspelt["spec"].pop("revisionHistoryLimit")
    nested = _deployment(docs)
    container = nested["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    wrong_type = _deployment(docs)
    wrong_type["spec"]["revisionHistoryLimit"] = "two"
    return {"neg-misspelt": misspelt, "neg-nested": nested, "neg-wrong-type": wrong_type}


@pytest.fixture(scope="module")
def kv(docs, rendered, tmp_path_factory):
    """kubernetes-validate --strict over the source manifests, the rendered overlays and the
    negative cases, in one run. Returns (rc, {case: output}, {case: body})."""
    cases = {f"src-{i:02d}": d.body for i, d in enumerate(d for d in docs if d.key in CORE_KINDS)}
    for overlay, bodies in rendered.items():
        core = [b for b in bodies if (b["apiVersion"], b["kind"]) in CORE_KINDS]
        cases.update({f"{overlay}-{i:02d}": b for i, b in enumerate(core)})
    cases.update(negative_core_cases(docs))
    rc, out = kubernetes_validate(cases, str(tmp_path_factory.mktemp("kv")))
    return rc, out, cases


def sdeps(docs):
    return by_kind(docs, SELDON)


# ---------------------------------------------------------------- every document has a validator

def test_manifests_exist_and_every_kind_has_a_validator(docs):
    assert docs, "no manifests under k8s/"
    kinds = {d.key for d in docs}
    unknown = [d for d in docs if d.key not in CORE_KINDS | {SELDON, SERVICE_MONITOR, PROMETHEUS_RULE} | set(V2_KINDS)]
    assert not unknown, f"kinds with no validator here (add one, do not let them pass unchecked): {unknown}"
    for wanted in [("v1", "Namespace"), ("v1", "ConfigMap"), ("apps/v1", "Deployment"), ("v1", "Service"),
                   ("autoscaling/v2", "HorizontalPodAutoscaler"), ("batch/v1", "CronJob"), SELDON,
                   SERVICE_MONITOR, PROMETHEUS_RULE, *V2_KINDS]:
        assert wanted in kinds, f"missing a {wanted[1]}"
    for d in docs:
        assert d.body.get("metadata", {}).get("namespace") in (None, "cd4ml") or d.key == ("v1", "Namespace"), d


def test_core_kinds_pass_kubernetes_validate_strict(kv):
    _, out, cases = kv
    sources = [name for name in cases if name.startswith("src-")]
    assert len(sources) >= 7
    for name in sources:
        assert_passed(cases[name], out[name])


def test_seldondeployments_pass_the_strict_crd_schema(docs, strict_seldon_schema):
    found = sdeps(docs)
    assert {os.path.basename(os.path.dirname(d.path)) for d in found} == set(OVERLAYS)
    for d in found:
        assert schema_errors(strict_seldon_schema, d.body) == [], d


def test_servicemonitor_passes_its_schema(docs, servicemonitor_schema):
    found = by_kind(docs, SERVICE_MONITOR)
    assert found
    for d in found:
        assert schema_errors(servicemonitor_schema, d.body) == [], d


@pytest.fixture(scope="module")
def v2_schemas() -> dict:
    out = {}
    for key, name in V2_KINDS.items():
        with open(os.path.join(REPO_ROOT, "tests", "schemas", name)) as fh:
            out[key] = strict_objects(json.load(fh))
    return out


def test_open_inference_protocol_manifests_pass_their_strict_crd_schemas(docs, v2_schemas):
    for key in V2_KINDS:
        found = by_kind(docs, key)
        assert found, f"no {key[1]} under k8s/"
        for d in found:
            assert schema_errors(v2_schemas[key], d.body) == [], d


def test_the_v2_crd_schemas_reject_a_typo_and_a_wrong_type(docs, v2_schemas):
    isvc_key = ("serving.kserve.io/v1beta1", "InferenceService")
    isvc = copy.deepcopy(by_kind(docs, isvc_key)[0].body)
    isvc["spec"]["predictor"]["model"]["storageUrl"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageUrl" in e for e in schema_errors(v2_schemas[isvc_key], isvc))
    wrong = copy.deepcopy(by_kind(docs, isvc_key)[0].body)
    wrong["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    assert schema_errors(v2_schemas[isvc_key], wrong)
    model_key = ("mlops.seldon.io/v1alpha1", "Model")
    model = copy.deepcopy(by_kind(docs, model_key)[0].body)
    del model["spec"]["storageUri"]
    assert any("storageUri" in e for e in schema_errors(v2_schemas[model_key], model))


def test_v2_manifests_run_the_v2_image_on_its_ports_and_protocol(docs):
    runtime = by_kind(docs, ("serving.kserve.io/v1alpha1", "ServingRuntime"))[0].body
    isvc = by_kind(docs, ("serving.kserve.io/v1beta1", "InferenceService"))[0].body
    server = by_kind(docs, ("mlops.seldon.io/v1alpha1", "Server"))[0].body
    model = by_kind(docs, ("mlops.seldon.io/v1alpha1", "Model"))[0].body
    container = runtime["spec"]["containers"][0]
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    assert container["image"].startswith("cd4ml-serving-v2")
    # docker/mlserver/settings.json: REST, gRPC and metrics
    assert {p["containerPort"]: p["name"] for p in container["ports"]} == {8080: "http1", 8081: "h2c", 8082: "metrics"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert predictor["model"]["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert 0 < predictor["canaryTrafficPercent"] < 100
    assert isvc["metadata"]["name"] == model["metadata"]["name"] == "bike-demand"  # contract.MODEL_NAME
    assert server["spec"]["serverConfig"] == "mlserver" and model["spec"]["server"] == server["metadata"]["name"]
    assert set(model["spec"]["requirements"]) <= set(server["spec"]["capabilities"])
    assert server["spec"]["podSpec"]["containers"][0]["image"] == container["image"]


# ---------------------------------------------------------------- the validators can fail

def test_kubernetes_validate_rejects_a_misspelt_field_only_when_strict(kv, docs):
    rc, out, cases = kv
    assert rc != 0  # the CLI's exit status reports the failures below
    misspelt = out["neg-misspelt"]
    assert "did not validate" in misspelt and "revisionHistoryLimt" in misspelt, misspelt
    # Without strict the same typo passes: the reason the tests insist on --strict.
    import kubernetes_validate as kv_api
    kv_api.validate(cases["neg-misspelt"], K8S_VERSION, strict=False)
    with pytest.raises(kv_api.ValidationError):
        kv_api.validate(cases["neg-misspelt"], K8S_VERSION, strict=True)


def test_kubernetes_validate_rejects_a_misspelt_nested_field(kv):
    _, out, _ = kv
    assert "did not validate" in out["neg-nested"] and "readinesProbe" in out["neg-nested"], out["neg-nested"]


def test_kubernetes_validate_rejects_a_wrong_type(kv):
    _, out, _ = kv
    assert "did not validate" in out["neg-wrong-type"] and "'two'" in out["neg-wrong-type"], out["neg-wrong-type"]


def test_crd_schema_alone_misses_a_typo_that_the_strict_schema_catches(docs, seldon_schema, strict_seldon_schema):
    bad = copy.deepcopy(sdeps(docs)[0].body)
    bad["spec"]["predictors"][0]["trafic"] = bad["spec"]["predictors"][0].pop("traffic")
    assert schema_errors(seldon_schema, bad) == []          # the CRD schema as shipped: passes
    errors = schema_errors(strict_seldon_schema, bad)
    assert any("trafic" in e for e in errors), errors


@pytest.mark.parametrize("where", ["metadata", "spec", "predictor", "container", "graph", "graph-child", "hpa"])
def test_strict_crd_schema_rejects_misspelt_fields_everywhere(docs, strict_seldon_schema, where):
    body = copy.deepcopy(next(d.body for d in sdeps(docs) if "/ab/" in d.path))
    predictor = body["spec"]["predictors"][0]
    target = {
        "metadata": body["metadata"],
        "spec": body["spec"],
        "predictor": predictor,
        "container": predictor["componentSpecs"][0]["spec"]["containers"][0],
        "graph": predictor["graph"],
        "graph-child": predictor["graph"]["children"][0],
        "hpa": predictor["componentSpecs"][0]["hpaSpec"],
    }[where]
    target["misspelt_field"] = "x"
    errors = schema_errors(strict_seldon_schema, body)
    assert any("misspelt_field" in e for e in errors), errors


@pytest.mark.parametrize("path,value", [
    (("spec", "predictors", 0, "traffic"), "ninety"),
    (("spec", "predictors", 0, "componentSpecs", 0, "hpaSpec", "maxReplicas"), "5"),
    (("spec", "predictors", 0, "graph", "children"), {"name": "x"}),
    (("spec", "predictors", 0, "componentSpecs", 0, "spec", "containers", 0, "env"), "CD4ML_HOME=/x"),
])
def test_strict_crd_schema_rejects_wrong_types(docs, strict_seldon_schema, path, value):
    body = copy.deepcopy(sdeps(docs)[0].body)
    node = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    errors = schema_errors(strict_seldon_schema, body)
    assert any(path[-1] in e.split(":")[0] for e in errors), errors


def test_strict_crd_schema_rejects_a_missing_required_field(docs, strict_seldon_schema):
    body = copy.deepcopy(sdeps(docs)[0].body)
    del body["spec"]["predictors"][0]["graph"]
    assert any("'graph' is a required property" in e for e in schema_errors(strict_seldon_schema, body))


def test_servicemonitor_schema_rejects_a_typo_and_a_wrong_type(docs, servicemonitor_schema):
    good = by_kind(docs, SERVICE_MONITOR)[0].body
    typo = copy.deepcopy(good)
    typo["spec"]["endpoint"] = typo["spec"].pop("endpoints")
    errors = schema_errors(servicemonitor_schema, typo)
    assert any("endpoint" in e for e in errors), errors
    wrong = copy.deepcopy(good)
    wrong["spec"]["endpoints"][0]["interval"] = 15
    assert any("interval" in e for e in schema_errors(servicemonitor_schema, wrong))
    bad_duration = copy.deepcopy(good)
    bad_duration["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert any("interval" in e for e in schema_errors(servicemonitor_schema, bad_duration))


# ---------------------------------------------------------------- kustomize

def _kustomizations() -> list[str]:
    return sorted(glob.glob(os.path.join(K8S_DIR, "**", "kustomization.yaml"), recursive=True))


def test_kustomizations_reference_existing_files_and_cover_every_manifest():
    referenced = set()
    for path in _kustomizations():
        with open(path) as fh:
            kust = yaml.safe_load(fh)
        assert kust["kind"] == "Kustomization"
        for res in kust.get("resources", []):
            target = os.path.normpath(os.path.join(os.path.dirname(path), res))
            assert os.path.exists(target), f"{path}: resource {res} does not exist"
            referenced.add(target)
    unreferenced = [f for f in manifest_files() if f not in referenced]
    assert not unreferenced, f"manifests no kustomization applies: {unreferenced}"
    for overlay in OVERLAYS:
        assert os.path.exists(os.path.join(K8S_DIR, "overlays", overlay, "kustomization.yaml"))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH: cannot render the overlays")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_validates(overlay, rendered, kv, servicemonitor_schema):
    bodies = rendered[overlay]
    keys = [(b["apiVersion"], b["kind"]) for b in bodies]
    assert keys.count(SELDON) == 1 and keys.count(SERVICE_MONITOR) == 1
    assert all(k in CORE_KINDS | {SELDON, SERVICE_MONITOR, PROMETHEUS_RULE} for k in keys), keys
    assert all(b["metadata"].get("namespace") == "cd4ml" for b in bodies if b["kind"] != "Namespace")
    _, out, cases = kv
    names = [n for n in cases if n.startswith(overlay + "-")]
    assert len(names) == len([k for k in keys if k in CORE_KINDS])
    for name in names:
        assert_passed(cases[name], out[name])
    for body in bodies:
        if (body["apiVersion"], body["kind"]) == SERVICE_MONITOR:
            assert schema_errors(servicemonitor_schema, body) == []
        if (body["apiVersion"], body["kind"]) == SELDON:
            with open(SELDON_SCHEMA_PATH) as fh:
                assert schema_errors(strictify(json.load(fh)), body) == []


# ---------------------------------------------------------------- what the manifests mean

def _graph_nodes(node) -> list[dict]:
    return [node] + [n for child in node.get("children", []) for n in _graph_nodes(child)]


def _containers(predictor) -> list[dict]:
    return [c for spec in predictor.get("componentSpecs", []) for c in spec["spec"]["containers"]]


def _service(docs, name) -> dict:
    matches = [d.body for d in by_kind(docs, ("v1", "Service")) if d.name == name]
    assert len(matches) == 1, f"no single Service named {name}"
    return matches[0]


def test_every_seldondeployment_is_the_same_model_with_graph_and_containers_in_step(docs):
    for d in sdeps(docs):
        body = d.body
        assert body["metadata"]["name"] == "bike-demand", d  # one name: overlays replace each other
        for predictor in body["spec"]["predictors"]:
            nodes = _graph_nodes(predictor["graph"])
            containers = {c["name"]: c for c in _containers(predictor)}
            # Seldon runs a graph node from the container of the same name, unless the node is
            # a built-in implementation (the A/B router).
            models = [n for n in nodes if not n.get("implementation")]
            assert {n["name"] for n in models} == set(containers), (d, predictor["name"])
            for node in models:
                assert node["type"] == "MODEL"
                c = containers[node["name"]]
                assert SERVING_IMAGE in c["image"], (d, c["image"])
                assert c["resources"]["requests"] and c["resources"]["limits"], d
                assert c["readinessProbe"]["httpGet"] == {"path": "/health/status", "port": 9000}, d
                assert c["livenessProbe"]["httpGet"] == {"path": "/health/ping", "port": 9000}, d
                assert c["envFrom"] == [{"configMapRef": {"name": "cd4ml-config"}}], d
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert "CD4ML_SERVING_VERSION" in env, d
                cd4ml_env = {k for k in env if k.startswith("CD4ML_")}
                unread = cd4ml_env - serving_settings()
                assert not unread, f"{d}: the server reads none of {unread}"
                # Requests only: responses carry predictions, not features, for the detector.
                assert node.get("logger", {}).get("mode") == "request", (d, node["name"])
            for spec in predictor["componentSpecs"]:
                # Seldon's own HPA owns replicas; a fixed replica count beside it would fight it.
                assert spec["hpaSpec"]["maxReplicas"] >= spec["hpaSpec"].get("minReplicas", 1) >= 1
                assert "replicas" not in spec and "replicas" not in predictor, d
                assert spec["spec"]["serviceAccountName"] == "cd4ml-serving"


def test_traffic_adds_up_and_variants_have_their_shape(docs):
    by_overlay = {os.path.basename(os.path.dirname(d.path)): d.body for d in sdeps(docs)}
    for overlay, body in by_overlay.items():
        live = [p for p in body["spec"]["predictors"] if not p.get("shadow")]
        assert sum(p.get("traffic", 0) for p in live) == 100, overlay
    versions = {
        overlay: [c["env"][0]["value"] for p in body["spec"]["predictors"] for c in _containers(p)]
        for overlay, body in by_overlay.items()
    }
    assert versions["default"] == [""]  # newest version, hot-loaded
    canary = by_overlay["canary"]["spec"]["predictors"]
    assert len(canary) == 2 and sorted(p["traffic"] for p in canary) == [10, 90]
    assert versions["canary"] == ["CHAMPION_VERSION", ""]
    shadow = by_overlay["shadow"]["spec"]["predictors"]
    assert [p.get("shadow", False) for p in shadow] == [False, True]  # Seldon allows one shadow
    assert versions["shadow"] == ["CHAMPION_VERSION", ""]
    (ab,) = by_overlay["ab"]["spec"]["predictors"]
    router = ab["graph"]
    assert router["type"] == "ROUTER" and router["implementation"] == "RANDOM_ABTEST"
    ratio = {p["name"]: p for p in router["parameters"]}["ratioA"]
    assert ratio["type"] == "FLOAT" and 0.0 <= float(ratio["value"]) <= 1.0
    assert [c["name"] for c in router["children"]] == ["model-a", "model-b"]
    assert versions["ab"] == ["CHAMPION_VERSION", ""]


def test_request_logger_reaches_the_detector_service(docs):
    service = _service(docs, "cd4ml-detector")
    port = {p["name"]: p for p in service["spec"]["ports"]}["http"]
    expected = f"http://cd4ml-detector.cd4ml.svc.cluster.local:{port['port']}/api/v1.0/predictions"
    loggers = 0
    for d in sdeps(docs):
        for predictor in d.body["spec"]["predictors"]:
            for node in _graph_nodes(predictor["graph"]):
                if "logger" in node:
                    assert node["logger"]["url"] == expected, d
                    loggers += 1
    assert loggers >= len(OVERLAYS)
    deployment = next(x.body for x in by_kind(docs, ("apps/v1", "Deployment")) if x.name == "cd4ml-detector")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports[port["targetPort"]] == 9000  # seldon-core-microservice's REST port
    # The detector is our server: the serving image, run exactly as the image's CMD runs it.
    assert SERVING_IMAGE in container["image"]
    with open(os.path.join(REPO_ROOT, "docker", "serving.Dockerfile")) as fh:
        cmd_line = [ln for ln in fh if ln.startswith("CMD ")][-1]
    assert container["command"] == json.loads(cmd_line[4:])
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/status"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/ping"
    assert "replicas" not in deployment["spec"]  # its HPA owns the replica count


def test_servicemonitor_scrapes_the_model_and_detector_metrics(docs):
    (monitor,) = [d.body for d in by_kind(docs, SERVICE_MONITOR)]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [d.body for d in by_kind(docs, ("v1", "Service"))
                if selector.items() <= d.body["metadata"].get("labels", {}).items()]
    assert {s["metadata"]["name"] for s in selected} == {"bike-demand-metrics", "cd4ml-detector"}
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service in selected:
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports.get("model-metrics") == 6000, service["metadata"]["name"]  # seldon-core-microservice metrics
        assert endpoint_ports & set(ports)
    assert all(e["path"] == "/prometheus" for e in monitor["spec"]["endpoints"])
    # Seldon labels every pod it creates with seldon-deployment-id=<SeldonDeployment name>.
    assert _service(docs, "bike-demand-metrics")["spec"]["selector"] == {"seldon-deployment-id": "bike-demand"}


def test_hpa_targets_a_deployment_defined_here(docs):
    deployments = {d.name for d in by_kind(docs, ("apps/v1", "Deployment"))}
    for hpa in by_kind(docs, ("autoscaling/v2", "HorizontalPodAutoscaler")):
        ref = hpa.body["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, hpa
        assert hpa.body["spec"]["maxReplicas"] >= hpa.body["spec"]["minReplicas"]


def test_service_accounts_and_configmaps_referenced_exist(docs):
    accounts = {d.name for d in by_kind(docs, ("v1", "ServiceAccount"))}
    configmaps = {d.name: d.body for d in by_kind(docs, ("v1", "ConfigMap"))}
    pod_specs = [d.body["spec"]["template"]["spec"] for d in by_kind(docs, ("apps/v1", "Deployment"))]
    pod_specs += [d.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                  for d in by_kind(docs, ("batch/v1", "CronJob"))]
    pod_specs += [s["spec"] for d in sdeps(docs) for p in d.body["spec"]["predictors"] for s in p["componentSpecs"]]
    for pod in pod_specs:
        assert pod["serviceAccountName"] in accounts
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                assert "configMapRef" in ref or ref["secretRef"].get("optional"), ref  # a Secret is the user's
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps
            for env in c.get("env", []):
                key_ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if key_ref:
                    assert key_ref["key"] in configmaps[key_ref["name"]]["data"], env


def test_configmap_settings_are_ones_the_code_reads():
    (cm,) = [d.body for d in load_docs([os.path.join(K8S_DIR, "base", "configmap.yaml")])]
    fields = {"CD4ML_" + f.name.upper() for f in dataclasses.fields(PipelineConfig)}
    data: dict[str, str] = cm["data"]
    unknown = [k for k in data if k.startswith("CD4ML_") and k not in fields | serving_settings()]
    assert not unknown, f"CD4ML_* keys nothing reads: {unknown}"
    assert data["TF_USE_LEGACY_KERAS"] == "1"
    assert data["CD4ML_REGISTRY"].startswith("gs://")
    # The values parse the way the pipeline will parse them on the cluster.
    config = PipelineConfig.from_env({k: v for k, v in data.items() if k in fields})
    assert config.registry == data["CD4ML_REGISTRY"] and config.data_root.startswith("gs://")


SELDON_CORE_DIR = os.path.join(REPO_ROOT, ".venv-serving", "lib", "python3.10", "site-packages", "seldon_core")


@pytest.mark.skipif(not os.path.isdir(SELDON_CORE_DIR), reason=".venv-serving not built (make serving-setup)")
def test_paths_the_manifests_use_are_routes_of_the_installed_seldon_core(docs):
    """Probe, logger and scrape paths against seldon-core's own wrapper (the version the lock pins)."""
    with open(os.path.join(SELDON_CORE_DIR, "wrapper.py")) as fh:
        routes = set(re.findall(r"""@app\.route\(\s*["']([^"']+)["']""", fh.read()))
    with open(os.path.join(SELDON_CORE_DIR, "wrapper.py")) as fh:
        default_metrics = re.search(
            r'METRICS_ENDPOINT = os.environ.get\("PREDICTIVE_UNIT_METRICS_ENDPOINT", "([^"]+)"\)',
            fh.read()).group(1)
    used = set()
    # (The Deployments that serve: the rollout controller listens on nothing.)
    servers = [d for d in by_kind(docs, ("apps/v1", "Deployment")) if d.name != "cd4ml-rollout-controller"]
    pod_containers = [c for d in servers for c in d.body["spec"]["template"]["spec"]["containers"]]
    pod_containers += [c for d in sdeps(docs) for p in d.body["spec"]["predictors"] for c in _containers(p)]
    for c in pod_containers:
        used |= {c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]}
    for d in sdeps(docs):
        for p in d.body["spec"]["predictors"]:
            for node in _graph_nodes(p["graph"]):
                if "logger" in node:
                    used.add("/" + node["logger"]["url"].split("/", 3)[3])
    assert used and used <= routes, used - routes
    # Scrape path: the wrapper serves metrics at $PREDICTIVE_UNIT_METRICS_ENDPOINT (default below);
    # Seldon's operator sets /prometheus in the pods it manages, our own Deployment must set it.
    (monitor,) = [d.body for d in by_kind(docs, SERVICE_MONITOR)]
    (path,) = {e["path"] for e in monitor["spec"]["endpoints"]}
    for d in servers:
        for c in d.body["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("PREDICTIVE_UNIT_METRICS_ENDPOINT", default_metrics) == path, d


def test_the_drift_cronjob_runs_a_real_command_on_the_shared_log_sink(docs):
    """The CronJob's command parses with cd4ml's own CLI, never overlaps itself, reads the logs
    every replica writes (a gs:// prefix from the ConfigMap) and has what the dispatch needs."""
    from cd4ml import cli

    (job,) = [d for d in by_kind(docs, ("batch/v1", "CronJob")) if d.name == "cd4ml-drift-retrain"]
    spec = job.body["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["cd4ml", "drift-retrain"]
    args = cli.build_parser().parse_args(command[1:])
    assert args.once and args._main.__module__ == "cd4ml.commands.drift_retrain"
    (cm,) = [d.body for d in by_kind(docs, ("v1", "ConfigMap")) if d.name == "cd4ml-config"]
    assert cm["data"]["CD4ML_SERVING_LOG_DIR"].startswith("gs://")
    env = {e["name"]: e for e in container["env"]}
    assert env["CD4ML_GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "cd4ml-github"
    assert "/" in env["CD4ML_GITHUB_REPOSITORY"]["value"]
    assert env["CD4ML_METADATA_PATH"]["valueFrom"]["secretKeyRef"]  # the cluster's MLMD, never in a ConfigMap
    assert container["image"].endswith("cd4ml-pipeline:latest")


def test_the_experiment_verdict_cronjob_runs_the_real_verdict_command(docs):
    """The automatic verdict on the cluster: `cd4ml experiment verdict --once` as the CLI parses
    it, never overlapping itself, on the same ConfigMap (registry, gs:// logs) as the servers."""
    from cd4ml import cli

    (job,) = [d for d in by_kind(docs, ("batch/v1", "CronJob")) if d.name == "cd4ml-experiment-verdict"]
    assert job.body["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = job.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(container["command"][1:])
    assert (args.action, args.once, args._main.__module__) == ("verdict", True, "cd4ml.commands.experiment")
    assert container["envFrom"] == [{"configMapRef": {"name": "cd4ml-config"}}]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "cd4ml-mlmd"


def test_the_batch_scoring_cronjob_runs_cd4ml_predict_on_bucket_prefixes(docs):
    """Nightly `cd4ml predict` (pipelines/batch.py) from a gs:// prefix to a dated gs:// prefix, as
    the CLI parses it once the shell has filled in the variables, never overlapping itself."""
    import shlex

    from cd4ml import cli

    (job,) = [d for d in by_kind(docs, ("batch/v1", "CronJob")) if d.name == "cd4ml-batch-scoring"]
    assert job.body["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = job.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    script = container["args"][0].replace("$(date -u +%Y-%m-%d)", "2026-12-06")
    for name, value in env.items():
        script = script.replace(f'"${name}"', shlex.quote(value)).replace(f"${name}", value)
    words = shlex.split(script)
    assert words[:2] == ["exec", "cd4ml"]
    args = cli.build_parser().parse_args(words[2:])
    assert args._main.__module__ == "cd4ml.commands.predict"
    assert args.input.startswith("gs://") and args.output.startswith("gs://") and args.output.endswith("/2026-12-06")
    assert shlex.split(args.beam_args)[0] == "--runner=DirectRunner"
    assert container["image"].endswith("cd4ml-pipeline:latest")


def test_the_rollout_controller_runs_a_real_command_alone_with_the_shared_logs(docs):
    """One replica, never two at once, `cd4ml rollout watch` as cd4ml's own CLI parses it, the
    cluster's ML Metadata, and the shared log prefix the serving replicas write (the ConfigMap)."""
    from cd4ml import cli

    (controller,) = [d.body for d in by_kind(docs, ("apps/v1", "Deployment")) if d.name == "cd4ml-rollout-controller"]
    assert controller["spec"]["replicas"] == 1 and controller["spec"]["strategy"]["type"] == "Recreate"
    (container,) = controller["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(container["command"][1:])
    assert args.action == "watch" and args._main.__module__ == "cd4ml.commands.rollout" and not args.once
    env = {e["name"]: e for e in container["env"]}
    assert env["CD4ML_METADATA_PATH"]["valueFrom"]["secretKeyRef"]["name"] == "cd4ml-mlmd"
    (cm,) = [d.body for d in by_kind(docs, ("v1", "ConfigMap")) if d.name == "cd4ml-config"]
    assert cm["data"]["CD4ML_ROLLOUT"] == "guarded" and cm["data"]["CD4ML_SERVING_LOG_DIR"].startswith("gs://")

"""The Open Inference Protocol (V2) server: real MLServer (.venv-v2) with our runtime, over HTTP,
driven by two third-party clients (tritonclient.http and open-inference-openapi) and raw HTTP for
the error bodies.

Same contract as the Seldon v1 path (test_serving_http.py): the pushed holdout sample is answered
as recorded at push, `model_version` names the version that answered, every bad input gets a 4xx
naming the input and the rule while the server stays up, feedback joins by request id, a newly
pushed version hot-loads.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from cd4ml.contract import MODEL_NAME
from components import features
from serving import request
from serving.launch import running
from tests.conftest import copy_version
from tests.test_serving_core import GOOD, holdout

pytestmark = pytest.mark.slow

NUMPY_TYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


@pytest.fixture(scope="module")
def registry(span1_registry):
    return span1_registry


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    with running(registry, str(tmp_path_factory.mktemp("v2-logs")), protocol="v2", poll_seconds=0.5) as srv:
        yield srv


@pytest.fixture(scope="module")
def triton(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=server.url[len("http://"):])


def v2_inputs(rows, datatypes=None, column=False):
    """request.v2_inputs; `datatypes` overrides a feature's datatype, `column` sends shape [N, 1]."""
    out = request.v2_inputs(rows)
    for tensor in out:
        tensor["datatype"] = (datatypes or {}).get(tensor["name"], tensor["datatype"])
        if column:
            tensor["shape"], tensor["data"] = [len(rows), 1], [[v] for v in tensor["data"]]
    return out


def infer(server, inputs, **extra):
    return requests.post(server.predict_url, json={"inputs": inputs, **extra}, timeout=60)


def triton_inputs(rows):
    """tritonclient InferInputs for rows, one per feature, as JSON tensors (the protocol proper, no
    Triton binary extension)."""
    import tritonclient.http as httpclient

    tensors = []
    for f in features.FEATURES:
        tensor = httpclient.InferInput(f.name, [len(rows)], f.types.v2)
        tensor.set_data_from_numpy(np.array([r[f.name] for r in rows], dtype=NUMPY_TYPES[f.types.v2]),
                                   binary_data=False)
        tensors.append(tensor)
    return tensors


def test_health_and_metadata_with_tritonclient(triton):
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL_NAME)
    meta = triton.get_model_metadata(MODEL_NAME)
    assert meta["name"] == MODEL_NAME and meta["versions"] == ["1000"]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [(f.name, f.types.v2) for f in features.FEATURES]
    assert {"predictions", "outlier_score", "is_outlier"} == {o["name"] for o in meta["outputs"]}
    assert {i["datatype"] for i in meta["inputs"]} == {"INT64", "BYTES", "FP32"}


def test_tritonclient_infer_answers_the_holdout_as_recorded(triton, registry):
    import tritonclient.http as httpclient

    sample = holdout(registry)
    rows = [r["features"] for r in sample]
    inputs = triton_inputs(rows)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False)
               for n in ("predictions", "outlier_score", "is_outlier")]
    result = triton.infer(MODEL_NAME, inputs, outputs=outputs)
    response = result.get_response()
    assert response["model_name"] == MODEL_NAME and response["model_version"] == "1000"
    assert response["parameters"]["request_id"]
    np.testing.assert_allclose(result.as_numpy("predictions"), [r["expected"] for r in sample], rtol=1e-3, atol=1e-3)
    assert result.as_numpy("outlier_score").shape == (len(rows),) and result.as_numpy("is_outlier").dtype == bool


def test_any_numeric_datatype_and_column_shape_are_accepted(server):
    plain = infer(server, v2_inputs([GOOD]))
    widened = infer(server, v2_inputs([GOOD], {"temp": "FP64", "hr": "INT32", "season": "FP32"}, column=True))
    assert plain.status_code == widened.status_code == 200, widened.text
    assert plain.json()["outputs"][0]["data"] == pytest.approx(widened.json()["outputs"][0]["data"])


BAD_V2 = [
    ("out of range", lambda: v2_inputs([dict(GOOD, hum=1.5)]), 400, "'hum'"),
    ("unknown category", lambda: v2_inputs([dict(GOOD, weathersit="sunny")]), 400, "'weathersit'"),
    ("float for an integer feature", lambda: v2_inputs([dict(GOOD, hr=8.5)], {"hr": "FP32"}), 400, "'hr'"),
    ("numbers for a category name", lambda: v2_inputs([GOOD], {"mnth": "INT64"}), 400, "input 'mnth': datatype"),
    ("text for a number", lambda: v2_inputs([dict(GOOD, temp="warm")], {"temp": "BYTES"}), 400, "input 'temp'"),
    ("missing input", lambda: [i for i in v2_inputs([GOOD]) if i["name"] != "atemp"], 400, "'atemp'"),
    ("unknown input", lambda: v2_inputs([GOOD]) + [{"name": "casual", "datatype": "INT64", "shape": [1],
                                                     "data": [3]}], 400, "'casual'"),
    ("duplicated input", lambda: v2_inputs([GOOD]) + v2_inputs([GOOD])[:1], 400, "'season': given twice"),
    ("rows disagree", lambda: [dict(i, shape=[2], data=i["data"] * 2) if i["name"] == "temp" else i
                               for i in v2_inputs([GOOD])], 400, "input 'temp': 2 rows"),
    ("shape says otherwise", lambda: [dict(i, shape=[3]) if i["name"] == "hum" else i for i in v2_inputs([GOOD])],
     400, "input 'hum': shape says 3 rows"),
    ("matrix shape", lambda: [dict(i, shape=[1, 2]) if i["name"] == "hr" else i for i in v2_inputs([GOOD])],
     400, "shape must be [N] or [N, 1]"),
    ("too many rows", lambda: v2_inputs([GOOD] * 1001), 413, "limit"),
]


def test_the_one_pass_over_tensors_agrees_with_reading_then_checking():
    """v2_batch's pass over the tensors of a common request gives what read_v2 and
    check_and_encode give (encoding, rows, event times), and any other request, good or bad,
    goes their way: same answer, or the same refusal in the same words. In process: no server."""
    encoder = features.RowEncoder()
    several = [GOOD, dict(GOOD, hr=23, mnth="Dec", temp=1, weathersit="heavy rain/snow")]
    swap = [dict(i, data=[True]) if i["name"] == "holiday" else i for i in v2_inputs([GOOD])]
    variants = [v2_inputs([GOOD]), v2_inputs(several), list(reversed(v2_inputs(several))),
                v2_inputs(several, {"temp": "FP64", "hr": "INT32", "season": "FP32"}),
                v2_inputs(several, column=True), request.v2_inputs(several, event_times=["2011-07-04", None]),
                swap, [dict(i, shape=[True]) for i in v2_inputs([GOOD])], v2_inputs([]),
                [dict(i, data=[[v] for v in i["data"]]) for i in v2_inputs([GOOD])],
                [{k: v for k, v in i.items() if k != "datatype"} for i in v2_inputs([GOOD])],
                v2_inputs([GOOD])[:-1] + ["temp"], "not a list", []] + [make() for _, make, _, _ in BAD_V2]
    fast = 0
    for inputs in variants:
        try:
            rows = request.read_v2(inputs, request.DEFAULT_MAX_ROWS, encoder.spec)
            expected = request.check_and_encode(rows, encoder), rows, request.split_event_times(rows)
        except request.RequestError as err:
            expected = (err.status, err.message)
        try:
            batch = request.v2_batch(inputs, request.DEFAULT_MAX_ROWS, encoder)
            fast += batch._rows is None  # the one pass leaves the rows to be built when asked for
            got = batch.encoded, batch.rows, batch.event_times
        except request.RequestError as err:
            got = (err.status, err.message)
        assert len(got) == len(expected) and all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
                                                   for a, b in zip(got, expected)), (inputs, got, expected)
    assert fast == 4  # the plain, several-row, reordered and widened requests took the one pass


@pytest.mark.parametrize("name,make,status,needle", BAD_V2, ids=[b[0] for b in BAD_V2])
def test_bad_requests_get_a_4xx_naming_input_and_rule(server, name, make, status, needle):
    reply = infer(server, make())
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["error"], reply.json()
    assert infer(server, v2_inputs([GOOD])).status_code == 200  # and the server stays up


def test_requested_outputs_are_answered_in_the_order_asked(server, triton):
    """The protocol's `outputs`: only those asked for, refused by name when the model has none such."""
    import tritonclient.http as httpclient

    asked = [httpclient.InferRequestedOutput("predictions", binary_data=False)]
    only = triton.infer(MODEL_NAME, triton_inputs([GOOD]), outputs=asked)
    assert [o["name"] for o in only.get_response()["outputs"]] == ["predictions"]
    everything = infer(server, v2_inputs([GOOD])).json()
    assert only.as_numpy("predictions").tolist() == pytest.approx(everything["outputs"][0]["data"])

    reordered = infer(server, v2_inputs([GOOD]), outputs=[{"name": "is_outlier"}, {"name": "outlier_score"}]).json()
    assert [o["name"] for o in reordered["outputs"]] == ["is_outlier", "outlier_score"]
    assert reordered["outputs"][1]["data"] == pytest.approx(everything["outputs"][1]["data"])

    for outputs, needle in (([{"name": "predictions"}, {"name": "explanation"}], "output 'explanation': not an output"),
                            ([{"name": "predictions"}, {"name": "predictions"}], "requested twice")):
        reply = infer(server, v2_inputs([GOOD]), outputs=outputs)
        assert reply.status_code == 400 and needle in reply.json()["error"], reply.text
    metrics = requests.get(server.metrics_url, timeout=30).text
    assert 'rule="unknown_output"' in metrics and 'rule="duplicate_output"' in metrics


def test_tritonclient_surfaces_the_rule(triton):
    from tritonclient.utils import InferenceServerException

    inputs = triton_inputs([dict(GOOD, windspeed=1.5)])
    with pytest.raises(InferenceServerException, match=r"windspeed.*outside the range"):
        triton.infer(MODEL_NAME, inputs)


def test_open_inference_openapi_client(server):
    """A second, independently generated client of the protocol's OpenAPI description."""
    from open_inference.openapi.client import OpenInferenceClient
    from open_inference.openapi.errors.bad_request_error import BadRequestError
    from open_inference.openapi.types import InferenceRequest, RequestInput

    client = OpenInferenceClient(base_url=server.url)
    client.check_server_liveness()  # each raises on an answer other than 2xx
    client.check_model_readiness(MODEL_NAME)
    meta = client.read_model_metadata(MODEL_NAME)
    assert meta.name == MODEL_NAME and [i.name for i in meta.inputs] == features.FEATURE_NAMES
    request = InferenceRequest(inputs=[RequestInput(**i) for i in v2_inputs([GOOD, GOOD])])
    answer = client.model_infer(MODEL_NAME, request=request)
    assert answer.model_version == "1000" and answer.outputs[0].name == "predictions"
    assert len(answer.outputs[0].data.__root__) == 2
    bad = InferenceRequest(inputs=[RequestInput(**i) for i in v2_inputs([dict(GOOD, temp=3.0)])])
    with pytest.raises(BadRequestError):
        client.model_infer(MODEL_NAME, request=bad)


def test_feedback_joins_by_request_id(server):
    first = infer(server, v2_inputs([GOOD, GOOD])).json()
    rid = first["parameters"]["request_id"]
    reply = requests.post(server.feedback_url, json={"request_id": rid, "truth": [10, 20]}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["matched"] and body["version"] == "1000" and body["rows"] == 2 and body["live_mae"] > 0
    wrong = requests.post(server.feedback_url, json={"request_id": rid, "truth": [1]}, timeout=30)
    assert wrong.status_code == 400 and "'truth'" in wrong.json()["error"]
    unknown = requests.post(server.feedback_url, json={"request_id": "nope", "truth": [1]}, timeout=30)
    assert unknown.status_code == 400 and "request_id" in unknown.json()["error"]


def test_core_metrics_reach_prometheus(server):
    assert infer(server, v2_inputs([GOOD])).status_code == 200
    assert infer(server, v2_inputs([dict(GOOD, hum=1.5)])).status_code == 400
    text = requests.get(server.metrics_url, timeout=30).text
    assert 'cd4ml_requests_total{version="1000"}' in text
    assert 'cd4ml_rejected_requests_total{rule="out_of_range",version="1000"}' in text


def test_the_server_parses_http_with_httptools_not_h11(server):
    """uvicorn (under MLServer) takes its C parser only when httptools is importable and otherwise
    falls back silently to pure-Python h11, 0.1-0.16 ms more per request: the running server's
    process must have httptools' compiled parser mapped."""
    infer(server, v2_inputs([GOOD]))
    with open(f"/proc/{server.process.pid}/maps") as fh:
        mapped = {line.split()[-1] for line in fh if "/site-packages/" in line}
    assert any("/httptools/parser/" in path for path in mapped), sorted(mapped)[:20]


def test_explain_attributes_every_prediction_to_every_feature(server, registry):
    rows = [r["features"] for r in holdout(registry)[:3]]
    predicted = infer(server, v2_inputs(rows)).json()["outputs"][0]["data"]
    reply = requests.post(server.explain_url, json={"inputs": v2_inputs(rows, column=True)}, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1000"
    explanation = body["explanation"]
    for row, prediction in zip(explanation["rows"], predicted):
        assert sorted(row["attributions"]) == sorted(features.FEATURE_NAMES)
        assert row["prediction"] == pytest.approx(prediction, rel=1e-4)
        assert explanation["base_value"] + sum(row["attributions"].values()) == pytest.approx(prediction, rel=0.01)


@pytest.mark.parametrize("inputs,status,needle", [
    (lambda: v2_inputs([dict(GOOD, hum=1.5)]), 400, "'hum'"),
    (lambda: [i for i in v2_inputs([GOOD]) if i["name"] != "hr"], 400, "'hr'"),
    (lambda: v2_inputs([GOOD] * 101), 413, "100"),
    (lambda: None, 400, "'inputs'"),
], ids=["out of range", "missing input", "too many rows", "no inputs"])
def test_explain_refuses_what_infer_refuses(server, inputs, status, needle):
    reply = requests.post(server.explain_url, json={"inputs": inputs()}, timeout=60)
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["error"]
    assert requests.post(server.explain_url, data=b"{", timeout=60).status_code == 400
    assert infer(server, v2_inputs([GOOD])).status_code == 200


def test_a_pushed_version_hot_loads(server, registry):
    copy_version(registry, "1000", registry, "2000")
    versions = set()
    for _ in range(240):
        versions.add(infer(server, v2_inputs([GOOD])).json()["model_version"])
        if "2000" in versions:
            break
        time.sleep(0.25)
    assert "2000" in versions


def test_batch_scoring_answers_as_the_server_does_and_rejects_with_the_rule(server, registry, tmp_path, capsys):
    """`cd4ml predict` (Beam RunInference, pipelines/batch.py) on a CSV of the holdout rows and one
    bad row: the same predictions as the V2 server for the same version, each line naming it, and
    the bad row in the rejects with its field and rule."""
    import csv
    import glob
    import json

    from cd4ml import cli

    rows = [r["features"] for r in holdout(registry)][:30]
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=features.FEATURE_NAMES + ["bikers"])
        writer.writeheader()
        writer.writerows(dict(r, bikers=1) for r in rows)
        writer.writerow(dict(rows[0], hr=24, bikers=1))
    assert cli.main(["predict", "--registry", registry, "--version", "1000", str(path), str(tmp_path / "out")]) == 0
    assert "scored 30 rows, rejected 1" in capsys.readouterr().out
    lines = [json.loads(line) for f in sorted(glob.glob(str(tmp_path / "out" / "predictions-*.jsonl")))
             for line in open(f)]
    lines.sort(key=lambda line: int(line["where"].rsplit(":", 1)[1]))
    assert {line["version"] for line in lines} == {"1000"} and [line["features"] for line in lines] == rows
    answer = infer(server, v2_inputs(rows))
    assert answer.status_code == 200, answer.text
    served = next(o["data"] for o in answer.json()["outputs"] if o["name"] == "predictions")
    np.testing.assert_allclose([line["prediction"] for line in lines], served, rtol=1e-4, atol=1e-3)
    (reject,) = [json.loads(line) for f in glob.glob(str(tmp_path / "out" / "rejects-*.jsonl")) for line in open(f)]
    assert reject["where"].endswith(":32") and reject["problem"].startswith("feature 'hr': unknown category 24")

    # --explain: every feature's attribution, adding up to the prediction from the base value.
    few = tmp_path / "few.csv"
    few.write_text("".join(open(path).readlines()[:4]))
    assert cli.main(["predict", "--registry", registry, "--version", "1000", "--explain", str(few),
                     str(tmp_path / "explained")]) == 0
    explained = [json.loads(line) for f in glob.glob(str(tmp_path / "explained" / "predictions-*.jsonl"))
                 for line in open(f)]
    assert len(explained) == 3
    by_where = {line["where"]: line for line in lines}
    for line in explained:
        assert set(line["attributions"]) == set(features.FEATURE_NAMES)
        assert line["base_value"] + sum(line["attributions"].values()) == pytest.approx(line["prediction"], abs=1e-2)
        assert line["prediction"] == pytest.approx(by_where[line["where"].replace("few.csv", "rows.csv")]["prediction"],
                                                   rel=1e-4, abs=1e-3)


@pytest.fixture(scope="module")
def triton_grpc(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")


def grpc_inputs(rows, overrides=None):
    """tritonclient.grpc InferInputs with its defaults (BYTES go as bytes_contents)."""
    import tritonclient.grpc as grpcclient

    tensors = []
    for f in features.FEATURES:
        tensor = grpcclient.InferInput(f.name, [len(rows)], f.types.v2)
        values = (overrides or {}).get(f.name) or [r[f.name] for r in rows]
        tensor.set_data_from_numpy(np.array(values, dtype=NUMPY_TYPES[f.types.v2]))
        tensors.append(tensor)
    return tensors


def test_tritonclient_grpc_infers_checks_and_refuses_as_rest_does(triton_grpc, registry):
    """gRPC on the port the server was given: metadata, the holdout answered as recorded (strings
    arrive as bytes and are read as UTF-8), and refusals as INVALID_ARGUMENT naming input and rule."""
    from tritonclient.utils import InferenceServerException

    assert triton_grpc.is_server_ready() and triton_grpc.is_model_ready(MODEL_NAME)
    meta = triton_grpc.get_model_metadata(MODEL_NAME, as_json=True)
    assert [i["name"] for i in meta["inputs"]] == [f.name for f in features.FEATURES]
    sample = holdout(registry)
    result = triton_grpc.infer(MODEL_NAME, grpc_inputs([r["features"] for r in sample]))
    np.testing.assert_allclose(result.as_numpy("predictions"), [r["expected"] for r in sample], rtol=1e-3, atol=1e-3)
    assert result.get_response(as_json=True)["model_version"] == meta["versions"][0]  # (a test pushed 2000)
    for overrides, needle in (({"weathersit": ["sandstorm"]}, "feature 'weathersit': unknown category 'sandstorm'"),
                              ({"mnth": [b"\xffJan"]}, "input 'mnth': value 0 is not UTF-8 text")):
        with pytest.raises(InferenceServerException) as refused:
            triton_grpc.infer(MODEL_NAME, grpc_inputs([GOOD], overrides))
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and needle in refused.value.message()
    assert triton_grpc.is_server_live()


def test_tritonclient_http_with_its_defaults_binary_tensors_in_and_out(triton, registry):
    """tritonclient.http's defaults: inputs as binary tensors, every output asked back in binary
    (the binary tensor data extension, serving/v2_server.py); and one output asked in binary."""
    import tritonclient.http as httpclient

    sample = holdout(registry)
    rows = [r["features"] for r in sample]
    inputs = []
    for f in features.FEATURES:
        tensor = httpclient.InferInput(f.name, [len(rows)], f.types.v2)
        tensor.set_data_from_numpy(np.array([r[f.name] for r in rows], dtype=NUMPY_TYPES[f.types.v2]))
        inputs.append(tensor)
    result = triton.infer(MODEL_NAME, inputs)
    np.testing.assert_allclose(result.as_numpy("predictions"), [r["expected"] for r in sample], rtol=1e-3, atol=1e-3)
    assert result.as_numpy("is_outlier").dtype == bool and result.as_numpy("outlier_score").dtype == np.float64
    assert result.get_response()["model_version"] == triton.get_model_metadata(MODEL_NAME)["versions"][0]
    one = triton.infer(MODEL_NAME, inputs, outputs=[httpclient.InferRequestedOutput("predictions", binary_data=True)])
    assert [o["name"] for o in one.get_response()["outputs"]] == ["predictions"]
    np.testing.assert_allclose(one.as_numpy("predictions"), result.as_numpy("predictions"))
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]


BINARY_HEAD = b'{"inputs": [{"name": "hr", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 9}}]}'


@pytest.mark.parametrize("body, headers, needle", [
    (b'{"inputs": [', {}, "the body is not JSON"),
    (b'{"inputs": [{"name": "temp", "datatype": "FP32", "shape": [1], "data": [NaN]}]}', {},
     "input 'temp': NaN and Infinity are not JSON numbers"),
    (b'{"inputs": "\xff"}', {}, "the body is not UTF-8"),
    (b'{"inputs": [{"name": "temp", "datatype": "FP32", "shape": "one", "data": [1]}]}', {}, "field 'inputs.0.shape'"),
    (BINARY_HEAD + b"xxxx", {"Inference-Header-Content-Length": str(len(BINARY_HEAD))},
     "input 'hr': binary_data_size 9 does not fit the body"),
])
def test_refusals_are_in_the_protocols_error_format(server, body, headers, needle):
    reply = requests.post(server.predict_url, data=body, timeout=30,
                          headers={"Content-Type": "application/json", **headers})
    assert reply.status_code == 400 and needle in reply.json()["error"], reply.text
    assert requests.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 200


def test_two_worker_processes_answer_join_feedback_and_add_up_their_metrics(registry, tmp_path):
    """`cd4ml serve --workers 2`: two complete servers accepting on one port (serving/v2_workers.py),
    each with its own model service (nothing is shared at module level). Feedback joins whichever
    worker answered (through the shared prediction log), refusals read as with one process,
    /metrics adds the workers up, and the health probes answer with the protocol's bodies."""
    import concurrent.futures
    import glob
    import os

    prometheus = tmp_path / "prometheus"
    with running(registry, str(tmp_path / "logs"), protocol="v2", workers=2, poll_seconds=0.5,
                 base_env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(prometheus))) as srv:
        body = {"inputs": v2_inputs([GOOD, GOOD])}
        cpu_before = srv.cpu_seconds()  # the whole group's: what the benchmark divides by requests
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.post(srv.predict_url, json=body, timeout=60), range(40)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert srv.cpu_seconds() > cpu_before
        (version,) = {a.json()["model_version"] for a in answers}  # (another test may have pushed 2000)
        ids = [a.json()["parameters"]["request_id"] for a in answers]
        joined = [requests.post(srv.feedback_url, json={"request_id": i, "truth": [1, 2]}, timeout=60) for i in ids]
        assert all(j.status_code == 200 and j.json()["matched"] for j in joined), [j.text for j in joined]
        bad = infer(srv, v2_inputs([dict(GOOD, mnth="Smarch")]))
        assert bad.status_code == 400 and bad.json()["error"].startswith("row 0: feature 'mnth'"), bad.text
        assert requests.get(f"{srv.url}/v2/health/live", timeout=30).json() == {"live": True}
        assert requests.get(f"{srv.url}/v2/health/ready", timeout=30).json() == {"ready": True}
        metrics = requests.get(srv.metrics_url, timeout=30).text
        totals = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                  if line.startswith(("cd4ml_requests_total{", "cd4ml_feedback_rows_total{"))}
        assert totals == {f'cd4ml_requests_total{{version="{version}"}}': 40.0,
                          f'cd4ml_feedback_rows_total{{version="{version}"}}': 80.0}
        writers = {os.path.basename(f).rsplit("_", 1)[1] for f in glob.glob(str(prometheus / "counter_*.db"))}
        assert len(writers) >= 2, writers  # both workers answered

        import tritonclient.grpc as grpcclient  # gRPC shares its port between the workers too

        grpc = grpcclient.InferenceServerClient(url=f"127.0.0.1:{srv.grpc_port}")
        assert grpc.infer(MODEL_NAME, grpc_inputs([GOOD])).get_response(as_json=True)["model_version"] == version

        # A worker killed (the OOM killer, say) is replaced; the other answers meanwhile.
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == srv.process.pid]
        assert len(workers) == 2, workers
        assert sorted(srv.pids()) == sorted([srv.process.pid, *workers])  # what memory and CPU are summed over
        os.kill(workers[0], 9)
        assert all(infer(srv, body["inputs"]).status_code == 200 for _ in range(20))
        deadline = time.monotonic() + 120
        while srv.log().count("started (pid") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert srv.log().count("started (pid") == 3 and srv.alive(), srv.log()[-2000:]
        assert all(infer(srv, body["inputs"]).status_code == 200 for _ in range(20))


def test_the_runtime_under_mlservers_own_parallel_workers(registry, tmp_path):
    """Seldon Core v2 runs MLServer with its default settings: one parallel inference worker, the
    model in a process of its own, every call pickled to it. Infer, feedback (the endpoint's body,
    not a Request), explain, a refusal read as with one process, and the runtime's metrics."""
    with running(registry, str(tmp_path / "logs"), protocol="v2", parallel_workers=1, poll_seconds=0.5) as srv:
        answer = infer(srv, v2_inputs([GOOD, GOOD]))
        assert answer.status_code == 200, answer.text
        rid = answer.json()["parameters"]["request_id"]
        joined = requests.post(srv.feedback_url, json={"request_id": rid, "truth": [1, 2]}, timeout=60)
        assert joined.status_code == 200 and joined.json()["matched"], joined.text
        not_an_object = requests.post(srv.feedback_url, json=[1], timeout=60)
        assert not_an_object.status_code == 400 and "field 'body'" in not_an_object.json()["error"]
        explained = requests.post(srv.explain_url, json={"inputs": v2_inputs([GOOD])}, timeout=60)
        assert explained.status_code == 200 and explained.json()["explanation"]["rows"], explained.text
        bad = infer(srv, v2_inputs([dict(GOOD, mnth="Smarch")]))
        assert bad.status_code == 400 and bad.json()["error"].startswith("row 0: feature 'mnth'"), bad.text
        assert "Traceback" not in srv.log().split("Smarch")[-1]  # a refusal is one log line, not an error
        metrics = requests.get(srv.metrics_url, timeout=30).text
        assert any(line.startswith("cd4ml_requests_total{") and line.endswith(" 1.0") for line in metrics.splitlines())


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_kserves_own_client_with_its_defaults(server, registry):
    """kserve's InferenceRESTClient (its own environment, .venv-kserve): health (the protocol's
    JSON bodies, which it reads), the holdout answered as recorded with its default binary tensors
    and with JSON tensors, and refusals that name the input and the rule."""
    import json
    import os
    import subprocess

    from pipelines.config import REPO_ROOT

    python = os.path.join(REPO_ROOT, ".venv-kserve", "bin", "python")
    assert os.path.exists(python), f"{python} is not built (make serving-setup)"
    sample = holdout(registry)
    job = {"rows": [r["features"] for r in sample], "datatypes": {f.name: f.types.v2 for f in features.FEATURES},
           "bad": [{"weathersit": "sandstorm"}, {"hr": 24}]}
    proc = subprocess.run([python, os.path.join(REPO_ROOT, "tests", "kserve_client.py"), server.url, MODEL_NAME],
                          input=json.dumps(job), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["live"] is True and out["ready"] is True and out["model_ready"] is True
    for mode in ("binary", "json"):
        np.testing.assert_allclose(out[mode]["predictions"], [r["expected"] for r in sample], rtol=1e-3, atol=1e-3)
        assert len(out[mode]["request_id"]) == 32 and len(out[mode]["is_outlier"]) == len(sample)
    assert out["binary"]["request_id"] != out["json"]["request_id"] and out["metadata"]["name"] == MODEL_NAME
    (category, hour) = out["refused"]
    assert category["status"] == 400 and "feature 'weathersit': unknown category 'sandstorm'" in category["error"]
    assert hour["status"] == 400 and "feature 'hr'" in hour["error"] and category["error"] in category["message"]
    assert requests.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 200

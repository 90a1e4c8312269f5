"""A local stand-in for the Kubeflow Pipelines v2 REST API (the calls kfp.Client makes).

Bound to 127.0.0.1 only. It records every request and answers like the KFP API server does
(v2beta1 JSON): experiments, pipeline upload / versions, runs. Runs finish in `final_state`.
"""

from __future__ import annotations

import cgi
import io
import json
import uuid
from typing import Dict, List

from cd4ml.demo.json_server import LocalJsonServer

API = "/apis/v2beta1"


class FakeKfp(LocalJsonServer):
    def __init__(self, final_state: str = "SUCCEEDED"):
        super().__init__()
        self.final_state = final_state
        self.experiments: Dict[str, Dict] = {}
        self.pipelines: Dict[str, Dict] = {}
        self.versions: Dict[str, List[Dict]] = {}
        self.uploads: List[Dict] = []      # {"kind", "name", "pipeline_id", "content"}
        self.runs: Dict[str, Dict] = {}
        self.run_polls: Dict[str, int] = {}
        self.recurring: Dict[str, Dict] = {}
        self.killed: List[Dict] = []  # runs deleted with their recurring run

    @property
    def host(self) -> str:
        return self.url

    def record(self, method, url, body, headers) -> Dict:
        return {"method": method, "path": url.path, "query": url.query, "authorization": headers.get("Authorization")}

    # --- API ---------------------------------------------------------------------------------

    def _new_version(self, pipeline_id: str, name: str, content: str) -> Dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": uuid.uuid4().hex,
                   "display_name": name, "created_at": "2026-01-01T00:00:00Z"}
        self.versions.setdefault(pipeline_id, []).insert(0, version)
        return version

    def handle(self, method: str, path: str, query: Dict[str, List[str]], body: bytes, headers) -> (int, Dict):
        q = {k: v[0] for k, v in query.items()}
        if path == f"{API}/healthz" and method == "GET":
            return 200, {"multi_user": False}
        if path == f"{API}/experiments" and method == "GET":
            name = _filter_value(q.get("filter"))
            found = [e for e in self.experiments.values() if name is None or e["display_name"] == name]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if path == f"{API}/experiments" and method == "POST":
            data = json.loads(body)
            exp = {"experiment_id": uuid.uuid4().hex, "display_name": data["display_name"]}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == f"{API}/pipelines" and method == "GET":
            name = _filter_value(q.get("filter"))
            found = [p for p in self.pipelines.values() if name is None or p["display_name"] == name]
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if path == f"{API}/pipelines/upload" and method == "POST":
            content = _multipart_file(body, headers)
            pipeline = {"pipeline_id": uuid.uuid4().hex, "display_name": q["name"],
                        "description": q.get("description", "")}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self.uploads.append({"kind": "pipeline", "name": q["name"],
                                 "pipeline_id": pipeline["pipeline_id"], "content": content})
            self._new_version(pipeline["pipeline_id"], q["name"], content)
            return 200, pipeline
        if path == f"{API}/pipelines/upload_version" and method == "POST":
            content = _multipart_file(body, headers)
            if q.get("pipelineid") not in self.pipelines:
                return 404, {"error": "no such pipeline"}
            self.uploads.append({"kind": "version", "name": q["name"], "pipeline_id": q["pipelineid"],
                                 "content": content})
            return 200, self._new_version(q["pipelineid"], q["name"], content)
        if path.startswith(f"{API}/pipelines/") and path.endswith("/versions") and method == "GET":
            pipeline_id = path.split("/")[-2]
            versions = self.versions.get(pipeline_id, [])
            size = int(q.get("page_size", len(versions) or 1))
            return 200, {"pipeline_versions": versions[:size], "total_size": len(versions)}
        if path == f"{API}/runs" and method == "POST":
            data = json.loads(body)
            run = dict(data, run_id=uuid.uuid4().hex, state="PENDING")
            self.runs[run["run_id"]] = run
            return 200, run
        if path.startswith(f"{API}/runs/") and method == "GET":
            run_id = path.rsplit("/", 1)[-1]
            if run_id not in self.runs:
                return 404, {"error": "no such run"}
            self.run_polls[run_id] = self.run_polls.get(run_id, 0) + 1
            run = self.runs[run_id]
            run["state"] = "RUNNING" if self.run_polls[run_id] < 2 else self.final_state
            return 200, run
        if path == f"{API}/recurringruns" and method == "POST":
            data = json.loads(body)
            recurring = dict(data, recurring_run_id=uuid.uuid4().hex, status="ENABLED")
            self.recurring[recurring["recurring_run_id"]] = recurring
            return 200, recurring
        if path == f"{API}/recurringruns" and method == "GET":
            found = [r for r in self.recurring.values()
                     if not q.get("experiment_id") or r.get("experiment_id") == q["experiment_id"]]
            return 200, ({"recurringRuns": found, "total_size": len(found)} if found else {})
        if path.startswith(f"{API}/recurringruns/") and path.endswith(":disable") and method == "POST":
            recurring_id = path.rsplit("/", 1)[-1][:-len(":disable")]
            if recurring_id not in self.recurring:
                return 404, {"error": "no such recurring run"}
            self.recurring[recurring_id]["mode"] = "DISABLE"
            return 200, {}
        if path.startswith(f"{API}/recurringruns/") and method == "DELETE":
            recurring_id = path.rsplit("/", 1)[-1]
            if self.recurring.pop(recurring_id, None) is None:
                return 404, {"error": "no such recurring run"}
            # As KFP does: the runs it started are owned by it, and go with it.
            for run_id in [r for r, run in self.runs.items() if run.get("recurring_run_id") == recurring_id]:
                self.killed.append(self.runs.pop(run_id))
            return 200, {}
        if path == f"{API}/runs" and method == "GET":
            found = list(self.runs.values())
            for predicate in json.loads(q.get("filter") or "{}").get("predicates", []):
                key, value = predicate["key"], predicate.get("string_value") or predicate.get("stringValue")
                found = [r for r in found if r.get(key) == value]
            return 200, ({"runs": found, "total_size": len(found)} if found else {})
        return 404, {"error": f"fake KFP: {method} {path} not implemented"}

    def trigger(self, recurring_run_id: str, state: str = "RUNNING") -> Dict:
        """A run the recurring run started, as KFP's scheduler would."""
        run = {"run_id": uuid.uuid4().hex, "recurring_run_id": recurring_run_id, "state": state,
               "display_name": self.recurring[recurring_run_id]["display_name"]}
        self.runs[run["run_id"]] = run
        return run



def _filter_value(raw):
    if not raw:
        return None
    for predicate in json.loads(raw).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value") or predicate.get("stringValue")
    return None


def _multipart_file(body: bytes, headers) -> str:
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": headers["Content-Type"],
               "CONTENT_LENGTH": str(len(body))}
    form = cgi.FieldStorage(fp=io.BytesIO(body), environ=environ, keep_blank_values=True)
    return form["uploadfile"].file.read().decode()


def job_file(path: str, data_root: str, registry: str, commit: str = "abc123") -> str:
    """A compiled job as far as submitting reads it (its name, commit, root, parameters, and the
    data root and registry its tasks read), written to `path`."""
    def constant(value):
        return {"runtimeValue": {"constant": value}}

    tasks = {"CsvExampleGen": {"inputs": {"parameters": {"input_base": constant(data_root)}}},
             "ServingBaseline": {"inputs": {"parameters": {"registry": constant(registry)}}}}
    job = {"displayName": "cd4ml-bikeshare", "labels": {"cd4ml-git-commit": commit},
           "pipelineSpec": {"pipelineInfo": {"name": "cd4ml-bikeshare"}, "root": {"dag": {"tasks": tasks}}},
           "runtimeConfig": {"gcsOutputDirectory": "gs://cluster/root",
                             "parameterValues": {"range_config": "", "eval_config": "{}"}}}
    with open(path, "w") as fh:
        json.dump(job, fh)
    return path

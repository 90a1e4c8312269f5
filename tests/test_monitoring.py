"""The monitoring manifests: the PrometheusRule against the Prometheus Operator's own CRD schema
(vendored, made strict), its rules through Prometheus's own `promtool check rules` and `promtool
test rules` (each alert fires on the series that should fire it, and not on a healthy service),
and the Grafana dashboard; every metric either names is one the servers export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from pipelines.config import REPO_ROOT
from tests.test_k8s_manifests import schema_errors, strict_objects

BASE = os.path.join(REPO_ROOT, "k8s", "base")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def load(name):
    with open(os.path.join(BASE, name)) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def rule():
    return load("prometheusrule.yaml")


@pytest.fixture(scope="module")
def schema():
    with open(os.path.join(REPO_ROOT, "tests", "schemas", "prometheusrule-v1.openapi.json")) as fh:
        return strict_objects(json.load(fh))


def test_the_rule_passes_the_strict_crd_schema_which_refuses_a_typo_and_a_wrong_type(rule, schema):
    assert schema_errors(schema, rule) == []
    typo = json.loads(json.dumps(rule))
    typo["spec"]["groups"][0]["rules"][0]["exprs"] = typo["spec"]["groups"][0]["rules"][0].pop("expr")
    assert any("exprs" in e for e in schema_errors(schema, typo))
    wrong = json.loads(json.dumps(rule))
    wrong["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert any("does not match" in e for e in schema_errors(schema, wrong))


@pytest.fixture(scope="module")
def rules_file(rule, tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def promtool(*args, cwd=None):
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_checks_the_rules(rules_file):
    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


def series(name, values, **labels):
    text = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{text}}}", "values": values}


def test_each_alert_fires_on_its_series_and_none_on_a_healthy_service(rules_file):
    """promtool's unit tests: per minute, 100 answers of version 7 and (below) what goes wrong."""
    ns, v = {"namespace": "cd4ml"}, {"version": "7"}
    healthy = [series("cd4ml_requests_total", "0+6000x60", **ns, **v),
               series("cd4ml_rows_total", "0+6000x60", **v),
               series("cd4ml_rejected_requests_total", "0+60x60", **ns, **v, rule="unknown_category"),
               series("cd4ml_outliers_total", "0+60x60", **v),
               series("cd4ml_drift", "0x60", **v),
               series("cd4ml_live_mae", "30x60", **v),
               series("cd4ml_versions_refused_total", "0x60", **v)]
    healthy += [series("cd4ml_request_duration_seconds_bucket", f"0+{n}x60", **v, le=le)
                for le, n in (("0.01", 5900), ("0.25", 6000), ("+Inf", 6000))]
    failing = [series("cd4ml_requests_total", "0+6000x60", **ns, **v),
               series("cd4ml_rows_total", "0+6000x60", **v),
               series("cd4ml_rejected_requests_total", "0+1200x60", **ns, **v, rule="unknown_category"),
               series("cd4ml_outliers_total", "0+1200x60", **v),
               series("cd4ml_drift", "1x60", **v),
               series("cd4ml_live_mae", "120x60", **v),
               series("cd4ml_versions_refused_total", "0x40 1x20", version="8")]
    failing += [series("cd4ml_request_duration_seconds_bucket", f"0+{n}x60", **v, le=le)
                for le, n in (("0.01", 3000), ("0.25", 5000), ("1", 6000), ("+Inf", 6000))]
    alerts = ["Cd4mlRefusingRequests", "Cd4mlSlowAnswers", "Cd4mlDrift", "Cd4mlOutlierRateHigh", "Cd4mlLiveMaeHigh",
              "Cd4mlVersionRefused"]
    expected = {
        "Cd4mlRefusingRequests": [{"exp_labels": {"severity": "warning", "namespace": "cd4ml"}}],
        "Cd4mlSlowAnswers": [{"exp_labels": {"severity": "warning", "version": "7"}}],
        "Cd4mlDrift": [{"exp_labels": {"severity": "warning", "version": "7"}}],
        "Cd4mlOutlierRateHigh": [{"exp_labels": {"severity": "warning", "version": "7"}}],
        "Cd4mlLiveMaeHigh": [{"exp_labels": {"severity": "critical", "version": "7"}}],
        "Cd4mlVersionRefused": [{"exp_labels": {"severity": "critical", "version": "8"}}],
    }
    fired = {name: [dict(e, exp_annotations=dict(zip(("summary", "description"), RENDERED[name]))) for e in found]
             for name, found in expected.items()}
    tests = {"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": healthy,
         "alert_rule_test": [{"eval_time": "45m", "alertname": a, "exp_alerts": []} for a in alerts]},
        {"interval": "1m", "input_series": failing,
         "alert_rule_test": [{"eval_time": "45m", "alertname": a, "exp_alerts": fired[a]} for a in alerts]}]}
    (rules_file.parent / "tests.yaml").write_text(yaml.safe_dump(tests))
    ran = promtool("test", "rules", "tests.yaml", cwd=str(rules_file.parent))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS" in ran.stdout


# The annotations each alert renders on the failing series (promtool compares them too).
RENDERED = {
    "Cd4mlRefusingRequests": ("The model servers refuse more than 5% of requests",
                              "16.67% of requests were refused over 5 minutes (bad inputs, or a version whose "
                              "schema differs from what clients send)."),
    "Cd4mlSlowAnswers": ("p99 latency of version 7 is above 250 ms", "p99 over 5 minutes: 955ms."),
    "Cd4mlDrift": ("Production traffic has drifted from what version 7 was trained on",
                   "The drift detector fitted by the pipeline flags the latest windows; the drift trigger "
                   "retrains once enough labelled rows arrive."),
    "Cd4mlOutlierRateHigh": ("More than 10% of rows answered by version 7 are outliers",
                             "20% of rows over 15 minutes."),
    "Cd4mlLiveMaeHigh": ("Live MAE of version 7 is above the blessing bound (90 bikes/hour)",
                         "Live MAE from feedback: 120. Roll back with `cd4ml rollback` or wait for the retrain."),
    "Cd4mlVersionRefused": ("The servers refused to load version 8",
                            "The previous version keeps serving; the server log says why (a missing file, a schema "
                            "that does not load)."),
}


def exported_metrics() -> set:
    """The metric names the servers export, as Prometheus shows them (serving/telemetry.py's names;
    a timer is a histogram: _bucket, _sum, _count)."""
    text = ""
    for module in ("telemetry.py", "feedback.py", "inference.py", "repository.py"):
        with open(os.path.join(REPO_ROOT, "serving", module)) as fh:
            text += fh.read()
    names = set(re.findall(r'\.(?:add|set)\(\s*"(cd4ml_\w+)"', text))
    timers = set(re.findall(r'\.observe\("(cd4ml_\w+)"', text))
    assert "cd4ml_requests_total" in names and "cd4ml_request_duration_seconds" in timers
    return names | {t + suffix for t in timers for suffix in ("_bucket", "_sum", "_count")}


def test_the_rules_and_the_dashboard_use_only_metrics_the_servers_export(rule):
    exported = exported_metrics()
    in_rules = set(re.findall(r"cd4ml_\w+", json.dumps(rule["spec"])))
    dashboard = json.loads(load("grafana-dashboard.yaml")["data"]["cd4ml-serving.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    in_dashboard = set(re.findall(r"cd4ml_\w+", " ".join(exprs)))
    assert in_rules and in_dashboard
    assert in_rules <= exported, in_rules - exported
    assert in_dashboard <= exported, in_dashboard - exported
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"]) >= 8

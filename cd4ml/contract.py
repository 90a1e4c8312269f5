"""The contract between the pipeline, the registry, the server and the tools, without TensorFlow.

Every name that two of those parts must agree on lives here once: the files of a model version in
the registry, the signatures and output of the SavedModel, the metric names the Evaluator writes
and the tools read, and where and how the server writes its logs. The pipeline writes by these
names, the server and the command line read by them; importing this module costs nothing (no
TensorFlow, no TFX), so the server, the CLI and the Cloud Function can all use it.

Feature names, kinds and domains are not here: they live in `components/features.py`, the single
source of truth for the data.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
from typing import Dict, Iterator, List

# --- a model version in the registry: <registry>/<version>/ ---------------------------------------
# Written last by ReleaseBundle: a version without it is incomplete and is never served.
MANIFEST = "MANIFEST.json"
# Eval rows with the prediction the SavedModel gave at push time; the server replays them at load.
HOLDOUT = "holdout.jsonl"
SCHEMA_FILE = "schema.pbtxt"
# The features the version was trained on, with their domains (features.spec_to_json): what the
# server validates a request against, so a version with another domain needs no new server.
FEATURES_FILE = "features.json"
EVALUATION_FILE = "evaluation.json"
# The version's model card (components/model_card.py): JSON, and the same as a self-contained page.
MODEL_CARD, MODEL_CARD_PAGE = "MODEL_CARD.json", "model_card.html"
# Beside a harvested span's files: where its rows came from (cd4ml/triggers/harvest.py).
HARVEST_PROVENANCE = "HARVEST.json"
DETECTORS_DIR = "detectors"
# The explainer's background rows and the pipeline's global importances (scoring/explain.py).
EXPLAINER_DIR = "explainer"
SAVED_MODEL_FILES = ("saved_model.pb", "variables/")
# ML Metadata artifact types of our own components (components/release.py, components/detectors.py).
RELEASE_ARTIFACT = "cd4ml.ModelRelease"
DETECTORS_ARTIFACT = "cd4ml.Detectors"
EXPLANATION_ARTIFACT = "cd4ml.Explanation"
# What TFX's Tuner writes in its best_hyperparameters artifact (keras_tuner's HyperParameters config).
TUNED_HYPERPARAMETERS_FILE = "best_hyperparameters.txt"
# Beside the versions: an operator's pin (promote/rollback) and the shadow challenger.
PIN_FILE = "SERVING.json"
# Beside the versions, hidden from their listing: what the pipeline itself keeps between runs, so
# that every runner finds it the same way (no ML Metadata query): the spans that passed data
# validation (components/window.py) and the latest tuned hyperparameters (components/tuning.py).
PIPELINE_STATE_DIR = ".pipeline"
# A run parameter meaning "nothing yet" (no version served, nothing tuned).
NOTHING = "none"
# Custom properties the pipeline's own lookups set, which the ML Metadata readers follow:
WINDOW_PROPERTY = "window"    # TrainingWindow's Examples: [{"span", "examples": URI}], newest first
HAS_BASELINE = "has_baseline"  # ServingBaseline's Model: 0 when nothing served (an empty artifact)
BASELINE_VERSION = "version"  # ... the version it copied
TUNED_SOURCE = "source"       # TunedHyperparameters' output: "reused" | "defaults"
TUNED_BY = "tuned_by"         # ... the URI of the Tuner output its values came from
TUNED_VALUES = "values"       # ... the values (JSON)
# What a step used (pipelines/usage.py): custom properties of each execution a run ran, in this order.
USAGE_FIELDS = ("cpu_seconds", "wall_seconds", "peak_mb", "read_mb", "written_mb")
# ... and, on a cluster, the metadata key of each output artifact that carries them (measured in the
# pod: pipelines/measured_executor.py).
USAGE_METADATA = "cd4ml_usage"
# `.<version>.claim`: a version name reserved by a push in progress (components/pusher.py).
CLAIM_SUFFIX = ".claim"
SHADOW_FILE = "SHADOW.json"
# A bandit experiment between the served version and challengers (serving/bandit.py).
EXPERIMENT_FILE = "EXPERIMENT.json"
# `<registry>/<version>/APPROVAL.json`: a person's approval (or rejection) of a version that was
# pushed under CD4ML_PROMOTION=manual (its MANIFEST says "approval": "pending" until then).
APPROVAL_FILE = "APPROVAL.json"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
# Guarded rollout (cd4ml/rollout.py): a version pushed under CD4ML_ROLLOUT=guarded says so in its
# MANIFEST ("rollout": "guarded") and is served only once ROLLOUT.json, beside the versions, says
# it was promoted; until then it waits, runs as a canary, or was rolled back.
ROLLOUT_FILE = "ROLLOUT.json"
GUARDED = "guarded"
WAITING, CANARY, PROMOTED, ROLLED_BACK, SUPERSEDED = "waiting", "canary", "promoted", "rolled_back", "superseded"
# The files beside the versions whose change every server answers within a second (the control poll).
CONTROL_FILES = (PIN_FILE, SHADOW_FILE, EXPERIMENT_FILE, ROLLOUT_FILE)

# --- serving ------------------------------------------------------------------------------------------
# The model's name on the Open Inference Protocol (/v2/models/bike-demand/...).
MODEL_NAME = "bike-demand"

# A request may say when each row happens (ISO 8601 date or date-time), beside the features: a
# harvested row then keeps its real day. Logged per row as `event_times`; never a model input.
EVENT_TIME = "event_time"

# --- the SavedModel --------------------------------------------------------------------------------
# Serialized tf.Examples in (what TFMA, the Evaluator and batch scoring use) ...
EXAMPLE_SIGNATURE = "serving_default"
EXAMPLES_INPUT = "examples"
# ... or one tensor per raw feature, named as in components/features.py (what the server sends).
RAW_SIGNATURE = "serving_raw"
# ... or one float32 matrix [N, features] in features.encode_row's layout (categories as vocabulary
# indices): what the server, the detectors and the explainer already hold, in one tensor.
ENCODED_SIGNATURE = "serving_encoded"
ENCODED_INPUT = "encoded"
# Every signature answers expected bikers per hour, one per row, under this key.
PREDICTIONS = "predictions"

# --- metrics (the Evaluator's names, as in evaluation.json and the run summary) --------------------
MAE = "mean_absolute_error"
RMSE = "root_mean_squared_error"
EXAMPLE_COUNT = "example_count"
METRICS = (MAE, RMSE, EXAMPLE_COUNT)
OVERALL_SLICE = "overall"

# --- the server's logs -------------------------------------------------------------------------------
PREDICTIONS_LOG = "predictions"   # {"ts", "request_id", "version", "rows", "predictions", ...}
FEEDBACK_LOG = "feedback"         # {"ts", "request_id", "version", "matched", "truth", "abs_errors", ...}
DRIFT_LOG = "drift"               # {"ts", "version", "is_drift", "p_vals", "drifted", "rows", ...}
ERRORS_LOG = "errors"             # {"ts", "version", "experiment", "status", "rule"}: refusals and failures
LOG_DIR_NAME = "serving-logs"


def default_log_dir(registry: str) -> str:
    """Where the servers' logs are: CD4ML_SERVING_LOG_DIR when set (a cluster's shared gs:// prefix,
    k8s/base/configmap.yaml: so the drift trigger, the experiment verdict and the rollout controller
    read what the serving replicas write), else next to a local registry (<home>/serving-logs),
    else ./serving-logs."""
    if os.environ.get("CD4ML_SERVING_LOG_DIR"):
        return os.environ["CD4ML_SERVING_LOG_DIR"]
    if "://" in registry:
        return os.path.abspath(LOG_DIR_NAME)
    return os.path.join(os.path.dirname(os.path.abspath(registry.rstrip("/"))), LOG_DIR_NAME)


def log_file(log_dir: str, name: str) -> str:
    """The file a log is appended to now."""
    return os.path.join(log_dir, f"{name}.jsonl")


def rotated_file(log_dir: str, name: str, stamp: str) -> str:
    """Where a full log file goes: a UTC stamp that sorts in time order."""
    return os.path.join(log_dir, f"{name}.{stamp}.jsonl")


def rotated_files(log_dir: str, name: str) -> List[str]:
    """A log's rotated files, oldest first."""
    return sorted(glob.glob(os.path.join(glob.escape(log_dir), f"{glob.escape(name)}.*.jsonl")))


def read_jsonl(log_dir: str, name: str) -> Iterator[Dict]:
    """Every record of a log and its rotated files, oldest file first; a torn line is skipped."""
    current = log_file(log_dir, name)
    for path in rotated_files(log_dir, name) + ([current] if os.path.exists(current) else []):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def parse_ts(value: str) -> datetime.datetime:
    """A log record's `ts` (ISO 8601, UTC)."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))

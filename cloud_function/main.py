"""Cloud Function: a data drop in the bucket submits a Kubeflow / Vertex AI pipeline run.

Trigger: CloudEvent `google.cloud.storage.object.v1.finalized` on the drop bucket. The handler is
cd4ml.triggers.DropHandler (the same code as `cd4ml watch --submit`): names that would escape the
data root are refused, a file that is not a readable span is quarantined with its report, a good one
is copied to <CD4ML_DATA_ROOT>/span-N/ in the bucket and a run with span N is submitted. A Cloud
Function has no ML Metadata store, so exactly-once uses marker objects under _cd4ml/processed/
created with if_generation_match=0 (GCS retries and duplicate deliveries become no-ops).

Configuration (environment): CD4ML_DATA_ROOT=gs://..., CD4ML_KFP_HOST or CD4ML_GCP_PROJECT/REGION,
CD4ML_KFP_EXPERIMENT, CD4ML_DROP_PREFIX (default incoming/), CD4ML_PIPELINE_JOB (the compiled job:
a file deployed with the function, default pipeline.json next to this file, or a gs:// URI).
Deploy: docs/cloud-function.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
for candidate in (HERE, os.path.dirname(HERE)):  # deployed: packages copied beside main.py
    if os.path.isdir(os.path.join(candidate, "cd4ml")) and candidate not in sys.path:
        sys.path.insert(0, candidate)

import functions_framework  # noqa: E402

from cd4ml import triggers  # noqa: E402
from pipelines.config import PipelineConfig  # noqa: E402

FINALIZED = "google.cloud.storage.object.v1.finalized"


def _job_path(client) -> str:
    job = os.environ.get("CD4ML_PIPELINE_JOB", os.path.join(HERE, "pipeline.json"))
    if not job.startswith("gs://"):
        return job
    bucket, _, name = job[len("gs://"):].partition("/")
    local = os.path.join(tempfile.gettempdir(), "cd4ml-pipeline.json")
    client.bucket(bucket).blob(name).download_to_filename(local)
    return local


def handle_event(event, client=None) -> dict:
    if event["type"] != FINALIZED:
        return {"ignored": f"event type {event['type']}"}
    data = event.data if isinstance(event.data, dict) else json.loads(event.data)
    bucket, name, generation = data["bucket"], data["name"], int(data["generation"])
    config = PipelineConfig.from_env(home=os.environ.get("CD4ML_HOME", tempfile.gettempdir()))
    prefix = config.drop_prefix
    if not name.startswith(prefix):
        return {"ignored": f"{name} is not under {prefix}"}
    client = client or triggers.storage_client(config.gcp_project)
    handler = triggers.DropHandler(config, client, bucket, prefix, triggers.GcsLedger(client, bucket),
                                   submit_job=_job_path(client), progress=print)
    result = handler.handle(name, generation)
    return {"key": result.key, "outcome": result.outcome, "span": result.span,
            "run_id": result.run_id, "skipped": result.skipped, "detail": result.detail}


@functions_framework.cloud_event
def on_drop(event):
    print(json.dumps(handle_event(event)), flush=True)

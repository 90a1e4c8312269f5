"""The drop trigger as a Cloud Function: one CloudEvent, one DropHandler call.

Trigger: CloudEvent `google.cloud.storage.object.v1.finalized` on the drop bucket. The handler is
cd4ml.triggers.drop.DropHandler (the same code as `cd4ml watch --submit`): names that would escape
the data root are refused, a file that is not a readable span is quarantined with its report, a
good one is copied to <CD4ML_DATA_ROOT>/span-N/ in the bucket and a run with span N is submitted.
A Cloud Function has no ML Metadata store, so exactly-once uses marker objects under
_cd4ml/processed/ created with if_generation_match=0 (GCS retries and duplicate deliveries become
no-ops).

Configuration (environment): CD4ML_DATA_ROOT=gs://..., CD4ML_KFP_HOST or CD4ML_GCP_PROJECT/REGION,
CD4ML_KFP_EXPERIMENT, CD4ML_DROP_PREFIX (default incoming/), CD4ML_PIPELINE_JOB (the compiled job:
a file deployed with the function, default pipeline.json beside main.py, or a gs:// URI).
Deploy: docs/cloud-function.md.
"""

from __future__ import annotations

import json
import os
import tempfile

from cd4ml import storage
from cd4ml.triggers import drop
from pipelines.config import PipelineConfig

FINALIZED = "google.cloud.storage.object.v1.finalized"


def _job_path(client, default_dir: str) -> str:
    job = os.environ.get("CD4ML_PIPELINE_JOB", os.path.join(default_dir, "pipeline.json"))
    if not job.startswith("gs://"):
        return job
    bucket, _, name = job[len("gs://"):].partition("/")
    local = os.path.join(tempfile.gettempdir(), "cd4ml-pipeline.json")
    client.bucket(bucket).blob(name).download_to_filename(local)
    return local


def handle_event(event, client=None, job_dir: str = ".") -> dict:
    if event["type"] != FINALIZED:
        return {"ignored": f"event type {event['type']}"}
    data = event.data if isinstance(event.data, dict) else json.loads(event.data)
    bucket, name, generation = data["bucket"], data["name"], int(data["generation"])
    config = PipelineConfig.from_env(home=os.environ.get("CD4ML_HOME", tempfile.gettempdir()))
    prefix = config.drop_prefix
    if not name.startswith(prefix):
        return {"ignored": f"{name} is not under {prefix}"}
    client = client or storage.client(config.gcp_project)
    handler = drop.DropHandler(config, client, bucket, prefix, drop.GcsLedger(client, bucket),
                               submit_job=_job_path(client, job_dir), progress=print)
    result = handler.handle(name, generation)
    return {"key": result.key, "outcome": result.outcome, "span": result.span,
            "run_id": result.run_id, "skipped": result.skipped, "detail": result.detail}

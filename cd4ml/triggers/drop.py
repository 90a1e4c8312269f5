"""Data-drop trigger: a new object in a bucket becomes the next span and retrains the model.

One code path for `cd4ml watch` (polling, local or KFP) and the Cloud Function (one event):

    handle_drop(bucket, name, generation) ->
        refuse names that would escape the data root (recorded, never downloaded)
        claim bucket/name#generation in the ledger (exactly once; a second claim is a no-op)
        download, check the CSV (header, columns, rows) -> quarantine on failure
        place it as span-N (N = one past every span seen, so numbers are never reused)
        locally: run the pipeline on span N; validation failure -> quarantine, serving model stays
        cluster: copy it in the bucket to <data_root>/span-N/ and submit a KFP run with span N
        record the outcome

Ledgers: `MlmdLedger` records each drop as a `cd4ml.Drop` execution (cd4ml.mlmd.records) named by
its key in the project's ML Metadata (MLMD's unique (type, name) makes the claim atomic), attributed
to a `cd4ml.Bucket` context; a drop interrupted mid-way (state RUNNING) is resumed on restart, one that
finished (COMPLETE) or failed (FAILED) is skipped. The Cloud Function has no MLMD; `GcsLedger`
claims with a marker object created under `if_generation_match=0` (atomic create-if-absent).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

from cd4ml import alerts, storage
from cd4ml.runner import run_and_report
from pipelines import local_runner, spans
from pipelines.config import PipelineConfig

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.csv$")
QUARANTINE_PREFIX = "quarantine/"
MARKER_PREFIX = "_cd4ml/processed/"

# Outcomes recorded per drop.
TRAINED, NOT_BLESSED, QUARANTINED, REFUSED, SUBMITTED, FAILED = (
    "trained", "not_blessed", "quarantined", "refused", "submitted", "failed")


class RefusedName(ValueError):
    pass


def drop_key(bucket: str, name: str, generation) -> str:
    return f"gs://{bucket}/{name}#{generation}"


def file_name(name: str, prefix: str) -> str:
    """The file name a drop gets inside span-N/, or RefusedName when it could escape the data root."""
    if not name.startswith(prefix):
        raise RefusedName(f"{name!r} is outside the watched prefix {prefix!r}")
    rest = name[len(prefix):]
    if not SAFE_NAME.match(rest) or ".." in rest:
        raise RefusedName(
            f"{name!r}: refused (rule: a drop is one file directly under {prefix!r} named "
            f"[A-Za-z0-9._-]+.csv; no '/', '..', '\\' or absolute paths, so it cannot escape the data root)")
    return rest


# --- ledgers -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Claim:
    key: str
    new: bool                 # False: already claimed (finished, or failed)
    resumed: bool = False     # True: an earlier attempt stopped mid-way; this one finishes it
    span: Optional[int] = None
    outcome: str = ""
    handle: object = None


class MlmdLedger:
    """Drops recorded in ML Metadata (the project's store), one cd4ml.Drop execution per object."""

    def __init__(self, metadata_path: str, bucket: str, prefix: str):
        from cd4ml.mlmd import records, store  # not at import: the Cloud Function has no ML Metadata

        self.records = records
        self.store = store.open_store(metadata_path)
        self.context_name = f"gs://{bucket}/{prefix}"
        records.context(self.store, records.DROP, self.context_name)

    def claim(self, bucket: str, name: str, generation: int) -> Claim:
        from ml_metadata import errors

        key = drop_key(bucket, name, generation)
        existing = self.records.by_name(self.store, self.records.DROP, key)
        if existing is None:
            try:
                execution_id = self.records.put(
                    self.store, self.records.DROP, {"bucket": bucket, "object": name, "object_generation": generation},
                    name=key, state=self.records.RUNNING, context_name=self.context_name)
            except errors.AlreadyExistsError:  # another watcher claimed it between get and put
                return Claim(key, new=False, outcome="claimed elsewhere")
            return Claim(key, new=True, handle=execution_id)
        row = self.records.as_dict(existing, self.records.DROP)
        if existing.last_known_state == self.records.RUNNING:
            return Claim(key, new=True, resumed=True, span=row["span"] or None, handle=existing.id)
        return Claim(key, new=False, outcome=row["outcome"], handle=existing.id)

    def update(self, claim: Claim, done: bool = False, failed: bool = False, **props):
        state = self.records.FAILED if failed else self.records.COMPLETE if done else None
        self.records.update(self.store, self.records.DROP, claim.handle, props, state)

    def spans_used(self) -> List[int]:
        return self.records.spans_used(self.store)

    def history(self) -> List[Dict[str, object]]:
        return [dict(row, key=row["name"], generation=self.records.generation(row))
                for row in self.records.read(self.store, self.records.DROP)]


class GcsLedger:
    """Claims as marker objects in the bucket (for the Cloud Function, which has no MLMD)."""

    def __init__(self, client, bucket: str):
        self.bucket = client.bucket(bucket)
        self.bucket_name = bucket

    @staticmethod
    def _marker(key: str) -> str:
        # Hashed: an object name (even a refused, hostile one) never becomes part of another name.
        import hashlib

        return f"{MARKER_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def claim(self, bucket: str, name: str, generation: int) -> Claim:
        from google.api_core import exceptions

        key = drop_key(bucket, name, generation)
        blob = self.bucket.blob(self._marker(key))
        try:
            if blob.exists():  # the emulator ignores ifGenerationMatch; GCS enforces it below
                raise exceptions.PreconditionFailed("marker exists")
            blob.upload_from_string(json.dumps({"key": key, "state": "running", "at": _now()}),
                                    content_type="application/json", if_generation_match=0)
        except exceptions.PreconditionFailed:
            record = json.loads(blob.download_as_bytes())
            if record.get("state") == "running":  # an earlier invocation died mid-way: finish it
                return Claim(key, new=True, resumed=True, span=record.get("span"), handle=record)
            return Claim(key, new=False, outcome=record.get("outcome", ""), handle=record)
        return Claim(key, new=True, handle={"key": key, "state": "running"})

    def update(self, claim: Claim, done: bool = False, failed: bool = False, **props):
        record = dict(claim.handle or {}, **{k: v for k, v in props.items() if v is not None})
        record["state"] = "failed" if failed else "complete" if done else "running"
        record["at"] = _now()
        self.bucket.blob(self._marker(claim.key)).upload_from_string(
            json.dumps(record), content_type="application/json")
        claim.handle = record

    def spans_used(self) -> List[int]:
        used = []
        for blob in self.bucket.list_blobs(prefix=MARKER_PREFIX):
            try:
                span = json.loads(blob.download_as_bytes()).get("span")
            except ValueError:
                continue
            if span:
                used.append(int(span))
        return used


# --- the drop handler --------------------------------------------------------------------------

@dataclasses.dataclass
class DropResult:
    key: str
    outcome: str
    span: Optional[int] = None
    detail: str = ""
    run_id: str = ""
    version: str = ""
    quarantine: str = ""
    skipped: bool = False
    seconds: float = 0.0

    def line(self) -> str:
        if self.skipped:
            return f"{self.key}: already processed ({self.outcome or 'done'}), skipped"
        bits = [f"{self.key}: {self.outcome}"]
        if self.span:
            bits.append(f"span {self.span}")
        if self.version:
            bits.append(f"version {self.version}")
        if self.run_id:
            bits.append(f"run {self.run_id}")
        if self.quarantine:
            bits.append(f"quarantined at {self.quarantine}")
        if self.detail:
            bits.append(self.detail)
        return " | ".join(bits) + f" ({self.seconds:.1f} s)"


@dataclasses.dataclass
class Drop:
    """One claimed object on its way to becoming span `span`."""

    claim: Claim
    name: str            # object name in the bucket
    generation: int
    file_name: str       # its name inside span-N/
    span: int
    local: str = ""      # downloaded copy
    rows: int = 0


@dataclasses.dataclass
class DropHandler:
    config: PipelineConfig
    client: object
    bucket: str
    prefix: str
    ledger: object
    submit_job: Optional[str] = None       # compiled job: submit a KFP/Vertex run instead of running
    progress: Callable[[str], None] = print
    run_pipeline: Callable = run_and_report  # the local pipeline run (its report included)

    def next_span(self) -> int:
        return storage.next_span(self.config.data_root, self.ledger.spans_used(), self.client)

    def _refuse(self, key: str, name: str, generation: int, exc: RefusedName, started: float) -> DropResult:
        claim = self.ledger.claim(self.bucket, name, generation)
        if not claim.new:
            return DropResult(key, claim.outcome, skipped=True)
        self.ledger.update(claim, done=True, outcome=REFUSED, detail=str(exc))
        self.progress(f"refused {key}: {exc}")
        return DropResult(key, REFUSED, detail=str(exc), seconds=time.monotonic() - started)

    def handle(self, name: str, generation: int) -> DropResult:
        started = time.monotonic()
        key = drop_key(self.bucket, name, generation)
        try:
            fname = file_name(name, self.prefix)
        except RefusedName as exc:
            return self._refuse(key, name, generation, exc, started)
        claim = self.ledger.claim(self.bucket, name, generation)
        if not claim.new:
            return DropResult(key, claim.outcome, skipped=True)
        drop = Drop(claim, name, generation, fname, span=claim.span or self.next_span())
        self.ledger.update(claim, span=drop.span)
        self.progress(f"{'resuming' if claim.resumed else 'new drop'} {key} -> span {drop.span}")
        try:
            result = self._process(drop)
        except Exception as exc:  # noqa: BLE001 - recorded; the watcher keeps going
            detail = f"{type(exc).__name__}: {exc}"
            self.ledger.update(claim, failed=True, outcome=FAILED, detail=detail[:2000])
            result = DropResult(key, FAILED, span=drop.span, detail=detail)
        result.seconds = time.monotonic() - started
        self.progress(result.line())
        return result

    def _process(self, drop: Drop) -> DropResult:
        blob = self.client.bucket(self.bucket).blob(drop.name, generation=drop.generation)
        with tempfile.TemporaryDirectory(prefix="cd4ml-drop-") as tmp:
            drop.local = os.path.join(tmp, drop.file_name)
            blob.download_to_filename(drop.local)
            try:
                drop.rows = spans.check_csv(drop.local)
            except spans.SpanError as exc:
                report = str(exc).replace(drop.local, f"gs://{self.bucket}/{drop.name}")
                where = self._quarantine(drop, drop.local, report)
                # (A drop that reads well but fails the validation gate is alerted by its run.)
                alerts.notify(self.config.home, "data_refused", drop.claim.key,
                              f"data drop {drop.claim.key} is unreadable and was quarantined; the serving "
                              f"model is unchanged", report=report, quarantine=where)
                self.ledger.update(drop.claim, done=True, outcome=QUARANTINED, detail=report, quarantine=where)
                return DropResult(drop.claim.key, QUARANTINED, span=None, detail=report, quarantine=where)
            return self._submit(drop) if self.submit_job else self._run_local(drop)

    def _place_locally(self, drop: Drop) -> str:
        """Move the checked file into <data root>/span-N/ in one rename; returns the span folder."""
        target = spans.span_dir(self.config.data_root, drop.span)
        staging = os.path.join(self.config.data_root, f".span-{drop.span}.incoming")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        shutil.copyfile(drop.local, os.path.join(staging, drop.file_name))
        shutil.rmtree(target, ignore_errors=True)  # a resumed drop may have placed it already
        os.replace(staging, target)
        self.progress(f"  span {drop.span}: {drop.rows} rows at {target}")
        return target

    def _run_local(self, drop: Drop) -> DropResult:
        target = self._place_locally(drop)
        run = self.run_pipeline(dataclasses.replace(self.config, span=drop.span), progress=self.progress)
        key = drop.claim.key
        if run.exit_code == local_runner.VALIDATION_FAILED:
            from components.validation_gate import format_report  # TFX is loaded by now

            report = format_report(run.problems) if run.problems else run.error
            where = self._quarantine(drop, os.path.join(target, drop.file_name), report, run_dir=run.run_dir)
            shutil.rmtree(target, ignore_errors=True)  # the bad span must not become "latest"
            self.ledger.update(drop.claim, done=True, outcome=QUARANTINED, detail=report[:2000],
                               run_id=run.run_id, quarantine=where)
            return DropResult(key, QUARANTINED, span=drop.span, detail="validation failed; serving model unchanged",
                              run_id=run.run_id, quarantine=where)
        if run.exit_code == local_runner.OK:
            outcome, detail = TRAINED, ("pushed" if run.new_push else "no new version")
        elif run.exit_code == local_runner.NOT_BLESSED:
            outcome, detail = NOT_BLESSED, run.blessing
        else:
            self.ledger.update(drop.claim, failed=True, outcome=FAILED, detail=run.error[:2000], run_id=run.run_id)
            return DropResult(key, FAILED, span=drop.span, detail=run.error, run_id=run.run_id)
        self.ledger.update(drop.claim, done=True, outcome=outcome, detail=detail, run_id=run.run_id,
                           version=run.pushed_version)
        return DropResult(key, outcome, span=drop.span, detail=detail, run_id=run.run_id, version=run.pushed_version)

    def _submit(self, drop: Drop) -> DropResult:
        from pipelines import submit

        target = self.config.data_root.rstrip("/") + f"/span-{drop.span}/{drop.file_name}"
        if not target.startswith("gs://"):
            raise ValueError(f"submitting a KFP run needs a gs:// data root, not {self.config.data_root!r}")
        dst_bucket, _, dst_name = target[len("gs://"):].partition("/")
        src = self.client.bucket(self.bucket)
        src.copy_blob(src.blob(drop.name, generation=drop.generation), self.client.bucket(dst_bucket), dst_name)
        self.progress(f"  span {drop.span}: {drop.rows} rows at {target}")
        result = submit.submit(self.submit_job, self.config, span=drop.span, reason="drop", progress=self.progress)
        detail = f"{result.platform} run {result.run_name}"
        self.ledger.update(drop.claim, done=True, outcome=SUBMITTED, run_id=result.run_id, detail=detail)
        return DropResult(drop.claim.key, SUBMITTED, span=drop.span, run_id=result.run_id, detail=detail)

    def _quarantine(self, drop: Drop, local_file: str, report: str, run_dir: str = "") -> str:
        """Keep the bad drop and its report: in the bucket under quarantine/ and, locally, in the home."""
        stem = f"{os.path.basename(drop.name)}@{drop.generation}"
        key = drop.claim.key
        bucket = self.client.bucket(self.bucket)
        bucket.copy_blob(bucket.blob(drop.name, generation=drop.generation), bucket, f"{QUARANTINE_PREFIX}{stem}")
        bucket.blob(f"{QUARANTINE_PREFIX}{stem}.report.txt").upload_from_string(
            f"{key}\n{report}\n", content_type="text/plain")
        where = f"gs://{self.bucket}/{QUARANTINE_PREFIX}{stem}"
        if not self.config.home.startswith("gs://"):
            local_dir = os.path.join(self.config.home, "quarantine", stem)
            os.makedirs(local_dir, exist_ok=True)
            if os.path.exists(local_file):
                shutil.copyfile(local_file, os.path.join(local_dir, os.path.basename(drop.name)))
            with open(os.path.join(local_dir, "report.txt"), "w") as fh:
                fh.write(f"{key}\n{report}\n" + (f"run report: {run_dir}\n" if run_dir else ""))
        self.progress(f"  quarantined {key}: " + " | ".join(report.splitlines()[:3]))
        return where

    # --- polling -------------------------------------------------------------------------------

    def pending(self) -> List[Tuple[str, int]]:
        """Objects under the prefix, oldest first (creation time, then name)."""
        blobs = [b for b in self.client.list_blobs(self.bucket, prefix=self.prefix)
                 if not b.name.endswith("/")]
        blobs.sort(key=lambda b: (b.time_created or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc),
                                  b.name, int(b.generation)))
        return [(b.name, int(b.generation)) for b in blobs]

    def poll_once(self) -> List[DropResult]:
        return [r for r in (self.handle(n, g) for n, g in self.pending()) if not r.skipped]

    def watch(self, interval: float = 5.0, once: bool = False, stop: Optional[Callable[[], bool]] = None,
              also: Optional[Callable[[], object]] = None) -> List[DropResult]:
        """Poll until stopped; `also` runs at each poll too (the schedules run here)."""
        results: List[DropResult] = []
        while True:
            results.extend(self.poll_once())
            if also is not None:
                also()
            if once or (stop and stop()):
                return results
            time.sleep(interval)


def make_handler(config: PipelineConfig, bucket: str, prefix: str, client=None, submit_job=None,
                 progress=print, ledger=None) -> DropHandler:
    bucket = storage.parse_bucket(bucket)
    client = client or storage.client(config.gcp_project)
    ledger = ledger or MlmdLedger(config.metadata_path, bucket, prefix)
    return DropHandler(config, client, bucket, prefix, ledger, submit_job=submit_job, progress=progress)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

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

Ledgers: `MlmdLedger` records each drop as an execution of type `cd4ml.Drop` named by its key in
the project's ML Metadata (MLMD's unique (type, name) makes the claim atomic), attributed to a
`cd4ml.Bucket` context; a drop interrupted mid-way (state RUNNING) is resumed on restart, one that
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

from pipelines import spans
from pipelines.config import PipelineConfig

DROP_TYPE = "cd4ml.Drop"
BUCKET_CONTEXT = "cd4ml.Bucket"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.csv$")
QUARANTINE_PREFIX = "quarantine/"
MARKER_PREFIX = "_cd4ml/processed/"

# Outcomes recorded per drop.
TRAINED, NOT_BLESSED, QUARANTINED, REFUSED, SUBMITTED, FAILED = (
    "trained", "not_blessed", "quarantined", "refused", "submitted", "failed")


class RefusedName(ValueError):
    pass


def parse_bucket(bucket: str) -> str:
    return bucket[len("gs://"):].strip("/") if bucket.startswith("gs://") else bucket.strip("/")


def drop_key(bucket: str, name: str, generation) -> str:
    return f"gs://{bucket}/{name}#{generation}"


def storage_client(project: Optional[str] = None):
    """google-cloud-storage client; anonymous against STORAGE_EMULATOR_HOST (the local emulator)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials
        return storage.Client(project=project or "cd4ml-local", credentials=AnonymousCredentials())
    return storage.Client(project=project or None)


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
    """Drops recorded in ML Metadata (the project's store)."""

    def __init__(self, metadata_path: str, bucket: str, prefix: str):
        from ml_metadata.proto import metadata_store_pb2 as pb

        from cd4ml import metadata

        self._pb = pb
        os.makedirs(os.path.dirname(os.path.abspath(metadata_path)), exist_ok=True)
        self.store = metadata.open_store(metadata_path)
        ex_type = pb.ExecutionType(name=DROP_TYPE)
        for prop in ("bucket", "object", "outcome", "detail", "run_id", "version", "quarantine"):
            ex_type.properties[prop] = pb.STRING
        for prop in ("generation", "span"):
            ex_type.properties[prop] = pb.INT
        self.type_id = self.store.put_execution_type(ex_type, can_add_fields=True)
        ctx_type = pb.ContextType(name=BUCKET_CONTEXT)
        self.ctx_type_id = self.store.put_context_type(ctx_type)
        ctx_name = f"gs://{bucket}/{prefix}"
        ctx = self.store.get_context_by_type_and_name(BUCKET_CONTEXT, ctx_name)
        if ctx is None:
            ctx = pb.Context(type_id=self.ctx_type_id, name=ctx_name)
            try:
                [ctx.id] = self.store.put_contexts([ctx])
            except Exception:  # noqa: BLE001 - another watcher created it first
                ctx = self.store.get_context_by_type_and_name(BUCKET_CONTEXT, ctx_name)
        self.context = ctx

    def get(self, key: str):
        return self.store.get_execution_by_type_and_name(DROP_TYPE, key)

    def claim(self, bucket: str, name: str, generation: int) -> Claim:
        pb = self._pb
        key = drop_key(bucket, name, generation)
        existing = self.get(key)
        if existing is None:
            ex = pb.Execution(type_id=self.type_id, name=key, last_known_state=pb.Execution.RUNNING)
            ex.properties["bucket"].string_value = bucket
            ex.properties["object"].string_value = name
            ex.properties["generation"].int_value = int(generation)
            from ml_metadata import errors

            try:
                ex_id, _, _ = self.store.put_execution(ex, [], [self.context])
            except errors.AlreadyExistsError:  # another watcher claimed it between get and put
                return Claim(key, new=False, outcome="claimed elsewhere")
            ex.id = ex_id
            return Claim(key, new=True, handle=ex)
        if existing.last_known_state == pb.Execution.RUNNING:
            span = existing.properties["span"].int_value if "span" in existing.properties else None
            return Claim(key, new=True, resumed=True, span=span or None, handle=existing)
        outcome = existing.properties["outcome"].string_value if "outcome" in existing.properties else ""
        return Claim(key, new=False, outcome=outcome, handle=existing)

    def update(self, claim: Claim, done: bool = False, failed: bool = False, **props):
        pb = self._pb
        ex = self.store.get_executions_by_id([claim.handle.id])[0]
        for k, v in props.items():
            if v is None:
                continue
            if isinstance(v, int):
                ex.properties[k].int_value = v
            else:
                ex.properties[k].string_value = str(v)
        if failed:
            ex.last_known_state = pb.Execution.FAILED
        elif done:
            ex.last_known_state = pb.Execution.COMPLETE
        self.store.put_execution(ex, [], [])
        claim.handle = ex

    def spans_used(self) -> List[int]:
        return [e.properties["span"].int_value for e in self.store.get_executions_by_type(DROP_TYPE)
                if "span" in e.properties and e.properties["span"].int_value]

    def records(self) -> List[Dict[str, object]]:
        from cd4ml import metadata

        out = []
        for ex in sorted(self.store.get_executions_by_type(DROP_TYPE), key=lambda e: e.id):
            row = {"key": ex.name, "state": metadata.STATE_NAMES.get(ex.last_known_state, "unknown")}
            for k, v in ex.properties.items():
                row[k] = getattr(v, v.WhichOneof("value"))
            out.append(row)
        return out


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
class DropHandler:
    config: PipelineConfig
    client: object
    bucket: str
    prefix: str
    ledger: object
    submit_job: Optional[str] = None       # compiled job: submit a KFP/Vertex run instead of running
    progress: Callable[[str], None] = print
    run_pipeline: Optional[Callable] = None  # tests may inject; default local_runner.run

    def next_span(self) -> int:
        used = set(self.ledger.spans_used())
        if not self.config.data_root.startswith("gs://"):
            used |= set(spans.list_spans(self.config.data_root))
        else:
            used |= set(self._remote_spans())
        return max(used, default=0) + 1

    def _remote_spans(self) -> List[int]:
        bucket, _, root = self.config.data_root[len("gs://"):].partition("/")
        found = set()
        for blob in self.client.bucket(bucket).list_blobs(prefix=root.rstrip("/") + "/"):
            m = re.match(r"span-(\d+)/", blob.name[len(root.rstrip("/")) + 1:])
            if m:
                found.add(int(m.group(1)))
        return sorted(found)

    def handle(self, name: str, generation: int) -> DropResult:
        started = time.monotonic()
        key = drop_key(self.bucket, name, generation)
        try:
            fname = file_name(name, self.prefix)
        except RefusedName as exc:
            claim = self.ledger.claim(self.bucket, name, generation)
            if claim.new:
                self.ledger.update(claim, done=True, outcome=REFUSED, detail=str(exc))
                self.progress(f"refused {key}: {exc}")
                return DropResult(key, REFUSED, detail=str(exc), seconds=time.monotonic() - started)
            return DropResult(key, claim.outcome, skipped=True)
        claim = self.ledger.claim(self.bucket, name, generation)
        if not claim.new:
            return DropResult(key, claim.outcome, skipped=True)
        span = claim.span or self.next_span()
        self.ledger.update(claim, span=span)
        verb = "resuming" if claim.resumed else "new drop"
        self.progress(f"{verb} {key} -> span {span}")
        try:
            result = self._process(claim, name, generation, fname, span)
        except Exception as exc:  # noqa: BLE001 - recorded; the watcher keeps going
            detail = f"{type(exc).__name__}: {exc}"
            self.ledger.update(claim, failed=True, outcome=FAILED, detail=detail[:2000])
            result = DropResult(key, FAILED, span=span, detail=detail)
        result.seconds = time.monotonic() - started
        self.progress(result.line())
        return result

    def _process(self, claim: Claim, name: str, generation: int, fname: str, span: int) -> DropResult:
        bucket = self.client.bucket(self.bucket)
        blob = bucket.blob(name, generation=generation)
        with tempfile.TemporaryDirectory(prefix="cd4ml-drop-") as tmp:
            local = os.path.join(tmp, fname)
            blob.download_to_filename(local)
            try:
                rows = spans.check_csv(local)
            except spans.SpanError as exc:
                report = str(exc).replace(local, f"gs://{self.bucket}/{name}")
                where = self._quarantine(claim, name, generation, local, report)
                self.ledger.update(claim, done=True, outcome=QUARANTINED, detail=report, quarantine=where)
                return DropResult(claim.key, QUARANTINED, span=None, detail=report, quarantine=where)
            if self.submit_job:
                return self._submit(claim, name, generation, fname, span, rows)
            return self._run_local(claim, name, generation, local, fname, span, rows)

    def _run_local(self, claim, name, generation, local, fname, span, rows) -> DropResult:
        from pipelines import local_runner

        target = spans.span_dir(self.config.data_root, span)
        staging = os.path.join(self.config.data_root, f".span-{span}.incoming")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        shutil.copyfile(local, os.path.join(staging, fname))
        shutil.rmtree(target, ignore_errors=True)  # a resumed drop may have placed it already
        os.replace(staging, target)
        self.progress(f"  span {span}: {rows} rows at {target}")
        run = (self.run_pipeline or local_runner.run)(
            dataclasses.replace(self.config, span=span), progress=self.progress)
        if run.exit_code == local_runner.VALIDATION_FAILED:
            from components.validation_gate import format_report  # TFX is loaded by now

            report = format_report(run.problems) if run.problems else run.error
            where = self._quarantine(claim, name, generation, os.path.join(target, fname), report,
                                     run_dir=run.run_dir)
            shutil.rmtree(target, ignore_errors=True)  # the bad span must not become "latest"
            self.ledger.update(claim, done=True, outcome=QUARANTINED, detail=report[:2000],
                               run_id=run.run_id, quarantine=where)
            return DropResult(claim.key, QUARANTINED, span=span, detail="validation failed; serving model unchanged",
                              run_id=run.run_id, quarantine=where)
        if run.exit_code == local_runner.OK:
            outcome, detail = TRAINED, ("pushed" if run.new_push else "no new version")
        elif run.exit_code == local_runner.NOT_BLESSED:
            outcome, detail = NOT_BLESSED, run.blessing
        else:
            self.ledger.update(claim, failed=True, outcome=FAILED, detail=run.error[:2000], run_id=run.run_id)
            return DropResult(claim.key, FAILED, span=span, detail=run.error, run_id=run.run_id)
        self.ledger.update(claim, done=True, outcome=outcome, detail=detail, run_id=run.run_id,
                           version=run.pushed_version)
        return DropResult(claim.key, outcome, span=span, detail=detail, run_id=run.run_id,
                          version=run.pushed_version)

    def _submit(self, claim, name, generation, fname, span, rows) -> DropResult:
        from pipelines import submit

        target = self.config.data_root.rstrip("/") + f"/span-{span}/{fname}"
        if target.startswith("gs://"):
            dst_bucket, _, dst_name = target[len("gs://"):].partition("/")
            src = self.client.bucket(self.bucket)
            src.copy_blob(src.blob(name, generation=generation), self.client.bucket(dst_bucket), dst_name)
        else:
            raise ValueError(f"submitting a KFP run needs a gs:// data root, not {self.config.data_root!r}")
        self.progress(f"  span {span}: {rows} rows at {target}")
        result = submit.submit(self.submit_job, self.config, span=span, reason="drop", progress=self.progress)
        self.ledger.update(claim, done=True, outcome=SUBMITTED, run_id=result.run_id,
                           detail=f"{result.platform} run {result.run_name}")
        return DropResult(claim.key, SUBMITTED, span=span, run_id=result.run_id,
                          detail=f"{result.platform} run {result.run_name}")

    def _quarantine(self, claim, name, generation, local_file, report, run_dir="") -> str:
        """Keep the bad drop and its report: in the bucket under quarantine/ and, locally, in the home."""
        stem = f"{os.path.basename(name)}@{generation}"
        bucket = self.client.bucket(self.bucket)
        bucket.copy_blob(bucket.blob(name, generation=generation), bucket, f"{QUARANTINE_PREFIX}{stem}")
        bucket.blob(f"{QUARANTINE_PREFIX}{stem}.report.txt").upload_from_string(
            f"{claim.key}\n{report}\n", content_type="text/plain")
        where = f"gs://{self.bucket}/{QUARANTINE_PREFIX}{stem}"
        if not self.config.home.startswith("gs://"):
            local_dir = os.path.join(self.config.home, "quarantine", stem)
            os.makedirs(local_dir, exist_ok=True)
            if os.path.exists(local_file):
                shutil.copyfile(local_file, os.path.join(local_dir, os.path.basename(name)))
            with open(os.path.join(local_dir, "report.txt"), "w") as fh:
                fh.write(f"{claim.key}\n{report}\n" + (f"run report: {run_dir}\n" if run_dir else ""))
        self.progress(f"  quarantined {claim.key}: " + " | ".join(report.splitlines()[:3]))
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

    def watch(self, interval: float = 5.0, once: bool = False, stop: Optional[Callable[[], bool]] = None
              ) -> List[DropResult]:
        results: List[DropResult] = []
        while True:
            results.extend(self.poll_once())
            if once or (stop and stop()):
                return results
            time.sleep(interval)


def make_handler(config: PipelineConfig, bucket: str, prefix: str, client=None, submit_job=None,
                 progress=print, ledger=None) -> DropHandler:
    bucket = parse_bucket(bucket)
    client = client or storage_client(config.gcp_project)
    ledger = ledger or MlmdLedger(config.metadata_path, bucket, prefix)
    return DropHandler(config, client, bucket, prefix, ledger, submit_job=submit_job, progress=progress)


def upload(path: str, bucket: str, prefix: str, name: Optional[str] = None, client=None) -> Tuple[str, int]:
    """`cd4ml drop`: upload a file under the watched prefix; returns (gs:// uri, generation)."""
    bucket = parse_bucket(bucket)
    client = client or storage_client()
    target = prefix + (name or os.path.basename(path))
    blob = client.bucket(bucket).blob(target)
    blob.upload_from_filename(path, content_type="text/csv")
    return f"gs://{bucket}/{target}", int(blob.generation)


def ensure_bucket(bucket: str, client=None):
    client = client or storage_client()
    bucket = parse_bucket(bucket)
    existing = client.lookup_bucket(bucket)
    return existing or client.create_bucket(bucket)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

"""Schedules kept in code: `schedules.yaml` in the repository, reconciled with the platform.

Each entry says when (a five-field cron, UTC), what (`train`: the training job on a span, or
`batch`: the batch-scoring job on an input and output) and why. `cd4ml schedule apply` makes the
platform's schedules match the file:
- Kubeflow Pipelines: one recurring run per entry, named `cd4ml-<name>`, carrying a fingerprint of
  what it runs (cron, parameters, the compiled job) in its description. An unchanged entry makes
  no call. An edited one gets a new recurring run first; the old one is *disabled*, not deleted,
  because deleting a recurring run deletes the runs it started (KFP's runs are owned by its
  ScheduledWorkflow: kubeflow/pipelines#7421). A disabled one with no run in flight is deleted by
  the next apply, as is the recurring run of an entry removed from the file.
- Vertex AI: one schedule per entry (the REST API's `schedules`); an edit is a PATCH, which keeps
  the runs already started, a removal a DELETE.
Locally the same file drives `cd4ml watch --schedules` (entries due at each poll run here).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from typing import Callable, Dict, List, Optional, Sequence

PREFIX = "cd4ml-"
KINDS = ("train", "batch")
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$")
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))


class ScheduleError(ValueError):
    """A schedules file that cannot be applied; the message names the entry, the field and the rule."""


def cron_values(expression: str) -> List[set]:
    """The values each of the five fields allows (`*`, `N`, `A-B`, `*/S`, `A-B/S`, lists of those)."""
    parts = expression.split()
    if len(parts) != 5:
        raise ScheduleError(f"cron {expression!r}: expected 5 fields (minute hour day-of-month month "
                            f"day-of-week), got {len(parts)}")
    allowed = []
    for text, (field, low, high) in zip(parts, FIELDS):
        values = set()
        for item in text.split(","):
            match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", item)
            if not match:
                raise ScheduleError(f"cron {expression!r}: {field} {item!r} is not *, N, A-B or a step of those")
            start, end = (low, high) if match.group(1) == "*" else \
                (int(match.group(2)), int(match.group(3) or match.group(2)))
            step = int(match.group(4) or 1)
            if not (low <= start <= end <= high) or step < 1:
                raise ScheduleError(f"cron {expression!r}: {field} {item!r} is outside {low}-{high}")
            values.update(range(start, end + 1, step))
        allowed.append(values)
    return allowed


def due(expression: str, at: datetime.datetime) -> bool:
    minute, hour, mday, month, wday = cron_values(expression)
    return (at.minute in minute and at.hour in hour and at.month in month
            and at.day in mday and (at.weekday() + 1) % 7 in wday)


@dataclasses.dataclass
class Schedule:
    name: str
    cron: str
    job: str                      # train | batch
    why: str
    span: str = "latest"          # train: "latest" or a span number
    input: str = ""               # batch: what to score
    output: str = ""              # batch: where ({date}: the run's date)
    version: str = ""             # batch: the version to score with (default: the one served)

    @property
    def display_name(self) -> str:
        return PREFIX + self.name

    def parameters(self, job: Dict) -> Dict[str, str]:
        """The run parameters a run of this entry gets (the compiled job's, with this entry's)."""
        if self.job == "train":
            from pipelines import kubeflow_runner

            return kubeflow_runner.parameter_values(job, span=None if self.span == "latest" else int(self.span))
        values = {"source": self.input, "destination": self.output}
        if self.version:
            values["version"] = self.version
        return {k: v for k, v in values.items() if v}

    def fingerprint(self, job: Dict) -> str:
        """What a run of it runs: when, with which parameters, which compiled job."""
        spec = json.dumps(job["pipelineSpec"], sort_keys=True)
        body = json.dumps([self.cron, self.job, self.parameters(job), hashlib.sha256(spec.encode()).hexdigest()],
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def description(self, job: Dict) -> str:
        return f"{self.why} [cd4ml-schedule {self.fingerprint(job)}]"


def load(path: str) -> List[Schedule]:
    import yaml

    try:
        with open(path) as fh:
            body = yaml.safe_load(fh) or {}
    except OSError as err:
        raise ScheduleError(f"{path}: cannot read it ({err.strerror})") from err
    entries = body.get("schedules") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise ScheduleError(f"{path}: expected `schedules:` and a list of entries")
    found, names = [], set()
    fields = {f.name for f in dataclasses.fields(Schedule)}
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: entry {number}" + (f" ({entry.get('name')})" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict):
            raise ScheduleError(f"{where}: expected a mapping")
        unknown = sorted(set(entry) - fields)
        missing = [k for k in ("name", "cron", "job", "why") if not entry.get(k)]
        if unknown or missing:
            raise ScheduleError(f"{where}: " + "; ".join(
                ([f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"missing {', '.join(missing)}"] if missing else [])))
        schedule = Schedule(**{k: str(v) for k, v in entry.items()})
        if not NAME.match(schedule.name):
            raise ScheduleError(f"{where}: name must be lower-case letters, digits and '-' (at most 48)")
        if schedule.name in names:
            raise ScheduleError(f"{where}: name {schedule.name!r} is used twice")
        if schedule.job not in KINDS:
            raise ScheduleError(f"{where}: job {schedule.job!r} is not one of {', '.join(KINDS)}")
        if schedule.job == "train" and schedule.span != "latest" and not schedule.span.isdigit():
            raise ScheduleError(f"{where}: span {schedule.span!r} must be 'latest' or a span number")
        if schedule.job == "batch" and not (schedule.input and schedule.output):
            raise ScheduleError(f"{where}: a batch entry needs input and output")
        try:
            cron_values(schedule.cron)
        except ScheduleError as err:
            raise ScheduleError(f"{where}: {err}") from None
        names.add(schedule.name)
        found.append(schedule)
    return found


# --- the platforms ------------------------------------------------------------------------------

@dataclasses.dataclass
class Remote:
    """A platform's schedule, as far as reconciling needs it."""

    id: str
    name: str
    fingerprint: str
    enabled: bool
    cron: str = ""


def _fingerprint_of(description: str) -> str:
    found = re.search(r"\[cd4ml-schedule ([0-9a-f]+)\]", description or "")
    return found.group(1) if found else ""


class KfpSchedules:
    """Kubeflow Pipelines' recurring runs (v2beta1, through kfp.Client) in one experiment."""

    platform = "kfp"

    def __init__(self, host: str, experiment: str, token: Optional[str] = None, client=None):
        import kfp

        self.client = client or kfp.Client(host=host, existing_token=token)
        self.experiment_id = self.client.create_experiment(name=experiment).experiment_id

    def list(self) -> List[Remote]:
        found, token = [], ""
        while True:
            page = self.client.list_recurring_runs(page_token=token, page_size=100, experiment_id=self.experiment_id)
            for r in page.recurring_runs or []:
                if (r.display_name or "").startswith(PREFIX):
                    cron = r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else ""
                    found.append(Remote(r.recurring_run_id, r.display_name, _fingerprint_of(r.description),
                                        str(r.mode).upper() == "ENABLE", cron))
            token = page.next_page_token
            if not token:
                return found

    def create(self, schedule: Schedule, job: Dict, job_path: str):
        from pipelines import submit

        request = submit.RunRequest(job_path, job, schedule.display_name, {})
        pipeline_id, version_id = submit._upload(self.client, request)
        self.client.create_recurring_run(
            self.experiment_id, schedule.display_name, description=schedule.description(job),
            cron_expression="0 " + schedule.cron,  # KFP's cron has a seconds field first
            max_concurrency=1, no_catchup=True, params=schedule.parameters(job), pipeline_id=pipeline_id,
            version_id=version_id, pipeline_root=job.get("runtimeConfig", {}).get("gcsOutputDirectory"))

    def update(self, remote: Remote, schedule: Schedule, job: Dict, job_path: str):
        """KFP cannot update a recurring run: a new one; `apply` then retires the old one."""
        self.create(schedule, job, job_path)

    def retire(self, remote: Remote) -> str:
        """Delete it when none of its runs is in flight, else disable it (deleted by a later apply)."""
        if self.in_flight(remote.id):
            if remote.enabled:
                self.client.disable_recurring_run(remote.id)
                return "disabled (runs in flight; deleted by a later apply)"
            return ""
        self.client.delete_recurring_run(remote.id)
        return "deleted"

    def in_flight(self, recurring_run_id: str) -> int:
        page = self.client.list_runs(experiment_id=self.experiment_id, page_size=100,
                                     filter=json.dumps({"predicates": [{"key": "recurring_run_id",
                                                                        "operation": "EQUALS",
                                                                        "string_value": recurring_run_id}]}))
        return sum(1 for r in page.runs or [] if str(r.state).upper() in ("PENDING", "RUNNING", "PAUSED"))


class VertexSchedules:
    """Vertex AI Pipelines' schedules through its REST API (v1 `projects.locations.schedules`)."""

    platform = "vertex"

    def __init__(self, project: str, region: str, base: Optional[str] = None, session=None):
        self.parent = f"projects/{project}/locations/{region}"
        self.base = (base or f"https://{region}-aiplatform.googleapis.com").rstrip("/") + "/v1"
        if session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            session = AuthorizedSession(credentials)
        self.session = session

    def _call(self, method: str, path: str, **kwargs) -> Dict:
        answer = self.session.request(method, f"{self.base}/{path}", timeout=60, **kwargs)
        if answer.status_code >= 300:
            raise ScheduleError(f"Vertex AI {method} {path}: HTTP {answer.status_code}: {answer.text[:300]}")
        return answer.json() if answer.content else {}

    def list(self) -> List[Remote]:
        found, token = [], ""
        while True:
            page = self._call("GET", f"{self.parent}/schedules", params={"pageSize": 100, "pageToken": token})
            for s in page.get("schedules", []):
                if s.get("displayName", "").startswith(PREFIX):
                    job = s.get("createPipelineJobRequest", {}).get("pipelineJob", {})
                    found.append(Remote(s["name"], s["displayName"], job.get("labels", {}).get("cd4ml-schedule", ""),
                                        s.get("state") == "ACTIVE", s.get("cron", "")))
            token = page.get("nextPageToken")
            if not token:
                return found

    def _body(self, schedule: Schedule, job: Dict) -> Dict:
        values = dict(job.get("runtimeConfig", {}).get("parameterValues", {}))
        values.update(schedule.parameters(job))
        pipeline_job = {"displayName": schedule.display_name, "pipelineSpec": job["pipelineSpec"],
                        "labels": {**job.get("labels", {}), "cd4ml-schedule": schedule.fingerprint(job)},
                        "runtimeConfig": {"gcsOutputDirectory": job.get("runtimeConfig", {}).get("gcsOutputDirectory"),
                                          "parameterValues": values}}
        return {"displayName": schedule.display_name, "cron": f"TZ=UTC {schedule.cron}",
                "maxConcurrentRunCount": "1", "allowQueueing": False,
                "createPipelineJobRequest": {"parent": self.parent, "pipelineJob": pipeline_job}}

    def create(self, schedule: Schedule, job: Dict, job_path: str):
        self._call("POST", f"{self.parent}/schedules", json=self._body(schedule, job))

    def update(self, remote: Remote, schedule: Schedule, job: Dict, job_path: str):
        """A PATCH: the runs it already started are neither paused nor cancelled."""
        self._call("PATCH", remote.id, params={"updateMask": "cron,createPipelineJobRequest"},
                   json=self._body(schedule, job))

    def retire(self, remote: Remote) -> str:
        self._call("DELETE", remote.id)  # its PipelineJobs are not owned by it: they run on
        return "deleted"


# --- reconciling --------------------------------------------------------------------------------

@dataclasses.dataclass
class Change:
    action: str      # create, update, delete, disable, keep
    name: str
    detail: str = ""

    def line(self) -> str:
        return f"  {self.action:<8} {self.name}{': ' + self.detail if self.detail else ''}"


def apply(platform, schedules: Sequence[Schedule], jobs: Dict[str, str], dry_run: bool = False,
          progress: Callable[[str], None] = print) -> List[Change]:
    """Make the platform's cd4ml schedules match `schedules`; `jobs`: {kind: compiled job path}."""
    from pipelines import kubeflow_runner

    loaded = {}
    for kind in {s.job for s in schedules}:
        if not jobs.get(kind):
            how = "cd4ml compile --batch INPUT OUTPUT" if kind == "batch" else "cd4ml compile"
            raise ScheduleError(f"a {kind} entry needs its compiled job ({how})")
        loaded[kind] = kubeflow_runner.load_job(jobs[kind])
    remote = platform.list()
    changes = []
    for schedule in schedules:
        job = loaded[schedule.job]
        fingerprint = schedule.fingerprint(job)
        mine = [r for r in remote if r.name == schedule.display_name]
        current = [r for r in mine if r.enabled and r.fingerprint == fingerprint]
        if current:
            changes.append(Change("keep", schedule.name, f"{schedule.cron}, unchanged"))
            stale = [r for r in mine if r is not current[0]]
        elif [r for r in mine if r.enabled]:
            live = [r for r in mine if r.enabled][0]
            changes.append(Change("update", schedule.name, f"{live.cron or '?'} -> {schedule.cron}"))
            if not dry_run:
                platform.update(live, schedule, job, jobs[schedule.job])
            # On KFP the replaced recurring run goes too (deleted, or disabled while its runs finish).
            stale = [r for r in mine if r is not live] + ([live] if platform.platform == "kfp" else [])
        else:
            changes.append(Change("create", schedule.name, f"{schedule.cron} ({schedule.why})"))
            if not dry_run:
                platform.create(schedule, job, jobs[schedule.job])
            stale = list(mine)
        for old in stale:
            _retire(platform, old, dry_run, changes, schedule.name)
    wanted = {s.display_name for s in schedules}
    for old in remote:
        if old.name not in wanted:
            _retire(platform, old, dry_run, changes, old.name[len(PREFIX):])
    for change in changes:
        progress(change.line())
    return changes


def _retire(platform, remote: Remote, dry_run: bool, changes: List[Change], name: str):
    if dry_run:
        changes.append(Change("delete", name, f"{remote.id} (if no run is in flight)"))
        return
    done = platform.retire(remote)
    if done:
        changes.append(Change("delete" if done == "deleted" else "disable", name, f"{remote.id} {done}"))

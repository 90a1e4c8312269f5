"""Run a compiled Kubeflow job on this machine, task by task, as a KFP launcher runs it.

What a user runs before `cd4ml submit --host`, and what the tests run. For each task of the job's
DAG, in dependency order (two at a time where the DAG allows): the ExecutorInput a launcher builds
(parameters from the run and the task's constants, input artifacts from the producers'
ExecutorOutput, output URIs under the pipeline root, the output file) takes the place of `{{$}}`,
and the task's own container command runs as its own process: `python -m
tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...`. Its ExecutorOutput
(artifacts and their metadata) is handed downstream. The `kfp.pipeline_spec` protos read the job
and build the ExecutorInput, so a field the protos do not know fails here as it would there.

The rules of each backend (`--backend`):
- `oss`, open-source KFP 2.x: a job with a `resolver` executor is refused when the run is
  created (its backend implements none: kubeflow/pipelines backend/src/v2/compiler/argocompiler
  /dag.go), and no lifecycle hook runs;
- `vertex`, Vertex AI: the `lifecycle.preCacheCheck` hook (TFX's ExampleGen driver) runs before
  its task, with the same ExecutorInput, and what it writes is merged by the entrypoint;
- both: a task whose cache key (KFP's: input artifact names, input parameter values, output
  specs, the container's image, command and arguments) matches an earlier task is answered from
  the cache, unless the task disables caching.

`gs://` paths map to a local folder (`gs://BUCKET/x` -> `<gcs_dir>/BUCKET/x`): TensorFlow 2.16's GCS
filesystem has its endpoint built in, so no storage emulator can stand in for it. Tasks run in a
warm interpreter: this process imports TensorFlow and TFX once, then forks a child per task (still
one process per task, 10 s of imports saved each); `container=IMAGE` runs each task with podman in
the pipeline image instead, the folder mounted at /gcs.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from cd4ml.contract import USAGE_FIELDS, USAGE_METADATA
from pipelines import usage
from pipelines.config import REPO_ROOT

BACKENDS = ("oss", "vertex")
CONTAINER_GCS = "/gcs"  # where the gs:// folder is mounted inside a container
CACHE_DIR = ".kfp-local-cache"
PARALLEL = 2  # tasks at once: this machine's cores


class JobRefused(ValueError):
    """The backend would refuse this job when the run is created; the message says why."""


@dataclasses.dataclass
class TaskRun:
    name: str
    state: str = "pending"  # succeeded, cached, failed, skipped (a dependency failed)
    seconds: float = 0.0
    log: str = ""
    outputs: Dict[str, List[Dict]] = dataclasses.field(default_factory=dict)  # key -> RuntimeArtifact JSON
    error: str = ""
    usage: Dict[str, float] = dataclasses.field(default_factory=dict)  # its process(es): pipelines/usage.py


@dataclasses.dataclass
class LocalRun:
    run_id: str
    backend: str
    pipeline_root: str
    parameters: Dict[str, str]
    gcs_dir: str = ""
    mount: str = ""  # where tasks saw that folder (itself, or CONTAINER_GCS in a container)
    tasks: Dict[str, TaskRun] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def gcs(self, path: str) -> str:
        """A path a task wrote (under the folder or its mount), as the gs:// URI it stands for."""
        for root in filter(None, (self.mount, self.gcs_dir)):
            prefix = root.rstrip("/") + "/"
            if path.startswith(prefix):
                return "gs://" + path[len(prefix):]
        return path

    @property
    def state(self) -> str:
        states = {t.state for t in self.tasks.values()}
        return "failed" if states & {"failed", "skipped"} else "succeeded"

    def metadata(self, task: str, key: str) -> Dict[str, object]:
        """The metadata of a task's first output artifact under `key` ({} when absent)."""
        found = self.tasks.get(task, TaskRun(task)).outputs.get(key) or [{}]
        return found[0].get("metadata", {})

    @property
    def window(self) -> List[int]:
        """The spans the run trained on, newest first (TrainingWindow's record)."""
        text = self.metadata("TrainingWindow", "window").get("window")
        return [int(w["span"]) for w in json.loads(text)] if text else []

    @property
    def baseline(self) -> str:
        return str(self.metadata("ServingBaseline", "baseline").get("version", ""))

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, "backend": self.backend, "state": self.state,
                           "seconds": self.seconds, "parameters": self.parameters, "window": self.window,
                           "baseline": self.baseline, "pushed_version": self.pushed_version,
                           "usage": self.usage,
                           "tasks": {t.name: {"state": t.state, "seconds": t.seconds, "error": t.error, "log": t.log,
                                              "usage": t.usage} for t in self.tasks.values()}},
                          indent=2, sort_keys=True)

    @property
    def usage(self) -> Dict[str, float]:
        """CPU seconds summed over the tasks that ran, the largest task's peak resident MB."""
        measured = [t.usage for t in self.tasks.values() if t.usage]
        if not measured:
            return {}
        return {"cpu_seconds": round(sum(u["cpu_seconds"] for u in measured), 1),
                "peak_mb": round(max(u["peak_mb"] for u in measured))}

    @property
    def pushed_version(self) -> str:
        pushed = self.metadata("Pusher", "pushed_model")
        return str(pushed.get("pushed_version", "")) if pushed.get("pushed") == 1 else ""

    def summary(self) -> str:
        ran = [t for t in self.tasks.values() if t.state == "succeeded"]
        cached = [t.name for t in self.tasks.values() if t.state == "cached"]
        lines = [f"run {self.run_id} ({self.backend} rules): {self.state} in {self.seconds:.1f} s; "
                 f"{len(ran)} tasks ran, {len(cached)} cached" + (f" ({', '.join(cached)})" if cached and ran else "")]
        if self.usage:
            used = self.usage
            lines.append(f"  used {used['cpu_seconds']:.1f} CPU s; largest task peak {used['peak_mb']:.0f} MB")
        if self.window:
            lines.append("  trained on spans " + ", ".join(map(str, self.window)))
        if self.metadata("ServingBaseline", "baseline"):
            lines.append(f"  baseline: {self.baseline or 'none (nothing served yet)'}")
        blessing = self.metadata("Evaluator", "blessing")
        if blessing:
            lines.append(f"  blessed: {'yes' if blessing.get('blessed') == 1 else 'no'}")
        if self.pushed_version:
            destination = self.gcs(str(self.metadata("Pusher", "pushed_model").get("pushed_destination", "")))
            if self.tasks["Pusher"].state == "cached":
                lines.append(f"  model already pushed as version {self.pushed_version} ({destination}): no new version")
            else:
                lines.append(f"  pushed version {self.pushed_version} to {destination}")
        elif "Pusher" in self.tasks and self.tasks["Pusher"].state in ("succeeded", "cached"):
            lines.append("  no model pushed")
        for task in self.tasks.values():
            if task.state in ("failed", "skipped"):
                lines.append(f"  {task.name}: {task.state}{': ' + task.error if task.error else ''}"
                             + (f" (log: {task.log})" if task.log else ""))
        return "\n".join(lines)


def _pb():
    from kfp.pipeline_spec import pipeline_spec_pb2

    return pipeline_spec_pb2


def check_backend(job: Dict, backend: str):
    """Refuse the job as the backend would when the run is created."""
    if backend not in BACKENDS:
        raise JobRefused(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    resolvers = sorted(name for name, e in executors.items() if "resolver" in e)
    if resolvers and backend == "oss":
        raise JobRefused(f"open-source KFP refuses this job: resolver executors not implemented "
                         f"({', '.join(resolvers)}); rebuild it with `cd4ml compile`")
    others = sorted(name for name, e in executors.items() if "container" not in e)
    if others:
        raise JobRefused(f"this runner runs container tasks only; not: {', '.join(others)}")
    for name, e in executors.items():
        if "--runner=DataflowRunner" in e["container"].get("args", []):
            raise JobRefused(f"{name} runs Beam on Dataflow; compile without Dataflow arguments to run it here")


def order(job: Dict) -> Dict[str, List[str]]:
    """{task: the tasks it waits for}, for every task of the root DAG."""
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    needs = {}
    for name, task in tasks.items():
        wait = set(task.get("dependentTasks", []))
        for spec in task.get("inputs", {}).get("artifacts", {}).values():
            if "taskOutputArtifact" in spec:
                wait.add(spec["taskOutputArtifact"]["producerTask"])
        needs[name] = sorted(wait)
    return needs


class Paths:
    """gs:// <-> the local folder that stands for it (or its mount inside a container)."""

    def __init__(self, gcs_dir: str, inside_container: bool = False):
        self.gcs_dir = os.path.abspath(gcs_dir)
        self.mount = CONTAINER_GCS if inside_container else self.gcs_dir

    def task_view(self, text: str) -> str:
        return text.replace("gs://", self.mount.rstrip("/") + "/")

    def local(self, uri: str) -> str:
        return uri.replace("gs://", self.gcs_dir.rstrip("/") + "/")


def build_executor_input(job: Dict, task_name: str, run: LocalRun, paths: Paths):
    """The ExecutorInput a KFP launcher builds for one task (kfp.pipeline_spec protos)."""
    from google.protobuf import json_format, struct_pb2

    pb = _pb()
    spec = job["pipelineSpec"]
    task = spec["root"]["dag"]["tasks"][task_name]
    component = spec["components"][task["componentRef"]["name"]]
    executor_input = pb.ExecutorInput()
    for name, source in task.get("inputs", {}).get("parameters", {}).items():
        value = struct_pb2.Value()
        if "componentInputParameter" in source:
            value.string_value = run.parameters[source["componentInputParameter"]]
        elif "runtimeValue" in source:
            constant = source["runtimeValue"].get("constant", source["runtimeValue"].get("constantValue"))
            json_format.ParseDict(constant, value)
        else:
            raise JobRefused(f"{task_name}: input parameter {name!r} from {sorted(source)} is not supported here")
        executor_input.inputs.parameter_values[name].CopyFrom(value)
    for name, source in task.get("inputs", {}).get("artifacts", {}).items():
        producer = source["taskOutputArtifact"]
        artifacts = run.tasks[producer["producerTask"]].outputs[producer["outputArtifactKey"]]
        listed = executor_input.inputs.artifacts[name]
        for artifact in artifacts:
            json_format.ParseDict(artifact, listed.artifacts.add())
    task_root = f"{run.pipeline_root.rstrip('/')}/{run.run_id}/{task_name}"
    for key, definition in component.get("outputDefinitions", {}).get("artifacts", {}).items():
        artifact = executor_input.outputs.artifacts[key].artifacts.add()
        artifact.name = f"{run.run_id}/{task_name}/{key}"
        artifact.uri = f"{task_root}/{key}"
        json_format.ParseDict(definition["artifactType"], artifact.type)
    executor_input.outputs.output_file = f"{task_root}/executor_output.json"
    return executor_input


def cache_key(job: Dict, task_name: str, executor_input) -> str:
    """KFP's cache key, in substance: what the task reads and how it runs (not where it writes)."""
    from google.protobuf import json_format

    spec = job["pipelineSpec"]
    component = spec["components"][spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]]
    inputs = json_format.MessageToDict(executor_input.inputs)
    names = {k: [a.get("name") for a in v.get("artifacts", [])] for k, v in inputs.get("artifacts", {}).items()}
    body = {"artifacts": names, "parameters": inputs.get("parameterValues", {}),
            "outputs": component.get("outputDefinitions", {}),
            "container": spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


PLACEHOLDER = re.compile(r"\{\{\$\.(inputs\.parameters|outputs\.artifacts)\['([^']+)'\](\.path|\.uri)?\}\}")


def _fill(arg: str, executor_input) -> str:
    """A launcher's placeholders in a container component's argument: an input parameter's value,
    an output artifact's URI or local path (gs:// paths are then mapped like everything else)."""
    from google.protobuf import json_format

    def value(match) -> str:
        kind, name, part = match.groups()
        if kind == "inputs.parameters":
            found = executor_input.inputs.parameter_values[name]
            return found.string_value if found.WhichOneof("kind") == "string_value" else \
                json.dumps(json_format.MessageToDict(found))
        return executor_input.outputs.artifacts[name].artifacts[0].uri

    return PLACEHOLDER.sub(value, arg)


def _command(container: Dict, executor_input, paths: Paths, hook: Optional[Dict] = None) -> List[str]:
    from google.protobuf import json_format

    step = hook or container
    serialized = paths.task_view(json_format.MessageToJson(executor_input, indent=None))
    args = [serialized if a == "{{$}}" else paths.task_view(_fill(a, executor_input)) for a in step.get("args", [])]
    leftover = [a for a in args if "{{$" in a]
    if leftover:
        raise JobRefused(f"placeholders this runner does not fill: {leftover}")
    return list(step["command"]) + args


class Launcher:
    """Starts a task's command as its own process: forked from this warm interpreter, or in a
    podman container of the pipeline image."""

    def __init__(self, paths: Paths, container: Optional[str] = None):
        self.paths = paths
        self.container = container
        if container is None:
            warm_up()

    def start(self, command: List[str], log: str) -> int:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        if self.container:
            argv = ["podman", "--runtime", "runc", "run", "--rm", "--network", "none", *container_limits(),
                    "-v", f"{self.paths.gcs_dir}:{CONTAINER_GCS}", self.container, *command]
            with open(log, "wb") as out:
                return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT).pid
        if command[:2] != ["python", "-m"]:
            with open(log, "wb") as out:
                argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
                return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT).pid
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child process
            _run_module_in_child(command[2], command[3:], log)
        return pid


def container_limits() -> List[str]:
    """Explicit ulimits (podman's defaults fail with EPERM in some sandboxes), never above this
    process's hard limits (above them, runc cannot start the container)."""
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 8192 if nproc == resource.RLIM_INFINITY else min(nproc, 8192)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def warm_up():
    """What every task imports, once, before the children are forked."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow  # noqa: F401
    import tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor  # noqa: F401
    import tfx.orchestration.kubeflow.v2.file_based_example_gen.driver  # noqa: F401


def _run_module_in_child(module: str, args: List[str], log: str):  # pragma: no cover - runs forked
    import runpy
    import traceback

    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(REPO_ROOT)  # the image's working directory is the repository (/pipeline)
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported in the task's log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int):
    """(exit code, rusage) of a finished child, or None while it runs."""
    done, status, rusage = os.wait4(pid, os.WNOHANG)
    return (os.waitstatus_to_exitcode(status), rusage) if done else None


def _read_outputs(executor_input, paths: Paths) -> Dict[str, List[Dict]]:
    """Each output artifact as the launcher records it: our URI and name, the executor's metadata."""
    from google.protobuf import json_format

    pb = _pb()
    written = pb.ExecutorOutput()
    if os.path.exists(paths.local(executor_input.outputs.output_file)):  # a container component writes none
        with open(paths.local(executor_input.outputs.output_file)) as fh:
            json_format.Parse(fh.read(), written, ignore_unknown_fields=True)
    outputs = {}
    for key, listed in executor_input.outputs.artifacts.items():
        produced = list(written.artifacts[key].artifacts) if key in written.artifacts else []
        merged = []
        for i, artifact in enumerate(listed.artifacts):
            record = pb.RuntimeArtifact()
            record.CopyFrom(artifact)
            if i < len(produced):
                record.metadata.CopyFrom(produced[i].metadata)
            merged.append(json_format.MessageToDict(record))
        outputs[key] = merged
    return outputs


@dataclasses.dataclass
class _Running:
    """A task between its start and its outputs: which step runs now (the hook, then the main)."""

    executor_input: object
    container: Dict
    caching: bool
    began: float
    step: str = ""   # "hook" or "main"
    pid: int = 0
    key: str = ""    # the cache key, once known
    cpu_seconds: float = 0.0
    peak_mb: float = 0.0


def _measured_in_task(outputs: Dict[str, List[Dict]]) -> Dict[str, float]:
    for artifacts in outputs.values():
        for artifact in artifacts:
            found = artifact.get("metadata", {}).get(USAGE_METADATA)
            if found:
                return {name: float(found.get(name, 0.0)) for name in USAGE_FIELDS}
    return {}


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as fh:
            return " | ".join(line.strip() for line in fh.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def _merge_hook_artifacts(executor_input, paths: Paths):
    """Vertex AI updates a task's output artifacts with what its hook wrote (ExampleGen's span)
    before it starts the task; the entrypoint itself merges only the parameters."""
    from google.protobuf import json_format

    written = _pb().ExecutorOutput()
    with open(paths.local(executor_input.outputs.output_file)) as fh:
        json_format.Parse(fh.read(), written, ignore_unknown_fields=True)
    for key, listed in written.artifacts.items():
        for mine, theirs in zip(executor_input.outputs.artifacts[key].artifacts, listed.artifacts):
            mine.metadata.MergeFrom(theirs.metadata)


def _hook_values(executor_input, paths: Paths) -> Dict[str, object]:
    """What a preCacheCheck hook wrote (the span it resolved, the fingerprint): part of the cache key."""
    path = paths.local(executor_input.outputs.output_file)
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh).get("parameterValues", {})


def run_job(job: Dict, parameters: Dict[str, str], gcs_dir: str, backend: str = "oss",
            run_id: Optional[str] = None, container: Optional[str] = None, parallel: int = PARALLEL,
            progress: Callable[[str], None] = print) -> LocalRun:
    """Run every task of `job` (a compiled PipelineJob) with the run's `parameters`."""
    check_backend(job, backend)
    started = time.monotonic()
    spec = job["pipelineSpec"]
    root = job.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
    if not root.startswith("gs://"):
        raise JobRefused(f"pipeline root {root!r}: a compiled job's root is a gs:// path")
    run_id = run_id or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    values = dict(job.get("runtimeConfig", {}).get("parameterValues", {}))
    values.update(parameters)
    paths = Paths(gcs_dir, inside_container=container is not None)
    run = LocalRun(run_id, backend, f"{root.rstrip('/')}/{spec['pipelineInfo']['name']}", values, paths.gcs_dir,
                   paths.mount)
    launcher = Launcher(paths, container)
    cache_dir = os.path.join(paths.gcs_dir, CACHE_DIR)
    needs = order(job)
    run.tasks = {task: TaskRun(task) for task in needs}
    running: Dict[str, _Running] = {}
    done = 0

    def finish(task: str, state: str, outputs=None, error: str = ""):
        nonlocal done
        current = running.pop(task)
        record = run.tasks[task]
        record.state, record.error = state, error
        record.outputs = outputs or {}
        record.seconds = round(time.monotonic() - current.began, 1)
        measured = _measured_in_task(record.outputs) if state == "succeeded" else {}
        if measured:  # what the task measured itself (pipelines/measured_executor.py): in a pod, the pod's
            record.usage = measured
        elif current.pid:  # else what its process(es) used (a container's: podman's own, not the task's)
            record.usage = usage.Usage(cpu_seconds=current.cpu_seconds, wall_seconds=record.seconds,
                                       peak_mb=current.peak_mb).as_dict()
        done += 1
        what = {"succeeded": f"finished in {record.seconds:.1f} s", "cached": "answered from the cache",
                "failed": f"failed: {error} (log: {record.log})"}[state]
        progress(f"  [{done:2d}/{len(needs)}] {task} {what}")

    def advance(task: str):
        """Start the task's next step, or settle it from the cache."""
        current = running[task]
        hook = current.container.get("lifecycle", {}).get("preCacheCheck") if backend == "vertex" else None
        if hook and not current.step:
            current.step = "hook"
            current.pid = launcher.start(_command(current.container, current.executor_input, paths, hook),
                                         run.tasks[task].log + ".hook")
            return
        key = cache_key(job, task, current.executor_input) + json.dumps(
            _hook_values(current.executor_input, paths), sort_keys=True)
        cached = _cache_get(cache_dir, key) if current.caching else None
        if cached is not None:
            finish(task, "cached", cached)
            return
        current.step, current.key = "main", key
        current.pid = launcher.start(_command(current.container, current.executor_input, paths),
                                     run.tasks[task].log)

    while done < len(needs):
        for task, waits in needs.items():
            record = run.tasks[task]
            if record.state != "pending" or len(running) >= parallel:
                continue
            if any(run.tasks[w].state in ("failed", "skipped") for w in waits):
                record.state, record.error = "skipped", "an upstream task failed"
                done += 1
                progress(f"  [{done:2d}/{len(needs)}] {task} skipped: an upstream task failed")
                continue
            if any(run.tasks[w].state not in ("succeeded", "cached") for w in waits):
                continue
            task_spec = spec["root"]["dag"]["tasks"][task]
            component = spec["components"][task_spec["componentRef"]["name"]]
            record.state = "running"
            record.log = paths.local(f"{run.pipeline_root}/{run_id}/{task}/task.log")
            executor_input = build_executor_input(job, task, run, paths)
            # A bucket has no folders to create: writing under an output URI just works there, so
            # each output's folder exists here before the task starts.
            # (A TFX executor writes into its output's folder; a container component writes a file
            # at the output's path, whose folder exists.)
            folders = "{{$}}" in spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["args"]
            for listed in executor_input.outputs.artifacts.values():
                for artifact in listed.artifacts:
                    local = paths.local(artifact.uri)
                    os.makedirs(local if folders else os.path.dirname(local), exist_ok=True)
            running[task] = _Running(executor_input,
                                     spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"],
                                     bool(task_spec.get("cachingOptions", {}).get("enableCache")), time.monotonic())
            progress(f"  [{done + len(running):2d}/{len(needs)}] {task} ...")
            advance(task)
        for task, current in list(running.items()):
            finished = _wait(current.pid)
            if finished is None:
                continue
            code, rusage = finished
            measured = usage.of_child(rusage, time.monotonic() - current.began)  # hook and main summed
            current.cpu_seconds += measured.cpu_seconds
            current.peak_mb = max(current.peak_mb, measured.peak_mb)
            if code != 0:
                log = run.tasks[task].log + (".hook" if current.step == "hook" else "")
                finish(task, "failed", error=f"exit {code} in its {current.step} step: {_tail(log)}")
            elif current.step == "hook":
                _merge_hook_artifacts(current.executor_input, paths)
                advance(task)
            else:
                outputs = _read_outputs(current.executor_input, paths)
                if current.caching:
                    _cache_put(cache_dir, current.key, outputs)
                finish(task, "succeeded", outputs)
        time.sleep(0.05)
    run.seconds = round(time.monotonic() - started, 1)
    return run


def _cache_get(cache_dir: str, key: str) -> Optional[Dict[str, List[Dict]]]:
    path = os.path.join(cache_dir, hashlib.sha256(key.encode()).hexdigest() + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _cache_put(cache_dir: str, key: str, outputs: Dict[str, List[Dict]]):
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, hashlib.sha256(key.encode()).hexdigest() + ".json")
    with open(path + ".tmp", "w") as fh:
        json.dump(outputs, fh)
    os.replace(path + ".tmp", path)


def run_values(job: Dict, paths: Paths, span: Optional[int] = None,
               mae_bound: Optional[float] = None) -> Dict[str, str]:
    """This run's parameter values, as `cd4ml submit` computes them, on the mapped folders."""
    from pipelines import kubeflow_runner

    return kubeflow_runner.job_values(job, span=span, mae_bound=mae_bound, local=paths.local)

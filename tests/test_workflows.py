"""Offline checks of .github/workflows/*.yml.

- Shape: `check-jsonschema --builtin-schema vendor.github-workflows` (the schema bundled with
  check-jsonschema, no network), and proof that it rejects a misspelt key and a wrong type.
- Meaning: the triggers the issue asks for; every job sets up Python 3.10 and `make setup` before
  anything else; every `make X` a workflow runs is a Makefile target and every `cd4ml X` a command
  the CLI has or is planned to have (and its flags exist, once the command does); event data never
  spliced into a shell script.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from pipelines.config import REPO_ROOT

WORKFLOW_DIR = os.path.join(REPO_ROOT, ".github", "workflows")
CHECK_JSONSCHEMA = os.path.join(os.path.dirname(sys.executable), "check-jsonschema")

# Commands that issues 3 and 4 plan for the CLI (some may not exist yet). A workflow may call these
# or anything in cd4ml.cli.COMMANDS, nothing else. Once a command is in COMMANDS, the flags the
# workflows pass are checked against its real parser (test_cd4ml_flags_exist_for_commands_that_exist).
MAKE_CALL = re.compile(r"(?:^|[\s;&|(])make((?:\s+-{1,2}[\w=-]+)*)((?:\s+[A-Za-z][\w.-]*(?:=\S*)?)+)")
CD4ML_CALL = re.compile(r"(?:^|[\s;&|(/])cd4ml\s+([a-z][\w-]*)([^\n;&|]*)")


def workflow_files() -> list[str]:
    return sorted(glob.glob(os.path.join(WORKFLOW_DIR, "*.yml")) + glob.glob(os.path.join(WORKFLOW_DIR, "*.yaml")))


def load(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the key `on` as True.
    return workflow.get("on", workflow.get(True))


def makefile_targets() -> set[str]:
    with open(os.path.join(REPO_ROOT, "Makefile")) as fh:
        return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", fh.read(), flags=re.MULTILINE))


def cli_commands() -> set[str]:
    from cd4ml import cli
    return set(cli.COMMANDS)


def run_scripts(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]


def make_calls(script: str) -> list[str]:
    targets = []
    for line in script.splitlines():
        line = line.split("#", 1)[0]
        for match in MAKE_CALL.finditer(line):
            targets += [t for t in match.group(2).split() if "=" not in t]
    return targets


def cd4ml_calls(script: str) -> list[list[str]]:
    calls = []
    for line in script.splitlines():
        line = line.split("#", 1)[0]
        for match in CD4ML_CALL.finditer(line):
            calls.append([match.group(1)] + match.group(2).split())
    return calls


def unknown_calls(workflow: dict) -> list[str]:
    """Every make target or cd4ml command a workflow calls that does not exist (or is not planned)."""
    targets, commands = makefile_targets(), cli_commands()
    problems = []
    for script in run_scripts(workflow):
        problems += [f"make {t}" for t in make_calls(script) if t not in targets]
        problems += [f"cd4ml {c[0]}" for c in cd4ml_calls(script) if c[0] not in commands]
    return problems


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict]:
    found = {os.path.basename(p): load(p) for p in workflow_files()}
    assert set(found) >= {"ci.yml", "cd.yml", "retrain.yml"}, sorted(found)
    return found


# ---------------------------------------------------------------- schema

def check_jsonschema(paths: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.github-workflows", *paths],
                          check=False, capture_output=True, text=True, timeout=120)


def test_workflows_pass_the_github_workflow_schema():
    proc = check_jsonschema(workflow_files())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_rejects_a_misspelt_key_and_a_wrong_type(tmp_path):
    with open(os.path.join(WORKFLOW_DIR, "ci.yml")) as fh:
        text = fh.read()
    assert "    timeout-minutes: 30\n" in text and "    runs-on: ubuntu-latest\n" in text
    bad = {
        "misspelt-optional.yml": text.replace("    timeout-minutes: 30\n", "    timeout-minutez: 30\n", 1),
        "misspelt-required.yml": text.replace("    runs-on: ubuntu-latest\n", "    runs_on: ubuntu-latest\n", 1),
        "wrong-type.yml": text.replace("    timeout-minutes: 30\n", "    timeout-minutes: [30]\n", 1),
        "misspelt-trigger.yml": text.replace("  pull_request:\n", "  pull_requests:\n", 1),
    }
    paths = []
    for name, body in bad.items():
        assert body != text
        path = tmp_path / name
        path.write_text(body)
        paths.append(str(path))
    proc = check_jsonschema(paths)
    assert proc.returncode != 0
    for name in bad:
        assert f"{name}::" in proc.stdout, f"{name} was not rejected:\n{proc.stdout}"


ACTIONLINT = os.path.join(os.path.dirname(sys.executable), "actionlint")


def test_workflows_pass_actionlint():
    """actionlint (expressions, contexts, needs/outputs, step ids) on every workflow, offline."""
    proc = subprocess.run([ACTIONLINT, "-no-color", *workflow_files()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_an_output_of_a_job_not_needed(tmp_path):
    """The kind of slip the cd workflow's image guard could make: an output read from a job the
    reading job does not need."""
    with open(os.path.join(WORKFLOW_DIR, "cd.yml")) as fh:
        text = fh.read()
    bad = text.replace("needs.pipeline-image.outputs.pushed", "needs.serving-image.outputs.pushed", 1)
    assert bad != text
    path = tmp_path / "cd.yml"
    path.write_text(bad)
    proc = subprocess.run([ACTIONLINT, "-no-color", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "serving-image" in proc.stdout, proc.stdout


def test_the_kfp_kind_workflow_runs_the_image_it_built_on_a_real_kfp(workflows):
    """kfp-kind.yml (it cannot run here: no Docker engine, no cluster): manual and nightly; the
    image built from this commit is loaded into kind (never pulled, never pushed), KFP's
    standalone manifests installed, and the job compiled with that image submitted and waited for."""
    flow = workflows["kfp-kind.yml"]
    on = triggers(flow)
    assert "workflow_dispatch" in on and "schedule" in on
    (job,) = flow["jobs"].values()
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "${{ github.sha }}" in flow["env"]["IMAGE"]
    assert 'kind load docker-image "$IMAGE"' in runs and "docker push" not in runs
    assert "manifests/kustomize/env/platform-agnostic" in runs
    assert 'CD4ML_IMAGE="$IMAGE"' in runs and "cd4ml compile" in runs
    submit = next(s["run"] for s in job["steps"] if "cd4ml submit" in s.get("run", ""))
    assert "--wait" in submit and "--host http://localhost:8888" in submit
    assert any(s.get("uses", "").startswith("helm/kind-action@") for s in job["steps"])


# ---------------------------------------------------------------- triggers

def test_triggers(workflows):
    ci = triggers(workflows["ci.yml"])
    assert set(ci) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert ci["push"] == {"branches": ["main"]} and ci["schedule"][0]["cron"]
    assert triggers(workflows["cd.yml"]) == {"push": {"branches": ["main"]}}
    retrain = triggers(workflows["retrain.yml"])
    assert set(retrain) == {"repository_dispatch", "workflow_dispatch"}
    assert sorted(retrain["repository_dispatch"]["types"]) == ["data-dropped", "drift-detected"]
    assert set(retrain["workflow_dispatch"]["inputs"]) == {"span", "reason"}


# ---------------------------------------------------------------- steps call what developers run

def test_every_make_target_and_cd4ml_command_exists(workflows):
    for name, workflow in workflows.items():
        assert unknown_calls(workflow) == [], name


def test_the_call_check_fails_on_an_unknown_target_or_command(workflows):
    fake = {"jobs": {"x": {"steps": [
        {"run": "make setup\nmake deploy-prod"},
        {"run": "cd4ml compile --output x.json && cd4ml publish --now"},
        {"run": ".venv/bin/cd4ml launch-missiles"},
    ]}}}
    assert unknown_calls(fake) == ["make deploy-prod", "cd4ml publish", "cd4ml launch-missiles"]
    assert make_calls("make -j2 lint test-fast PYTEST_ARGS=-x") == ["lint", "test-fast"]


def test_each_workflow_runs_its_stage(workflows):
    def calls(name):
        scripts = run_scripts(workflows[name])
        return ({t for s in scripts for t in make_calls(s)}, {c[0] for s in scripts for c in cd4ml_calls(s)})

    make, cli = calls("ci.yml")
    assert {"setup", "lint", "test-fast", "test"} <= make and "compile" in cli
    # The whole suite (what `make test` and .ci/run run) on pushes to main and nightly, not only
    # the fast tests of a pull request.
    full = [j for j in workflows["ci.yml"]["jobs"].values()
            if any("test" in make_calls(s.get("run", "")) for s in j["steps"])]
    assert full and all(j.get("if") == "github.event_name != 'pull_request'" for j in full)
    cached = {s["with"]["path"] for j in full for s in j["steps"] if s.get("uses", "").startswith("actions/cache@")}
    assert cached == {".venv", ".venv-serving"}
    make, cli = calls("cd.yml")
    assert "setup" in make and {"compile", "submit"} <= cli
    make, cli = calls("retrain.yml")
    assert "setup" in make and {"compile", "submit"} <= cli


def test_jobs_use_python_310_and_make_setup_first(workflows):
    for name, workflow in workflows.items():
        for job_name, job in workflow["jobs"].items():
            steps = job["steps"]
            runs = [s.get("run", "") for s in steps]
            uses_repo_env = any(make_calls(r) or cd4ml_calls(r) for r in runs)
            if not uses_repo_env:
                continue  # e.g. image builds: docker only
            setup_python = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/setup-python@")]
            assert setup_python, f"{name}:{job_name} has no actions/setup-python"
            assert str(steps[setup_python[0]]["with"]["python-version"]) == "3.10", f"{name}:{job_name}"
            first_setup = next(i for i, r in enumerate(runs) if "setup" in make_calls(r))
            first_other = min(i for i, r in enumerate(runs)
                              if [t for t in make_calls(r) if t != "setup"] or cd4ml_calls(r))
            assert setup_python[0] < first_setup <= first_other, f"{name}:{job_name}: make setup must come first"


def test_cd_uploads_the_compiled_spec_and_submits_only_with_secrets(workflows):
    for name in ("cd.yml", "retrain.yml"):
        job = next(j for j in workflows[name]["jobs"].values()
                   if any("cd4ml submit" in s.get("run", "") for s in j["steps"]))
        steps = job["steps"]
        compile_step = next(s for s in steps if "cd4ml compile" in s.get("run", ""))
        output = cd4ml_calls(compile_step["run"])[0]
        spec = output[output.index("--output") + 1]
        upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
        assert upload["with"]["path"] == spec
        submit = next(s for s in steps if "cd4ml submit" in s.get("run", ""))
        args = cd4ml_calls(submit["run"])[0]
        assert "--wait" in args and spec in args
        assert "HAS_KFP" in job["env"] and "HAS_VERTEX" in job["env"]
        assert "secrets.KFP_HOST" in job["env"]["HAS_KFP"]
        if name == "cd.yml":
            assert "HAS_KFP" in submit["if"] and "HAS_VERTEX" in submit["if"]
            assert "pipeline-image" in job["needs"]
        else:
            check = steps[0]["run"]
            assert "HAS_KFP" in check and "exit" in check  # fails clearly with no cluster
            # A scheduled retrain submits only when the image its commit names exists.
            exists = next(i for i, s in enumerate(steps) if "docker manifest inspect" in s.get("run", ""))
            assert exists < steps.index(submit) and "exit 1" in steps[exists]["run"]


def test_cd_submits_only_the_image_it_built_and_pushed(workflows):
    """The run names the image tagged with this commit, and is submitted only when that image was
    pushed; with a cluster configured but no push, the job fails instead of submitting."""
    jobs = workflows["cd.yml"]["jobs"]
    build, pipeline = jobs["pipeline-image"], jobs["pipeline"]
    assert "${{ github.sha }}" in workflows["cd.yml"]["env"]["CD4ML_IMAGE"]
    push = next(s for s in build["steps"] if "docker push" in s.get("run", ""))
    assert push["id"] == "push" and 'pushed=true' in push["run"] and "GITHUB_OUTPUT" in push["run"]
    assert "steps.push.outputs.pushed" in build["outputs"]["pushed"]
    assert pipeline["env"]["CD4ML_IMAGE"] == "${{ needs.pipeline-image.outputs.image }}"
    assert "needs.pipeline-image.outputs.pushed" in pipeline["env"]["IMAGE_PUSHED"]
    submit = next(s for s in pipeline["steps"] if "cd4ml submit" in s.get("run", ""))
    assert "IMAGE_PUSHED == 'true'" in submit["if"]
    refuse = next(s for s in pipeline["steps"] if "IMAGE_PUSHED != 'true'" in s.get("if", ""))
    assert "exit 1" in refuse["run"]


def test_event_data_never_spliced_into_a_script(workflows):
    # ${{ github.event.* }} or ${{ inputs.* }} inside `run:` is a script-injection hole; pass them
    # through env instead.
    for name, workflow in workflows.items():
        for script in run_scripts(workflow):
            for expr in re.findall(r"\$\{\{(.*?)\}\}", script):
                assert not re.search(r"github\.event|inputs\.|github\.head_ref", expr), (name, expr)


def test_every_cd4ml_call_in_a_workflow_names_a_command_and_its_flags(workflows):
    """A workflow calls only commands the CLI has, with flags those commands take."""
    from cd4ml import cli
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    checked = 0
    for name, workflow in workflows.items():
        for script in run_scripts(workflow):
            for call in cd4ml_calls(script):
                command = call[0]
                assert command in sub.choices, f"{name}: cd4ml has no command {command!r}"
                options = set(sub.choices[command]._option_string_actions)
                flags = [tok.split("=")[0] for tok in shlex.split(" ".join(call[1:]))
                         if tok.startswith("-") and not tok.startswith("-$")]
                unknown = [f for f in flags if f not in options]
                assert not unknown, f"{name}: cd4ml {command} has no {unknown}"
                checked += 1
    assert checked, "no workflow calls cd4ml: the CI/CD path runs nothing of ours"


def test_ci_uploads_the_run_browser_export(workflows):
    """The full test job exports the run browser's pages of a fresh local run and uploads them."""
    job = next(j for j in workflows["ci.yml"]["jobs"].values()
               if any("test" in make_calls(s.get("run", "")) for s in j["steps"]))
    exported = [s for s in job["steps"] if "cd4ml ui --export" in s.get("run", "")]
    assert exported, "no step runs `cd4ml ui --export`"
    target = exported[0]["run"].split("--export", 1)[1].split()[0]
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(s["with"]["path"] == target for s in uploads), (target, uploads)
    assert exported[0]["env"]["CD4ML_PIPELINE_ROOT"] == ""  # local roots, not the job's gs:// ones


def test_cd_promotes_only_in_the_production_environment(workflows):
    """The pipeline pushes candidates (CD4ML_PROMOTION=manual); the job that serves one runs in the
    `production` environment, after the pipeline, and approves with who and why."""
    jobs = workflows["cd.yml"]["jobs"]
    pipeline = next(j for j in jobs.values() if any("cd4ml submit" in s.get("run", "") for s in j["steps"]))
    assert pipeline["env"]["CD4ML_PROMOTION"] == "manual"
    (promote,) = [j for j in jobs.values() if any("cd4ml approve" in s.get("run", "") for s in j["steps"])]
    assert promote["environment"] == "production" and promote["needs"] == "pipeline"
    (step,) = [s for s in promote["steps"] if "cd4ml approve" in s.get("run", "")]
    args = cd4ml_calls(step["run"])[0]
    assert "--latest" in args and "--reason" in args and "${{" not in step["run"]
    assert [j for j in jobs.values() if j.get("environment") == "production"] == [promote]

"""Schedules kept in code: schedules.yaml, reconciled with Kubeflow recurring runs or Vertex AI schedules.

    cd4ml schedule list                         the entries and when each is next due (UTC)
    cd4ml schedule apply --host URL             make KFP's recurring runs match the file
    cd4ml schedule apply --project P            ... or Vertex AI's schedules
    cd4ml schedule apply --dry-run              say what would change, change nothing

Applying twice changes nothing the second time. An edited entry replaces its schedule without
killing the runs in flight; a removed entry's schedule is removed (pipelines/schedules.py). The
training entries run build/pipeline.json (`cd4ml compile`), the batch ones build/batch.json
(`cd4ml compile --batch`). Locally, `cd4ml watch --schedules schedules.yaml` runs entries when due.
"""

import contextlib
import datetime
import os
import sys

from cd4ml.commands.common import add_config_flags, config_from
from pipelines.config import REPO_ROOT

HELP = "schedules in code: list them, or apply schedules.yaml to Kubeflow / Vertex AI"
DEFAULT_FILE = os.path.join(REPO_ROOT, "schedules.yaml")


def register(parser):
    add_config_flags(parser)
    parser.add_argument("action", choices=("list", "apply"), nargs="?", default="list")
    parser.add_argument("--file", default=DEFAULT_FILE, help="the schedules file (default: schedules.yaml)")
    parser.add_argument("--job", default="build/pipeline.json", help="compiled training job (default %(default)s)")
    parser.add_argument("--batch-job", default="build/batch.json", help="compiled batch job (default %(default)s)")
    parser.add_argument("--host", dest="kfp_host", help="KFP endpoint (env CD4ML_KFP_HOST)")
    parser.add_argument("--experiment", dest="kfp_experiment", help="KFP experiment (env CD4ML_KFP_EXPERIMENT)")
    parser.add_argument("--project", dest="gcp_project", help="Vertex AI project (env CD4ML_GCP_PROJECT)")
    parser.add_argument("--region", dest="gcp_region", help="Vertex AI region (env CD4ML_GCP_REGION)")
    parser.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")


def next_due(cron: str, after: datetime.datetime, days: int = 8) -> str:
    from pipelines import schedules

    at = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    for _ in range(days * 24 * 60):
        if schedules.due(cron, at):
            return at.strftime("%Y-%m-%d %H:%M UTC")
        at += datetime.timedelta(minutes=1)
    return f"not within {days} days"


def main(args) -> int:
    from pipelines import schedules

    config = config_from(args, kfp_host=args.kfp_host, kfp_experiment=args.kfp_experiment,
                         gcp_project=args.gcp_project, gcp_region=args.gcp_region)
    try:
        entries = schedules.load(args.file)
    except schedules.ScheduleError as exc:
        print(f"cd4ml schedule: {exc}", file=sys.stderr)
        return 2
    if args.action == "list":
        now = datetime.datetime.now(datetime.timezone.utc)
        for s in entries:
            what = f"span {s.span}" if s.job == "train" else f"{s.input} -> {s.output}"
            print(f"{s.name:<24} {s.cron:<16} {s.job:<6} {what}\n{'':<24} next {next_due(s.cron, now)}; why: {s.why}")
        print(f"{len(entries)} schedule(s) in {args.file}")
        return 0
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the kfp client prints links on stdout
            return _apply(args, config, entries, lambda line: print(line, file=out))
    except (schedules.ScheduleError, ValueError, OSError) as exc:
        print(f"cd4ml schedule apply: {exc}", file=sys.stderr)
        return 2


def _apply(args, config, entries, say) -> int:
    from pipelines import schedules, submit

    if config.kfp_host:
        platform = schedules.KfpSchedules(config.kfp_host, config.kfp_experiment, token=submit.read_token())
        where = f"Kubeflow Pipelines {config.kfp_host}, experiment {config.kfp_experiment}"
    elif config.gcp_project:
        platform = schedules.VertexSchedules(config.gcp_project, config.gcp_region,
                                             base=os.environ.get("CD4ML_VERTEX_API") or None,
                                             session=_local_session())
        where = f"Vertex AI {config.gcp_project}/{config.gcp_region}"
    else:
        print("cd4ml schedule apply: nowhere to apply: set CD4ML_KFP_HOST (--host) or CD4ML_GCP_PROJECT "
              "(--project)", file=sys.stderr)
        return 2
    say(f"cd4ml schedule apply: {args.file} -> {where}" + (" (dry run)" if args.dry_run else ""))
    changes = schedules.apply(platform, entries, {"train": args.job, "batch": args.batch_job},
                              dry_run=args.dry_run, progress=say)
    made = [c for c in changes if c.action != "keep"]
    say(f"{len(made)} change(s), {len(changes) - len(made)} unchanged"
        + (" (none made: dry run)" if args.dry_run and made else ""))
    return 0


def _local_session():
    """A plain session when CD4ML_VERTEX_API points at a local stand-in (no credentials there)."""
    endpoint = os.environ.get("CD4ML_VERTEX_API", "")
    if endpoint.startswith(("http://127.0.0.1", "http://localhost")):
        import requests

        return requests.Session()
    return None

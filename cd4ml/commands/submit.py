"""Start a run of the compiled pipeline job on Kubeflow Pipelines or Vertex AI.

With a KFP host (--host or CD4ML_KFP_HOST) the spec is uploaded as a new version of the pipeline and
a run is started in the experiment (--experiment), named <pipeline>-<git commit>-<UTC time>. Without
one, the job goes to Vertex AI Pipelines in --project/--region (application default credentials).
--span and --mae-bound set this run's runtime parameters. --wait waits and reports the final state
(exit 0 only when the run succeeded).

--local runs the job on this machine instead, task by task as a KFP launcher runs it
(pipelines/kubeflow_local.py), under open-source KFP's rules (--backend oss: no resolver, no
lifecycle hook) or Vertex AI's (--backend vertex); gs:// paths map to --gcs-dir. Try a job this
way before submitting it.
"""

import os
import sys

from cd4ml.commands.common import add_config_flags, config_from

HELP = "submit the compiled pipeline job to Kubeflow Pipelines or Vertex AI"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("job", nargs="?", default="build/pipeline.json",
                        help="compiled job from `cd4ml compile` (default %(default)s)")
    parser.add_argument("--host", dest="kfp_host", help="KFP endpoint (env CD4ML_KFP_HOST)")
    parser.add_argument("--experiment", dest="kfp_experiment", help="KFP experiment (env CD4ML_KFP_EXPERIMENT)")
    parser.add_argument("--project", dest="gcp_project", help="Vertex AI project (env CD4ML_GCP_PROJECT)")
    parser.add_argument("--region", dest="gcp_region", help="Vertex AI region (env CD4ML_GCP_REGION)")
    parser.add_argument("--token-file", help="file holding a bearer token for the KFP endpoint (env KFP_TOKEN_FILE)")
    parser.add_argument("--span", type=int, help="span for this run (default: the compiled default)")
    parser.add_argument("--mae-bound", dest="mae_bound", type=float, help="MAE bound for this run")
    parser.add_argument("--reason", default="", help="short tag carried in the run name (e.g. drop, drift)")
    parser.add_argument("--wait", action="store_true", help="wait for the run and report its final state")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="--wait timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print the submission as JSON")
    local = parser.add_argument_group("running the job here (--local)")
    local.add_argument("--local", action="store_true",
                       help="run the job on this machine, each task's container command as a KFP launcher would")
    local.add_argument("--backend", choices=("oss", "vertex"), default="oss",
                       help="whose rules: open-source KFP 2.x (default) or Vertex AI")
    local.add_argument("--gcs-dir", help="the folder gs://BUCKET/... maps to (default <home>/gcs)")
    local.add_argument("--container", metavar="IMAGE",
                       help="run each task in this pipeline image with podman (default: forked from a warm Python)")


def main(args) -> int:
    from pipelines import submit

    if not os.path.exists(args.job):
        print(f"cd4ml submit: {args.job} does not exist; run `cd4ml compile -o {args.job}` first", file=sys.stderr)
        return 2
    config = config_from(args, kfp_host=args.kfp_host, kfp_experiment=args.kfp_experiment,
                         gcp_project=args.gcp_project, gcp_region=args.gcp_region)
    if args.local:
        return _run_here(args, config)
    quiet = (lambda _: None) if args.json else print
    try:
        result = submit.submit(args.job, config, span=args.span, reason=args.reason,
                               mae_bound=args.mae_bound, wait=args.wait,
                               token=submit.read_token(args.token_file), timeout=args.timeout,
                               progress=quiet)
    except ValueError as exc:
        print(f"cd4ml submit: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(submit.as_json(result))
    else:
        print(f"run {result.run_name}: {result.state}  {result.url}")
    if args.wait:
        return 0 if result.succeeded else 1
    return 0


def _run_here(args, config) -> int:
    from pipelines import kubeflow_local, kubeflow_runner

    gcs_dir = os.path.abspath(args.gcs_dir or os.path.join(config.home, "gcs"))
    job = kubeflow_runner.load_job(args.job)
    paths = kubeflow_local.Paths(gcs_dir)
    try:
        kubeflow_local.check_backend(job, args.backend)
        values = kubeflow_local.run_values(job, paths, span=args.span, mae_bound=args.mae_bound)
    except ValueError as exc:  # JobRefused, SpanError
        print(f"cd4ml submit --local: {exc}", file=sys.stderr)
        return 2
    quiet = (lambda _: None) if args.json else print
    quiet(f"cd4ml submit --local: {args.job} under {args.backend} rules, gs:// -> {gcs_dir}/")
    run = kubeflow_local.run_job(job, values, gcs_dir, backend=args.backend, container=args.container,
                                 progress=quiet)
    print(run.to_json() if args.json else run.summary())
    return 0 if run.state == "succeeded" else 1

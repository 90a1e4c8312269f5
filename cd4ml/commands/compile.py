"""Compile the pipeline into a KFP v2 pipeline job (JSON) for Kubeflow Pipelines or Vertex AI.

The same create_pipeline(config) as `cd4ml run`, with cluster settings from config: the image
(CD4ML_IMAGE), gs:// pipeline root, data root and registry (a local path is refused), Beam args
(CD4ML_BEAM_ARGS, or --dataflow), and the runtime parameters `range_config` (span) and
`eval_config` (blessing thresholds) whose defaults come from config. `cd4ml submit` runs it.

`--batch INPUT OUTPUT` compiles the batch-scoring job instead (pipelines/batch_job.py): one task
running `cd4ml predict` on the registry, with INPUT, OUTPUT ({date}: the run's UTC date) and
`--batch-version` as per-run parameters' defaults.
"""

import sys

from cd4ml.commands.common import add_config_flags, add_verbose_flag, config_from, quiet_libraries

HELP = "compile the pipeline into a Kubeflow (KFP v2 / Vertex AI) pipeline job JSON"


def add_cluster_flags(parser):
    parser.add_argument("--pipeline-root", dest="pipeline_root", help="gs:// pipeline root (env CD4ML_PIPELINE_ROOT)")
    parser.add_argument("--registry", help="gs:// model registry (env CD4ML_REGISTRY)")
    parser.add_argument("--image", help="pipeline image carrying this repository (env CD4ML_IMAGE)")
    parser.add_argument("--project", dest="gcp_project", help="GCP project (env CD4ML_GCP_PROJECT)")
    parser.add_argument("--region", dest="gcp_region", help="GCP region (env CD4ML_GCP_REGION)")


def register(parser):
    add_config_flags(parser)
    add_cluster_flags(parser)
    parser.add_argument("--span", type=int, help="default span of the compiled job (default: latest)")
    parser.add_argument("--mae-bound", dest="mae_bound", type=float, help="default MAE bound for blessing")
    parser.add_argument("--dataflow", action="store_true",
                        help="run Beam components on Dataflow (needs --project) instead of CD4ML_BEAM_ARGS")
    parser.add_argument("-o", "--output", default="build/pipeline.json", help="output file (default %(default)s)")
    parser.add_argument("--requests-from-runs", action="store_true",
                        help="set each task's CPU and memory requests from what its component used the last "
                             "time it ran here (cd4ml runs --steps), with 25%% headroom")
    batch = parser.add_argument_group("the batch-scoring job instead (cd4ml predict as a Kubeflow task)")
    batch.add_argument("--batch", nargs=2, metavar=("INPUT", "OUTPUT"),
                       help="gs:// rows to score and gs:// prefix for the results, e.g. "
                            "gs://BUCKET/batch/incoming/ gs://BUCKET/batch/scored/{date}")
    batch.add_argument("--batch-version", default="", help="the version to score with (default: the one served)")
    add_verbose_flag(parser)


def cluster_config(args, **extra):
    return config_from(args, pipeline_root=getattr(args, "pipeline_root", None),
                       registry=getattr(args, "registry", None), image=getattr(args, "image", None),
                       gcp_project=getattr(args, "gcp_project", None),
                       gcp_region=getattr(args, "gcp_region", None), **extra)


def main(args) -> int:
    quiet_libraries(args.verbose)
    from pipelines import kubeflow_runner

    try:
        config = cluster_config(args, span=args.span, mae_bound=args.mae_bound)
        kubeflow_runner.check_cluster_config(config)
        if args.dataflow:
            config.beam_args = kubeflow_runner.dataflow_beam_args(config)
    except kubeflow_runner.ClusterConfigError as exc:
        print(f"cd4ml compile: {exc}", file=sys.stderr)
        return 2
    if args.batch:
        return _compile_batch(args, config)
    requests, measured = None, {}
    if args.requests_from_runs:
        from cd4ml import mlmd
        from pipelines import usage

        if mlmd.exists(config.metadata_path):
            measured = mlmd.latest_usage(mlmd.open_store(config.metadata_path))
        if not measured:
            print(f"cd4ml compile: --requests-from-runs: no measured run under {config.metadata_path}; "
                  f"run `cd4ml run` first", file=sys.stderr)
            return 2
        requests = {node: usage.requests(used) for node, used in measured.items()}
    job = kubeflow_runner.compile_pipeline(config, args.output, requests=requests)
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"compiled {len(tasks)} tasks to {args.output}")
    print(f"  image {config.image}; pipeline root {config.pipeline_root}")
    print(f"  data {config.data_root}; registry {config.registry}")
    print(f"  runtime parameters: {', '.join(sorted(job['pipelineSpec']['root']['inputDefinitions']['parameters']))}")
    print(f"  git commit {job['labels'].get('cd4ml-git-commit')}")
    if requests:
        print(f"  resource requests from the last measured runs for {len(requests)} of {len(tasks)} tasks "
              f"(largest: {max(r['memoryRequest'] for r in requests.values()):.2f} GB, "
              f"{max(r['cpuRequest'] for r in requests.values()):.2f} CPU)")
        if config.price_vcpu_hour or config.price_gb_hour:
            from pipelines import usage

            estimate = usage.cost(list(measured.values()), config.price_vcpu_hour, config.price_gb_hour)
            print(f"  a run as measured here would cost about {estimate:.4f} "
                  f"(CD4ML_PRICE_VCPU_HOUR={config.price_vcpu_hour}, CD4ML_PRICE_GB_HOUR={config.price_gb_hour})")
    return 0


def _compile_batch(args, config) -> int:
    from pipelines import batch_job, kubeflow_runner

    output = args.output if args.output != "build/pipeline.json" else "build/batch.json"
    try:
        job = batch_job.compile_batch_job(config, output, *args.batch, version=args.batch_version)
    except kubeflow_runner.ClusterConfigError as exc:
        print(f"cd4ml compile: {exc}", file=sys.stderr)
        return 2
    values = job["runtimeConfig"]["parameterValues"]
    print(f"compiled the batch-scoring job to {output}")
    print(f"  image {config.image}; registry {config.registry}")
    print(f"  scores {values['source']} -> {values['destination']} with "
          f"{values['version'] or 'the version served'}; Beam {values['beam_args'] or 'DirectRunner in the pod'}")
    print(f"  runtime parameters: {', '.join(sorted(values))}")
    return 0

"""Serve the model registry over HTTP: the Open Inference Protocol (V2, MLServer: what KServe and
Seldon Core v2 speak) by default, or the Seldon Core v1 protocol (seldon-core-microservice).

Serves the newest complete version under the registry, or the one pinned by --version or by
<registry>/SERVING.json, and picks up newly pushed versions without a restart. Each request is
validated against the feature specification of the version that answers it; every response names
that version. Logs (predictions, feedback, drift) go to --log-dir.

  V2:  curl -s localhost:9000/v2/models/bike-demand/infer -H 'Content-Type: application/json' -d '{"inputs": [
         {"name": "season", "datatype": "INT64", "shape": [1], "data": [1]}, ...]}'
  v1:  curl -s localhost:9000/api/v1.0/predictions -H 'Content-Type: application/json' -d '{"data":
         {"names": ["season", ...], "ndarray": [[1, "Jan", ...]]}}'

Prometheus metrics: localhost:<metrics-port>/metrics. Needs .venv-v2 or .venv-serving
(make serving-setup builds both).
"""

import os
import sys
import tempfile

from cd4ml.commands.common import add_registry_flag

HELP = "serve the registry's model over the Open Inference Protocol (or Seldon v1): hot reload, validation, drift"


def register(parser):
    parser.add_argument("--home", help="project home (env CD4ML_HOME, default ~/.cd4ml); registry is <home>/registry")
    add_registry_flag(parser)
    parser.add_argument("--protocol", choices=("v2", "seldon"), default="v2",
                        help="v2: Open Inference Protocol on MLServer (default); seldon: Seldon Core v1")
    parser.add_argument("--version", help="serve this version only (default: SERVING.json pin, else newest)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the V2 server listens on (default 127.0.0.1; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=9000, help="HTTP port (default 9000)")
    parser.add_argument("--metrics-port", type=int, default=6000, help="Prometheus port (default 6000)")
    parser.add_argument("--grpc-port", type=int, default=9001,
                        help="the V2 server's gRPC port (the Open Inference Protocol's GRPCInferenceService; "
                             "default 9001)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, each with its own copy of the model: MLServer's parallel "
                             "inference workers for v2, gunicorn workers for seldon (default 1)")
    parser.add_argument("--log-dir", help="prediction/feedback/drift logs (default <home>/serving-logs)")
    parser.add_argument("--poll-seconds", type=float, help="registry poll interval (default 5)")
    parser.add_argument("--drift-window", type=int, help="rows per drift test (default 200)")


def main(args) -> int:
    from pipelines.config import PipelineConfig
    from serving.launch import ServingEnvMissing, command, v2_command

    registry = args.registry or PipelineConfig.from_env(home=args.home).registry
    if "://" not in registry and not os.path.isdir(registry):
        print(f"cd4ml serve: no registry at {registry}: run `cd4ml run` first, or pass --registry",
              file=sys.stderr)
        return 1
    common = dict(version=args.version, log_dir=args.log_dir, poll_seconds=args.poll_seconds,
                  drift_window=args.drift_window)
    try:
        if args.protocol == "v2":
            settings = tempfile.mkdtemp(prefix="cd4ml-mlserver-")
            argv, env = v2_command(registry, args.port, args.metrics_port, settings, grpc_port=args.grpc_port,
                                   host=args.host, workers=args.workers, **common)
            where = "/v2/models/bike-demand/infer"
        else:
            argv, env = command(registry, args.port, args.metrics_port, workers=args.workers, **common)
            where = "/api/v1.0/predictions"
    except ServingEnvMissing as err:
        print(f"cd4ml serve: {err}", file=sys.stderr)
        return 1
    print(f"cd4ml serve: {registry} over the {args.protocol} protocol on http://localhost:{args.port}{where} "
          f"(metrics on :{args.metrics_port}/metrics)", flush=True)
    os.execve(argv[0], argv, env)
    return 0  # not reached

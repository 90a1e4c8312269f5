"""Serve the model registry over HTTP with Seldon Core (seldon-core-microservice).

Serves the newest complete version under the registry, or the one pinned by --version or by
<registry>/SERVING.json, and picks up newly pushed versions without a restart. Every response
names the version that answered. Logs (predictions, feedback, drift) go to --log-dir.

  curl -s localhost:9000/api/v1.0/predictions -H 'Content-Type: application/json' -d '{"data":
    {"names": ["season", ...], "ndarray": [[1, "Jan", ...]]}}'

Prometheus metrics: localhost:<metrics-port>/metrics. Needs .venv-serving (make serving-setup).
"""

import os
import sys

HELP = "serve the registry's model with Seldon Core (hot reload, validation, drift, outliers)"


def register(parser):
    parser.add_argument("--home", help="project home (env CD4ML_HOME, default ~/.cd4ml); registry is <home>/registry")
    parser.add_argument("--registry", help="model registry directory or gs:// path (default <home>/registry)")
    parser.add_argument("--version", help="serve this version only (default: SERVING.json pin, else newest)")
    parser.add_argument("--port", type=int, default=9000, help="HTTP port (default 9000)")
    parser.add_argument("--metrics-port", type=int, default=6000, help="Prometheus port (default 6000)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (default 1)")
    parser.add_argument("--log-dir", help="prediction/feedback/drift logs (default <home>/serving-logs)")
    parser.add_argument("--poll-seconds", type=float, help="registry poll interval (default 5)")
    parser.add_argument("--drift-window", type=int, help="rows per drift test (default 200)")


def main(args) -> int:
    from pipelines.config import PipelineConfig
    from serving.launch import ServingEnvMissing, command

    registry = args.registry or PipelineConfig.from_env(home=args.home).registry
    if "://" not in registry and not os.path.isdir(registry):
        print(f"cd4ml serve: no registry at {registry}: run `cd4ml run` first, or pass --registry",
              file=sys.stderr)
        return 1
    try:
        argv, env = command(registry, args.port, args.metrics_port, version=args.version,
                            log_dir=args.log_dir, workers=args.workers, poll_seconds=args.poll_seconds,
                            drift_window=args.drift_window)
    except ServingEnvMissing as err:
        print(f"cd4ml serve: {err}", file=sys.stderr)
        return 1
    print(f"cd4ml serve: {registry} on http://localhost:{args.port} "
          f"(metrics on :{args.metrics_port}/metrics)", flush=True)
    os.execve(argv[0], argv, env)
    return 0  # not reached

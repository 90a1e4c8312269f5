"""`cd4ml`: the one entry point. Each subcommand lives in cd4ml/commands/<name>.py.

A command module has `HELP` (one line), `register(parser)` to add its flags, and
`main(args) -> int`. Heavy imports (TensorFlow, TFX) happen inside `main`, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

# Order here is the order in `cd4ml --help`.
COMMANDS = ["run", "demo", "runs", "lineage", "compile", "submit", "watch", "drop", "serve", "models",
            "promote", "rollback", "approve", "reject", "experiment", "rollout", "compare", "explain", "predict",
            "drift-retrain", "harvest", "alerts", "schedule", "ui", "schema", "config"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cd4ml",
        description="Continuous delivery for ML: train, validate, push, serve and retrain the "
                    "bike-demand model with TFX, Kubeflow and Seldon Core.",
        epilog="Configuration comes from CD4ML_* environment variables (see `cd4ml config`); "
               "flags override them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"cd4ml.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.register(cmd)
        cmd.set_defaults(_main=module.main)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

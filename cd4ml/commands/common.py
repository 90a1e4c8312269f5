"""Flags and helpers shared by several commands."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from pipelines.config import PipelineConfig


def add_config_flags(parser):
    parser.add_argument("--home", help="project home: MLMD, pipeline root, registry, run reports "
                                       "(env CD4ML_HOME, default ~/.cd4ml)")
    parser.add_argument("--data-root", dest="data_root",
                        help="directory holding span-N/*.csv (env CD4ML_DATA_ROOT, default data/bikeshare)")


def config_from(args, **extra) -> PipelineConfig:
    return PipelineConfig.from_env(home=getattr(args, "home", None),
                                   data_root=getattr(args, "data_root", None), **extra)


def add_registry_flag(parser):
    parser.add_argument("--registry", help="model registry, a directory or gs:// path "
                                           "(env CD4ML_REGISTRY, default <home>/registry)")


def add_decision_flags(parser):
    """What an operator's decision (promote, rollback) records besides the version."""
    add_registry_flag(parser)
    parser.add_argument("--reason", default="", help="why (recorded with the decision in ML Metadata)")


def add_trigger_flags(parser, interval: float, what: str):
    """The flags of a polling trigger (watch, drift-retrain): poll once or every INTERVAL seconds,
    run locally or submit the compiled job, or list what it recorded."""
    parser.add_argument("--once", action="store_true", help="check once, act on what is there, then exit")
    parser.add_argument("--interval", type=float, default=interval, help="seconds between polls (default %(default)s)")
    parser.add_argument("--submit", metavar="JOB",
                        help="compiled job: submit a KFP/Vertex run instead of running the pipeline here")
    parser.add_argument("--list", action="store_true", help=f"list the {what} recorded in ML Metadata and exit")


def add_verbose_flag(parser):
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX, Beam and TensorFlow logs")


def quiet_libraries(verbose: bool = False):
    """TFX, Beam and TF log thousands of INFO lines per run; keep them for --verbose."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    # TensorFlow's C++ log (CUDA plugin registration on a machine without a GPU) and the Google
    # client libraries' notice about Python 3.10 say nothing about the run.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")
    for name in ("absl", "tensorflow", "apache_beam", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def has_store(config) -> bool:
    """Whether the home has an ML Metadata store to read; if not, say so (for the read-only commands)."""
    from cd4ml import mlmd

    if mlmd.exists(config.metadata_path):
        return True
    print(f"no ML Metadata store at {mlmd.describe(config.metadata_path)}: nothing has run in this home yet "
          f"(run `cd4ml run --home {config.home}`)", file=sys.stderr)
    return False

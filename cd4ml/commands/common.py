"""Flags and helpers shared by several commands."""

from __future__ import annotations

import logging
import os

from pipelines.config import PipelineConfig


def add_config_flags(parser):
    parser.add_argument("--home", help="project home: MLMD, pipeline root, registry, run reports "
                                       "(env CD4ML_HOME, default ~/.cd4ml)")
    parser.add_argument("--data-root", dest="data_root",
                        help="directory holding span-N/*.csv (env CD4ML_DATA_ROOT, default data/bikeshare)")


def config_from(args, **extra) -> PipelineConfig:
    return PipelineConfig.from_env(home=getattr(args, "home", None),
                                   data_root=getattr(args, "data_root", None), **extra)


def quiet_libraries(verbose: bool = False):
    """TFX, Beam and TF log thousands of INFO lines per run; keep them for --verbose."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("absl", "tensorflow", "apache_beam", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass

"""Pipeline configuration, read from the environment with defaults that run on a laptop.

Every runner builds the same `create_pipeline(config)`; only this object differs between the
embedded mode (local paths, MLMD in SQLite under the home) and a cluster (gs:// roots, Dataflow).
Every field can be set by an environment variable `CD4ML_<FIELD>` (upper case), and the CLI's
flags override those. `cd4ml config` prints the resolved values.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMOTION_POLICIES = ("auto", "manual")
ROLLOUT_POLICIES = ("immediate", "guarded")


def default_home() -> str:
    return os.path.expanduser(os.environ.get("CD4ML_HOME", "~/.cd4ml"))


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = "cd4ml-bikeshare"
    # Project home: MLMD, pipeline root, model registry and run reports live under it by default.
    home: str = dataclasses.field(default_factory=default_home)
    data_root: str = os.path.join(REPO_ROOT, "data", "bikeshare")
    pipeline_root: str = ""        # default: <home>/pipeline_root
    registry: str = ""             # default: <home>/registry (pushed model versions)
    metadata_path: str = ""        # SQLite file (default <home>/metadata.sqlite) or mysql://user:pw@host:port/db
    span: Optional[int] = None     # None: the latest span-N directory under data_root
    # Spans a run trains on: this run's span and the trusted spans before it (components/window.py).
    train_window_spans: int = 2
    # Model and training.
    seed: int = 42
    epochs: int = 20
    batch_size: int = 128
    # Steps per epoch, at most: past batch_size x this many training rows, batches grow instead
    # (every epoch still sees every row once), so the Trainer's cost stops growing with the data.
    max_steps_per_epoch: int = 100
    hidden_units: str = "64,32"
    # Blessing: an absolute bound on overall MAE, and no regression against the latest blessed
    # model by more than this many bikers per hour.
    mae_bound: float = 90.0
    mae_regression_tolerance: float = 5.0
    # What happens to a blessed model: "auto" serves it as soon as it is pushed; "manual" pushes it
    # as a candidate that waits for `cd4ml approve VERSION` (or `cd4ml reject`).
    promotion: str = "auto"
    # How a blessed (and approved) version reaches users (cd4ml/rollout.py): "immediate" serves it
    # at once; "guarded" starts it as a canary on `canary_share` of traffic, promotes it once
    # `canary_min_rows` labelled rows say it is no worse than the version serving (the bandit's
    # posterior: P(its success rate >= the serving one's - promote_margin) >= promote_confidence),
    # and rolls it back the moment a guard fires against the serving version's rows in the same
    # window. A guard fires only after `guard_min_rows` rows (labelled ones, for live MAE) of each.
    rollout: str = "immediate"
    canary_share: float = 0.1
    canary_min_rows: int = 200
    promote_margin: float = 0.05
    promote_confidence: float = 0.95
    guard_min_rows: int = 50
    guard_mae_ratio: float = 1.5       # canary live MAE / serving live MAE
    guard_p99_ratio: float = 2.0       # canary p99 latency / serving p99 latency
    guard_error_rate: float = 0.05     # canary share of refused or failed requests minus serving's
    guard_outlier_ratio: float = 2.0   # canary outlier rate / serving outlier rate
    # The explainability check before the push (scoring/explain.py): columns that must carry
    # no attribution (comma separated), and the largest share of attribution one feature may carry
    # (the hour of day carries about 0.65 in the bike-demand model).
    explain_forbidden: str = "casual,registered"
    explain_max_share: float = 0.85
    # `cd4ml run --tune`: TFX's Tuner searches this many trials before the Trainer; runs without
    # it reuse the latest tuned hyperparameters (components/tuning.py).
    tune: bool = False
    tune_trials: int = 3
    eval_buckets: int = 5          # 1 of these hash buckets (by day) is the eval split
    # Beam: empty means the DirectRunner in this process (in_memory, one worker). A cluster passes
    # Dataflow flags here (space separated). Any non-empty value without a dependency flag
    # (--setup_file, --extra_package, --sdk_container_image, ...) makes every Beam component
    # copy the TFX install and build an sdist of it first (~2 s each), for remote workers.
    beam_args: str = ""
    # Kubeflow / Vertex: the image carries this repository at source_dir.
    image: str = "gcr.io/PROJECT/cd4ml-pipeline:latest"
    source_dir: str = REPO_ROOT
    enable_cache: bool = True
    # Kubeflow Pipelines / Vertex AI (cd4ml compile, submit, watch --submit).
    kfp_host: str = ""             # e.g. https://HOST/pipeline ; empty: Vertex AI (needs gcp_project)
    kfp_experiment: str = "cd4ml"
    gcp_project: str = ""
    gcp_region: str = "us-central1"
    # Triggers (cd4ml watch / drift retrain): bucket prefix for drops, retrain guard rails.
    drop_prefix: str = "incoming/"
    retrain_cooldown_s: float = 600.0
    retrain_min_rows: int = 200
    # What a run costs (pipelines/usage.py): prices per vCPU-hour and per GB-hour of memory; 0: none.
    price_vcpu_hour: float = 0.0
    price_gb_hour: float = 0.0

    def __post_init__(self):
        self.home = os.path.abspath(os.path.expanduser(self.home))
        if not self.pipeline_root:
            self.pipeline_root = os.path.join(self.home, "pipeline_root")
        if not self.registry:
            self.registry = os.path.join(self.home, "registry")
        if not self.metadata_path:
            self.metadata_path = os.path.join(self.home, "metadata.sqlite")
        if not self.metadata_path.startswith("mysql://"):
            self.metadata_path = os.path.abspath(os.path.expanduser(self.metadata_path))
        if not self.data_root.startswith("gs://"):
            self.data_root = os.path.abspath(os.path.expanduser(self.data_root))
        if self.promotion not in PROMOTION_POLICIES:
            raise ValueError(f"CD4ML_PROMOTION={self.promotion!r}: expected one of {', '.join(PROMOTION_POLICIES)}")
        if self.rollout not in ROLLOUT_POLICIES:
            raise ValueError(f"CD4ML_ROLLOUT={self.rollout!r}: expected one of {', '.join(ROLLOUT_POLICIES)}")
        if not 0 < self.canary_share < 1:
            raise ValueError(f"CD4ML_CANARY_SHARE={self.canary_share}: must be between 0 and 1 (exclusive)")
        try:
            self.explainability_rules  # noqa: B018 - validates the rules when the config is made
        except ValueError as err:
            raise ValueError(f"CD4ML_EXPLAIN_FORBIDDEN / CD4ML_EXPLAIN_MAX_SHARE: {err}") from None
        if self.max_steps_per_epoch < 1:
            raise ValueError(f"CD4ML_MAX_STEPS_PER_EPOCH={self.max_steps_per_epoch}: must be at least 1")
        if self.tune_trials < 1:
            raise ValueError(f"CD4ML_TUNE_TRIALS={self.tune_trials}: must be at least 1")

    @property
    def explainability_rules(self):
        from scoring.explain import ExplainabilityRules

        forbidden = tuple(n.strip() for n in self.explain_forbidden.split(",") if n.strip())
        return ExplainabilityRules(forbidden=forbidden, max_share=self.explain_max_share)

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.home, "runs")

    @property
    def transform_module(self) -> str:
        return os.path.join(self.source_dir, "components", "transform.py")

    @property
    def trainer_module(self) -> str:
        return os.path.join(self.source_dir, "components", "model.py")

    @property
    def beam_pipeline_args(self) -> List[str]:
        return self.beam_args.split()

    @property
    def units(self) -> List[int]:
        return [int(u) for u in self.hidden_units.split(",") if u.strip()]

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None, **overrides) -> "PipelineConfig":
        """Defaults, then CD4ML_* variables, then explicit overrides (None means 'not given')."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get("CD4ML_" + field.name.upper())
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def as_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def _parse(field: dataclasses.Field, raw: str):
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "str")
    try:
        if kind in ("int", "Optional[int]"):
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
    except ValueError:
        raise ValueError(f"CD4ML_{field.name.upper()}={raw!r}: expected a value of type {kind}") from None
    return raw

"""The latest tuned hyperparameters, found the same way on every runner.

`cd4ml run --tune` runs TFX's Tuner before the Trainer; a plain run reuses what the latest tuning
found. That lookup was a resolver over ML Metadata, which open-source KFP cannot run and a pod
cannot query. Here the Tuner's executor (components/publishing_tuner.py) publishes its best
hyperparameters beside the registry (`<registry>/.pipeline/hyperparameters/tuned-<ms>.json`),
and TunedHyperparameters hands the
newest of them to the Trainer of a plain run, or the configured defaults (an empty search
result: components/model.py `hyperparameters` keeps the defaults) when nothing was tuned yet.
Its cache key includes the `hyperparameters_state` run parameter (components/registry.py,
computed by every runner before a run): the name of the newest published file.
"""

import json
import os
import time
from typing import Any, Dict, Optional

from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from cd4ml.contract import TUNED_BY, TUNED_HYPERPARAMETERS_FILE, TUNED_SOURCE, TUNED_VALUES
from components.registry import latest_tuned, tuned_dir
from components.files import write_text

STATE_ROOT = "state_root"  # the Tuner's custom_config key naming where to publish
NO_SEARCH = {"space": [], "values": {}}  # a keras_tuner config with nothing tuned


def publish(registry: str, config: Dict[str, Any], tuned_by: str, now: Optional[float] = None) -> str:
    name = f"tuned-{int((now or time.time()) * 1000):015d}.json"
    write_text(os.path.join(tuned_dir(registry), name),
               json.dumps({"config": config, TUNED_BY: tuned_by}, sort_keys=True))
    return name


@component
def TunedHyperparameters(
    hyperparameters: OutputArtifact[standard_artifacts.HyperParameters],
    registry: Parameter[str],
    hyperparameters_state: Parameter[str] = "",
):
    del hyperparameters_state  # a cache key only (see the module's docstring)
    found = latest_tuned(registry)
    published = found[1] if found else {"config": NO_SEARCH, TUNED_BY: ""}
    write_text(os.path.join(hyperparameters.uri, TUNED_HYPERPARAMETERS_FILE), json.dumps(published["config"]))
    hyperparameters.set_string_custom_property(TUNED_SOURCE, "reused" if found else "defaults")
    hyperparameters.set_string_custom_property(TUNED_BY, published[TUNED_BY])
    hyperparameters.set_string_custom_property(
        TUNED_VALUES, json.dumps(published["config"].get("values", {}), sort_keys=True))

"""TFX's Tuner, then its best hyperparameters published for later plain runs (components/tuning.py).

Its own module: TFX's Tuner executor imports keras_tuner (3 s), which only `--tune` runs need.
"""

import json
import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.tuner import executor as tfx_tuner
from tfx.types import artifact_utils, standard_component_specs

from cd4ml.contract import TUNED_HYPERPARAMETERS_FILE
from components.tuning import STATE_ROOT, publish


class Executor(tfx_tuner.Executor):
    """TFX's Tuner, then its best hyperparameters published for later plain runs."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:  # noqa: N802 - TFX's naming
        super().Do(input_dict, output_dict, exec_properties)
        registry = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "{}").get(STATE_ROOT)
        if registry:
            import tensorflow as tf

            best = artifact_utils.get_single_uri(output_dict[standard_component_specs.BEST_HYPERPARAMETERS_KEY])
            with tf.io.gfile.GFile(os.path.join(best, TUNED_HYPERPARAMETERS_FILE)) as fh:
                publish(registry, json.load(fh), tuned_by=best)

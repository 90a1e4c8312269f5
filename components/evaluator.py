"""TFX's Evaluator, told when there is no baseline.

ServingBaseline (components/baseline.py) always hands on a Model artifact, because a KFP task
input cannot be absent at run time; when nothing serves yet it is an empty one marked
`has_baseline = 0`. The Evaluator then evaluates the candidate alone, exactly as TFX does with
no baseline input (value thresholds only; change thresholds need a baseline).
"""

from typing import Any, Dict, List

from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.types import standard_component_specs

from components.baseline import has_baseline


class Executor(tfx_evaluator.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:  # noqa: N802 - TFX's naming
        key = standard_component_specs.BASELINE_MODEL_KEY
        if input_dict.get(key) and not has_baseline(input_dict[key][0]):
            input_dict = {k: v for k, v in input_dict.items() if k != key}
        super().Do(input_dict, output_dict, exec_properties)

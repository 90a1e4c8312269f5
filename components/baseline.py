"""Which blessed model a candidate is compared against.

TFX's LatestBlessedModelStrategy resolves *before* the candidate is known, so on a rerun with
nothing changed the candidate itself (blessed by the first run) becomes the baseline, the
Evaluator's inputs change, and the whole tail of the pipeline runs again and pushes the same
model twice (tfx#3049-style cache confusion). This strategy takes the candidate as an input and
returns the latest blessed model *other than it*: the same baseline the first run saw, so an
unchanged rerun is fully cached, while new code or new data is still compared with the model
that is serving.
"""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

_BLESSED = "blessed"
_CURRENT_MODEL_ID = "current_model_id"


class BaselineModelStrategy(resolver.ResolverStrategy):
    """Inputs: candidate (Model), model (all Models), model_blessing (all ModelBlessings)."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        candidates = {a.id for a in input_dict.get("candidate", [])}
        blessed_ids = {
            b.get_int_custom_property(_CURRENT_MODEL_ID)
            for b in input_dict.get("model_blessing", [])
            if b.get_int_custom_property(_BLESSED) == 1
        }
        models = sorted(input_dict.get("model", []), key=lambda a: a.id, reverse=True)
        baseline = [m for m in models if m.id in blessed_ids and m.id not in candidates][:1]
        blessings = [b for b in input_dict.get("model_blessing", [])
                     if baseline and b.get_int_custom_property(_CURRENT_MODEL_ID) == baseline[0].id
                     and b.get_int_custom_property(_BLESSED) == 1][:1]
        return {"candidate": list(input_dict.get("candidate", [])), "model": baseline,
                "model_blessing": blessings}

"""The latest artifact of a type, or none yet, without a failed execution.

TFX's LatestArtifactStrategy returns None when a channel has no artifact, and the local
orchestrator then records the resolver's execution as FAILED (the run goes on, but `cd4ml runs`
and the run browser show a failed run). Before any `--tune` run there are no tuned
hyperparameters, which is the normal case; this strategy answers an empty list instead.
"""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver


class LatestOrNothingStrategy(resolver.ResolverStrategy):
    """Per input key: the newest artifact (highest id) as a one-element list, or []."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        return {key: sorted(artifacts, key=lambda a: a.id)[-1:] for key, artifacts in input_dict.items()}

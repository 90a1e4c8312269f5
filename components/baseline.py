"""ServingBaseline: the model a candidate must not regress from is the version serving now.

"No regression" protects users, so the baseline is what the registry serves (its pin, else the
newest complete approved version: components/registry.py, the server's own rule), read by this
component from the registry on every runner alike. It replaces TFX's resolvers, which
open-source KFP cannot run (no `resolver` executor) and whose "latest blessed model" is not
necessarily what serves.

One exception keeps an unchanged rerun fully cached: when the version serving is this very
candidate (pushed by an earlier run of the same inputs), the baseline is the one that version
was compared with, recorded in its manifest. The component's cache key includes the
`serving_state` run parameter (`serving_state()` below, computed by every runner before a run),
so a changed registry reruns it while an unchanged rerun is answered from the cache.

The output is a Model artifact holding a copy of the baseline's SavedModel (KFP hands tasks
artifacts, not registry paths), or none: `has_baseline` tells the Evaluator and the explainer.
"""


import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from cd4ml.contract import BASELINE_VERSION, HAS_BASELINE
from components import registry as reg
from components.files import copy_tree

SERVING_FORMAT = "Format-Serving"  # where TFX's path_utils look for a SavedModel in a Model artifact


def has_baseline(artifact) -> bool:
    return artifact is not None and artifact.get_int_custom_property(HAS_BASELINE) == 1


@component
def ServingBaseline(
    candidate: InputArtifact[standard_artifacts.Model],
    baseline: OutputArtifact[standard_artifacts.Model],
    registry: Parameter[str],
    serving_state: Parameter[str] = "",
):
    version = reg.baseline_version(registry, candidate.uri)
    baseline.set_string_custom_property(BASELINE_VERSION, version or "")
    baseline.set_string_custom_property(reg.SERVING_STATE, serving_state)
    baseline.set_int_custom_property(HAS_BASELINE, int(version is not None))
    if version is not None:  # the whole version: SavedModel, variables, assets (and its extras)
        copy_tree(os.path.join(registry, version), os.path.join(baseline.uri, SERVING_FORMAT))

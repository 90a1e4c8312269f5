"""What a run reads from the data root and the registry, fixed before it starts.

The components that read them (ExampleGen's span, ServingBaseline, TunedHyperparameters) run on
every runner alike; what a cache must know is what they would read. Each runner (the local one,
`cd4ml submit`, the local Kubeflow runner) computes these values before a run and passes them as
run parameters, so a step is answered from a cache only when what it reads is unchanged, and a
rerun with nothing changed is fully cached. No TensorFlow for local paths (the registry and span
listings go through components/registry.py).
"""

from __future__ import annotations

from typing import Dict, Optional

from components import registry as reg

# Run parameters of the pipeline beside range_config and eval_config (pipelines/kubeflow_runner.py).
SERVING_STATE, HYPERPARAMETERS_STATE = "serving_state", "hyperparameters_state"
RUN_PARAMETERS = (SERVING_STATE, HYPERPARAMETERS_STATE)


def run_parameters(registry: str, span: Optional[int]) -> Dict[str, str]:
    """The values of RUN_PARAMETERS for a run of `span` on `registry` as it is now."""
    return {SERVING_STATE: reg.serving_state(registry, span),
            HYPERPARAMETERS_STATE: reg.hyperparameters_state(registry)}

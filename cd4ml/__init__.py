"""cd4ml command line, configuration and ML Metadata queries.

Our artifact types are named `cd4ml.<Type>` (cd4ml/contract.py). A Kubeflow pod knows a custom
type only by that name: TFX's entrypoint imports it as module `cd4ml`, attribute `<Type>`
(kubeflow_v2_entrypoint_utils), so the package answers those attributes, lazily, so that
`cd4ml --help` still imports no TFX.
"""
import os

# TF 2.16 defaults to Keras 3, which TFX 1.16's Keras paths do not support; every process that may
# import TensorFlow through this package gets the legacy tf-keras 2.16 (docs/stack.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")



def _artifact_modules():
    """Type name -> the module that defines the artifact class with that TYPE_NAME."""
    from cd4ml.contract import DETECTORS_ARTIFACT, EXPLANATION_ARTIFACT, RELEASE_ARTIFACT

    return {DETECTORS_ARTIFACT: "components.detectors", EXPLANATION_ARTIFACT: "components.explainer",
            RELEASE_ARTIFACT: "components.release"}


def __getattr__(name: str):
    type_name = f"{__name__}.{name}"
    module_name = _artifact_modules().get(type_name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    for value in vars(importlib.import_module(module_name)).values():
        if isinstance(value, type) and getattr(value, "TYPE_NAME", None) == type_name:
            return value
    raise AttributeError(f"{module_name} defines no artifact type {type_name}")

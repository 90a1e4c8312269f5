"""Import TFX components one by one instead of all sixteen at once.

`tfx/components/__init__.py` imports every standard component, and with them the Vertex AI SDK
(BulkInferrer), the Kubernetes client (InfraValidator) and keras_tuner (Tuner): about 12 s of a
pipeline run's start on a 2-core machine, for components this pipeline never uses. `install()`
registers the package without running that file, so `tfx.components.<sub>.<module>` imports only
what it needs. Any other access to `tfx.components.<Name>` still works: it runs the real
`__init__` on first use.
"""

from __future__ import annotations

import importlib.util
import sys
import types

_PACKAGE = "tfx.components"


class _LazyPackage(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if not self.__dict__.get("_cd4ml_loaded"):
            self.__dict__["_cd4ml_loaded"] = True
            self.__spec__.loader.exec_module(self)  # the real __init__: every component
            return getattr(self, name)
        raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")


def install() -> None:
    """Idempotent; does nothing if `tfx.components` was already imported."""
    if _PACKAGE in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except ModuleNotFoundError:  # no TFX: the serving environment
        return
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _LazyPackage
    sys.modules[_PACKAGE] = module
    sys.modules["tfx"].components = module

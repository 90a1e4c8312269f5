"""Our TFX components and module files; features.py is the single source of truth for features."""
import os

# TF 2.16 defaults to Keras 3, which TFX 1.16's Keras paths do not support; every process that may
# import TensorFlow through this package gets the legacy tf-keras 2.16 (docs/stack.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# Import TFX components one by one, not all sixteen at once (12 s per run): components/lazy_tfx.py.
from components import lazy_tfx  # noqa: E402

lazy_tfx.install()

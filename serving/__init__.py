"""The model servers: one model service (serving/service.py) and the V2 and Seldon v1 shells around it."""
import os

# TF 2.16 defaults to Keras 3, which TFX 1.16's Keras paths do not support; every process that may
# import TensorFlow through this package gets the legacy tf-keras 2.16 (docs/stack.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

"""Scoring: the model code the pipeline and the servers share, apart from the TFX components.

How a pushed version's rows are scored, wherever that happens (the trainer's signatures, the
evaluator's and explainer's runs, batch scoring, both servers):

- `raw_signature.py`: a SavedModel called on raw feature rows (and through TensorFlow Lite);
- `detector_core.py`: the encoded feature matrix, and the drift and outlier detectors' scores,
  as plain arrays that need neither scikit-learn nor pickle to load;
- `explain.py`: each raw feature's additive attribution to a prediction, and the checks on them.

The feature list itself stays in `components/features.py`, its one home, which these import.
"""

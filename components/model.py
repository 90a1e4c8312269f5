"""Trainer module file: a small Keras regression of hourly demand (`run_fn`), and the Tuner's
search over its size and training (`tuner_fn`, for `cd4ml run --tune`).

Determinism is a feature here: with the same transformed data, code and seed the model and its
metrics are identical, so a changed metric always means a changed input. Hence the global seed,
op determinism, and a seeded shuffle of in-memory arrays.

The model is Keras; the loop that fits it is not `Model.fit`. fit() and predict() build their
step functions with AutoGraph, which converts Keras' own training code on every run: 15 s of a
23 s Trainer on two cores, for a fit that takes under 2 s. `fit()` below is the same minibatch
Adam on MSE with one graph-mode step traced once without AutoGraph.

The exported SavedModel carries two signatures over the same transform graph:
- `serving_default`: serialized tf.Examples (what TFMA, the Evaluator and batch scoring use);
- `serving_raw`: one tensor per raw feature, named as in `features.py` (what a client sends);
- `serving_encoded`: one float32 matrix of rows in `features.encode_row`'s layout (what the server
  and the explainer call: one input tensor costs a tenth of eleven).
All return `predictions`: expected bikers per hour, in counts, one per row.
"""

import logging
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.saved import saved_transform_io_v2
from tfx_bsl.public import tfxio
from tfx.components.trainer.fn_args_utils import FnArgs

from cd4ml.contract import (ENCODED_INPUT, ENCODED_SIGNATURE, EXAMPLE_SIGNATURE, EXAMPLES_INPUT, PREDICTIONS,
                             RAW_SIGNATURE)
from components import features

_LABEL_XF = features.transformed_name(features.LABEL_KEY)
DEFAULT_LEARNING_RATE = 0.005


# Rows read and transformed per step when loading a split: the arrays are the same for any value
# (the rows keep their order), and per-step overhead dominated with the training batch (128).
READ_BATCH = 8192


def _load(file_pattern: List[str], data_accessor, tf_transform_output):
    """The split, transformed by the Transform graph, as in-memory arrays.

    The raw examples are read and transformed here, in TensorFlow: Transform does not write a
    transformed copy of every split (writing it and reading it back grew fastest with the data,
    benchmarks/scale.py), and the graph is the one serving runs, so nothing can skew.
    A span is thousands of rows (a few MB): Keras on arrays trains about 8x faster here than on a
    streamed tf.data pipeline and is deterministic under the global seed. A span that no longer
    fits in memory should stream data_accessor's dataset through the same training step instead.
    """
    transform = tf_transform_output.transform_features_layer()
    ds = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=READ_BATCH, shuffle=False, num_epochs=1),
        tf_transform_output.raw_metadata.schema,
    )
    xs: Dict[str, list] = {}
    ys = []
    for raw in ds:  # eagerly: Dataset.map would retrace the transform graph, 3 s per run
        x = transform(raw)
        ys.append(x.pop(_LABEL_XF).numpy())
        for name, value in x.items():
            xs.setdefault(name, []).append(value.numpy())
    return {k: np.concatenate(v) for k, v in xs.items()}, np.concatenate(ys)


def build_model(tf_transform_output: tft.TFTransformOutput, hidden_units: List[int],
                learning_rate: float = DEFAULT_LEARNING_RATE) -> tf.keras.Model:
    """An MLP over the concatenated transformed features; outputs log1p(demand)."""
    spec = tf_transform_output.transformed_feature_spec()
    inputs: Dict[str, tf.keras.Input] = {}
    for f in features.FEATURES:
        name = features.transformed_name(f.name)
        inputs[name] = tf.keras.Input(shape=spec[name].shape, name=name, dtype=tf.float32)
    x = tf.keras.layers.Concatenate()(list(inputs.values()))
    for units in hidden_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
    output = tf.keras.layers.Dense(1, name="log_demand")(x)
    model = tf.keras.Model(inputs=inputs, outputs=output)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="mse",
                  metrics=[tf.keras.metrics.MeanAbsoluteError(name="log_mae")])
    return model


def _serving_fns(model: tf.keras.Model, transform: saved_transform_io_v2.SavedModelLoader,
                 tf_transform_output: tft.TFTransformOutput):
    raw_spec = tf_transform_output.raw_feature_spec()
    feature_spec = {name: raw_spec[name] for name in features.FEATURE_NAMES}

    def predict(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        transformed = transform.apply_transform_model(raw)
        log_demand = model({k: transformed[k] for k in model.input_names})
        demand = tf.math.expm1(tf.maximum(log_demand, 0.0))
        return {PREDICTIONS: tf.squeeze(demand, axis=-1)}

    # No AutoGraph: predict() has no Python control flow, and converting Keras' call code is slow.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)], autograph=False)
    def serve_examples(serialized):
        return predict(tf.io.parse_example(serialized, feature_spec))

    raw_inputs = [tf.TensorSpec([None], tf.as_dtype(f.types.tf), name=f.name) for f in features.FEATURES]

    @tf.function(input_signature=raw_inputs, autograph=False)
    def serve_raw(*columns):
        return predict({f.name: tf.expand_dims(col, -1) for f, col in zip(features.FEATURES, columns)})

    @tf.function(input_signature=[tf.TensorSpec([None, len(features.FEATURES)], tf.float32, name=ENCODED_INPUT)],
                 autograph=False)
    def serve_encoded(encoded):
        # features.encode_row's layout back to raw columns, in the graph: a category is its index in
        # the vocabulary, a number itself (float32 holds every raw float32 value exactly).
        raw = {}
        for i, f in enumerate(features.FEATURES):
            column = encoded[:, i:i + 1]
            if f.is_categorical:
                vocabulary = tf.constant(list(f.vocabulary), dtype=tf.as_dtype(f.types.tf))
                raw[f.name] = tf.gather(vocabulary, tf.cast(tf.round(column), tf.int32))
            else:
                raw[f.name] = tf.cast(column, tf.as_dtype(f.types.tf))
        return predict(raw)

    return {EXAMPLE_SIGNATURE: serve_examples, RAW_SIGNATURE: serve_raw, ENCODED_SIGNATURE: serve_encoded}


def hyperparameters(fn_args: FnArgs) -> Dict[str, object]:
    """What this training uses: the Trainer's custom_config (the pipeline's defaults), overridden
    by tuned values when the Trainer got a HyperParameters artifact (the Tuner's, or the latest
    one an earlier `--tune` run recorded: pipelines/pipeline.py)."""
    config = fn_args.custom_config or {}
    chosen = {"epochs": int(config.get("epochs", 20)),
              "hidden_units": [int(u) for u in config.get("hidden_units", [64, 32])],
              "learning_rate": float(config.get("learning_rate", DEFAULT_LEARNING_RATE))}
    tuned = (fn_args.hyperparameters or {}).get("values") if isinstance(fn_args.hyperparameters, dict) else None
    if tuned:
        chosen.update(from_search_space(tuned))
    return chosen


def run_fn(fn_args: FnArgs):
    config = fn_args.custom_config or {}
    seed = int(config.get("seed", 42))
    batch_size = int(config.get("batch_size", 128))
    chosen = hyperparameters(fn_args)

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train_x, train_y = _load(fn_args.train_files, fn_args.data_accessor, tf_transform_output)
    eval_x, eval_y = _load(fn_args.eval_files, fn_args.data_accessor, tf_transform_output)

    model = build_model(tf_transform_output, chosen["hidden_units"], chosen["learning_rate"])
    history = fit(model, train_x, train_y, eval_x, eval_y, epochs=chosen["epochs"], batch_size=batch_size,
                  seed=seed, max_steps_per_epoch=_max_steps(config))
    logging.info("cd4ml trainer: %s, final %s", chosen, {k: v[-1] for k, v in history.items()})

    export(model, tf_transform_output, fn_args.serving_model_dir)


# --- tuning (`cd4ml run --tune`): TFX's Tuner calls tuner_fn ---------------------------------------
# A small space: the model is an MLP on 11 features and a few thousand rows per span.
SEARCH_SPACE = {"units": [32, 64, 128], "layers": [1, 2, 3], "learning_rate": [0.002, 0.005, 0.01],
                "epochs": [10, 20, 30]}


def search_defaults(config: Dict) -> Dict[str, object]:
    """The configured training as a point of the space: keras_tuner runs it as the first trial
    (the space is declared inside the trial, so trial 1 takes every default), so the best
    hyperparameters are never worse on the objective than not tuning."""
    units = [int(u) for u in config.get("hidden_units", [64, 32])]
    return {"units": units[0], "layers": len(units), "learning_rate": DEFAULT_LEARNING_RATE,
            "epochs": int(config.get("epochs", 20))}


def from_search_space(values: Dict[str, object]) -> Dict[str, object]:
    """A point of SEARCH_SPACE as training settings: `layers` layers halving from `units`."""
    units, layers = int(values["units"]), int(values["layers"])
    return {"hidden_units": [max(8, units // 2 ** i) for i in range(layers)],
            "learning_rate": float(values["learning_rate"]), "epochs": int(values["epochs"])}


def tuner_fn(fn_args: FnArgs):
    """keras_tuner's random search over SEARCH_SPACE; each trial is trained by `fit` below (not
    Model.fit, see the module docstring) and scored by its eval-split MSE of log demand."""
    import keras_tuner
    from tfx.components.tuner.component import TunerFnResult

    config = fn_args.custom_config or {}
    seed = int(config.get("seed", 42))
    batch_size = int(config.get("batch_size", 128))
    defaults = search_defaults(config)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    data = (_load(fn_args.train_files, fn_args.data_accessor, tf_transform_output),
            _load(fn_args.eval_files, fn_args.data_accessor, tf_transform_output))

    class SearchTuner(keras_tuner.engine.base_tuner.BaseTuner):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            chosen = from_search_space({name: hp.Choice(name, sorted(set(choices) | {defaults[name]}),
                                                         default=defaults[name])
                                        for name, choices in SEARCH_SPACE.items()})
            tf.keras.utils.set_random_seed(seed)
            (train_x, train_y), (eval_x, eval_y) = data
            model = build_model(tf_transform_output, chosen["hidden_units"], chosen["learning_rate"])
            history = fit(model, train_x, train_y, eval_x, eval_y, epochs=chosen["epochs"],
                          batch_size=batch_size, seed=seed, max_steps_per_epoch=_max_steps(config))
            return {"val_loss": history["val_loss"][-1]}

    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), max_trials=int(config.get("trials", 3)), seed=seed)
    tuner = SearchTuner(oracle=oracle, directory=fn_args.working_dir, project_name="cd4ml")
    return TunerFnResult(tuner=tuner, fit_kwargs={})


def effective_batch_size(rows: int, batch_size: int, max_steps_per_epoch: Optional[int]) -> int:
    """`batch_size`, or the smallest batch that covers `rows` in `max_steps_per_epoch` steps."""
    if not max_steps_per_epoch:
        return batch_size
    return max(batch_size, -(-rows // max_steps_per_epoch))


def _max_steps(config: Dict) -> Optional[int]:
    value = config.get("max_steps_per_epoch")
    return int(value) if value else None


def fit(model: tf.keras.Model, train_x: Dict[str, np.ndarray], train_y: np.ndarray,
        eval_x: Dict[str, np.ndarray], eval_y: np.ndarray, epochs: int, batch_size: int,
        seed: int, max_steps_per_epoch: Optional[int] = None) -> Dict[str, List[float]]:
    """Minibatch training of the compiled model's optimizer on MSE; returns per-epoch losses.

    Each epoch visits the training rows in a fresh permutation drawn from `seed`; batches are
    gathered inside the graph, so one traced step serves every batch size. With
    `max_steps_per_epoch`, a span too big for that many batches of `batch_size` gets bigger
    batches instead: one step per batch is the Trainer's cost (a host round trip each, whatever
    the batch), so a 50x span trains in about the time of a 4x one, still on every row.
    """
    names = model.input_names
    xs = {k: tf.constant(train_x[k]) for k in names}
    # Labels come as (n,) or (n, 1); a (n, 1) label against (n,) predictions would broadcast.
    ys = tf.constant(np.reshape(train_y, [-1]), dtype=tf.float32)
    variables = model.trainable_variables
    optimizer = model.optimizer

    def mse(x, y, training):
        return tf.reduce_mean(tf.square(tf.squeeze(model(x, training=training), -1) - y))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.int64)])
    def step(rows):
        with tf.GradientTape() as tape:
            loss = mse({k: tf.gather(xs[k], rows) for k in names}, tf.gather(ys, rows), True)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    evaluate = tf.function(lambda x, y: mse(x, y, False), autograph=False)
    eval_xs = {k: tf.constant(eval_x[k]) for k in names}
    eval_ys = tf.constant(np.reshape(eval_y, [-1]), dtype=tf.float32)
    rng = np.random.default_rng(seed)
    history: Dict[str, List[float]] = {"loss": [], "val_loss": []}
    n = int(ys.shape[0])
    batch_size = effective_batch_size(n, batch_size, max_steps_per_epoch)
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            rows = order[i:i + batch_size]
            total += float(step(tf.constant(rows))) * len(rows)
        history["loss"].append(round(total / n, 5))
        history["val_loss"].append(round(float(evaluate(eval_xs, eval_ys)), 5))
    return history


def export(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput, path: str):
    """Save only what serving and TFMA call: the two signatures over transform graph + model.

    The saved object is a plain tf.Module holding the model's variables and the transform graph.
    Saving Keras objects (the model, or tft's TransformFeaturesLayer, itself a Keras Model) makes
    Keras retrace their calls for its own metadata: 4 s of a 4.5 s export, for files nothing
    loads back as Keras.
    """
    transform = saved_transform_io_v2.SavedModelLoader(tf_transform_output.transform_savedmodel_dir)
    bundle = tf.Module()
    bundle.model_variables = list(model.variables)
    # What TransformFeaturesLayer itself tracks so that the transform graph's resources are saved.
    bundle.transform = transform.__dict__
    tf.saved_model.save(bundle, path, signatures=_serving_fns(model, transform, tf_transform_output))

"""The module files on a few real rows: tf.Transform's preprocessing_fn, then the Keras model and
its two serving signatures, without a pipeline run."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from components import features, model, schema, transform
from scoring import detector_core
from tests.conftest import read_span, tf_example

ROWS = 120


def _typed(row):
    """A CSV row as ExampleGen makes it an example: typed, with the split group it adds."""
    row = dict(row, **{features.SPLIT_KEY: features.day_group(row["day"])})
    out = {}
    for col in features.all_columns():
        raw = row[col.name]
        out[col.name] = [raw if col.dtype == "string" else (int(raw) if col.dtype == "int" else float(raw))]
    return out


@pytest.fixture(scope="module")
def transform_output(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tft"))
    rows = [_typed(r) for r in read_span(1)[:ROWS]]
    spec = schema_utils.schema_as_feature_spec(schema.build_schema()).feature_spec
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(spec)
    with tft_beam.Context(temp_dir=os.path.join(out, "tmp"), force_tf_compat_v1=False):
        (transformed, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            transform.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    metadata_io.write_metadata(metadata, os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR))
    return out, rows, transformed


def test_preprocessing_one_hot_z_score_and_log_label(transform_output):
    _, rows, transformed = transform_output
    assert len(transformed) == ROWS
    first, raw = transformed[0], rows[0]
    for f in features.FEATURES:
        value = np.asarray(first[features.transformed_name(f.name)])
        if f.is_categorical:
            assert value.shape == (len(f.vocabulary),)
            assert value.sum() == 1.0 and value[f.vocabulary.index(raw[f.name][0])] == 1.0
    temps = np.array([t["temp_xf"][0] for t in transformed])
    assert abs(temps.mean()) < 1e-5 and abs(temps.std() - 1.0) < 1e-3
    label = np.asarray(first[features.transformed_name(features.LABEL_KEY)]).ravel()[0]
    assert label == pytest.approx(np.log1p(raw["bikers"][0]), rel=1e-5)


def _arrays(transformed):
    """Transformed rows as the model's inputs (one array per feature) and log1p labels."""
    names = [features.transformed_name(f.name) for f in features.FEATURES]
    x = {name: np.stack([np.asarray(t[name], dtype=np.float32).reshape(-1) for t in transformed])
         for name in names}
    y = np.array([np.asarray(t["bikers_xf"]).ravel()[0] for t in transformed], dtype=np.float32)
    return x, y


def test_model_signatures_agree_and_return_counts(transform_output, tmp_path):
    out, rows, transformed = transform_output
    tft_output = tft.TFTransformOutput(out)
    tf.keras.utils.set_random_seed(1)
    keras_model = model.build_model(tft_output, [16])
    x, y = _arrays(transformed)
    history = model.fit(keras_model, x, y, x, y, epochs=5, batch_size=32, seed=1)
    assert len(history["loss"]) == 5
    assert history["loss"][-1] < history["loss"][0] and history["val_loss"][-1] < history["val_loss"][0]

    export = str(tmp_path / "saved")
    model.export(keras_model, tft_output, export)
    loaded = tf.saved_model.load(export)
    assert set(loaded.signatures) == {model.EXAMPLE_SIGNATURE, model.RAW_SIGNATURE, model.ENCODED_SIGNATURE}

    sample = rows[:10]
    raw_inputs = {f.name: tf.constant([r[f.name][0] for r in sample],
                                      dtype={"int": tf.int64, "float": tf.float32, "string": tf.string}[f.dtype])
                  for f in features.FEATURES}
    by_raw = loaded.signatures[model.RAW_SIGNATURE](**raw_inputs)[model.PREDICTIONS].numpy()

    def example(r):
        return tf_example({k: v[0] for k, v in r.items()}, features.all_columns())

    by_example = loaded.signatures[model.EXAMPLE_SIGNATURE](
        examples=tf.constant([example(r) for r in sample]))[model.PREDICTIONS].numpy()
    assert by_raw.shape == (10,)
    np.testing.assert_allclose(by_raw, by_example, rtol=1e-5)
    # One matrix in encode_row's layout: the same predictions, to the bit.
    encoded = detector_core.encode([{k: v[0] for k, v in r.items()} for r in sample])
    by_encoded = loaded.signatures[model.ENCODED_SIGNATURE](encoded=tf.constant(encoded))[model.PREDICTIONS].numpy()
    np.testing.assert_array_equal(by_encoded, by_raw)
    assert (by_raw >= 0).all()
    # Counts, not log counts: the model was fit on log1p, the signature undoes it.
    expected = np.expm1(np.maximum(keras_model.predict({k: v[:10] for k, v in x.items()}, verbose=0).ravel(), 0))
    np.testing.assert_allclose(by_raw, expected, rtol=1e-4)


def test_fit_is_deterministic_for_a_seed(transform_output):
    out, _, transformed = transform_output
    tft_output = tft.TFTransformOutput(out)
    x, y = _arrays(transformed)

    def train(seed):
        tf.keras.utils.set_random_seed(seed)
        keras_model = model.build_model(tft_output, [8])
        history = model.fit(keras_model, x, y, x, y, epochs=3, batch_size=16, seed=seed)
        return history, [w.copy() for w in keras_model.get_weights()]

    (h1, w1), (h2, w2), (h3, _) = train(7), train(7), train(8)
    assert h1 == h2 and h1["loss"][-1] < h1["loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h3 != h1


def test_fit_takes_labels_as_a_column_too(transform_output):
    """The pipeline's data accessor yields (n, 1) labels: they must not broadcast against (n,)."""
    out, _, transformed = transform_output
    tft_output = tft.TFTransformOutput(out)
    x, y = _arrays(transformed)
    histories = []
    for labels in (y, y.reshape(-1, 1)):
        tf.keras.utils.set_random_seed(3)
        keras_model = model.build_model(tft_output, [8])
        histories.append(model.fit(keras_model, x, labels, x, labels, epochs=2, batch_size=16, seed=3))
    assert histories[0] == histories[1]


def test_a_step_budget_grows_the_batch_instead_of_the_steps(transform_output):
    assert model.effective_batch_size(1000, 128, None) == 128
    assert model.effective_batch_size(1000, 128, 100) == 128      # 8 steps: under the budget
    assert model.effective_batch_size(142_000, 128, 100) == 1420  # 50x span-1: 100 steps of 1420
    assert model.effective_batch_size(142_001, 128, 100) == 1421  # never more steps than the budget

    out, _, transformed = transform_output
    tft_output = tft.TFTransformOutput(out)
    x, y = _arrays(transformed)

    def train(max_steps):
        tf.keras.utils.set_random_seed(5)
        keras_model = model.build_model(tft_output, [8])
        return model.fit(keras_model, x, y, x, y, epochs=4, batch_size=8, seed=5, max_steps_per_epoch=max_steps)

    unbounded = train(None)
    assert train(len(y)) == unbounded          # a budget the span fits in changes nothing
    budgeted = train(2)
    assert budgeted != unbounded and budgeted["loss"][-1] < budgeted["loss"][0]

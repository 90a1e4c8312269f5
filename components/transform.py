"""Transform module file: raw bike-demand features -> model inputs (`preprocessing_fn`).

Numeric features are z-scored with statistics of the training split (tf.Transform computes them
once, in the graph that serving reuses, so training and serving cannot skew). Categorical
features become one-hot vectors over the vocabulary declared in `features.py`; a value outside
it maps to all zeros, which the schema and the serving validator reject long before it gets here.
The label is trained in log space (demand spans 1..1000 per hour); the model exports counts.
"""

import tensorflow as tf
import tensorflow_transform as tft

from components import features


def _one_hot(values: tf.Tensor, vocabulary) -> tf.Tensor:
    """[batch, 1] raw values -> [batch, len(vocabulary)] float one-hot, no lookup tables needed."""
    vocab = tf.constant(list(vocabulary), dtype=values.dtype)
    return tf.cast(tf.equal(values, vocab), tf.float32)


def preprocessing_fn(inputs):
    outputs = {}
    for f in features.FEATURES:
        value = inputs[f.name]
        name = features.transformed_name(f.name)
        if f.is_categorical:
            outputs[name] = _one_hot(value, f.vocabulary)
        else:
            outputs[name] = tft.scale_to_z_score(tf.cast(value, tf.float32))
    label = tf.cast(inputs[features.LABEL_KEY], tf.float32)
    outputs[features.transformed_name(features.LABEL_KEY)] = tf.math.log1p(label)
    return outputs

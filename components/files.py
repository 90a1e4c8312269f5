"""Writing a file of a version or an artifact, local or gs://, so that a reader never sees half of it."""

import tensorflow as tf


def write_text(path: str, text: str):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as fh:
        fh.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)

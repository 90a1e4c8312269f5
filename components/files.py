"""Writing files of a version or an artifact, local or gs://: through TensorFlow's filesystem
layer (an artifact URI is gs:// in a Kubeflow pod), and so that a reader never sees half a file."""

import os


import tensorflow as tf


def write_text(path: str, text: str):
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as fh:
        fh.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def copy_tree(src: str, dst: str):
    """Copy a file, or a folder with everything below it, to `dst`."""
    if not tf.io.gfile.isdir(src):
        tf.io.gfile.makedirs(os.path.dirname(dst))
        tf.io.gfile.copy(src, dst, overwrite=True)
        return
    for root, _, names in tf.io.gfile.walk(src):
        below = os.path.relpath(root, src)
        target = dst if below == "." else os.path.join(dst, below)  # never a "." folder: on gs:// it is one
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name), overwrite=True)

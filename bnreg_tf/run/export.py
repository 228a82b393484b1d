"""SavedModel export with the evaluation preprocessing baked in (`keras.export.ExportArchive`).

Endpoints (signatures) of the export:
- `serve` (also `serving_default`): uint8 images [B, H, W, C], any B (any H, W; they are
  cropped/resized as in evaluation) -> `logits`, `probabilities`, `embedding`;
- `classify_embedding`: float32 embedding [B, E] -> `logits`, i.e. the layers after the
  embedding's Dropout (Fixup's scalar bias and the classifier). `bnreg-eval` applies test-time
  Dropout masks between the two.
Beside the SavedModel files: `dataset.json` (dataset, its splits, classes; `bnreg-eval` reads
it) and `class_names.txt` (line i names label i; a folder's sorted class folders). A class name
may hold any character a folder name can: in class_names.txt a backslash, a newline and a
carriage return inside a name are written `\\`, `\n` and `\r`, and bytes that are not UTF-8
are kept as they are, so the file has exactly one line per class (`read_class_names` reads it
back; `bnreg-eval` checks it against dataset.json, which holds the names as JSON strings).
The directory is written beside the target and renamed into place, so an interrupted export
never leaves a half-written SavedModel where a good one was; the staging and previous dirs are
removed as what they are (a symbolic link is removed as a link, never followed).
"""
import json
import os
import shutil

import keras
import tensorflow as tf

from bnreg_tf.run import layout


def classify_embedding(network, embedding):
    """The network's head after the embedding (and its dropout), as the network computes it."""
    names = {layer.name for layer in network.layers}
    x = embedding
    if "classifier_input_bias" in names:
        x = network.get_layer("classifier_input_bias")(x)
    return tf.cast(network.get_layer("classifier")(x), tf.float32)


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}


def class_names_text(names):
    """class_names.txt's bytes: one line per name, `\\`, `\n`, `\r` escaped (module docstring)."""
    lines = ("".join(_ESCAPES.get(c, c) for c in name) for name in names)
    return "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")


def read_class_names(path):
    """The names class_names.txt at `path` holds, as `class_names_text` wrote them."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    names = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        name, index = [], 0
        while index < len(line):
            if line[index] == "\\" and index + 1 < len(line):
                name.append({"n": "\n", "r": "\r"}.get(line[index + 1], line[index + 1]))
                index += 2
            else:
                name.append(line[index])
                index += 1
        names.append("".join(name))
    return names


def _clear(path):
    """Removes `path` as what it is: a link as a link (never followed), a dir with its files."""
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def export_saved_model(network, preprocessing, path, dataset=None):
    """Writes the SavedModel of `network` to `path` (replacing an older export atomically).

    `dataset`: the run's data record (`bnreg_tf.run.results.dataset_record`), saved beside it.
    """
    channels = network.input_shape[-1]
    width = network.get_layer("classifier").kernel.shape[0]

    def serve(images):
        outputs = network(preprocessing.evaluate_batch(images), training=False)
        logits = tf.cast(outputs["logits"], tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "embedding": tf.cast(outputs["embedding"], tf.float32)}

    def head(embedding):
        return {"logits": classify_embedding(network, embedding)}

    archive = keras.export.ExportArchive()
    archive.track(network)
    images = tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")
    traced = archive.add_endpoint("serve", serve, input_signature=[images])
    archive.add_endpoint("serving_default", traced)   # the same function: traced once
    archive.add_endpoint("classify_embedding", head, input_signature=[
        tf.TensorSpec([None, width], tf.float32, name="embedding")])
    path = os.path.abspath(path)
    staging, previous = f"{path}.partial", f"{path}.previous"
    _clear(staging)
    try:
        archive.write_out(staging, verbose=False)
        if dataset is not None:
            with open(os.path.join(staging, layout.DATASET_RECORD), "w") as f:
                json.dump(dataset, f, indent=2)
            with open(os.path.join(staging, layout.CLASS_NAMES), "wb") as f:
                f.write(class_names_text(dataset["class_names"]))
    except BaseException:  # a full disk or a signal: leave no half-written SavedModel behind
        _clear(staging)
        raise
    if os.path.lexists(path):
        _clear(previous)
        os.replace(path, previous)
    os.replace(staging, path)
    _clear(previous)
    return path

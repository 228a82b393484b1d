"""Peak resident memory of a short training run per benchmarked model (one subprocess each).

Issues 7 and 17 (the "before issue 17" rows: bnreg's models with Keras' BatchNormalization,
Conv2D and SGD).
Each child process builds the model, runs a few `model.fit` steps and reports its peak
resident set (`VmHWM` of /proc/self/status; `ru_maxrss` would carry over the parent's peak
across fork+exec on Linux). A child that only imports TensorFlow and Keras gives
the baseline. Linux only.
"""
import json
import subprocess
import sys

CHILD = r"""
import contextlib, json, sys
spec = json.loads(sys.argv[1])
import keras
from bnreg_tf.run import models


def build(spec):
    if spec["family"] == "resnet":
        import resnet
        return models.build(spec["model"], num_classes=spec["classes"],
                                  input_shape=tuple(spec["shape"]), norm=spec["norm"])
    if spec["family"] == "efficientnet":
        import efficientnet
        return efficientnet.build_model(spec["model"], num_classes=spec["classes"],
                                        input_shape=tuple(spec["shape"]))
    return keras.applications.ResNet50(weights=None, input_shape=tuple(spec["shape"]),
                                       classes=spec["classes"], classifier_activation=None)


if spec["model"] != "baseline":
    from benchmarks.timing import interleaved_throughput, keras_layers
    with keras_layers() if spec.get("keras_layers") else contextlib.nullcontext():
        model = build(spec)
    sgd = keras.optimizers.SGD if spec.get("keras_layers") or spec["family"] == "keras" else None
    interleaved_throughput([model], spec["batch"], spec["classes"], steps=3, warmup=1, rounds=1,
                           sgds=sgd and [sgd])
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": peak_kb / 1024}))
"""

MODELS = (
    dict(label="TensorFlow + Keras imported (baseline)", model="baseline"),
    dict(label="wrn16_4 batchnorm, 32 px", family="resnet", model="wrn16_4", norm="batchnorm",
         shape=[32, 32, 3], classes=10),
    dict(label="resnet50 batchnorm, 64 px", family="resnet", model="resnet50", norm="batchnorm",
         shape=[64, 64, 3], classes=1000),
    dict(label="resnet50 batchnorm, Keras layers and SGD (before issue 17), 64 px", family="resnet",
         model="resnet50", norm="batchnorm", shape=[64, 64, 3], classes=1000, keras_layers=True),
    dict(label="keras.applications.ResNet50, 64 px", family="keras", model="resnet50",
         shape=[64, 64, 3], classes=1000),
    dict(label="efficientnet b0, 64 px", family="efficientnet", model="b0", shape=[64, 64, 3],
         classes=1000),
    dict(label="efficientnet b0, Keras layers and SGD (before issue 17), 64 px", family="efficientnet",
         model="b0", shape=[64, 64, 3], classes=1000, keras_layers=True),
)


def rows(batch_size=32):
    """Yields `(run, peak RSS in MB)` rows."""
    for spec in MODELS:
        result = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**spec, "batch": batch_size})],
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"memory benchmark of {spec['label']} failed: "
                               f"{result.stderr.strip().splitlines()[-1:]}")
        yield spec["label"], json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]

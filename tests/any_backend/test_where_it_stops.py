"""Where bnreg stops off TensorFlow (issue 24, item 4; README, "Which parts run where").

Run in fresh interpreters with `KERAS_BACKEND=jax`, as a JAX user meets them: the building blocks
and the model code import without TensorFlow; each TensorFlow-only floor stops its import with
one line naming itself, the backend and what runs there; the binaries stop with that line and
exit status 2 before reading a flag, writing nothing. Marked `cross_backend`: the JAX processes
are started from the TensorFlow pass, so `.ci/run`'s JAX pass need not repeat them.
"""
import os
import subprocess
import sys

import pytest

from tests.any_backend.helpers import ROOT

pytestmark = pytest.mark.cross_backend
TENSORFLOW_ONLY = ["bnreg_tf.run", "bnreg_tf.data", "bnreg_tf.study", "bnreg_tf.cli",
                   "bnreg_tf.run.trainer", "bnreg_tf.data.catalog", "efficientnet.optim",
                   "efficientnet.input_pipeline", "efficientnet.augment_ops"]
BINARIES = ["bnreg-train", "bnreg-eval", "bnreg-study", "bnreg-demo", "run_imagenet.py"]


def on_jax(*command, cwd=ROOT):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_building_blocks_and_models_import_and_build_without_tensorflow():
    code = ("import sys, bnreg_tf, resnet, efficientnet, keras; "
            "from bnreg_tf import regularize, NormMonitor, SignalPropagation; "
            "m = resnet.wide_resnet(10, 1, num_classes=3, input_shape=(8, 8, 3), "
            "norm='fixup_standardize', standardization_kl=0.01, embedding_l2=0.1); "
            "print(keras.backend.backend(), m.count_params(), 'tensorflow' in sys.modules)")
    done = on_jax(sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    backend, params, tensorflow_loaded = done.stdout.split()
    assert (backend, tensorflow_loaded) == ("jax", "False") and int(params) > 0


def test_each_tensorflow_only_floor_stops_its_import_with_one_line():
    code = ("import importlib, sys\n"
            f"for name in {TENSORFLOW_ONLY!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError as error:\n"
            "        print(name, '|', error)\n"
            "    else:\n"
            "        print(name, '| imported')\n")
    done = on_jax(sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(TENSORFLOW_ONLY)
    for name, line in zip(TENSORFLOW_ONLY, lines):
        module, message = line.split(" | ")
        assert module == name
        floor = ".".join(name.split(".")[:2]) if name.startswith("bnreg_tf") else name
        assert message.startswith(f"{floor} runs on TensorFlow only"), line
        assert "'jax'" in message and "bnreg_tf.nn, resnet and efficientnet.model" in message


@pytest.mark.parametrize("binary", BINARIES)
def test_binaries_say_so_in_one_line_and_exit_2(binary, tmp_path):
    command = [sys.executable, os.path.join(ROOT, binary)] if binary.endswith(".py") \
        else [os.path.join(os.path.dirname(sys.executable), binary)]
    done = on_jax(*command, f"--model_dir={tmp_path / 'run'}", "--epochs=1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{binary}: "), done.stderr[-3000:]
    assert "runs on TensorFlow only" in lines[0] and "KERAS_BACKEND=tensorflow" in lines[0]
    assert done.stdout == "" and os.listdir(tmp_path) == []   # nothing written

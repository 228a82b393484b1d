"""Files written by the code of commit 3bfb970 still load, predict and resume the same.

`tests/fixtures/main_3bfb970/` holds `.keras` files of bnreg models (every bnreg Keras object),
a `.weights.h5`, the outputs they gave when written (`expected.npz`), and run directories of
`bnreg-train` (README.md there says how each file was made). This test touches bnreg only through
interfaces that outlive a restructuring of the package: `import bnreg_tf` (after which Keras
finds every bnreg object), `keras.saving.load_model`, `model.load_weights`,
`tf.saved_model.load`, and the binaries `bnreg-train` and `bnreg-eval` with their flags.
No bnreg module below `bnreg_tf` is imported here.
"""
import csv
import json
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest

from tests import binaries

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "main_3bfb970")
RUNDIRS = os.path.join(FIXTURES, "rundirs")
TIMEOUT = 300   # seconds per subprocess

# Every Keras object bnreg registered at 3bfb970, all held by the .keras fixtures.
BNREG_OBJECTS = (
    "bnreg>BatchNormalization", "bnreg>Conv2D", "bnreg>EmbeddingL2", "bnreg>FixedScale",
    "bnreg>FunctionalL2", "bnreg>ReferenceRMSprop", "bnreg>SGD", "bnreg>ScalarBias",
    "bnreg>ScalarScale", "bnreg>ScaledStdConv2D", "bnreg>StandardizationKL",
    "bnreg>StochasticDepth", "bnreg>Swish", "bnreg>WarmupExponentialDecay",
    "bnreg>WarmupPiecewise",
)
# .keras file -> its key in expected.npz
KERAS_FILES = {
    "a_wrn10_1_fixup_sgd.keras": "a",
    "b_wrn10_1_fixup_standardize_kl_swish.keras": "b",
    "c_wrn10_1_nf_resnet.keras": "c",
    "d_wrn10_1_skipinit.keras": "d",
    "e_resnet_v1_basic_batchnorm.keras": "e_bn",
    "e_resnet_v1_basic_single_bn.keras": "e_single_bn",
    "e_resnet_v1_bottleneck_batchnorm.keras": "e_bottleneck",
    "f_tiny_reference_rmsprop_average.keras": "f",
    "f2_tiny_reference_rmsprop_no_average.keras": "f2",
    "g_tiny_stochastic_depth.keras": "g",
}
WEIGHTS_H5 = ("a_wrn10_1_fixup_sgd.keras", "a_wrn10_1_fixup_after4steps.weights.h5", "a_weights")
# .keras file -> (optimizer, learning-rate schedule, optimizer.iterations) when it was saved
OPTIMIZERS = {
    "a_wrn10_1_fixup_sgd.keras": ("bnreg>SGD", "bnreg>WarmupPiecewise", 2),
    "f2_tiny_reference_rmsprop_no_average.keras": (
        "bnreg>ReferenceRMSprop", "bnreg>WarmupExponentialDecay", 2),
}
AVERAGING_OPTIMIZER = ("f_tiny_reference_rmsprop_average.keras",
                       ("bnreg>ReferenceRMSprop", "bnreg>WarmupExponentialDecay", 2))
RTOL = 1e-5   # of the largest expected magnitude (at least 1); they are expected to be exact

# The flags each run dir was made with (README.md); --model_dir is added.
SIZE = ["--model=wrn10_1", "--steps_per_epoch=3", "--batch_size=16"]
RUNS = {
    # 3-epoch runs killed after their step-6 (epoch 2) checkpoint
    "r1_wrn10_1_fixup": SIZE + ["--epochs=3", "--norm=fixup", "--embedding_l2=0.1",
                                "--functional_l2=0.1", "--dropout=0.1"],
    "r2_wrn10_1_fixup_standardize": SIZE + ["--epochs=3", "--norm=fixup_standardize",
                                            "--standardization_kl=0.01", "--activation=swish"],
    # a complete 2-epoch run
    "r3_wrn10_1_nf_resnet": SIZE + ["--epochs=2", "--norm=nf_resnet", "--agc=0.5"],
}

# Runs in a fresh interpreter after one of PRELUDES; prints one line "REPORT <json>".
LOAD_SCRIPT = r"""
import json, os, sys, warnings
import numpy as np
import tensorflow as tf

fixtures = sys.argv[1]
spec = json.loads(sys.argv[2])
expected = np.load(os.path.join(fixtures, "expected.npz"))


def compare(outputs, key):
    outputs = outputs if isinstance(outputs, dict) else {"output": outputs}
    got = {name: np.asarray(keras.ops.convert_to_numpy(value)) for name, value in outputs.items()}
    want = {name[len(key) + 1:]: expected[name] for name in expected.files
            if name.startswith(key + "/")}
    result = {"names": sorted(got), "expected_names": sorted(want), "error": {}}
    for name in sorted(set(got) & set(want)):
        scale = max(1.0, float(np.max(np.abs(want[name]))))
        result["error"][name] = (float(np.max(np.abs(got[name] - want[name]))) / scale
                                 if got[name].shape == want[name].shape
                                 else f"shape {got[name].shape} != {want[name].shape}")
    return result


def load(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(os.path.join(fixtures, name))
    return model, [str(w.message) for w in caught]


def optimizer_state(model):
    optimizer = getattr(model, "optimizer", None)   # an uncompiled model has none
    if optimizer is None:
        return None
    schedule = optimizer.get_config()["learning_rate"]
    return {"class": keras.saving.get_registered_name(type(optimizer)),
            "schedule": schedule.get("registered_name") if isinstance(schedule, dict) else None,
            "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations))}


report = {"custom_objects": sorted(k for k in keras.saving.get_custom_objects()
                                   if k.startswith("bnreg>")), "models": {}}
for name, key in spec["keras"].items():
    model, caught = load(name)
    report["models"][name] = {"warnings": caught, "optimizer": optimizer_state(model),
                              "outputs": compare(model(expected["x"], training=False), key)}
name, weights, key = spec["weights"]
model, _ = load(name)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.load_weights(os.path.join(fixtures, weights))
report["weights"] = {"warnings": [str(w.message) for w in caught],
                     "outputs": compare(model(expected["x"], training=False), key)}
export = tf.saved_model.load(spec["export"])
report["export"] = compare(export.serve(tf.constant(expected["x_uint8"])), "r1_export")
print("REPORT " + json.dumps(report))
"""
PRELUDES = {
    "import_bnreg_tf_first": "import bnreg_tf\nimport keras\n",
    "import_keras_first": "import keras\nimport bnreg_tf\n",
}


def _env():
    """The environment of every subprocess: this one's (PYTHONPATH included, so a checkout on
    PYTHONPATH is what the subprocesses import), quiet."""
    return {**os.environ, "BNREG_QUIET": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _binary(name):
    """The console script `name` installed beside this interpreter (`pip install .` puts it there)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.isfile(path), f"{path}: not found; install bnreg into this environment"
    return path


def _run(command, cwd=None):
    result = binaries.run(command, env=_env(), cwd=cwd or os.getcwd(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command[0]} exited {result.returncode}:\n{output[-4000:]}"
    return output


def _copy_run(name, tmp_path):
    target = str(tmp_path / name)
    shutil.copytree(os.path.join(RUNDIRS, name), target)
    return target


def _json(path):
    with open(path) as f:
        return json.load(f)


def _log_rows(model_dir):
    with open(os.path.join(model_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def _checkpoint_step(model_dir):
    """The step of the checkpoint the run dir's index names (ckpt-<step>)."""
    with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as f:
        first = f.readline()
    assert first.startswith("model_checkpoint_path:"), first
    return int(first.split('"')[1].rsplit("-", 1)[1])


# ---- the fixtures themselves -----------------------------------------------------------------

def test_fixtures_hold_every_bnreg_object_and_their_expected_outputs():
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("registered_name", "")).startswith("bnreg>"):
                found.add(node["registered_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in KERAS_FILES:
        with zipfile.ZipFile(os.path.join(FIXTURES, name)) as archive:
            walk(json.loads(archive.read("config.json")))
    assert found == set(BNREG_OBJECTS)
    keys = {name.split("/")[0] for name in np.load(os.path.join(FIXTURES, "expected.npz")).files}
    assert {*KERAS_FILES.values(), WEIGHTS_H5[2], "r1_export", "x", "x_uint8"} <= keys


# ---- .keras, .weights.h5 and the SavedModel, in a fresh interpreter ---------------------------

@pytest.fixture(scope="module", params=sorted(PRELUDES))
def loaded(request):
    """What LOAD_SCRIPT reports, after `import bnreg_tf` then `import keras`, or the reverse."""
    spec = {"keras": KERAS_FILES, "weights": WEIGHTS_H5,
            "export": os.path.join(RUNDIRS, "r1_wrn10_1_fixup", "export")}
    code = PRELUDES[request.param] + LOAD_SCRIPT
    output = _run([sys.executable, "-c", code, FIXTURES, json.dumps(spec)])
    lines = [line for line in output.splitlines() if line.startswith("REPORT ")]
    assert lines, output[-4000:]
    return json.loads(lines[-1][len("REPORT "):])


def _assert_same_outputs(outputs, what):
    assert outputs["names"] == outputs["expected_names"], what
    for name, error in outputs["error"].items():
        assert not isinstance(error, str) and error <= RTOL, f"{what} {name}: {error}"


def test_every_bnreg_object_is_registered_after_import_bnreg_tf(loaded):
    assert set(BNREG_OBJECTS) <= set(loaded["custom_objects"])


def test_keras_files_load_and_predict_as_when_written(loaded):
    assert sorted(loaded["models"]) == sorted(KERAS_FILES)
    for name, entry in loaded["models"].items():
        _assert_same_outputs(entry["outputs"], name)


def test_weights_h5_loads_and_predicts_as_when_written(loaded):
    assert not loaded["weights"]["warnings"], loaded["weights"]["warnings"]
    _assert_same_outputs(loaded["weights"]["outputs"], WEIGHTS_H5[1])


def test_optimizers_come_back_with_class_schedule_and_step(loaded):
    for name, (optimizer, schedule, iterations) in OPTIMIZERS.items():
        entry = loaded["models"][name]
        assert entry["optimizer"] == {"class": optimizer, "schedule": schedule,
                                      "iterations": iterations}, (name, entry["warnings"])
        assert not entry["warnings"], (name, entry["warnings"])


def test_reference_rmsprop_with_weight_average_comes_back_with_its_step(loaded):
    """ReferenceRMSprop with `track_average`: its shadow weights are optimizer variables, so the
    saved optimizer holds more variables than a freshly built one."""
    name, (optimizer, schedule, iterations) = AVERAGING_OPTIMIZER
    entry = loaded["models"][name]
    assert entry["optimizer"] == {"class": optimizer, "schedule": schedule,
                                  "iterations": iterations}, (name, entry["warnings"])
    assert not entry["warnings"], (name, entry["warnings"])


def test_saved_model_export_serves_as_when_written(loaded):
    _assert_same_outputs(loaded["export"], "r1 export")


# ---- run directories, through the binaries ----------------------------------------------------

@pytest.mark.parametrize("run", ["r1_wrn10_1_fixup", "r2_wrn10_1_fixup_standardize"])
def test_bnreg_train_resumes_an_interrupted_run(run, tmp_path):
    model_dir = _copy_run(run, tmp_path)
    step = _checkpoint_step(model_dir)
    assert step == 6
    logged = _log_rows(model_dir)
    assert [(row["epoch"], row["step"]) for row in logged] == [("1", "3"), ("2", "6")]
    output = _run([_binary("bnreg-train"), f"--model_dir={model_dir}", *RUNS[run]])
    checkpoint = os.path.join(model_dir, "checkpoints", f"ckpt-{step}")
    assert f"bnreg: resuming from {checkpoint} (step {step})" in output, output[-4000:]
    results = _json(os.path.join(model_dir, "results.json"))
    assert results["steps"] == 3 * 3 and results["epochs"] == 3
    assert 0.0 <= results["test_accuracy"] <= 1.0
    rows = _log_rows(model_dir)
    assert [(row["epoch"], row["step"]) for row in rows] == [("1", "3"), ("2", "6"), ("3", "9")]
    assert rows[:2] == logged   # the epochs logged before the interruption stay as they were


def test_bnreg_eval_scores_the_export(tmp_path):
    model_dir = _copy_run("r1_wrn10_1_fixup", tmp_path)
    output_path = str(tmp_path / "eval.json")
    _run([_binary("bnreg-eval"), f"--saved_model={os.path.join(model_dir, 'export')}",
          f"--output={output_path}"])
    results = _json(output_path)
    assert results["dataset"] == "digits" and results["examples"] == 360
    assert 0.0 <= results["accuracy"] <= 1.0


def test_bnreg_train_reopens_a_complete_run_with_the_same_weights(tmp_path):
    model_dir = _copy_run("r3_wrn10_1_nf_resnet", tmp_path)
    before = _json(os.path.join(model_dir, "results.json"))
    _run([_binary("bnreg-train"), f"--model_dir={model_dir}", *RUNS["r3_wrn10_1_nf_resnet"],
          "--noexport"])
    after = _json(os.path.join(model_dir, "results.json"))
    assert after["steps"] == before["steps"] == 6
    assert after["weights_sha256"] == before["weights_sha256"]
    for key in ("validation_accuracy", "test_accuracy", "test_cross_entropy"):
        assert after[key] == pytest.approx(before[key], rel=1e-5), key


def test_bnreg_train_branches_from_a_run_with_init_from(tmp_path):
    source = _copy_run("r3_wrn10_1_nf_resnet", tmp_path)
    model_dir = str(tmp_path / "branch")
    flags = [flag for flag in RUNS["r3_wrn10_1_nf_resnet"] if not flag.startswith("--epochs=")]
    output = _run([_binary("bnreg-train"), f"--init_from={source}", f"--model_dir={model_dir}",
                   *flags, "--epochs=1", "--noexport"])
    assert f"weights from: {os.path.join(source, 'checkpoints', 'ckpt-6')}" in output, \
        output[-4000:]
    assert _json(os.path.join(model_dir, "results.json"))["steps"] == 3

"""SignalPropagation (Brock et al. 2021a, section 2) against a NumPy float64 forward, block
discovery on bnreg's WRN and ResNet v1, the report's figure and CSV, and the study's hook."""
import csv
import json
import math
import os

import keras
import numpy as np
import pytest

from bnreg_tf.run import models
from bnreg_tf.study import report, runner, signal, spp_figure
from bnreg_tf.study.grid import make_study
from bnreg_tf.nn.signal_propagation import SPP_FIELDS, SignalPropagation, gaussian_probe

EPS = 1e-3


def conv1x1(width, name):
    return keras.layers.Conv2D(width, 1, name=name)


def two_block_nets():
    """A pre-activation net (identity block, then a projection block written as `x + y`) and a
    post-activation net (`relu(x + f(x))` twice, BatchNorm in the second branch)."""
    inputs = keras.Input((3, 3, 2))
    h = conv1x1(4, "stem")(inputs)
    y = conv1x1(4, "b1_conv")(keras.layers.ReLU(name="b1_act")(h))
    s1 = keras.layers.Add(name="b1_add")([h, y])
    a = keras.layers.ReLU(name="b2_act1")(s1)
    y = conv1x1(5, "b2_conv2")(keras.layers.ReLU(name="b2_act2")(conv1x1(5, "b2_conv1")(a)))
    s2 = conv1x1(5, "b2_shortcut")(a) + y
    pre = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(s2), name="pre")

    inputs = keras.Input((3, 3, 2))
    h = conv1x1(4, "stem")(inputs)
    y = conv1x1(4, "b1_conv")(keras.layers.ReLU(name="b1_act")(h))
    o1 = keras.layers.ReLU(name="b1_out")(keras.layers.Add(name="b1_add")([h, y]))
    y = keras.layers.BatchNormalization(epsilon=EPS, name="b2_bn")(conv1x1(4, "b2_conv")(o1))
    o2 = keras.layers.ReLU(name="b2_out")(keras.layers.Add(name="b2_add")([y, o1]))
    post = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(o2), name="post")
    return pre, post


def set_random_weights(model, rng):
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0.5, 0.7, w.shape).astype(np.float32) for w in weights])
            if isinstance(layer, keras.layers.BatchNormalization):   # moving variance > 0
                gamma, beta, mean, var = layer.get_weights()
                layer.set_weights([gamma, beta, mean, np.abs(var) + 0.5])


def numpy_forward(model, x, batch_statistics):
    """The two nets' blocks in float64: [(output, branch)] per block."""
    w = {layer.name: [v.astype(np.float64) for v in layer.get_weights()] for layer in model.layers}

    def conv(name, t):
        kernel, bias = w[name]
        return t @ kernel[0, 0] + bias

    def relu(t):
        return np.maximum(t, 0.0)

    h = conv("stem", x.astype(np.float64))
    y1 = conv("b1_conv", relu(h))
    s1 = h + y1
    if model.name == "pre":
        a = relu(s1)
        y2 = conv("b2_conv2", relu(conv("b2_conv1", a)))
        return [(s1, y1), (conv("b2_shortcut", a) + y2, y2)]
    o1 = relu(s1)
    c = conv("b2_conv", o1)
    gamma, beta, moving_mean, moving_var = w["b2_bn"]
    mean, var = (c.mean((0, 1, 2)), c.var((0, 1, 2))) if batch_statistics else \
        (moving_mean, moving_var)
    y2 = (c - mean) / np.sqrt(var + EPS) * gamma + beta
    return [(o1, y1), (relu(y2 + o1), y2)]


def numpy_statistics(t):
    means = t.reshape(-1, t.shape[-1]).mean(0)
    variances = t.reshape(-1, t.shape[-1]).var(0)
    return np.mean(means**2), np.mean(variances)


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_values_match_a_numpy_forward_of_pre_and_post_activation_blocks(batch_statistics):
    rng = np.random.default_rng(0)
    probe = rng.normal(0.3, 1.2, (16, 3, 3, 2)).astype(np.float32)
    for model in two_block_nets():
        set_random_weights(model, rng)
        measured = SignalPropagation(model, probe, batch_statistics=batch_statistics).measure()
        expected = numpy_forward(model, probe, batch_statistics)
        assert [row["depth"] for row in measured] == [1, 2]
        for row, (output, branch) in zip(measured, expected):
            squared_mean, variance = numpy_statistics(output)
            np.testing.assert_allclose(
                [row["squared_mean"], row["variance"], row["branch_variance"]],
                [squared_mean, variance, numpy_statistics(branch)[1]], rtol=2e-6)
            assert all(isinstance(row[k], float) for k in SPP_FIELDS[4:])
        # The branch is the Add input that is not the skip; post-activation outputs the ReLU.
        names = [(row["name"], row["output"], row["branch"]) for row in measured]
        if model.name == "pre":
            assert names[0] == ("b1_add", "b1_add", "b1_conv")
            assert names[1][1:] == (names[1][0], "b2_conv2")   # `x + y`: a keras.ops add
        else:
            assert names == [("b1_add", "b1_out", "b1_conv"), ("b2_add", "b2_out", "b2_bn")]


def test_batch_statistics_leave_the_moving_averages_and_repeat_exactly():
    _, post = two_block_nets()
    set_random_weights(post, np.random.default_rng(1))
    before = [v.numpy().copy() for v in post.get_layer("b2_bn").non_trainable_variables]
    probe = gaussian_probe((3, 3, 2), 8, seed=3)
    np.testing.assert_array_equal(probe, gaussian_probe((3, 3, 2), 8, seed=3))
    monitor = SignalPropagation(post, probe)
    assert monitor.measure() == SignalPropagation(post, probe).measure()
    for old, new in zip(before, post.get_layer("b2_bn").non_trainable_variables):
        np.testing.assert_array_equal(old, new.numpy())


def test_rows_and_csv(tmp_path):
    pre, _ = two_block_nets()
    monitor = SignalPropagation(pre, np.ones((4, 3, 3, 2), np.float32))
    path = monitor.to_csv(str(tmp_path / "spp.csv"))
    with open(path) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == SPP_FIELDS and len(rows) == 3
    assert [float(v) for v in rows[1][4:]] == list(monitor.as_rows()[0][4:])


def test_models_without_residual_blocks_are_refused():
    inputs = keras.Input((3, 3, 2))
    plain = keras.Model(inputs, conv1x1(2, "c")(inputs))
    with pytest.raises(ValueError, match="no residual block"):
        SignalPropagation(plain, np.ones((2, 3, 3, 2), np.float32))


@pytest.mark.parametrize("norm", ["batchnorm", "fixup", "skipinit", "nf_resnet"])
def test_finds_the_wide_resnet_blocks(norm):
    """The branch is measured before Fixup's scale and the zero-initialised SkipInit/NF gains."""
    branch_end = "conv2"
    model = models.build("wrn10_1", num_classes=10, input_shape=(8, 8, 1), norm=norm,
                               seed=0)
    monitor = SignalPropagation(model, gaussian_probe((8, 8, 1), 8))
    rows = monitor.measure()
    blocks = [f"group{g}_block0" for g in (1, 2, 3)]
    assert [(r["name"], r["output"], r["branch"]) for r in rows] == \
        [(f"{b}_add", f"{b}_add", f"{b}_{branch_end}") for b in blocks]   # pre-activation
    assert [b.skip._keras_history.operation.name for b in monitor.blocks] == \
        ["stem_conv", "group2_block0_shortcut", "group3_block0_shortcut"]
    assert all(np.isfinite([r["squared_mean"], r["variance"]]).all() for r in rows)
    if norm == "fixup":   # Fixup's last branch conv starts at zero
        assert [r["branch_variance"] for r in rows] == [0.0, 0.0, 0.0]
    else:
        assert all(r["branch_variance"] > 0 for r in rows)
    if norm == "nf_resnet":   # scaled WS keeps the branch near unit variance (Brock et al. 2021a)
        assert all(0.25 < r["branch_variance"] < 4 for r in rows)


def test_finds_the_resnet18_blocks():
    model = models.build("resnet18", num_classes=10, input_shape=(32, 32, 3), seed=0)
    monitor = SignalPropagation(model, gaussian_probe((32, 32, 3), 4))
    names = [f"stage{s}_block{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    rows = monitor.measure()
    assert [(r["name"], r["output"], r["branch"]) for r in rows] == \
        [(f"{n}_add", f"{n}_out", f"{n}_site2_bn") for n in names]   # post-activation
    skips = [b.skip._keras_history.operation.name for b in monitor.blocks]
    assert skips == ["stem_pool", "stage1_block0_out", "stage2_block0_shortcut_site_bn",
                     "stage2_block0_out", "stage3_block0_shortcut_site_bn", "stage3_block0_out",
                     "stage4_block0_shortcut_site_bn", "stage4_block0_out"]
    # Goyal et al.'s zero gamma ends every branch: exactly zero with the batch's statistics.
    assert [r["branch_variance"] for r in rows] == [0.0] * 8


def _rows(blocks, scale):
    return [{"depth": d, "name": f"b{d}_add", "output": f"b{d}_add", "branch": f"b{d}_conv",
             "squared_mean": scale * d, "variance": 2.0 * scale * d,
             "branch_variance": 0.0 if scale < 1 else float(d)} for d in range(1, blocks + 1)]


def test_figure_and_csv_have_every_mode_and_block(tmp_path):
    curves = {"batchnorm": {"gaussian": _rows(3, 1.0), "data": _rows(3, 2.0)},
              "fixup": {"gaussian": _rows(3, 0.1), "data": _rows(3, 0.2)}}
    png, table = str(tmp_path / "spp.png"), str(tmp_path / "spp.csv")
    spp_figure.figure_signal_propagation(curves, png)
    spp_figure.write_signal_propagation_csv(curves, table)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == spp_figure.SPP_COLUMNS and len(rows) == 12
    assert [(r["mode"], r["input"], int(r["depth"])) for r in rows[:4]] == \
        [("batchnorm", "gaussian", 1), ("batchnorm", "gaussian", 2), ("batchnorm", "gaussian", 3),
         ("batchnorm", "data", 1)]
    assert float(rows[-1]["variance"]) == curves["fixup"]["data"][2]["variance"]


def test_study_measures_once_per_norm_mode_and_reuses_the_file(tmp_path, monkeypatch):
    out = str(tmp_path / "study")
    grid = make_study("default", {"epochs": 1}, ["batchnorm", "fixup", "fixup_kl",
                                                      "fixup_el2"], ["0"], output_dir=out)
    lines = []
    records = runner.collect(grid, log=lines.append)
    path = os.path.join(out, signal.SIGNAL_PROPAGATION_FILE)
    with open(path) as f:
        stored = json.load(f)
    assert list(stored["modes"]) == ["batchnorm", "fixup", "fixup_standardize"]
    for mode, inputs in stored["modes"].items():
        assert list(inputs) == ["gaussian", "data"]
        for rows in inputs.values():   # the stem's output first (depth 0), then every block
            assert [r["name"] for r in rows] == ["stem"] + [f"group{g}_block0_add"
                                                            for g in (1, 2, 3)]
            assert rows[0]["depth"] == 0 and math.isnan(rows[0]["branch_variance"])
            zero = mode == "fixup"   # fixup_standardize's last layer is He / sqrt(L), not 0
            assert all((r["branch_variance"] == 0) == zero for r in rows[1:])
    report.write_report(records, out, "# test", grid)
    text = open(os.path.join(out, "report.md")).read()
    assert f"![{spp_figure.SPP_TITLE}](signal_propagation.png)" in text
    with open(os.path.join(out, "signal_propagation.csv")) as f:
        assert len(list(csv.DictReader(f))) == 3 * 2 * 4   # modes x inputs x (stem + blocks)

    calls = []
    measure = signal._measure_signal_propagation
    monkeypatch.setattr(signal, "_measure_signal_propagation",
                        lambda s, modes: calls.append(modes) or measure(s, modes))
    mtime = os.stat(path).st_mtime_ns
    runner.collect(grid, log=lines.append)              # --report_only again: read back
    monkeypatch.setattr(runner, "_run_phase", lambda *args: [])
    runner.run_study(grid, None, log=lines.append)      # a rerun: read back too
    assert calls == [] and os.stat(path).st_mtime_ns == mtime
    more = make_study("default", {"epochs": 1}, ["batchnorm", "single_bn"], ["0"],
                            output_dir=out)
    runner.collect(more, log=lines.append)              # only the new mode is measured
    assert calls == [["single_bn"]]
    with open(path) as f:
        assert list(json.load(f)["modes"]) == ["batchnorm", "fixup", "fixup_standardize",
                                               "single_bn"]


def test_a_failed_measurement_is_one_line_and_the_report_says_so(tmp_path, monkeypatch):
    out = str(tmp_path / "study")
    grid = make_study("default", {"epochs": 1}, ["batchnorm"], ["0"], output_dir=out)

    def broken(*_):
        raise RuntimeError("no memory left\nsecond line")

    monkeypatch.setattr(signal, "_measure_signal_propagation", broken)
    lines = []
    records = runner.collect(grid, log=lines.append)
    assert lines == ["bnreg-study: signal propagation not measured: RuntimeError: no memory left"]
    report.write_report(records, out, "# test", grid)
    text = open(os.path.join(out, "report.md")).read()
    assert f"## {spp_figure.SPP_TITLE}\n\nNot measured" in text
    assert not os.path.exists(os.path.join(out, "signal_propagation.png"))


def test_efficientnet_studies_have_no_signal_propagation_plot(tmp_path):
    grid = make_study("paper_imagenet_efficientnet_b8", {}, ["batchnorm"], ["0"],
                            output_dir=str(tmp_path))
    lines = []
    assert signal.signal_propagation(grid, log=lines.append) is None
    assert lines == ["bnreg-study: no signal propagation plot for efficientnet_b8 (measured for "
                     "the ResNet/WRN families only)"]
    assert not os.path.exists(os.path.join(str(tmp_path), signal.SIGNAL_PROPAGATION_FILE))


def test_any_functional_model_efficientnet_variance_grows_by_one_per_bn_block():
    """On EfficientNet-B0 (MBConv: skips only inside a stage, BatchNorm ending every branch) the
    blocks are the 9 identity skips, and with batch statistics every branch adds a unit-variance
    signal: the variance grows by about 1 per block within a stage and restarts at the next
    stage's first (skip-less) block, the BN picture of the paper's section 2."""
    import efficientnet

    model = efficientnet.build_model("b0", num_classes=10, input_shape=(32, 32, 3), seed=0)
    monitor = SignalPropagation(model, gaussian_probe((32, 32, 3), 8))
    rows = monitor.measure()
    names = ["2b", "3b", "4b", "4c", "5b", "5c", "6b", "6c", "6d"]
    assert [(r["name"], r["branch"]) for r in rows] == \
        [(f"block{n}_add", f"block{n}_project_bn") for n in names]   # before stochastic depth
    assert all(block.identity for block in monitor.blocks)
    np.testing.assert_allclose([r["branch_variance"] for r in rows], 1.0, atol=0.01)
    np.testing.assert_allclose([r["variance"] for r in rows], [2, 2, 2, 3, 2, 3, 2, 3, 4],
                               atol=0.2)

"""The accelerator grid of issue 17, item 4 (`benchmarks/device_grid.py`, `--only device`).

No GPU here: the harness (cells, the loss check, the verdict on `auto`, the report) runs on
CPU with tiny models and bfloat16 as the mixed policy; the GPU numbers need a machine with one.
"""
import argparse

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnreg_tf.run import models
from benchmarks import device_grid, run
from benchmarks.device_grid import Cell

HAS_GPU = bool(tf.config.list_logical_devices("GPU"))


def _cells(specs):
    return [Cell("m", precision, jit, rate, losses) for precision, jit, rate, losses in specs]


def test_judge_compares_each_cell_with_float32_graph():
    reference = (2.0, 1.98, 1.96, 1.94, 1.92)
    cells = _cells([
        ("float32", False, 10.0, reference),
        ("float32", True, 12.0, (2.0, 1.985, 1.96, 1.945, 1.93)),
        ("mixed_float16", False, 20.0, (2.0, 2.0, 2.0, 2.0, 2.0)),     # never updates
        ("mixed_float16", True, 30.0, (2.0, float("nan"), 1.96, 1.94, 1.92)),
        ("mixed_float16", True, 31.0, (2.0, 1.98, 1.96, 1.94, 2.112)),  # 10% off at the end
    ])
    device_grid.judge(cells, tolerance=0.05, min_drop=0.5)
    assert [c.correct for c in cells] == [True, True, False, False, False]
    np.testing.assert_allclose([c.max_loss_difference for c in cells[:3]],
                               [0.0, 0.01 / 1.92, 0.08 / 1.92], rtol=1e-9)
    np.testing.assert_allclose([c.drop_ratio for c in cells[:3]], [1.0, 0.07 / 0.08, 0.0],
                               rtol=1e-9, atol=1e-12)
    # The cell that never updates is within the 5% tolerance: only the drop test catches it.
    assert cells[2].max_loss_difference <= 0.05
    assert cells[3].max_loss_difference == float("inf")
    np.testing.assert_allclose(cells[4].max_loss_difference, 0.1, rtol=1e-9)


def test_verdict_is_the_fastest_correct_cell_and_autos_share_of_it():
    cells = _cells([("float32", False, 10.0, ()), ("float32", True, 12.0, ()),
                    ("mixed_float16", False, 20.0, ()), ("mixed_float16", True, 30.0, ())])
    for cell, correct in zip(cells, (True, True, True, False)):
        cell.correct = correct
    chosen, best, ratio = device_grid.verdict(cells, ("float32", True))
    assert (chosen.precision, chosen.jit_compile) == ("float32", True)
    assert (best.precision, best.jit_compile) == ("mixed_float16", False)   # 30 is not correct
    assert ratio == 12.0 / 20.0
    chosen, best, ratio = device_grid.verdict(cells, ("mixed_float16", False))
    assert chosen is best and ratio == 1.0
    for cell in cells:
        cell.correct = False
    assert device_grid.verdict(cells, ("float32", False))[1] is None


def test_auto_and_the_mixed_policy_are_what_the_binaries_pick_on_this_device():
    if HAS_GPU:
        assert device_grid.auto_choice() == ("mixed_float16", True)
        assert device_grid.mixed_policy() == "mixed_float16"
        assert device_grid.device_name()
    else:
        assert device_grid.auto_choice() == ("float32", False)
        assert device_grid.mixed_policy() == "mixed_bfloat16"
        assert device_grid.device_name() is None


def _tiny_family():
    def theirs(size, classes):   # unseeded: only `set_weights` makes its cells start alike
        inputs = keras.Input((size, size, 3))
        x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(classes)(x))

    return device_grid.Family(
        "WRN-10-1", 8, 10,
        lambda size, classes: models.build("wrn10_1", num_classes=classes,
                                                 input_shape=(size, size, 3), seed=None),
        theirs)


def _args(**changes):
    args = dict(device_grid_on_cpu=True, device_families="tiny", device_batch_size=4,
                device_image_size=0, steps=2)
    return argparse.Namespace(**{**args, **changes})


@pytest.mark.skipif(HAS_GPU, reason="the CPU-only message and bfloat16 cells")
def test_the_device_section_runs_every_cell_of_both_models_from_the_same_weights(
        monkeypatch, capsys):
    monkeypatch.setattr(device_grid, "FAMILIES", {"tiny": _tiny_family()})
    measured = []
    family_cells = device_grid.family_cells
    monkeypatch.setattr(device_grid, "family_cells",
                        lambda *a, **k: measured.append(family_cells(*a, **k)) or measured[-1])

    run.device_section(_args(device_grid_on_cpu=False), peak=1.0)
    assert "No GPU in this process: not run" in capsys.readouterr().out
    assert not measured

    run.device_section(_args(), peak=1.0)
    out = capsys.readouterr().out
    cells, = measured
    assert [(c.model, c.precision, c.compilation) for c in cells] == [
        (f"{who} WRN-10-1", precision, compilation)
        for who in ("bnreg", "keras.applications")
        for precision in ("float32", "mixed_bfloat16") for compilation in ("graph", "xla")]
    assert all(c.images_per_second > 0 for c in cells)
    for graph, xla, bf16_graph, bf16_xla in (cells[:4], cells[4:]):
        # Same weights and batch: XLA's float32 losses are graph mode's up to round-off (they
        # would differ from the first step on if `set_weights` were not applied), and each
        # model's loss falls on its repeated batch.
        assert graph.max_loss_difference == 0.0 and graph.drop_ratio == 1.0
        assert graph.losses[0] > graph.losses[-1]
        np.testing.assert_allclose(xla.losses, graph.losses, rtol=1e-4)
        assert xla.correct
        for cell in (bf16_graph, bf16_xla):
            np.testing.assert_allclose(cell.losses[0], graph.losses[0], rtol=2e-2)
            assert np.all(np.isfinite(cell.losses))
    rows = [line for line in out.splitlines() if line.startswith("| bnreg WRN-10-1")
            or line.startswith("| keras.applications WRN-10-1")]
    assert len(rows) == 8
    assert "auto's cell (float32, graph)" in out


def test_a_family_out_of_memory_is_one_row_and_the_next_family_still_runs(monkeypatch, capsys):
    family = _tiny_family()
    monkeypatch.setattr(device_grid, "FAMILIES", {"big": family, "tiny": family})
    cell = Cell("bnreg WRN-10-1", "float32", False, 5.0, (2.0, 1.9), correct=True)
    cells = [cell] + [Cell("bnreg WRN-10-1", p, j, 4.0, (2.0, 1.9), correct=True)
                      for p, j in (("float32", True), ("mixed_bfloat16", False),
                                   ("mixed_bfloat16", True))]

    def family_cells(family, batch_size, steps, image_size):
        if not hasattr(family_cells, "called"):
            family_cells.called = True
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return cells

    monkeypatch.setattr(device_grid, "family_cells", family_cells)
    run.device_section(_args(device_families="big,tiny"), peak=1.0)
    out = capsys.readouterr().out
    assert "| WRN-10-1 (8 px) | out of memory at batch 4: rerun it with a smaller " \
           "--device_batch_size" in out
    assert out.count("| bnreg WRN-10-1 (8 px) |") == 4
    auto = device_grid.auto_choice()
    expected = "is the fastest correct one" if auto == ("float32", False) else "runs"
    assert expected in out

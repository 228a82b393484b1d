"""The accelerator grid of issue 17, item 4 (`benchmarks/device_grid.py`), run on CPU.

No GPU here: the harness (cells, the loss check, the verdict on `auto`) is tested on a tiny
WRN at 8 px, with bfloat16 as the mixed policy; the GPU numbers are for a machine with one.
"""
import numpy as np

import resnet
from benchmarks import device_grid
from benchmarks.device_grid import Cell


def _cells(rates_and_losses):
    return [Cell("m", precision, jit, rate, losses)
            for (precision, jit), (rate, losses) in rates_and_losses.items()]


def test_judge_compares_each_cell_with_float32_graph():
    reference = (2.0, 1.5, 1.2)
    cells = _cells({
        ("float32", False): (10.0, reference),
        ("float32", True): (12.0, (2.0, 1.53, 1.2)),           # 2% off at step 1
        ("mixed_float16", False): (20.0, (2.0, 1.5, 1.32)),    # 10% off at step 2
        ("mixed_float16", True): (30.0, (2.0, float("nan"), 1.2)),
    })
    device_grid.judge(cells, tolerance=0.05)
    assert [c.correct for c in cells] == [True, True, False, False]
    np.testing.assert_allclose([c.max_loss_difference for c in cells[:3]],
                               [0.0, 0.03 / 1.5, 0.12 / 1.2], rtol=1e-12)
    assert cells[3].max_loss_difference == float("inf")


def test_verdict_is_the_fastest_correct_cell_and_autos_share_of_it():
    cells = _cells({
        ("float32", False): (10.0, ()),
        ("float32", True): (12.0, ()),
        ("mixed_float16", False): (20.0, ()),
        ("mixed_float16", True): (30.0, ()),
    })
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


def test_auto_on_a_cpu_is_float32_graph_mode():
    assert device_grid.auto_choice() == ("float32", False)
    assert device_grid.mixed_policy() == "mixed_bfloat16"
    assert device_grid.device_name() is None


def test_every_cell_of_a_tiny_wrn_trains_from_the_same_weights():
    family = device_grid.Family(
        "WRN-10-1", 8, 10,
        lambda size, classes: resnet.build_model("wrn10_1", num_classes=classes,
                                                 input_shape=(size, size, 3), seed=0),
        None)
    cells = device_grid.family_cells(family, batch_size=4, steps=2, rounds=1, check_steps=2)
    assert [(c.precision, c.compilation) for c in cells] == [
        ("float32", "graph"), ("float32", "xla"), ("mixed_bfloat16", "graph"),
        ("mixed_bfloat16", "xla")]
    assert all(c.images_per_second > 0 for c in cells)
    graph, xla, bf16_graph, bf16_xla = cells
    assert graph.max_loss_difference == 0.0 and graph.correct
    # Same weights and batches: XLA's float32 losses equal graph mode's to float32 round-off,
    # and bfloat16's are close (the first loss, before any update, to bfloat16's precision).
    np.testing.assert_allclose(xla.losses, graph.losses, rtol=1e-4)
    assert xla.correct
    for cell in (bf16_graph, bf16_xla):
        np.testing.assert_allclose(cell.losses[0], graph.losses[0], rtol=2e-2)
        assert np.all(np.isfinite(cell.losses))

"""The signal propagation plots at initialisation (Brock et al. 2021a, Figure 1) as a figure
and a CSV, one colour per norm mode."""
import csv
import io

import numpy as np

from bnreg_tf.files import write_atomically
from bnreg_tf.study.figures import _pyplot


SPP_COLUMNS = ("mode", "input", "depth", "name", "output", "branch", "squared_mean", "variance",
               "branch_variance")


SPP_INPUTS = {"gaussian": ("N(0, 1) input", "-"), "data": ("data", "--")}   # label, line style


SPP_TITLE = "Signal propagation at initialisation (Brock et al. 2021a, Figure 1)"


def _spp_lines(curves_by_mode):
    """(mode, input, rows) of `{mode: rows}` or `{mode: {input: rows}}`."""
    for mode, curves in curves_by_mode.items():
        if isinstance(curves, dict):
            for name, rows in curves.items():
                yield mode, name, rows
        else:
            yield mode, "", curves


def write_signal_propagation_csv(curves_by_mode, path):
    """`SPP_COLUMNS`: one row per norm mode, probe input and residual block."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SPP_COLUMNS)
    for mode, name, rows in _spp_lines(curves_by_mode):
        for row in rows:
            writer.writerow([mode, name] + [row[key] for key in SPP_COLUMNS[2:]])
    write_atomically(path, text.getvalue())


def figure_signal_propagation(curves_by_mode, path):
    """Signal propagation plots (Brock et al. 2021a, section 2, Figure 1): per residual block at
    initialisation, the block output's average squared channel mean and average channel
    variance and the residual branch's average channel variance, against the block's depth.

    `curves_by_mode`: `{mode: rows}` or `{mode: {input: rows}}` with `SignalPropagation.measure()`
    rows; one colour per norm mode, solid for the N(0, 1) input ("gaussian", the paper's),
    dashed for the data ("data"). Log y on every panel: the modes differ by orders of magnitude
    (an unnormalised residual branch doubles the variance at every block); an exact zero (a
    zero-initialised branch end: Fixup, SkipInit, BatchNorm's zero gamma) is a ▼ at the floor.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    panels = (("squared_mean", "block output: avg. squared channel mean"),
              ("variance", "block output: avg. channel variance"),
              ("branch_variance", "residual branch end: avg. channel variance"))
    lines = list(_spp_lines(curves_by_mode))
    modes = list(dict.fromkeys(mode for mode, _, _ in lines))
    colors, markers = plt.get_cmap("tab10"), "osD^PX*<>h"   # markers tell overlapping modes apart
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for axis, (key, title) in zip(axes, panels):
        positive = [row[key] for *_, rows in lines for row in rows
                    if np.isfinite(row[key]) and row[key] > 0]
        floor = min(positive) / 3 if positive else 1e-12
        for mode, name, rows in lines:
            index = modes.index(mode)
            label, style = SPP_INPUTS.get(name, (name, "-"))
            depth = np.array([row["depth"] for row in rows])
            values = np.array([row[key] for row in rows], float)
            axis.plot(depth, np.where(values == 0, floor, values), style,
                      marker=markers[index % len(markers)], markersize=4,
                      color=colors(index % 10), fillstyle="none" if style == "--" else "full",
                      label=f"{mode}, {label}" if label else mode)
            zeros = values == 0
            if zeros.any():
                axis.plot(depth[zeros], np.full(zeros.sum(), floor), "v", color=colors(index % 10),
                          markersize=7)
        axis.set_yscale("log")
        axis.set_ylim(bottom=floor * 0.8)
        axis.set_xlabel("residual block (depth)")
        axis.set_ylabel(title)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    figure.suptitle("Signal propagation at initialisation (Brock et al. 2021a, Figure 1): "
                    "moments over batch and positions, averaged over channels; ▼ = exactly 0, "
                    "drawn at the axis floor")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

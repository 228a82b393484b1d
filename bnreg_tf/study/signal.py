"""The study's signal propagation plots at initialisation (Brock et al. 2021a, section 2;
docs/references.md §7): measured once per norm mode, not per run, into
`<output_dir>/signal_propagation.json`."""
import json
import os
import time

import keras

from bnreg_tf.files import write_atomically
from bnreg_tf.run import inputs, layout, preemption
from bnreg_tf.nn.penalty_table import PENALTIES
from bnreg_tf.nn.signal_propagation import SignalPropagation, gaussian_probe
from bnreg_tf.run.config_checks import SKIP_GAIN_NORMS
from bnreg_tf.run.models import build_network, model_entry, native_image_size
from bnreg_tf.study.variants import VARIANTS


SIGNAL_PROPAGATION_FILE = layout.SIGNAL_PROPAGATION


SIGNAL_PROPAGATION_EXAMPLES = 64   # images per probe (BatchNorm normalises with their statistics)


def study_norm_modes(study):
    """The norm modes of the study's variants, in variant order, each once."""
    return list(dict.fromkeys(VARIANTS[v]["changes"].get("norm", study.base.norm)
                              for v in study.variants))


# The skip gains' value when the normalizer-free modes are measured: at their init (0) every
# block is the identity and the plot is flat; at 1 the alpha^2 growth of the stream shows, as
# the reference's `skipinit_gain` lets one see (Brock et al. 2021a, Figure 2; issue 25).
SKIP_GAIN = 1.0


def _signal_propagation_key(study):
    base = study.base
    return {"model": base.model, "dataset": base.dataset, "data_dir": base.data_dir,
            "image_size": base.image_size, "activation": base.activation,
            "seed": study.seeds[0], "examples": SIGNAL_PROPAGATION_EXAMPLES,
            "revision": base.model_revision, "stem": True, "skip_gain": SKIP_GAIN}


def _stored_modes(study):
    """`{mode: {input: rows}}` of `signal_propagation.json` if it was measured for this study's
    model, data, image size, activation, first seed and probe size; else (or unreadable) {}."""
    try:
        with open(os.path.join(study.output_dir, SIGNAL_PROPAGATION_FILE)) as f:
            stored = json.load(f)
        return dict(stored["modes"]) if stored["key"] == _signal_propagation_key(study) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_signal_propagation(study):
    """The stored signal propagation statistics of the study's norm modes, `{mode: {input:
    rows}}`, or None while `signal_propagation.json` lacks one of them."""
    stored, modes = _stored_modes(study), study_norm_modes(study)
    return {mode: stored[mode] for mode in modes} if all(m in stored for m in modes) else None


def _measure_signal_propagation(study, modes):
    """`{mode: {"gaussian": rows, "data": rows}}` for `modes`, built as the runs build their
    network (the study's first seed) and probed with the paper's N(0, 1) batch and with the
    same number of the study's evaluation images (`SignalPropagation`), the stem's output first
    (depth 0); the normalizer-free modes with their skip gains at `SKIP_GAIN`."""
    config = study.base.replace(seed=study.seeds[0], model_dir="", dropout=0.0,
                                **{name: 0.0 for name in PENALTIES})
    spec, splits = inputs.plan(config)
    image_size = native_image_size(config, spec)
    preprocessing = inputs.preprocessing_for(config, image_size, spec, splits)
    images = next(iter(inputs.eval_dataset(
        config, preprocessing, splits.validation or splits.test, SIGNAL_PROPAGATION_EXAMPLES,
        limit=SIGNAL_PROPAGATION_EXAMPLES)))[0].numpy()
    probes = {"gaussian": gaussian_probe(images.shape[1:], len(images)), "data": images}
    measured = {}
    for mode in modes:
        keras.utils.set_random_seed(config.seed)   # as trainer.build_run, before the network
        gain = SKIP_GAIN if mode in SKIP_GAIN_NORMS else 0.0
        network = build_network(config.replace(norm=mode, skipinit_gain=gain), spec, image_size)
        measured[mode] = {name: SignalPropagation(network, probe, stem=True).measure()
                          for name, probe in probes.items()}
        keras.backend.clear_session()
    return measured


def signal_propagation(study, log=print):
    """The study's signal propagation plots at initialisation (Brock et al. 2021a, section 2),
    once per norm mode of its variants, not per run: `{mode: {"gaussian": rows, "data": rows}}`
    (rows: `SignalPropagation.measure()`'s), or None for EfficientNet studies.

    Kept in `<output_dir>/signal_propagation.json` (written atomically) and read back from there:
    a repeated invocation or `--report_only` measures only what the file lacks (a mode of a
    variant added since; everything when the model, data, image size, activation or first
    seed changed). The report draws it (`report.figure_signal_propagation`).
    """
    if model_entry(study.base.model).family != "resnet":
        log(f"bnreg-study: no signal propagation plot for {study.base.model} (measured for the "
            "ResNet/WRN families only)")
        return None
    kept = _stored_modes(study)
    missing = [mode for mode in study_norm_modes(study) if mode not in kept]
    if missing:
        start = time.time()
        kept.update(_measure_signal_propagation(study, missing))
        path = os.path.join(study.output_dir, SIGNAL_PROPAGATION_FILE)
        os.makedirs(study.output_dir, exist_ok=True)
        write_atomically(path, json.dumps(
            {"key": _signal_propagation_key(study), "modes": kept}, indent=1) + "\n")
        log(f"bnreg-study: signal propagation at initialisation of {', '.join(missing)} in "
            f"{path} ({time.time() - start:.1f} s)")
    return {mode: kept[mode] for mode in study_norm_modes(study)}


def _try_signal_propagation(study, log):
    """`signal_propagation`, whose failure is logged in one line: the runs and the report come
    first (the report then says the plots are missing)."""
    try:
        signal_propagation(study, log)
    except preemption.Preempted:
        raise
    except Exception as error:  # noqa: BLE001 - a diagnostic must not stop the study
        log(f"bnreg-study: signal propagation not measured: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}")

"""What `bnreg-train` prints: a start-up summary, progress inside each epoch, a final line.

On a terminal Keras' progress bar (with ETA) shows each epoch; elsewhere (a log file, a batch
job) `ProgressLines` prints one line every 10% of an epoch and at least every 30 s:

    epoch 2/15 step 24/40 (60%): loss 1.2345, 412 images/s, ETA epoch 0:00:04, run 0:01:10

and one line per finished epoch with its training, validation, learning rate and speed.
"""
import datetime
import os
import sys
import time

import keras

from bnreg_tf.nn.penalty_table import PENALTIES as PENALTY_TABLE

# What the summary's "penalties" line lists when set: the table's penalties and the others.
PENALTIES = (*PENALTY_TABLE, "dropout", "weight_decay", "label_smoothing")


def choose(verbose, config, steps_per_epoch, stream=None):
    """`(keras_verbose, callbacks)` for `train(verbose=...)`.

    None: Keras' bar on a terminal, `ProgressLines` otherwise, nothing when BNREG_QUIET is set;
    0: nothing; 1 or 2: that Keras mode.
    """
    stream = stream or sys.stdout
    if verbose == 0 or (verbose is None and os.environ.get("BNREG_QUIET")):
        return 0, []
    if verbose is not None:
        return verbose, []
    if stream.isatty():
        return 1, []
    return 0, [ProgressLines(config.epochs, steps_per_epoch, config.batch_size, stream)]


def _clock(seconds):
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


def _number(value):
    value = float(value)
    return f"{value:.4g}"


class ProgressLines(keras.callbacks.Callback):
    """Progress as plain lines (see the module docstring); `every_seconds` at the latest."""

    def __init__(self, epochs, steps_per_epoch, global_batch_size, stream=None,
                 fraction=0.1, every_seconds=30.0):
        super().__init__()
        self.epochs, self.steps_per_epoch = int(epochs), int(steps_per_epoch)
        self.batch, self.stream = int(global_batch_size), stream or sys.stdout
        self.fraction, self.every_seconds = fraction, every_seconds

    def _print(self, text):
        print(text, file=self.stream, flush=True)

    def on_train_begin(self, logs=None):
        self.total_steps = self.epochs * self.steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.first = int(self.model.optimizer.iterations.numpy())   # global step before it
        self.epoch_start = self.last_time = time.perf_counter()
        self.last_step = self.first
        self.mark = self.first % self.steps_per_epoch   # steps into the epoch already done
        self.seconds_per_step = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.first + batch + 1
        into = (step - 1) % self.steps_per_epoch + 1
        now = time.perf_counter()
        window = step - self.last_step
        if window and batch > 0:  # the first step of a fit includes tracing
            recent = (now - self.last_time) / window
            self.seconds_per_step = recent if self.seconds_per_step is None \
                else 0.5 * (self.seconds_per_step + recent)
        crossed = int(into / (self.fraction * self.steps_per_epoch)) > \
            int(self.mark / (self.fraction * self.steps_per_epoch))
        if into < self.steps_per_epoch and (crossed or now - self.last_time >= self.every_seconds):
            speed = window * self.batch / max(now - self.last_time, 1e-9)
            line = (f"epoch {(step - 1) // self.steps_per_epoch + 1}/{self.epochs} step "
                    f"{into}/{self.steps_per_epoch} ({100 * into // self.steps_per_epoch}%): "
                    f"loss {_number((logs or {}).get('loss', float('nan')))}, "
                    f"{speed:.0f} images/s")
            if self.seconds_per_step is not None:
                line += (f", ETA epoch {_clock((self.steps_per_epoch - into) * self.seconds_per_step)}"
                         f", run {_clock((self.total_steps - step) * self.seconds_per_step)}")
            self._print(line)
            self.last_time, self.last_step = now, step
        self.mark = into

    def on_epoch_end(self, epoch, logs=None):
        self._print(epoch_line(epoch + 1, self.epochs, logs or {},
                               time.perf_counter() - self.epoch_start))


def epoch_line(epoch, epochs, logs, seconds):
    """`epoch 2/15 done in 0:00:12: train loss .., accuracy ..; validation ...; lr ..; speed`."""
    train = [f"{key} {_number(logs[key])}" for key in ("loss", "accuracy") if key in logs]
    text = f"epoch {epoch}/{epochs} done in {_clock(seconds)}: train " + ", ".join(train)
    validation = [f"{key} {_number(logs['val_' + key])}" for key in ("accuracy", "cross_entropy")
                  if "val_" + key in logs]
    if validation:
        text += "; validation " + ", ".join(validation)
    if "learning_rate" in logs:
        text += f"; lr {_number(logs['learning_rate'])}"
    if "images_per_second" in logs:
        text += f"; {float(logs['images_per_second']):.0f} images/s"
    return text


def summary(run, config_path):
    """A few lines saying what this run is; the full config is in `config_path`."""
    import keras as k

    from bnreg_tf.data import catalog

    config = run.config
    spec = catalog.spec(config.dataset, config.data_dir, config.download)
    splits = run.splits
    size = run.preprocessing.image_size
    penalties = [f"{name}={getattr(config, name):g}" for name in PENALTIES
                 if getattr(config, name)]
    data = (f"{config.dataset} ({size}x{size}x{spec.channels}, {spec.num_classes} classes): "
            f"train {splits.train_examples} images ({splits.train})")
    data += f", validation {splits.validation_examples} ({splits.validation})" \
        if splits.validation else ", no holdout (--noholdout)"
    data += f", test {splits.test_examples} ({splits.test})"
    norm = "mean " + "/".join(f"{m:.1f}" for m in run.preprocessing.mean) + ", std " + \
        "/".join(f"{s:.1f}" for s in run.preprocessing.std)
    lines = [
        f"bnreg: {config.model}, norm {config.norm} (revision {config.model_revision}), on "
        f"{data}",
        f"  input: augment {run.preprocessing.augment}, normalisation {norm}",
        *data_notes(config, spec, size, run.preprocessing.augment),
        f"  penalties: {', '.join(penalties) or 'none'}",
        f"  training: batch {config.batch_size}, {config.epochs} epochs x {run.steps_per_epoch} "
        f"steps, {config.optimizer} lr {config.learning_rate:g} ({config.schedule}), seed "
        f"{config.seed}" + (f", AGC clipping {config.agc:g}" if config.agc else ""),
        f"  execution: strategy {config.strategy} ({run.strategy.num_replicas_in_sync} "
        f"replica{'s' if run.strategy.num_replicas_in_sync != 1 else ''}), precision "
        f"{k.mixed_precision.global_policy().name}",
    ]
    if run.init_from:
        lines.append(f"  weights from: {run.init_from} (--init_from)")
    lines.append(f"  config: {config_path}")
    return "\n".join(lines)


def data_notes(config, spec, size, augment):
    """The summary's lines on an image folder: why this size and augmentation, and what the
    one pass over its files left out (`bnreg_tf.data.folder_scan`)."""
    if spec.source != "folder":
        return []
    given = [f"--{name}" for name, value in (("image_size", config.image_size),
                                              ("augment", config.augment != "auto")) if value]
    why = spec.recipe_note if not given else \
        f"{size} px, augment {augment}, as {' and '.join(given)} asked ({spec.recipe_note})"
    lines = [f"  images: {why}"]
    if spec.skipped:
        shown = "; ".join(f"{path} ({reason})" for path, reason in spec.skipped[:3])
        more = f"; and {len(spec.skipped) - 3} more" if len(spec.skipped) > 3 else ""
        lines.append(f"  skipped {len(spec.skipped)} bad image file"
                     f"{'s' if len(spec.skipped) != 1 else ''} (--skip_bad_images): {shown}{more}")
    if spec.dropped_classes:
        lines.append(f"  dropped {len(spec.dropped_classes)} empty class folder"
                     f"{'s' if len(spec.dropped_classes) != 1 else ''} (--drop_empty_classes): "
                     f"{', '.join(spec.dropped_classes)}")
    if spec.ignored_files:
        lines.append(f"  ignored {spec.ignored_files} files of the class folders that are not "
                     ".jpg/.jpeg/.png (or are hidden)")
    return lines


def final_line(results, results_path):
    """`bnreg: validation accuracy .. (split), test accuracy .. (split) after N steps; ...`."""
    parts = []
    for role in ("validation", "test"):
        if results.get(f"{role}_accuracy") is not None:
            parts.append(f"{role} accuracy {results[f'{role}_accuracy']:.4f}, cross-entropy "
                         f"{results[f'{role}_cross_entropy']:.4f} ({results[f'{role}_split']})")
    return (f"bnreg: {'; '.join(parts)} after {results['steps']} steps; results in "
            f"{results_path}")

"""Learning-rate schedules of the paper's recipes (docs/references.md §3 and §5).

- `cosine` (WRN): `keras.optimizers.schedules.CosineDecay` from the peak to 0 over the run;
  with `--warmup_epochs` (revision 2) first a linear warm-up from 0, then the cosine over the
  remaining steps: the NFNets reference's `WarmupCosineDecay` (`nfnets/optim.py`);
- `goyal` (ResNet-50, Goyal et al.): linear warm-up from 0, then x`decay_rate` at each boundary;
- `efficientnet`: `efficientnet.optim.WarmupExponentialDecay`, whose epochs are counted in
  examples as the reference counts them: `train examples / batch_size` steps, a fraction,
  unless `--steps_per_epoch` fixes the epoch length;
- `constant`.
The peak is `learning_rate * batch_size / lr_reference_batch` when `lr_reference_batch` is set.
"""
import keras
import tensorflow as tf

from efficientnet.optim import WarmupExponentialDecay


@keras.saving.register_keras_serializable(package="bnreg")
class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
    """Goyal et al.: `peak * step / warmup_steps` during warm-up, then `peak * rate^k` after the
    k-th boundary (boundaries in steps)."""

    def __init__(self, peak, warmup_steps, boundaries, rate):
        self.peak, self.warmup_steps = float(peak), int(warmup_steps)
        self.boundaries, self.rate = [int(b) for b in boundaries], float(rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        passed = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries]) \
            if self.boundaries else 0.0
        value = self.peak * self.rate ** passed
        if self.warmup_steps > 0:
            value = tf.where(step < self.warmup_steps, self.peak * step / self.warmup_steps, value)
        return value

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "boundaries": self.boundaries, "rate": self.rate}


def peak_learning_rate(config):
    if config.lr_reference_batch:
        return config.learning_rate * config.batch_size / config.lr_reference_batch
    return config.learning_rate


def make_schedule(config, steps_per_epoch, train_examples=None):
    """The schedule of `config` for epochs of `steps_per_epoch` steps over `train_examples`
    training images (needed by the efficientnet schedule when `--steps_per_epoch=0`)."""
    peak = peak_learning_rate(config)
    total = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        return peak
    if config.schedule == "cosine":
        warmup = round(config.warmup_epochs * steps_per_epoch) if config.model_revision >= 2 \
            else 0   # revision 1 had no warm-up here
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                0.0, total - warmup, warmup_target=peak, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(peak, total)
    if config.schedule == "goyal":
        return WarmupPiecewise(peak, round(config.warmup_epochs * steps_per_epoch),
                               [round(e * steps_per_epoch) for e in config.decay_boundaries],
                               config.decay_rate)
    base = config.learning_rate
    batch = config.batch_size if config.lr_reference_batch else 256
    if config.lr_reference_batch:
        base = config.learning_rate * 256 / config.lr_reference_batch
    return WarmupExponentialDecay(base, batch, examples_steps_per_epoch(
                                      config, steps_per_epoch, train_examples),
                                  config.warmup_epochs, config.decay_boundaries[0],
                                  config.decay_rate)


def examples_steps_per_epoch(config, steps_per_epoch, train_examples):
    """The reference's fractional `num_train_images / batch_size` when an epoch is one pass over
    the training split (`--steps_per_epoch=0`); otherwise the given whole number of steps."""
    if config.steps_per_epoch:
        return steps_per_epoch
    if not train_examples:
        raise ValueError("the efficientnet schedule needs the training split's size")
    return train_examples / config.batch_size

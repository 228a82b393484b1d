"""The EfficientNet TPU reference's optimizer, weight average and schedule (docs/references.md §5).

Keras 3's `RMSprop` differs from the reference's TF1 `RMSPropOptimizer` (its rms slot starts at
zero, so the first steps are huge) and its `use_ema` averages trainable weights only, from step 0,
with a fixed decay. `ReferenceRMSprop` implements TF1's update with the rms slot starting at one,
and keeps an exponential moving average of any variables (trainable weights AND BatchNorm
moving statistics) with the reference's decay `min(decay, (1 + t) / (10 + t))`.
"""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)

import contextlib

import keras
import numpy as np
import tensorflow as tf


def average_sources(model):
    """What the reference averages: every trainable variable plus BN moving mean/variance."""
    sources = list(model.trainable_variables)
    seen = {id(v) for v in sources}
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in (layer.moving_mean, layer.moving_variance):
                if id(variable) not in seen:
                    seen.add(id(variable))
                    sources.append(variable)
    return sources


@keras.saving.register_keras_serializable(package="bnreg")
class ReferenceRMSprop(keras.optimizers.Optimizer):
    """TF1 RMSProp with momentum, plus the reference's weight average.

    Per step t (1-based), for gradient g:
        ms  <- rho * ms + (1 - rho) * g^2           (ms starts at 1)
        mom <- momentum * mom + lr * g / sqrt(ms + epsilon)
        var <- var - mom
    and, when `average_decay` is set and `track_average(variables)` was called before the first
    step, for each tracked variable v with shadow a (a starts at v's value when tracking began):
        a <- a - (1 - d_t) * (a - v),   d_t = min(average_decay, (1 + t) / (10 + t)).
    The shadows are optimizer variables, so checkpoints carry them. `averaged_weights()` swaps
    them into the model for evaluation or export.
    """

    def __init__(self, learning_rate=0.016, rho=0.9, momentum=0.9, epsilon=1e-3,
                 average_decay=None, name="reference_rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        if average_decay is not None and not 0.0 < float(average_decay) < 1.0:
            raise ValueError(f"average_decay must be in (0, 1), got {average_decay!r}")
        self.average_decay = None if average_decay is None else float(average_decay)
        self._average_sources, self._average_starts, self._averages = [], [], []
        self._loaded_averages = []   # a saved average, until `track_average` names its sources

    def track_average(self, variables):
        """Sets the variables to average; call once, inside the strategy scope, before training.

        After `keras.saving.load_model` of a model compiled with an averaging ReferenceRMSprop,
        the optimizer is already built; call it then with the same variables (e.g.
        `average_sources(model)`) to get the saved averages back and go on averaging.
        """
        if self.average_decay is None:
            raise ValueError("track_average needs average_decay to be set")
        if self.built and not self._loaded_averages:
            raise ValueError("track_average must be called before the optimizer is built")
        self._average_sources = list(variables)
        if self._loaded_averages:
            self._restore_loaded_averages()
            return
        with tf.init_scope():
            self._average_starts = [keras.ops.convert_to_numpy(v) for v in self._average_sources]

    def _restore_loaded_averages(self):
        saved = self._loaded_averages
        shapes = [tuple(v.shape) for v in self._average_sources]
        if shapes != [tuple(np.shape(a)) for a in saved]:
            raise ValueError(f"track_average: the saved optimizer averaged {len(saved)} variables "
                             f"of other shapes than the {len(shapes)} given")
        for source, value in zip(self._average_sources, saved):
            self._averages.append(self.add_variable_from_reference(
                source, name="average", initializer=lambda shape, dtype, v=value: tf.cast(v, dtype)))
        self._loaded_averages = []

    def _stored_order(self):
        """The variables as a `.keras` file stores them: Keras' own first (the step counter), then
        the averaged sources (Keras tracks them as this optimizer's), `ms`, `mom`, the averages:
        the order of an optimizer that tracked its average before it was built."""
        parts = [list(self._average_sources), list(self._ms), list(self._mom), list(self._averages)]
        seen = {id(v) for part in parts for v in part}
        return [v for v in self.variables if id(v) not in seen] + [v for p in parts for v in p]

    def save_own_variables(self, store):
        for i, variable in enumerate(self._stored_order()):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        """Keras' load (a `.keras` file). When Keras built this optimizer with the trainable
        variables alone (as `load_model` does) while the file holds a weight average, the
        average is kept aside until `track_average` says which variables it averages (it also
        covers BN statistics); the copies of the averaged variables are skipped."""
        order = self._stored_order()
        count = len(store.keys())
        extra = count - len(order)
        if not (self.average_decay and not self._averages and extra > 0 and extra % 2 == 0):
            if extra:
                super().load_own_variables(store)   # Keras' warning; nothing is loaded
                return
            for i, variable in enumerate(order):
                variable.assign(store[str(i)])
            return
        sources = extra // 2
        keras_own = len(order) - len(self._ms) - len(self._mom)
        positions = list(range(keras_own)) + list(range(keras_own + sources, count - sources))
        for variable, i in zip(order, positions):
            variable.assign(store[str(i)])
        self._loaded_averages = [np.asarray(store[str(i)]) for i in range(count - sources, count)]

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._ms = self.add_optimizer_variables(var_list, "ms", initializer="ones")
        self._mom = self.add_optimizer_variables(var_list, "mom")
        # Keras builds lazily inside the first train step, so the starting values were read
        # eagerly by track_average (a read here would see that step's BN update).
        for source, start in zip(self._average_sources, self._average_starts):
            self._averages.append(self.add_variable_from_reference(
                source, name="average", initializer=lambda shape, dtype, v=start: tf.cast(v, dtype)))

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        ms = self._ms[self._get_variable_index(variable)]
        mom = self._mom[self._get_variable_index(variable)]
        self.assign(ms, self.rho * ms + (1.0 - self.rho) * tf.square(gradient))
        self.assign(mom, self.momentum * mom + lr * gradient * tf.math.rsqrt(ms + self.epsilon))
        self.assign_sub(variable, mom)

    def average_decay_at(self, step):
        """d_t for the update made at 1-based step t."""
        step = tf.cast(step, tf.float32)
        return tf.minimum(self.average_decay, (1.0 + step) / (10.0 + step))

    def _backend_apply_gradients(self, grads, trainable_variables):
        super()._backend_apply_gradients(grads, trainable_variables)
        if not self._averages:
            return
        decay = self.average_decay_at(self._iterations + 1)  # iterations grows after this
        sources = [s.value if isinstance(s, keras.Variable) else s for s in self._average_sources]
        shadows = [a.value for a in self._averages]

        def update(distribution):
            for shadow, source in zip(shadows, sources):
                distribution.extended.update(
                    shadow, lambda a, v: a.assign_sub((1.0 - tf.cast(decay, a.dtype)) * (a - v)),
                    args=(source,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(update, tf.distribute.get_strategy())

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block the tracked variables hold their averages; restored on exit."""
        if not self._averages:
            raise ValueError("no averaged weights: set average_decay and call track_average")
        saved = [tf.identity(s.value if isinstance(s, keras.Variable) else s)
                 for s in self._average_sources]
        for source, shadow in zip(self._average_sources, self._averages):
            source.assign(shadow)
        try:
            yield
        finally:
            for source, value in zip(self._average_sources, saved):
                source.assign(value)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "average_decay": self.average_decay}


@keras.saving.register_keras_serializable(package="bnreg")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Reference LR (utils.build_learning_rate): linear warm-up from 0, then staircase decay.

    lr(step) = base * step / warmup_steps                        for step < warmup_steps
             = base * decay_rate ** floor(step / decay_steps)     afterwards
    with base = `base_rate * batch_size / 256` (0.016 in the reference). `steps_per_epoch` is
    the reference's `num_train_images / batch_size`, a float (1,281,167 / 2048 = 625.57), and
    `decay_steps = steps_per_epoch * decay_epochs` is left unrounded (1501.37 at 2.4 epochs);
    `warmup_steps = int(warmup_epochs * steps_per_epoch)`, the integer part, as the reference
    computes it. Decay counts from step 0, so the first post-warm-up value is already decayed
    by the number of decay periods inside warm-up. Evaluated in float32 like TF1's
    `exponential_decay`.
    """

    def __init__(self, base_rate, batch_size, steps_per_epoch, warmup_epochs=5.0,
                 decay_epochs=2.4, decay_rate=0.97):
        self.base_rate, self.batch_size = float(base_rate), int(batch_size)
        self.steps_per_epoch = float(steps_per_epoch)
        self.warmup_epochs, self.decay_epochs = float(warmup_epochs), float(decay_epochs)
        self.decay_rate = float(decay_rate)
        if not self.steps_per_epoch > 0 or self.batch_size < 1 or not self.decay_epochs > 0:
            raise ValueError("steps_per_epoch and decay_epochs must be > 0, batch_size >= 1")

    @property
    def peak(self):
        return self.base_rate * self.batch_size / 256.0

    @property
    def decay_steps(self):
        return self.steps_per_epoch * self.decay_epochs  # reference: unrounded

    @property
    def warmup_steps(self):
        return int(self.warmup_epochs * self.steps_per_epoch)  # reference: int(), not round()

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decayed = self.peak * self.decay_rate ** tf.floor(step / self.decay_steps)
        if self.warmup_steps <= 0:
            return decayed
        return tf.where(step < self.warmup_steps, self.peak * step / self.warmup_steps, decayed)

    def get_config(self):
        return {"base_rate": self.base_rate, "batch_size": self.batch_size,
                "steps_per_epoch": self.steps_per_epoch, "warmup_epochs": self.warmup_epochs,
                "decay_epochs": self.decay_epochs, "decay_rate": self.decay_rate}


def weight_decay_loss(variables, weight_decay):
    """`wd * sum 1/2 ||v||^2` (the reference's `wd * tf.nn.l2_loss` sum), in float32."""
    if not variables or weight_decay == 0:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])


def non_batchnorm_variables(model):
    """The reference's weight-decay set: every trainable variable not owned by a BN layer."""
    excluded = set()
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            excluded.update(id(v) for v in layer.trainable_variables)
    return [v for v in model.trainable_variables if id(v) not in excluded]


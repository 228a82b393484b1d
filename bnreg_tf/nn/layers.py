"""Keras layers for the paper's mechanisms: penalty layers, Swish, Fixup scalars, stochastic depth.

Penalty layers are identity maps that call `add_loss(coefficient * penalty)` in training only
(so `model.evaluate` and serving never see them) and log the raw penalty as a metric named
after the layer, so History, CSVLogger, TensorBoard and the progress lines get it, on every
Keras backend (`PenaltyLayer.log_value`; on JAX through `bnreg_tf.nn.penalized.PenalizedModel`).
"""
import logging
import threading

import keras
from keras import ops
from keras.src.backend import get_stateless_scope, in_stateless_scope   # not public in Keras 3.15

from bnreg_tf.nn import penalties
from bnreg_tf.nn.penalties import check_coefficient

_register = keras.saving.register_keras_serializable(package="bnreg")


class PenaltyMean(keras.metrics.Metric):
    """Running mean of a penalty's raw value; NaN when nothing was measured.

    Penalties are only computed in training, so `model.evaluate` reports NaN ("not measured")
    rather than a misleading 0.
    """

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, value):
        self.total.assign_add(ops.cast(value, self.dtype))
        self.count.assign_add(ops.cast(1, self.dtype))

    def result(self):
        return ops.where(self.count > 0, self.total / ops.maximum(self.count, 1.0), float("nan"))


def _per_thread(layer, key, **factories):
    """`layer`'s `threading.local` named `key`; each thread's gets `factories`' values first."""
    local = layer.__dict__.get(key) or layer.__dict__.setdefault(key, threading.local())
    for name, factory in factories.items():
        if not hasattr(local, name):
            setattr(local, name, factory())
    return local


def _warn_unlogged(layer):
    if not getattr(layer, "_warned_unlogged", False):
        layer._warned_unlogged = True
        logging.warning(
            "%s %r: its values in a stateless JAX call were not logged (only "
            "PenalizedModel.compute_loss logs them: build the model with bnreg_tf.regularize or "
            "bnreg_tf.PenalizedModel(inputs, outputs)). The penalty is in the loss either way.",
            type(layer).__name__, layer.name)


class PenaltyLayer(keras.layers.Layer):
    """Base of the penalty layers: identity; adds `coefficient * penalty(inputs)` in training.

    Keras keeps `add_loss` terms in a plain list on the layer, and MirroredStrategy runs its
    replicas in threads that share the layer. When a collective (synchronized BatchNorm) lets
    the threads interleave, one replica reads or clears the other's terms (seen on Keras 3.15:
    a reported loss of 15.81 for a true 11.09, or a collective shape mismatch). Here the list is
    per thread, i.e. per replica, so each replica sees exactly its own penalty.
    """

    def __init__(self, coefficient, log_metric=True, **kwargs):
        super().__init__(**kwargs)
        self.coefficient = check_coefficient(coefficient, f"{type(self).__name__}.coefficient")
        self.log_metric = bool(log_metric)
        self.value_metric = PenaltyMean(name=self.name) if self.log_metric else None
        self.supports_masking = True

    @property
    def _losses(self):
        return _per_thread(self, "_replica_local_losses", items=list).items

    @_losses.setter
    def _losses(self, value):
        self._losses[:] = list(value)

    def penalty(self, inputs):
        raise NotImplementedError

    def call(self, inputs, training=None):
        if training:
            value = self.penalty(inputs)
            self.add_loss(self.coefficient * value)
            if self.value_metric is not None:
                self.log_value(value)
        return inputs

    def log_value(self, value):
        """Adds `value` to the logged mean, now or, in JAX's stateless training step, when the
        model's `compute_loss` calls `log_pending` (`bnreg_tf.nn.penalized`, issue 24).

        JAX's `fit` runs the forward pass in a `StatelessScope` that maps the model's weights but
        not its metrics' variables, so a metric cannot be updated inside `call` there
        (keras-team/keras#19402, #21639). The value is kept, tagged with that scope, until the
        same step's `compute_loss`, whose scope holds the metrics' variables and returns their
        new values. Values of an earlier scope that nobody logged are dropped (with a warning):
        a plain `keras.Model` does not call `log_pending`, so its penalty columns stay NaN ("not
        measured") on JAX, while the penalty itself is in the loss on every backend.
        """
        if keras.backend.backend() != "jax" or not in_stateless_scope():
            self.value_metric.update_state(value)
            return
        scope = get_stateless_scope()
        pending = self._pending()
        if pending.items and pending.scope is not scope:
            _warn_unlogged(self)
            pending.items.clear()
        pending.scope = scope
        pending.items.append(value)

    def log_pending(self):
        """Adds the values kept by `log_value` to the logged mean (call where the metrics'
        variables are in scope: `PenalizedModel.compute_loss`)."""
        pending = self._pending()
        if in_stateless_scope():   # else the scope that made them is gone
            for value in pending.items:
                self.value_metric.update_state(value)
        pending.items.clear()
        pending.scope = None

    def _pending(self):
        return _per_thread(self, "_pending_values", items=list, scope=lambda: None)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(coefficient=self.coefficient, log_metric=self.log_metric)
        return config


@_register
class EmbeddingL2(PenaltyLayer):
    """Embedding L2 (paper section 3): `coefficient * E ||Emb(x)||^2 / H` on the pooled features."""

    def penalty(self, inputs):
        return penalties.embedding_l2(inputs)


@_register
class FunctionalL2(PenaltyLayer):
    """Functional L2 (paper section 3): `coefficient * E ||NN(x)||^2 / K` on the logits."""

    def penalty(self, inputs):
        return penalties.functional_l2(inputs)


@_register
class StandardizationKL(PenaltyLayer):
    """KL standardization loss (Collins et al. 2019) on one layer, where BatchNorm would sit."""

    def __init__(self, coefficient, epsilon=1e-5, **kwargs):
        super().__init__(coefficient, **kwargs)
        self.epsilon = float(epsilon)

    def penalty(self, inputs):
        return penalties.standardization_kl(inputs, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


class _ScalarLayer(keras.layers.Layer):
    """A layer with one trainable scalar weight named `value`, starting at `initial_value`
    (the class default when None)."""

    default_value = 0.0

    def __init__(self, initial_value=None, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(self.default_value if initial_value is None else initial_value)

    def build(self, input_shape):
        self.value = self.add_weight(
            name="value", shape=(), initializer=keras.initializers.Constant(self.initial_value)
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value}


@_register
class ScalarBias(_ScalarLayer):
    """Fixup's scalar bias (Zhang et al. 2019, section 3): `x + b`, `b` a scalar initialised to 0."""

    default_value = 0.0

    def call(self, inputs):
        return inputs + ops.cast(self.value, inputs.dtype)


@_register
class ScalarScale(_ScalarLayer):
    """A trainable scalar multiplier `x * s`.

    Fixup's multiplier (Zhang et al. 2019, section 3) starts at 1 (the default); SkipInit's gain
    at the end of a residual branch (De & Smith 2020, "SkipInit") is this layer with
    `initial_value=0`.
    """

    default_value = 1.0

    def call(self, inputs):
        return inputs * ops.cast(self.value, inputs.dtype)


@_register
class Swish(keras.layers.Layer):
    """`x * sigmoid(rho * x)` with a scalar `rho` (paper section 4.1 uses rho initialised to 0).

    With rho = 0 this is `x / 2`: the linear case of the paper's Appendix A.
    """

    def __init__(self, rho_init=0.0, trainable_rho=True, **kwargs):
        super().__init__(**kwargs)
        self.rho_init = float(rho_init)
        self.trainable_rho = bool(trainable_rho)

    def build(self, input_shape):
        self.rho = self.add_weight(
            name="rho",
            shape=(),
            initializer=keras.initializers.Constant(self.rho_init),
            trainable=self.trainable_rho,
        )

    def call(self, inputs):
        return inputs * ops.sigmoid(ops.cast(self.rho, inputs.dtype) * inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rho_init=self.rho_init, trainable_rho=self.trainable_rho)
        return config


def stochastic_depth(inputs, drop_rate, seed, scale_by_keep=True):
    """Per-sample drop of a residual branch (Huang et al. 2016; EfficientNet's drop_connect).

    Each example's branch is kept with probability `1 - drop_rate` (mask [B, 1, ..., 1]
    `floor(keep + uniform)`) and, with `scale_by_keep` (EfficientNet's `drop_connect`), divided
    by that probability, so the expectation is unchanged; without it (the NF-ResNet and SkipInit
    reference's `StochDepth`, `nfnets/base.py`) it is only masked. `seed` is anything
    `keras.random` takes (an int or a `SeedGenerator`).
    """
    keep = 1.0 - drop_rate
    shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    mask = ops.floor(keep + keras.random.uniform(shape, seed=seed, dtype="float32"))
    return inputs * ops.cast(mask / keep if scale_by_keep else mask, inputs.dtype)


@_register
class StochasticDepth(keras.layers.Layer):
    """Layer form of `stochastic_depth`: active in training, identity at inference.

    Replaces tensorflow-addons' StochasticDepth, which dropped the whole batch at once.
    """

    def __init__(self, drop_rate, seed=None, scale_by_keep=True, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"StochasticDepth.drop_rate must be in [0, 1), got {drop_rate!r}")
        self.drop_rate = float(drop_rate)
        self.seed = seed
        self.scale_by_keep = bool(scale_by_keep)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.drop_rate == 0.0:
            return inputs
        return stochastic_depth(inputs, self.drop_rate, self.seed_generator, self.scale_by_keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "drop_rate": self.drop_rate, "seed": self.seed,
                "scale_by_keep": self.scale_by_keep}

"""The training step of every bnreg recipe: cross-entropy + penalties + weight decay, as a Keras Model.

`Classifier` wraps a `{"logits", "embedding"}` network so that `model.fit` trains it with
- cross-entropy on the logits, with label smoothing;
- the penalty layers' `add_loss` terms (EL2, FL2, KL standardization), training only;
- weight decay `wd * sum 1/2 ||v||^2` over the recipe's variables (docs/references.md §3.3, §5.10);
- the Fixup reference's reduced learning rate for scalar biases/multipliers, as a gradient
  multiplier (exactly a per-group learning rate for SGD, whose update is linear in the gradient);
- optionally adaptive gradient clipping (`agc` > 0; NFNets, `bnreg_tf.nn.agc`) of every variable
  but the classifier's kernel (revision 1: but the classifier's kernel and bias);
and reports loss, cross_entropy, accuracy and each penalty's raw value. The summed loss is
divided by the number of replicas before differentiation, as Keras' own step does, so gradients
all-reduced by the optimizer are those of the global batch. AGC is not linear in the gradient,
so with it the step all-reduces the gradients itself, clips the global batch's gradient and
hands the optimizer gradients it must not all-reduce again (`take_over_all_reduce`).
"""
import keras
import tensorflow as tf

from bnreg_tf.nn import agc as agc_lib
from bnreg_tf.nn import revisions
from bnreg_tf.nn import layers as bl
from bnreg_tf.nn import graph as mg
from bnreg_tf.nn.param_groups import param_groups


def _already_reduced(grads_and_vars):
    return list(grads_and_vars)


def _targets(optimizer):
    """`optimizer` and, for a LossScaleOptimizer, the inner optimizer that applies."""
    return [optimizer, getattr(optimizer, "inner_optimizer", optimizer)]


def take_over_all_reduce(optimizer):
    """Makes `optimizer` apply the gradients it is given without all-reducing them first.

    Keras 3's TensorFlow optimizer sums the gradients over the replicas inside `apply`
    (`TFOptimizer._backend_update_step` -> `_all_reduce_sum_gradients`), after any clipping it
    does itself, so every clipping there sees one replica's share of the batch. AGC must see
    the global batch's gradient: the training step all-reduces, clips, and the optimizer
    (the inner one of a LossScaleOptimizer) takes the result as it is. Checked on Keras 3.15.1;
    `tests/test_normalizer_free.py` compares a MirroredStrategy step with the one-device one.
    """
    for target in _targets(optimizer):
        if not hasattr(target, "_all_reduce_sum_gradients"):
            raise TypeError(f"AGC needs Keras' TensorFlow optimizer (with an all-reduce step to "
                            f"take over); got {type(target).__name__}")
        target._all_reduce_sum_gradients = _already_reduced


def check_taken_over(optimizer):
    """Raises unless `take_over_all_reduce(optimizer)` is still in force (a recompiled or
    replaced optimizer would all-reduce the clipped gradients a second time)."""
    if any(getattr(t, "_all_reduce_sum_gradients", None) is not _already_reduced
           for t in _targets(optimizer)):
        raise RuntimeError("AGC: the optimizer all-reduces gradients itself again; compile the "
                           "model through bnreg_tf.run.training.Classifier.compile")


def classifier_variables(network):
    """The trainable variables of the layer making `network`'s logits (the final Dense)."""
    flat = mg.inline(network)
    node, _ = mg.find_classifier(flat, mg.logits_tensor(flat))
    return list(node.operation.trainable_variables)


def agc_exempt(network, revision=revisions.LATEST):
    """The variables AGC leaves alone: the classifier's kernel, as the NFNets reference
    (`nfnets/experiment_nfnets.py`: its "linear" module's `w`; the bias is clipped with the
    gains and biases); revision 1: the classifier's kernel and bias."""
    variables = classifier_variables(network)
    return variables if revision < 2 else [v for v in variables if v.path.endswith("kernel")]


def decay_variables(network, exclude="none", revision=revisions.LATEST):
    """The variables weight decay acts on: all trainable ones but the excluded groups of
    `param_groups` (`batchnorm`; `batchnorm_and_bias`: and biases, and from revision 2 every
    variable whose name contains "gain", as `nfnets/experiment.py` exempts them)."""
    groups = param_groups(network)
    excluded = {"none": (), "batchnorm": ("batchnorm",),
                "batchnorm_and_bias": ("batchnorm", "biases")}[exclude]
    gains = exclude == "batchnorm_and_bias" and revision >= 2
    return [v for name, members in groups.items() if name not in excluded for v in members
            if not (gains and "gain" in v.path)]


class Classifier(keras.Model):
    """`network` plus the recipe's loss; `call` returns the network's output dict."""

    def __init__(self, network, num_classes, label_smoothing=0.0, weight_decay=0.0,
                 weight_decay_exclude="none", fixup_scalar_lr=1.0, agc=0.0,
                 revision=revisions.LATEST, **kwargs):
        super().__init__(name=kwargs.pop("name", "trainer"), **kwargs)
        self.network = network
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.weight_decay = float(weight_decay)
        self.fixup_scalar_lr = float(fixup_scalar_lr)
        self.agc = bl.check_coefficient(agc, "agc")
        revision = revisions.check(revision)
        self._agc_exempt = {id(v) for v in agc_exempt(network, revision)} if self.agc else set()
        self.decay_variables = decay_variables(network, weight_decay_exclude, revision)
        self._scalar_ids = {id(v) for v in param_groups(network)["fixup_scalars"]}
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.penalty_metrics = [
            layer.value_metric for layer in network._flatten_layers(include_self=False)
            if isinstance(layer, bl.PenaltyLayer) and layer.value_metric is not None]

    @property
    def metrics(self):
        return [self.loss_tracker, self.cross_entropy_tracker, self.accuracy, *self.penalty_metrics]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skips Keras' symbolic build once the model and optimizer are built.

        Under a strategy, Keras 3.15 takes a batch from the training iterator here (one batch
        that training then never sees) and, under MultiWorkerMirroredStrategy, fails reducing
        it (keras-team/keras#20585; see bnreg_tf.run.keras_fixes). `trainer.build_run` builds both
        beforehand, so nothing is left to build and the data stream stays exact.
        """
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        if self.agc:
            take_over_all_reduce(self.optimizer)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def cross_entropy(self, labels, logits):
        """Mean smoothed cross-entropy; float32 whatever the compute dtype."""
        labels = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), self.num_classes)
        return tf.reduce_mean(keras.losses.categorical_crossentropy(
            labels, tf.cast(logits, tf.float32), from_logits=True,
            label_smoothing=self.label_smoothing))

    def weight_decay_loss(self):
        if not self.weight_decay or not self.decay_variables:
            return tf.constant(0.0)
        return self.weight_decay * tf.add_n(
            [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in self.decay_variables])

    def train_step(self, data):
        images, labels = data[0], data[1]  # Keras may append sample weights (None)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            cross_entropy = self.cross_entropy(labels, outputs["logits"])
            penalties = tf.add_n([tf.cast(v, tf.float32) for v in self.losses]) \
                if self.losses else tf.constant(0.0)
            weight_decay = self.weight_decay_loss()
            loss = cross_entropy + penalties + weight_decay
            # With AGC the decay's gradient is added after the clipping (below), unclipped, as
            # the NFNets reference's SGD_AGC (nfnets/optim.py) does.
            differentiated = cross_entropy + penalties if self.agc else loss
            scaled = self.optimizer.scale_loss(differentiated / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if self.agc:
            gradients = self._adaptive_clip(gradients, variables)
        if self.fixup_scalar_lr != 1.0:
            gradients = [g * self.fixup_scalar_lr if g is not None and id(v) in self._scalar_ids
                         else g for g, v in zip(gradients, variables)]
        self.optimizer.apply(gradients, variables)
        self.loss_tracker.update_state(self._nan_unless_finite(loss, gradients))
        self.cross_entropy_tracker.update_state(cross_entropy)
        self.accuracy.update_state(labels, outputs["logits"])
        return {m.name: m.result() for m in self.metrics}

    def _adaptive_clip(self, gradients, variables):
        """AGC on the all-reduced, unscaled gradient of the global batch (module docstring).

        Every replica gets the same clipped sum; the optimizer applies it without another
        all-reduce. Under LossScaleOptimizer the gradients are unscaled for the clipping and
        scaled back, so that optimizer's finiteness check and unscaling work as usual.
        """
        check_taken_over(self.optimizer)
        present = [i for i, g in enumerate(gradients) if g is not None]
        reduced = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
        scale = self._loss_scale()
        decayed = {id(v) for v in self.decay_variables} if self.weight_decay else set()
        out = list(gradients)
        for i, g in zip(present, reduced):
            v = variables[i]
            if id(v) not in self._agc_exempt:
                g = agc_lib.clip_gradient(g / scale, v, self.agc) * scale
            if id(v) in decayed:   # d/dv of wd * ||v||^2 / 2, the global batch's (not / replicas)
                g = g + tf.cast(self.weight_decay * scale * tf.cast(v, tf.float32), g.dtype)
            out[i] = g
        return out

    def _loss_scale(self):
        """The factor `optimizer.scale_loss` multiplied the loss by (the same expression)."""
        optimizer = self.optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scale = optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
            return tf.cast(scale, tf.float32)
        return float(optimizer.loss_scale_factor or 1.0)

    def _nan_unless_finite(self, loss, gradients):
        """The loss, or NaN when a gradient is not finite, so `NonFiniteGuard` stops the run.

        The loss alone can hide a divergence: on CPU, grappler rewrites a fused BatchNorm
        followed by ReLU into oneDNN's `_FusedBatchNormEx`, whose ReLU maps NaN to 0, so NaN
        activations give finite logits. A weight gradient still sees them (NaN * 0 is NaN).
        Under LossScaleOptimizer (mixed_float16) non-finite scaled gradients are expected: that
        optimizer skips those steps and lowers its scale, so only the loss is checked there.
        """
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return loss
        finite = tf.reduce_all([tf.math.is_finite(loss)] + [
            tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
        return tf.where(finite, loss, tf.constant(float("nan"), loss.dtype))

    def test_step(self, data):
        images, labels = data[0], data[1]
        outputs = self(images, training=False)
        cross_entropy = self.cross_entropy(labels, outputs["logits"])
        self.loss_tracker.update_state(cross_entropy)
        self.cross_entropy_tracker.update_state(cross_entropy)
        self.accuracy.update_state(labels, outputs["logits"])
        # Penalties are training terms: evaluation reports no (NaN) penalty columns.
        return {m.name: m.result()
                for m in (self.loss_tracker, self.cross_entropy_tracker, self.accuracy)}

"""The optimizer a config asks for (`make_optimizer`), and SGD with momentum as TensorFlow's fused
kernel (issue 17).

`keras.optimizers.SGD` updates each variable with five elementwise passes over it on the
TensorFlow backend (`m * momentum`, `g * lr`, their difference, the assignment, `var + m`);
`tf.raw_ops.ResourceApplyKerasMomentum` is the same arithmetic in one pass:

    m   <- momentum * m - lr * g
    var <- var + m                          (nesterov: var + momentum * m - lr * g)

exactly Keras' SGD (the kernel was written for Keras 2's SGD). A ResNet-50 training step at
64 px on this CPU ran 0.3-2.5% faster with it in three runs (`python -m benchmarks.run --only
kernels`). Same slot variables,
names and config as Keras' SGD, so checkpoints and `.keras` files of either restore into the
other. Without momentum, on TPUs (untested here) and for non-TensorFlow backends it is Keras' SGD.
"""
import keras
import tensorflow as tf

from bnreg_tf.run.schedules import make_schedule
from efficientnet.optim import ReferenceRMSprop


@keras.saving.register_keras_serializable(package="bnreg")
class SGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose momentum update runs as one fused TensorFlow kernel."""

    def _fusable(self):
        return (self.momentum != 0 and keras.backend.backend() == "tensorflow"
                and not isinstance(tf.distribute.get_strategy(), tf.distribute.TPUStrategy))

    def update_step(self, gradient, variable, learning_rate):
        if not self._fusable():
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        variable = variable.value if isinstance(variable, keras.Variable) else variable
        momentum = momentum.value if isinstance(momentum, keras.Variable) else momentum
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.handle, lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_nesterov=self.nesterov)


def make_optimizer(config, steps_per_epoch, train_examples=None):
    """`config`'s optimizer on its schedule (`schedules.make_schedule`): the fused SGD, or the
    EfficientNet reference's RMSProp with its weight average (`--ema_decay`)."""
    schedule = make_schedule(config, steps_per_epoch, train_examples)
    if config.optimizer == "rmsprop_reference":
        return ReferenceRMSprop(schedule, rho=0.9, momentum=config.momentum, epsilon=1e-3,
                                average_decay=config.ema_decay or None)
    return SGD(schedule, momentum=config.momentum, nesterov=config.nesterov)

"""Work-around for Keras `fit` under MultiWorkerMirroredStrategy (keras-team/keras#20585, open).

Checked on Keras 3.15.1 with TensorFlow 2.21.0. `fit` fails there at two points:
1. its symbolic build is handed a distributed batch (`ValueError: Attempt to convert a value
   (PerReplica...)`). bnreg avoids that point without patching: `trainer.build_run` builds the
   model with one concrete call before `fit`, and `training.Classifier._maybe_symbolic_build`
   then skips Keras' build (which would also take one batch off the training stream).
2. the reduction of the step's outputs calls `strategy.reduce("MEAN", v, axis=0)` on every
   output under the collective all-reduce strategy, which fails on the scalar metric results.
   `apply()` replaces `keras.src.backend.tensorflow.trainer.reduce_per_replica` by a version that
   reduces scalars with `axis=None` under that strategy and defers to Keras otherwise.
With both, two local workers train to identical weights (tests/test_multi_worker.py).
Remove this module when the upstream issue is fixed.
"""
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as _keras_tf_trainer
from keras.src import tree

_keras_reduce_per_replica = _keras_tf_trainer.reduce_per_replica


def _reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and _keras_tf_trainer._collective_all_reduce_multi_worker(
            strategy):

        def reduce(value):
            if isinstance(value, tf.distribute.DistributedValues):
                axis = None if value.values[0].shape.rank == 0 else 0
                return strategy.reduce("MEAN", value, axis=axis)
            return value

        return tree.map_structure(reduce, values)
    return _keras_reduce_per_replica(values, strategy, reduction)


def apply():
    """Installs the scalar-safe reduction (idempotent)."""
    _keras_tf_trainer.reduce_per_replica = _reduce_per_replica

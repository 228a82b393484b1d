"""The run floor: one training run from flags to SavedModel (docs/architecture.md).

`config` (the frozen RunConfig, checked when made), `flags` and `presets` (the edge: flags ->
config), `models` (the model table), `preflight` (the checks that need files, data or models),
`inputs` (the run's data), `strategies`, `training` (the training step), `schedules` and
`optimizers`, `build` and `trainer` (a run), the run directory (`layout`, `rundir`,
`checkpoints`, `preemption`, `early_stopping`, `warm_start`), `callbacks` and `progress`, and
`export`, `results` and `evaluate`. TensorFlow only: the trainer, tf.distribute and SavedModel
do not run on other Keras backends.
"""
from bnreg_tf.nn.backends import require_tensorflow

require_tensorflow(__name__)   # one line under another Keras backend (issue 24)

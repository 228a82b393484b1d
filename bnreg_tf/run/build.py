"""`build_run`: one run's Keras objects (network, training step, optimizer) in the strategy's
scope, its data plan and preprocessing, restored from its newest good checkpoint (else, with
`--init_from`, from another run's weights)."""
import contextlib
import dataclasses
import os

import keras
import tensorflow as tf

from bnreg_tf.data.preprocessing import Preprocessing
from bnreg_tf.data.spec import Splits
from bnreg_tf.run import dirguard, inputs, keras_fixes, layout
from bnreg_tf.run.checkpoints import check_index, restore_latest
from bnreg_tf.run.history import RunHistory
from bnreg_tf.run.config import RunConfig
from bnreg_tf.run.models import build_network, native_image_size
from bnreg_tf.run.optimizers import make_optimizer
from bnreg_tf.run.preflight import preflight
from bnreg_tf.run.strategies import is_chief, jit_compile, set_precision, worker_scratch_dir
from bnreg_tf.run.training import Classifier
from bnreg_tf.run.warm_start import restore_init_from
from efficientnet.optim import ReferenceRMSprop, average_sources


def silent(*_):
    pass


@dataclasses.dataclass
class Run:
    """What `build_run` made: the Keras objects of one run and its data plan."""

    config: RunConfig
    strategy: object
    trainer: Classifier
    network: keras.Model
    optimizer: object
    preprocessing: Preprocessing
    checkpoint_manager: tf.train.CheckpointManager
    steps_per_epoch: int
    train_split: str
    eval_split: str
    start_step: int = 0
    write_dir: str = ""   # the model dir on the chief, a scratch dir on other workers
    epoch_metrics: list = None   # the checkpointed running means of the epoch resumed mid-way
    splits: Splits = None   # train / validation (None: --noholdout) / test
    init_from: str = ""   # the checkpoint the weights came from (--init_from), if any
    history: RunHistory = None   # log.csv's rows, saved in every checkpoint (run.history)
    restored: str = ""   # the checkpoint the run resumed from, if any

    @property
    def chief(self):
        return self.write_dir == self.config.model_dir

    @property
    def averages_weights(self):
        return isinstance(self.optimizer, ReferenceRMSprop) and bool(self.optimizer.average_decay)

    @property
    def total_steps(self):
        return self.config.epochs * self.steps_per_epoch

    def path(self, name):
        """`name` (a `layout` name) in the run's model dir."""
        return os.path.join(self.config.model_dir, name)

    def averaged(self):
        """Context in which the network holds the weights to evaluate and export."""
        return self.optimizer.averaged_weights() if self.averages_weights \
            else contextlib.nullcontext()


def _build_objects(config, strategy, spec, image_size, steps_per_epoch, train_examples):
    """Network, training step and optimizer, built (and the optimizer's slots) in the scope."""
    with strategy.scope():
        network = build_network(config, spec, image_size)
        trainer = Classifier(network, spec.num_classes, config.label_smoothing,
                             config.weight_decay, config.weight_decay_exclude,
                             config.fixup_scalar_lr, agc=config.agc,
                             revision=config.model_revision)
        optimizer = make_optimizer(config, steps_per_epoch, train_examples)
        if isinstance(optimizer, ReferenceRMSprop) and optimizer.average_decay:
            optimizer.track_average(average_sources(network))
        trainer.compile(optimizer=optimizer, jit_compile=jit_compile(config.compilation, strategy))
        trainer.optimizer.build(trainer.trainable_variables)
        # One concrete call builds the wrapper, so fit never runs Keras' symbolic build (which
        # fails on distributed batches under MultiWorkerMirroredStrategy: run.keras_fixes).
        trainer(tf.zeros([1, image_size, image_size, spec.channels]), training=False)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_fixes.apply()
    return network, trainer, optimizer


def _restore(config, state, metric_variables, history, chief, log):
    """Restores the newest good checkpoint of the run (model, optimizer, the epoch's running
    means, the history); returns its path or None."""
    latest = restore_latest(state, os.path.join(config.model_dir, layout.CHECKPOINTS),
                            log if chief else silent, repair_index=chief)
    if latest:
        # The running means of a checkpointed epoch and the history (older checkpoints have
        # neither: expect_partial leaves them as they are).
        tf.train.Checkpoint(epoch_metrics=metric_variables).restore(latest).expect_partial()
        try:
            tf.train.Checkpoint(history=history).restore(latest).expect_partial()
        except Exception as error:  # a history that does not parse: log.csv is kept as is
            history.rows = None
            (log if chief else silent)(f"bnreg: {latest}: its copy of the history is unreadable "
                                       f"({type(error).__name__}); log.csv is kept as it is")
    return latest


def build_run(config, strategy, log=print, plan=None):
    """Builds model/optimizer in `strategy`'s scope and restores the newest good checkpoint
    (else, with --init_from, another run's weights).

    `strategy` is the process's one strategy (`bnreg_tf.run.strategies.make_strategy`).
    `plan`: `preflight`'s result when it already ran. Writes nothing to the model dir except,
    on the chief, a repaired checkpoint index (checkpoints/ and best/: never one naming files
    outside the run dir) and normalization.json (`inputs`). Every folder handed to a
    CheckpointManager is checked to lie in the run dir.
    """
    spec, splits = plan or preflight(config, strategy)
    steps_per_epoch = config.steps_per_epoch or max(1, splits.train_examples // config.batch_size)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_precision(config.precision, strategy)
    image_size = native_image_size(config, spec)
    preprocessing = inputs.preprocessing_for(config, image_size, spec, splits, log)
    network, trainer, optimizer = _build_objects(config, strategy, spec, image_size,
                                                 steps_per_epoch, splits.train_examples)
    metric_variables = [v for m in trainer.metrics for v in m.variables]
    history = RunHistory()
    with strategy.scope():
        state = tf.train.Checkpoint(network=network, optimizer=trainer.optimizer)
        checkpoint = tf.train.Checkpoint(network=network, optimizer=trainer.optimizer,
                                         epoch_metrics=metric_variables, history=history)
    # Every worker saves (saving may all-reduce); only the chief's copy is kept, in the model dir.
    chief = is_chief(strategy)
    write_dir = config.model_dir if chief else worker_scratch_dir(strategy)
    start_step, epoch_metrics = 0, None
    latest = _restore(config, state, metric_variables, history, chief, log)
    if latest:
        start_step = int(trainer.optimizer.iterations.numpy())
        epoch_metrics = [v.numpy() for v in metric_variables]
    directory = os.path.join(write_dir, layout.CHECKPOINTS)
    if chief:
        dirguard.check_inside(config.model_dir, directory)
        check_index(os.path.join(write_dir, layout.BEST_DIR), log)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=3)
    init_from = ""
    if not latest and config.init_from:   # by layer name: penalties and Dropout may differ
        init_from, note = restore_init_from(config, network)
        (log if chief else silent)(note)
    return Run(config, strategy, trainer, network, optimizer, preprocessing, manager,
               steps_per_epoch, splits.train, splits.validation, start_step, write_dir,
               epoch_metrics, splits, init_from, history, latest or "")


def probe_batch(run):
    """NormMonitor's fixed probe: the first `--norm_probe_size` images of the holdout (else the
    test split: norms only, nothing is chosen on them)."""
    dataset = inputs.eval_dataset(run.config, run.preprocessing, run.eval_split or run.splits.test,
                                  run.config.norm_probe_size, limit=run.config.norm_probe_size)
    return next(iter(dataset))[0].numpy()


def train_input(run, start_step):
    """The distributed training stream from `start_step` (one input pipeline per worker)."""
    config = run.config

    def input_fn(context):
        batch = context.get_per_replica_batch_size(config.batch_size)
        return inputs.train_dataset(config, run.preprocessing, run.train_split,
                                    run.steps_per_epoch, batch, start_step, context)

    return run.strategy.distribute_datasets_from_function(input_fn)

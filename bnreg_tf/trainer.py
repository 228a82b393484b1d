"""`train(config)`: one run from a RunConfig, resumable, ending in an evaluation and a SavedModel.

Model dir layout: `config.json` (the resolved config), `checkpoints/` (tf.train.CheckpointManager:
model, optimizer with its slots and EMA, step counter), `log.csv` (one row per epoch, 1-based:
loss, accuracy, each penalty, validation metrics, NormMonitor norms, mean learning rate,
images/s), `tensorboard/{train,validation}/` (per-step scalars and HParams, bnreg_tf.callbacks),
`normalization.json` (datasets without published statistics), `results.json` (validation on the
holdout, then the test split scored once) and `export/` (the SavedModel).
A model dir holding a different config is refused before anything is written.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from bnreg_tf import callbacks as cb, keras_fixes, progress
from bnreg_tf.compilation import choose_jit_compile
from bnreg_tf.config import ConfigError, RunConfig, validate
from bnreg_tf.data import catalog, pipeline
from bnreg_tf.diagnostics import NormMonitor
from bnreg_tf.export import export_saved_model
from bnreg_tf.models import build_network, native_image_size
from bnreg_tf.results import dataset_record, evaluate_split, split_results
from bnreg_tf.schedules import make_optimizer
from bnreg_tf.strategies import (check_batch_split, is_chief, make_strategy, split_cpu,
                                  worker_scratch_dir)
from bnreg_tf.training import Classifier
from bnreg_tf.warm_start import restore_init_from
from efficientnet.optim import ReferenceRMSprop, average_sources

# Fields that may differ when a run is resumed: where data/outputs live and how it is executed.
RESUMABLE_FIELDS = ("data_dir", "download", "export", "model_dir", "strategy", "tpu",
                    "virtual_cpus", "eval_batch_size", "checkpoint_steps")


def _silent(*_):
    pass


def _path(config, *parts):
    return os.path.join(config.model_dir, *parts)


def check_model_dir(config):
    """Raises ConfigError if the model dir cannot hold this run. Writes nothing."""
    model_dir = config.model_dir
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError(f"--model_dir={model_dir}: exists and is not a directory")
    config_path = _path(config, "config.json")
    if not os.path.exists(config_path):
        return False
    try:
        with open(config_path) as f:
            previous = RunConfig.from_json(f.read())
    except (ValueError, TypeError, OSError) as error:
        raise ConfigError(f"--model_dir={model_dir}: config.json is unreadable ({error}); "
                          "use a new --model_dir") from None
    for field in dataclasses.fields(RunConfig):
        name = field.name
        if name in RESUMABLE_FIELDS:
            continue
        old, new = getattr(previous, name), getattr(config, name)
        if old != new:
            raise ConfigError(
                f"--model_dir={model_dir} holds a run with a different config (--{name}={old!r} "
                f"there, {new!r} asked); repeat that run's flags, or branch it: --init_from={model_dir} "
                f"--model_dir=NEW_DIR starts a new run from its weights")
    return True


def write_atomically(path, text):
    """Writes `text` beside `path` and renames it into place (a kill never leaves half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = f"{path}.partial"
    with open(staging, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)


def set_precision(config, strategy):
    """float32 on CPU; bfloat16 on TPU; float16 on GPU; unless --precision says otherwise."""
    policy = config.precision
    if policy == "auto":
        if isinstance(strategy, tf.distribute.TPUStrategy):
            policy = "mixed_bfloat16"
        elif tf.config.list_logical_devices("GPU"):
            policy = "mixed_float16"
        else:
            policy = "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def jit_compile_for(config, strategy):
    if config.compilation == "xla":
        return True
    if config.compilation == "graph":
        return False
    return choose_jit_compile(strategy)


@dataclasses.dataclass
class Run:
    """What `build_run` made: the Keras objects of one run and its data plan."""

    config: RunConfig
    strategy: object
    trainer: Classifier
    network: keras.Model
    optimizer: object
    preprocessing: pipeline.Preprocessing
    checkpoint_manager: tf.train.CheckpointManager
    steps_per_epoch: int
    train_split: str
    eval_split: str
    start_step: int = 0
    write_dir: str = ""   # the model dir on the chief, a scratch dir on other workers
    splits: catalog.Splits = None   # train / validation (None: --noholdout) / test
    init_from: str = ""   # the checkpoint the weights came from (--init_from), if any

    @property
    def chief(self):
        return self.write_dir == self.config.model_dir

    @property
    def averages_weights(self):
        return isinstance(self.optimizer, ReferenceRMSprop) and bool(self.optimizer.average_decay)

    @property
    def total_steps(self):
        return self.config.epochs * self.steps_per_epoch

    def averaged(self):
        """Context in which the network holds the weights to evaluate and export."""
        return self.optimizer.averaged_weights() if self.averages_weights \
            else contextlib.nullcontext()


def build_run(config, strategy=None):
    """Validates, builds model/optimizer in the strategy scope, restores the latest checkpoint."""
    validate(config)
    check_model_dir(config)
    if config.virtual_cpus and strategy is None:
        split_cpu(config.virtual_cpus)
    strategy = strategy or make_strategy(config.strategy, config.tpu)
    check_batch_split(strategy, config.batch_size)
    check_batch_split(strategy, config.eval_batch_size, "eval_batch_size")
    spec, splits = catalog.plan_for(config)
    train_split, eval_split = splits.train, splits.validation
    for split in (splits.train, splits.validation, splits.test):  # fail fast, before any write
        if split:
            catalog.load(config.dataset, split, config.data_dir, config.download)
    steps_per_epoch = config.steps_per_epoch or max(1, splits.train_examples // config.batch_size)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_precision(config, strategy)
    image_size = native_image_size(config, spec)
    preprocessing = pipeline.preprocessing_for(config, image_size, spec, splits)
    with strategy.scope():
        network = build_network(config, spec, image_size)
        trainer = Classifier(network, spec.num_classes, config.label_smoothing,
                             config.weight_decay, config.weight_decay_exclude,
                             config.fixup_scalar_lr)
        optimizer = make_optimizer(config, steps_per_epoch)
        if isinstance(optimizer, ReferenceRMSprop) and optimizer.average_decay:
            optimizer.track_average(average_sources(network))
        trainer.compile(optimizer=optimizer, jit_compile=jit_compile_for(config, strategy))
        trainer.optimizer.build(trainer.trainable_variables)
        # One concrete call builds the wrapper, so fit never runs Keras' symbolic build (which
        # fails on distributed batches under MultiWorkerMirroredStrategy: bnreg_tf.keras_fixes).
        trainer(tf.zeros([1, image_size, image_size, spec.channels]), training=False)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_fixes.apply()
    with strategy.scope():
        checkpoint = tf.train.Checkpoint(network=network, optimizer=trainer.optimizer)
    # Every worker saves (saving may all-reduce); only the chief's copy is kept, in the model dir.
    write_dir = config.model_dir if is_chief(strategy) else worker_scratch_dir(strategy)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, "checkpoints"),
                                         max_to_keep=3)
    start_step = 0
    latest = tf.train.latest_checkpoint(_path(config, "checkpoints"))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        start_step = int(trainer.optimizer.iterations.numpy())
    init_from = ""
    if not latest and config.init_from:
        init_from = restore_init_from(config, network)
    return Run(config, strategy, trainer, network, optimizer, preprocessing, manager,
               steps_per_epoch, train_split, eval_split, start_step, write_dir, splits, init_from)


def _probe(run):
    dataset = pipeline.eval_dataset(run.config, run.preprocessing,
                                    run.eval_split or run.splits.test,  # norms only, no selection
                                    run.config.norm_probe_size, limit=run.config.norm_probe_size)
    return next(iter(dataset))[0].numpy()


def _train_input(run, start_step):
    config = run.config

    def input_fn(context):
        batch = context.get_per_replica_batch_size(config.batch_size)
        return pipeline.train_dataset(config, run.preprocessing, run.train_split,
                                      run.steps_per_epoch, batch, start_step, context)

    return run.strategy.distribute_datasets_from_function(input_fn)


def train(config, strategy=None, log=print, verbose=None):
    """Trains (or resumes) the run `config` describes; returns the final results dict.

    `verbose`: None (default) picks the progress output (`bnreg_tf.progress`): Keras' bar on a
    terminal, progress lines otherwise, nothing when BNREG_QUIET is set; 0 = silent.
    """
    run = build_run(config, strategy)
    config = run.config
    os.makedirs(run.write_dir, exist_ok=True)
    if run.chief and not os.path.exists(_path(config, "config.json")):
        write_atomically(_path(config, "config.json"), config.to_json() + "\n")
    report = log
    if not run.chief:
        log = _silent
    log(progress.summary(run, _path(config, "config.json")))
    start, total, spe = run.start_step, run.total_steps, run.steps_per_epoch
    guard = cb.NonFiniteGuard()
    monitor = NormMonitor(_probe(run))
    monitor.set_model(run.trainer)
    initial_path = _path(config, "initial_norms.json")
    if start == 0 and run.chief:
        monitor.initial = monitor.measure()
        write_atomically(initial_path, json.dumps(monitor.initial, indent=2) + "\n")
    elif os.path.exists(initial_path):
        with open(initial_path) as f:
            monitor.initial = json.load(f)
    if start < total:
        if start:
            log(f"bnreg: resuming from {run.checkpoint_manager.latest_checkpoint} (step {start})")
        log_path = os.path.join(run.write_dir, "log.csv")
        callbacks = [guard, monitor, cb.RunStats(config.batch_size)]
        if run.averages_weights:
            callbacks.append(cb.AveragedEvaluation(run.optimizer))
        callbacks += [cb.EpochLog(log_path, spe),  # 1-based epochs; drops rows to be redone
                      cb.Checkpointer(run.checkpoint_manager, guard, config.checkpoint_steps)]
        if run.chief:
            callbacks.append(cb.TensorBoardLog(_path(config, "tensorboard"), config))
        validation = None if run.eval_split is None else pipeline.eval_dataset(
            config, run.preprocessing, run.eval_split, config.eval_batch_size)
        epoch, into_epoch = divmod(start, spe)
        verbose, shown = progress.choose(verbose if run.chief else 0, config, spe)
        callbacks += shown
        if into_epoch:  # a step checkpoint: finish that epoch first, then go on per epoch
            run.trainer.fit(_train_input(run, start), epochs=epoch + 1, initial_epoch=epoch,
                            steps_per_epoch=spe - into_epoch, validation_data=validation,
                            callbacks=callbacks, verbose=verbose, shuffle=False)
            epoch, start = epoch + 1, (epoch + 1) * spe
        if epoch < config.epochs and guard.tripped is None:
            run.trainer.fit(_train_input(run, start), epochs=config.epochs, initial_epoch=epoch,
                            steps_per_epoch=spe, validation_data=validation,
                            callbacks=callbacks, verbose=verbose, shuffle=False)
    if guard.tripped is not None:
        good = run.checkpoint_manager.latest_checkpoint
        branch = (f"; to go on with other settings (e.g. a lower --learning_rate), start a new "
                  f"run from it: --init_from={config.model_dir} --model_dir=NEW_DIR") if good else ""
        raise cb.NonFiniteLoss(
            f"loss became non-finite at step {guard.tripped}; training stopped. Last good "
            f"checkpoint: {good or 'none saved yet'}{branch}")
    results = finish(run, monitor, log)
    if not run.chief:
        report(f"bnreg: worker done after {results['steps']} steps; trainable weights sha256 "
               f"{results['weights_sha256']}")
    return results


def weights_fingerprint(network):
    """sha256 of the trainable weights' bytes, to show that workers agree."""
    digest = hashlib.sha256()
    for variable in network.trainable_variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def finish(run, monitor, log=print):
    """Final evaluation (averaged weights where the recipe has them), results.json and export."""
    config = run.config
    with run.averaged():
        scores = {}   # the holdout (unless --noholdout), then the test split, scored once
        for role, split in (("validation", run.eval_split), ("test", run.splits.test)):
            if split:
                scores[role] = evaluate_split(run, split)
        probe = NormMonitor(monitor.probe)
        probe.set_model(run.trainer)
        final_norms = probe.measure()
        export_path = None
        if config.export and run.chief:
            export_path = export_saved_model(run.network, run.preprocessing,
                                             _path(config, "export"),
                                             dataset_record(run))
    results = {
        **split_results(scores),
        "steps": int(run.trainer.optimizer.iterations.numpy()),
        "epochs": config.epochs,
        "norms": final_norms,
        "initial_norms": monitor.initial,
        "export": export_path,
        "weights_sha256": weights_fingerprint(run.network),
    }
    if not run.chief:
        shutil.rmtree(run.write_dir, ignore_errors=True)
        return results
    write_atomically(_path(config, "results.json"), json.dumps(results, indent=2) + "\n")
    log(progress.final_line(results, _path(config, "results.json")))
    return results


def export_from_checkpoint(config, strategy=None, log=print):
    """Exports the latest checkpoint of `config`'s model dir (averaged weights where kept)."""
    run = build_run(config, strategy)
    if run.checkpoint_manager.latest_checkpoint is None:
        raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
    with run.averaged():
        path = export_saved_model(run.network, run.preprocessing, _path(config, "export"),
                                  dataset_record(run))
    log(f"bnreg: exported {run.checkpoint_manager.latest_checkpoint} to {path}")
    return path


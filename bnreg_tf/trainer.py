"""`train(config, strategy)`: one run from a RunConfig, resumable, ending in an evaluation and a SavedModel.

Model dir layout: `config.json` (the resolved config: the run's identity), `bnreg.lock` (the one
writer's lock, `bnreg_tf.rundir`), `checkpoints/` (tf.train.CheckpointManager: model, optimizer
with its slots and EMA, the epoch's running training metrics), `log.csv` (one row per epoch,
1-based: loss, accuracy, each penalty, validation metrics, NormMonitor norms, mean learning rate,
images/s), `tensorboard/{train,validation}/` (per-step scalars and HParams, bnreg_tf.callbacks),
`normalization.json` (datasets without published statistics), `results.json` (validation on the
holdout, then the test split scored once) and `export/` (the SavedModel).
The strategy is made once per process by the binary (`bnreg_tf.strategies`) and passed in.
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

from bnreg_tf import callbacks as cb, early_stopping, keras_fixes, preemption, progress
from bnreg_tf.checkpoints import restore_latest
from bnreg_tf.config import ConfigError, RunConfig, validate
from bnreg_tf.data import catalog, pipeline
from bnreg_tf.diagnostics import NormMonitor
from bnreg_tf.export import export_saved_model
from bnreg_tf.models import build_network, native_image_size
from bnreg_tf.results import dataset_record, evaluate_split, split_results
from bnreg_tf.rundir import RunLock, check_model_dir, remove_leftovers, write_atomically
from bnreg_tf.schedules import make_optimizer
from bnreg_tf.strategies import (check_batch_split, is_chief, jit_compile, set_precision,
                                 worker_scratch_dir)
from bnreg_tf.training import Classifier
from bnreg_tf.warm_start import restore_init_from
from efficientnet.optim import ReferenceRMSprop, average_sources

def _silent(*_):
    pass


def _path(config, *parts):
    return os.path.join(config.model_dir, *parts)


def _read_initial_norms(path):
    try:
        with open(path) as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError("not a mapping")
        return values
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path}: unreadable (not bnreg's JSON); move it aside and repeat the "
                          "command (the run resumes; its norms at init are then missing)") from None


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
    epoch_metrics: list = None   # the checkpointed running means of the epoch resumed mid-way
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


def preflight(config, strategy):
    """Everything checked before a run writes anything: flags, batch split, data (every split the
    run reads). Returns the dataset spec and its `catalog.Splits`."""
    validate(config)
    check_batch_split(strategy, config.batch_size)
    check_batch_split(strategy, config.eval_batch_size, "eval_batch_size")
    spec, splits = catalog.plan_for(config)
    for split in (splits.train, splits.validation, splits.test):  # fail fast, before any write
        if split:
            catalog.load(config.dataset, split, config.data_dir, config.download)
    return spec, splits


def build_run(config, strategy, log=print, plan=None):
    """Builds model/optimizer in `strategy`'s scope and restores the newest good checkpoint
    (else, with --init_from, another run's weights).

    `strategy` is the process's one strategy (`bnreg_tf.strategies.make_strategy`). Writes
    nothing to the model dir except, on the chief, a repaired checkpoint index.
    """
    spec, splits = plan or preflight(config, strategy)   # `plan`: preflight's, already checked
    train_split, eval_split = splits.train, splits.validation
    steps_per_epoch = config.steps_per_epoch or max(1, splits.train_examples // config.batch_size)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_precision(config.precision, strategy)
    image_size = native_image_size(config, spec)
    preprocessing = pipeline.preprocessing_for(config, image_size, spec, splits)
    with strategy.scope():
        network = build_network(config, spec, image_size)
        trainer = Classifier(network, spec.num_classes, config.label_smoothing,
                             config.weight_decay, config.weight_decay_exclude,
                             config.fixup_scalar_lr, agc=config.agc)
        optimizer = make_optimizer(config, steps_per_epoch)
        if isinstance(optimizer, ReferenceRMSprop) and optimizer.average_decay:
            optimizer.track_average(average_sources(network))
        trainer.compile(optimizer=optimizer, jit_compile=jit_compile(config.compilation, strategy))
        trainer.optimizer.build(trainer.trainable_variables)
        # One concrete call builds the wrapper, so fit never runs Keras' symbolic build (which
        # fails on distributed batches under MultiWorkerMirroredStrategy: bnreg_tf.keras_fixes).
        trainer(tf.zeros([1, image_size, image_size, spec.channels]), training=False)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_fixes.apply()
    metric_variables = [v for m in trainer.metrics for v in m.variables]
    with strategy.scope():
        state = tf.train.Checkpoint(network=network, optimizer=trainer.optimizer)
        checkpoint = tf.train.Checkpoint(network=network, optimizer=trainer.optimizer,
                                         epoch_metrics=metric_variables)
    # Every worker saves (saving may all-reduce); only the chief's copy is kept, in the model dir.
    chief = is_chief(strategy)
    write_dir = config.model_dir if chief else worker_scratch_dir(strategy)
    start_step, epoch_metrics = 0, None
    latest = restore_latest(state, _path(config, "checkpoints"), log if chief else _silent,
                            repair_index=chief)
    if latest:
        start_step = int(trainer.optimizer.iterations.numpy())
        # The running means of a checkpointed epoch (older checkpoints have none: expect_partial).
        tf.train.Checkpoint(epoch_metrics=metric_variables).restore(latest).expect_partial()
        epoch_metrics = [v.numpy() for v in metric_variables]
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, "checkpoints"),
                                         max_to_keep=3)
    init_from = ""
    if not latest and config.init_from:
        init_from = restore_init_from(config, network)
    return Run(config, strategy, trainer, network, optimizer, preprocessing, manager,
               steps_per_epoch, train_split, eval_split, start_step, write_dir, epoch_metrics,
               splits, init_from)


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


@contextlib.contextmanager
def _writer(config, strategy, log):
    """The chief's exclusive hold on the model dir: checked, locked, checked again, tidied."""
    if not is_chief(strategy):
        check_model_dir(config, writable=False)
        yield
        return
    check_model_dir(config, compare=False)   # never lock (write) in a foreign dir
    with RunLock(config.model_dir, log):   # a busy dir is refused as busy, whatever its config
        check_model_dir(config)
        remove_leftovers(config.model_dir, log)
        yield


def train(config, strategy, log=print, verbose=None):
    """Trains (or resumes) the run `config` describes under `strategy`; returns the results dict.

    `verbose`: None (default) picks the progress output (`bnreg_tf.progress`): Keras' bar on a
    terminal, progress lines otherwise, nothing when BNREG_QUIET is set; 0 = silent.
    Raises ConfigError (bad flags, data or model dir), RunDirBusy (another process holds the
    model dir), NonFiniteLoss, or preemption.Preempted (SIGTERM/SIGINT: a checkpoint was saved).
    """
    plan = preflight(config, strategy)
    with _writer(config, strategy, log), preemption.stop_signals(strategy):
        return _train(config, strategy, log, verbose, plan)


def _train(config, strategy, log, verbose, plan):
    chief = is_chief(strategy)
    if chief and not os.path.exists(_path(config, "config.json")):
        write_atomically(_path(config, "config.json"), config.to_json() + "\n")
    run = build_run(config, strategy, log, plan)
    os.makedirs(run.write_dir, exist_ok=True)
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
        monitor.initial = _read_initial_norms(initial_path)
    preemption.raise_if_received("before training")
    if start < total:
        if start:
            log(f"bnreg: resuming from {run.checkpoint_manager.latest_checkpoint} (step {start})")
        log_path = os.path.join(run.write_dir, "log.csv")
        cb.check_epoch_log(log_path)
        callbacks = [guard, monitor, cb.RunStats(config.batch_size)]
        if run.epoch_metrics is not None and start % spe:
            callbacks.insert(0, cb.RestoreEpochMetrics(run.epoch_metrics))
        if run.averages_weights:
            callbacks.append(cb.AveragedEvaluation(run.optimizer))
        if config.early_stopping:   # before the Checkpointer: see bnreg_tf.early_stopping
            callbacks.append(early_stopping.BestCheckpoint(run.checkpoint_manager.checkpoint,
                                                           run.write_dir, guard))
        callbacks += [cb.EpochLog(log_path, spe),  # 1-based epochs; drops rows to be redone
                      cb.Checkpointer(run.checkpoint_manager, guard, config.checkpoint_steps),
                      preemption.stop_callback(strategy, run.checkpoint_manager)]
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
    best = early_stopping.restore_best(run) if config.early_stopping else None
    results = finish(run, monitor, log)
    if best and run.chief:   # the evaluated and exported weights are the best epoch's
        results.update(best)
        write_atomically(_path(config, "results.json"), json.dumps(results, indent=2) + "\n")
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


def export_from_checkpoint(config, strategy, log=print):
    """Exports the latest checkpoint of `config`'s model dir (averaged weights where kept)."""
    plan = preflight(config, strategy)
    if not os.path.isdir(_path(config, "checkpoints")):
        raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
    with _writer(config, strategy, log), preemption.stop_signals(strategy):
        run = build_run(config, strategy, log, plan)
        if run.checkpoint_manager.latest_checkpoint is None:
            raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
        if config.early_stopping:   # the best holdout epoch's, as train() exports
            early_stopping.restore_best(run)
        with run.averaged():
            path = export_saved_model(run.network, run.preprocessing, _path(config, "export"),
                                      dataset_record(run))
    log(f"bnreg: exported {run.checkpoint_manager.latest_checkpoint} to {path}")
    return path

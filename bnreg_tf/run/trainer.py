"""`train(config, strategy)`: one run from a RunConfig, resumable, ending in an evaluation and a
SavedModel; `export_from_checkpoint` exports a run's latest checkpoint.

The run directory's files are listed in `bnreg_tf.run.layout`. The strategy is made once per
process by the binary (`bnreg_tf.run.strategies`) and passed in.
"""
import contextlib
import hashlib
import json
import os
import shutil

import numpy as np

from bnreg_tf.files import write_atomically
from bnreg_tf.nn.norm_monitor import NormMonitor
from bnreg_tf.run import callbacks as cb
from bnreg_tf.run import early_stopping, layout, preemption, progress
from bnreg_tf.run.build import build_run, probe_batch, silent, train_input
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.export import export_saved_model
from bnreg_tf.run.inputs import eval_dataset
from bnreg_tf.run.preflight import preflight
from bnreg_tf.run.results import data_checks, dataset_record, evaluate_split, split_results
from bnreg_tf.run.rundir import RunLock, check_model_dir, remove_leftovers
from bnreg_tf.run.strategies import is_chief


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

    `verbose`: None (default) picks the progress output (`bnreg_tf.run.progress`): Keras' bar on
    a terminal, progress lines otherwise, nothing when BNREG_QUIET is set; 0 = silent.
    Raises ConfigError (bad flags, data or model dir), RunDirBusy (another process holds the
    model dir), NonFiniteLoss, or preemption.Preempted (SIGTERM/SIGINT: a checkpoint was saved).
    """
    plan = preflight(config, strategy)
    with _writer(config, strategy, log), preemption.stop_signals(strategy):
        return _train(config, strategy, log, verbose, plan)


def _norm_monitor(run):
    """NormMonitor on the fixed probe, with the norms at initialisation (measured at step 0 and
    kept in initial_norms.json, read back on resume)."""
    monitor = NormMonitor(probe_batch(run))
    monitor.set_model(run.trainer)
    path = run.path(layout.INITIAL_NORMS)
    if run.start_step == 0 and run.chief:
        monitor.initial = monitor.measure()
        write_atomically(path, json.dumps(monitor.initial, indent=2) + "\n")
    elif os.path.exists(path):
        monitor.initial = _read_initial_norms(path)
    return monitor


def _callbacks(run, guard, monitor, log_path):
    """The training loop's callbacks, in the order they must run."""
    config = run.config
    callbacks = [guard, monitor, cb.RunStats(config.batch_size)]
    if run.epoch_metrics is not None and run.start_step % run.steps_per_epoch:
        callbacks.insert(0, cb.RestoreEpochMetrics(run.epoch_metrics))
    if run.averages_weights:
        callbacks.append(cb.AveragedEvaluation(run.optimizer))
    if config.early_stopping:   # before the Checkpointer: see bnreg_tf.run.early_stopping
        callbacks.append(early_stopping.BestCheckpoint(run.checkpoint_manager.checkpoint,
                                                       run.write_dir, guard))
    callbacks += [cb.EpochLog(log_path, run.steps_per_epoch),  # 1-based; drops rows to redo
                  cb.Checkpointer(run.checkpoint_manager, guard, config.checkpoint_steps),
                  preemption.stop_callback(run.strategy, run.checkpoint_manager)]
    if run.chief:
        callbacks.append(cb.TensorBoardLog(run.path(layout.TENSORBOARD), config))
    return callbacks


def _fit(run, callbacks, verbose, guard):
    """`fit` from the run's start step to its last epoch: the rest of an epoch resumed mid-way
    (a step checkpoint), then whole epochs (unless `guard` stopped the first part)."""
    config, spe, start = run.config, run.steps_per_epoch, run.start_step
    validation = None if run.eval_split is None else eval_dataset(
        config, run.preprocessing, run.eval_split, config.eval_batch_size)
    epoch, into_epoch = divmod(start, spe)
    common = dict(validation_data=validation, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    if into_epoch:
        run.trainer.fit(train_input(run, start), epochs=epoch + 1, initial_epoch=epoch,
                        steps_per_epoch=spe - into_epoch, **common)
        epoch, start = epoch + 1, (epoch + 1) * spe
    if epoch < config.epochs and guard.tripped is None:
        run.trainer.fit(train_input(run, start), epochs=config.epochs, initial_epoch=epoch,
                        steps_per_epoch=spe, **common)


def _train(config, strategy, log, verbose, plan):
    if is_chief(strategy) and not os.path.exists(os.path.join(config.model_dir, layout.CONFIG)):
        write_atomically(os.path.join(config.model_dir, layout.CONFIG), config.to_json() + "\n")
    run = build_run(config, strategy, log, plan)
    os.makedirs(run.write_dir, exist_ok=True)
    report, log = log, (log if run.chief else silent)
    log(progress.summary(run, run.path(layout.CONFIG)))
    guard = cb.NonFiniteGuard()
    monitor = _norm_monitor(run)
    preemption.raise_if_received("before training")
    if run.start_step < run.total_steps:
        if run.start_step:
            log(f"bnreg: resuming from {run.checkpoint_manager.latest_checkpoint} "
                f"(step {run.start_step})")
        log_path = os.path.join(run.write_dir, layout.LOG)
        cb.check_epoch_log(log_path)
        callbacks = _callbacks(run, guard, monitor, log_path)
        keras_verbose, shown = progress.choose(verbose if run.chief else 0, config,
                                               run.steps_per_epoch)
        _fit(run, callbacks + shown, keras_verbose, guard)
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
        write_atomically(run.path(layout.RESULTS), json.dumps(results, indent=2) + "\n")
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
                                             run.path(layout.EXPORT), dataset_record(run))
    results = {
        **split_results(scores),
        "steps": int(run.trainer.optimizer.iterations.numpy()),
        "epochs": config.epochs,
        "norms": final_norms,
        "initial_norms": monitor.initial,
        "export": export_path,
        "weights_sha256": weights_fingerprint(run.network),
        **data_checks(run),   # an image folder's skipped files and dropped classes
    }
    if not run.chief:
        shutil.rmtree(run.write_dir, ignore_errors=True)
        return results
    write_atomically(run.path(layout.RESULTS), json.dumps(results, indent=2) + "\n")
    log(progress.final_line(results, run.path(layout.RESULTS)))
    return results


def export_from_checkpoint(config, strategy, log=print):
    """Exports the latest checkpoint of `config`'s model dir (averaged weights where kept)."""
    plan = preflight(config, strategy)
    if not os.path.isdir(os.path.join(config.model_dir, layout.CHECKPOINTS)):
        raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
    with _writer(config, strategy, log), preemption.stop_signals(strategy):
        run = build_run(config, strategy, log, plan)
        if run.checkpoint_manager.latest_checkpoint is None:
            raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
        if config.early_stopping:   # the best holdout epoch's, as train() exports
            early_stopping.restore_best(run)
        with run.averaged():
            path = export_saved_model(run.network, run.preprocessing, run.path(layout.EXPORT),
                                      dataset_record(run))
    log(f"bnreg: exported {run.checkpoint_manager.latest_checkpoint} to {path}")
    return path

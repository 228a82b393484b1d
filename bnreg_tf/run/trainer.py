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
from bnreg_tf.run.checkpoints import writing
from bnreg_tf.run.dirguard import undo_on_failure
from bnreg_tf.run.history import read_rows
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.export import export_saved_model
from bnreg_tf.run.inputs import eval_dataset
from bnreg_tf.run.preflight import preflight
from bnreg_tf.run.results import data_checks, dataset_record, evaluate_split, split_results
from bnreg_tf.run.rundir import check_model_dir, remove_leftovers, resolve_revision
from bnreg_tf.run.runlock import RunLock
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
    """The chief's exclusive hold on the model dir: checked, locked, checked again, tidied.
    Yields whether the dir is fresh (no config.json yet: its start-up is all or nothing)."""
    if not is_chief(strategy):
        check_model_dir(config, writable=False)
        yield False
        return
    check_model_dir(config, compare=False)   # never lock (write) in a foreign dir
    with RunLock(config.model_dir, log):   # a busy dir is refused as busy, whatever its config
        fresh = not check_model_dir(config)
        remove_leftovers(config.model_dir, log)
        yield fresh


def train(config, strategy, log=print, verbose=None):
    """Trains (or resumes) the run `config` describes under `strategy`; returns the results dict.

    `verbose`: None (default) picks the progress output (`bnreg_tf.run.progress`): Keras' bar on
    a terminal, progress lines otherwise, nothing when BNREG_QUIET is set; 0 = silent.
    Raises ConfigError (bad flags, data or model dir), RunDirBusy (another process holds the
    model dir), NonFiniteLoss, WriteFailed (the machine refused a checkpoint, the export or
    results.json), or preemption.Preempted (SIGTERM/SIGINT: in training after a checkpoint at
    the step; at start-up, in the final evaluation or the export at once).
    `--revision=0` becomes the run dir's revision, or the newest for a new run (`rundir`).
    Guarantees: a fresh model dir whose start-up fails (a refused --init_from, a signal, a full
    disk) is left as it was found (its empty lock file aside); nothing outside it is written.
    """
    with preemption.stop_signals(strategy):
        with preemption.interruptible("during start-up"):
            config = resolve_revision(config)
            plan = preflight(config, strategy)
        with _writer(config, strategy, log) as fresh:
            return _train(config, strategy, log, verbose, plan, fresh)


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


def _callbacks(run, guard, monitor, epoch_log):
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
    callbacks += [epoch_log,   # before the Checkpointer: each checkpoint holds its epoch's row
                  cb.Checkpointer(run.checkpoint_manager, guard, config.checkpoint_steps)]
    if run.chief:
        callbacks.append(cb.TensorBoardLog(run.path(layout.TENSORBOARD), config))
    # Last: a stop raises after everything else has seen the step (or the epoch's end).
    return callbacks + [preemption.stop_callback(run.strategy, run.checkpoint_manager)]


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


def _say_restart(run, log):
    """One line when a run that shows progress (log.csv rows, results.json) starts from step 0
    because no checkpoint is left."""
    try:
        rows = read_rows(run.path(layout.LOG))
        epochs = len(rows) - 1 if rows and rows[0][:2] == ["epoch", "step"] else 0
    except ValueError:
        epochs = 0
    finished = os.path.exists(run.path(layout.RESULTS))
    if epochs or finished:
        shown = f"{epochs} finished epoch(s) in log.csv" if epochs else "results.json"
        log(f"bnreg: {run.config.model_dir} shows {shown} but holds no checkpoint: starting "
            "over from step 0 (the old rows of log.csv are dropped)")


def _start(config, strategy, log, plan):
    """Start-up: config.json, the objects (restored), the history, the norms at init."""
    if is_chief(strategy) and not os.path.exists(os.path.join(config.model_dir, layout.CONFIG)):
        write_atomically(os.path.join(config.model_dir, layout.CONFIG), config.to_json() + "\n")
    run = build_run(config, strategy, log, plan)
    os.makedirs(run.write_dir, exist_ok=True)
    log = log if run.chief else silent
    log(progress.summary(run, run.path(layout.CONFIG)))
    if run.chief and run.start_step == 0:
        _say_restart(run, log)
    epoch_log = cb.EpochLog(os.path.join(run.write_dir, layout.LOG), run.steps_per_epoch,
                            run.history, log)
    epoch_log.prepare(run.start_step, run.restored)
    return run, _norm_monitor(run), epoch_log


def _train(config, strategy, log, verbose, plan, fresh):
    with preemption.interruptible("during start-up"), undo_on_failure(config.model_dir, fresh):
        run, monitor, epoch_log = _start(config, strategy, log, plan)
    report, log = log, (log if run.chief else silent)
    preemption.watch_checkpoints(run.checkpoint_manager.directory)
    guard = cb.NonFiniteGuard()
    if run.start_step < run.total_steps:
        if run.start_step:
            log(f"bnreg: resuming from {run.checkpoint_manager.latest_checkpoint} "
                f"(step {run.start_step})")
        keras_verbose, shown = progress.choose(verbose if run.chief else 0, config,
                                               run.steps_per_epoch)
        # Any other write of the loop (log.csv, TensorBoard, early stopping's checkpoint) that
        # the machine refuses is one line too (save_once names a failed checkpoint itself).
        with writing(f"to {config.model_dir} during training",
                     lambda: run.checkpoint_manager.latest_checkpoint, machine_only=True):
            _fit(run, _callbacks(run, guard, monitor, epoch_log) + shown, keras_verbose, guard)
    if guard.tripped is not None:
        good = run.checkpoint_manager.latest_checkpoint
        branch = (f"; to go on with other settings (e.g. a lower --learning_rate), start a new "
                  f"run from it: --init_from={config.model_dir} --model_dir=NEW_DIR") if good else ""
        raise cb.NonFiniteLoss(
            f"loss became non-finite at step {guard.tripped}; training stopped. Last good "
            f"checkpoint: {good or 'none saved yet'}{branch}")
    with preemption.interruptible("after training, before the final evaluation"):
        best = early_stopping.restore_best(run) if config.early_stopping else None
    results = finish(run, monitor, log)
    if best and run.chief:   # the evaluated and exported weights are the best epoch's
        results.update(best)
        _write_results(run, results)
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


def _write_results(run, results):
    with writing(run.path(layout.RESULTS), run.checkpoint_manager.latest_checkpoint, _FINISH):
        write_atomically(run.path(layout.RESULTS), json.dumps(results, indent=2) + "\n")


_FINISH = "repeat the command to finish the run (its final evaluation and export)"


def _export(run):
    """The SavedModel of `run` in its model dir; a signal stops it (Preempted) and a write the
    machine refuses is WriteFailed; either way no half export is left and the old one stays."""
    path = run.path(layout.EXPORT)
    with preemption.interruptible("during the export"), \
            writing(f"the export {path}", run.checkpoint_manager.latest_checkpoint, _FINISH):
        return export_saved_model(run.network, run.preprocessing, path, dataset_record(run))


def finish(run, monitor, log=print):
    """Final evaluation (averaged weights where the recipe has them), results.json and export.

    A stop signal during the evaluation or the export raises Preempted at once (the run's last
    checkpoint holds the trained state: repeating the command finishes it)."""
    config = run.config
    with run.averaged():
        scores = {}   # the holdout (unless --noholdout), then the test split, scored once
        with preemption.interruptible("during the final evaluation"):
            for role, split in (("validation", run.eval_split), ("test", run.splits.test)):
                if split:
                    scores[role] = evaluate_split(run, split)
            probe = NormMonitor(monitor.probe)
            probe.set_model(run.trainer)
            final_norms = probe.measure()
        export_path = _export(run) if config.export and run.chief else None
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
    _write_results(run, results)
    log(progress.final_line(results, run.path(layout.RESULTS)))
    return results


def export_from_checkpoint(config, strategy, log=print):
    """Exports the latest checkpoint of `config`'s model dir (averaged weights where kept);
    a stop signal or a write the machine refuses ends it as in `finish`."""
    with preemption.stop_signals(strategy), preemption.interruptible("during start-up"):
        config = resolve_revision(config)
        plan = preflight(config, strategy)
    if not os.path.isdir(os.path.join(config.model_dir, layout.CHECKPOINTS)):
        raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
    with preemption.stop_signals(strategy), _writer(config, strategy, log):
        with preemption.interruptible("during start-up"):
            run = build_run(config, strategy, log, plan)
        if run.checkpoint_manager.latest_checkpoint is None:
            raise ConfigError(f"--model_dir={config.model_dir}: no checkpoint to export")
        preemption.watch_checkpoints(run.checkpoint_manager.directory)
        if config.early_stopping:   # the best holdout epoch's, as train() exports
            early_stopping.restore_best(run)
        with run.averaged():
            path = _export(run)
    log(f"bnreg: exported {run.checkpoint_manager.latest_checkpoint} to {path}")
    return path

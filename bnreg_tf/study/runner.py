"""Running a study: `run_study` trains and scores this shard's runs under the process's one
strategy; `collect` reads back what an output dir holds (`--report_only`).

Each run goes through the same code as the binaries: `trainer.train` (as `bnreg-train`), then
`evaluate.score` on the exported SavedModel's test split (as `bnreg-eval`), plus CIFAR-10-C on
CIFAR-10 (tuning runs are not exported or scored on test).
- a run is claimed with the run dir's lock (`runlock.RunLock`) before it trains, so shards,
  repeated invocations or hosts sharing a file system never train it twice at the same time;
- a run with `study.json` is finished and reused only if its `config.json` equals the config
  asked (else ConfigError naming the run and field, or `rerun_changed` moves it to `replaced/`);
- an interrupted run resumes from its checkpoint; a failed one is recorded (its `study.json` says
  so, so other shards know phase 1 is done), the others go on, and the next invocation retries it;
- `shard=(I, N)` takes every N-th run from the I-th of each phase: N processes (one per GPU, or an
  array job) split the grid, and `collect` merges their results. Phase 2 is planned by whichever
  process finds phase 1 complete; a shard that finds it incomplete stops after its share.
"""
import json
import os
import time
import traceback

import keras

from bnreg_tf.data import pipeline
from bnreg_tf.files import write_atomically
from bnreg_tf.run import dirguard, evaluate, inputs, layout, preemption, preflight, rundir, runlock
from bnreg_tf.run import trainer
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.strategies import is_chief
from bnreg_tf.study.records import (_curves, _others, _record, _replace, _study_record,
                                    check_reuse, describe, finished_problem,
                                    read_study_record)
from bnreg_tf.study.selection import final_runs
from bnreg_tf.study.signal import _try_signal_propagation


def check_data(study):
    """Every split a run reads (train, holdout, test) is there: one line naming what is missing.

    Reading data initialises TensorFlow's devices: call it after the strategy is made.
    """
    preflight.read_splits(study.base, inputs.plan(study.base)[1])   # train, holdout and test


def run_one(spec, strategy, output_dir, rerun_changed=False, log=print):
    """Claims, trains and scores one run; returns its record (also written to `study.json`).

    Status: "ok" (trained now, or "skipped": finished before with the same config), "failed"
    (the error is recorded; the study goes on), or "busy" (another process holds the run).
    """
    chief = is_chief(strategy)
    dirguard.check_inside(output_dir, spec.config.model_dir, "--output_dir")
    lock = runlock.RunLock(spec.config.model_dir, log) if chief else None
    try:
        if lock:
            lock.acquire()
    except runlock.RunDirBusy as error:
        return {**_record(spec), "status": "busy", "error": str(error)}
    try:
        finished = _study_record(spec, log)   # read again under the lock: another may be done
        previous = rundir.read_config(spec.config.model_dir)
        if previous and rundir.first_difference(previous, spec.config):
            if not rerun_changed:
                raise ConfigError(f"run {spec.name} has another config; use --rerun_changed")
            if chief:
                _replace(spec, output_dir, log)
            finished = None
        if finished is not None and finished["status"] == "ok":
            problem = finished_problem(spec)
            if problem is None:
                return {**finished, "skipped": True}
            log(f"bnreg-study: {spec.name}: {problem}; the run is finished again to rebuild it")
        return _train_and_score(spec, strategy, chief)
    finally:
        if lock:
            lock.release()


def _train_and_score(spec, strategy, chief):

    start = time.time()
    record = _record(spec)
    try:
        config = spec.config
        results = trainer.train(config, strategy, log=lambda *_: None, verbose=0)
        # The holdout's accuracy (bnreg-train's key before and after it reported both splits).
        holdout = results.get("validation_accuracy", results.get("eval_accuracy")) \
            if config.holdout else results.get("validation_accuracy")
        record.update(status="ok", val_accuracy=holdout, eval_split=results.get("eval_split"),
                      curves=_curves(config.model_dir, results), steps=results["steps"])
        if "best_epoch" in results:
            record["best_epoch"] = results["best_epoch"]
        if results["export"]:   # the chief's; other workers only train
            with preemption.interruptible(f"while scoring run {spec.name}"):
                _score(record, results["export"], config)
    except preemption.Preempted:
        raise
    except Exception as error:  # a failed run is reported; the study goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0],
                      traceback=traceback.format_exc(limit=5))
    finally:
        keras.backend.clear_session()
    record["seconds"] = time.time() - start
    if chief:   # a failed run's record too: other shards see phase 1 as done; it is retried
        write_atomically(os.path.join(spec.config.model_dir, layout.STUDY_RECORD),
                         json.dumps(record, indent=2))
    return record


def _score(record, export, config):
    """The test-split scores of a run's export (as bnreg-eval), into `record`."""
    loaded = evaluate.load_saved_model(export)
    test_split = inputs.plan(config)[1].test
    batches = pipeline.raw_dataset(config.dataset, test_split, config.data_dir,
                                   config.download, config.eval_batch_size)
    scores = evaluate.score(loaded, batches, 0.5, 5, config.seed)
    record.update(
        test_accuracy=scores["accuracy"], dropout_accuracy=scores["dropout_accuracy"],
        dropout_drop=scores["dropout_drop"], embedding_norm_sq=scores["embedding_norm_sq"],
        output_norm_sq=scores["output_norm_sq"])
    if config.dataset == "cifar10":
        record["cifar10_c"] = evaluate.cifar10_c(loaded, config.data_dir,
                                                 config.eval_batch_size)["mean"]


def _run_phase(runs, study, strategy, shard, rerun_changed, log):
    index, count = shard
    mine = {spec.name for spec in runs[index::count]}
    records, done = [], 0
    for spec in runs:
        if spec.name not in mine:
            records.append(_others(spec))
            continue
        preemption.raise_if_received(f"before run {spec.name}")
        record = run_one(spec, strategy, study.output_dir, rerun_changed, log)
        records.append(record)
        done += 1
        log(f"[{done}/{len(mine)}] {spec.name}: {describe(record)}")
    return records


def run_study(study, strategy, shard=(0, 1), rerun_changed=False, log=print):
    """Trains and scores this shard's runs of `study` under `strategy` (the process's one).

    Returns a record per run: this shard's outcomes, the finished runs of others, and "pending"
    for the rest. Under the paper protocol phase 2 follows in the same call once phase 1 is
    complete (all shards' tuning runs finished); until then `final_runs` is None and the caller
    says so. SIGTERM/SIGINT stop after the current run's checkpoint (`preemption.Preempted`).
    The chief of shard 0 first measures the signal propagation plots (`signal_propagation`)
    unless the output dir holds them.
    """
    check_reuse(study, rerun_changed)
    runs = list(study.runs)
    if shard[0] == 0 and is_chief(strategy):
        _try_signal_propagation(study, log)
    with preemption.stop_signals(strategy):
        records = _run_phase(runs, study, strategy, shard, rerun_changed, log)
        if study.protocol == "paper":
            finals = final_runs(study, records)
            if finals is not None:
                check_reuse(study, rerun_changed, finals)
                log(f"bnreg-study: phase 1 complete; phase 2: {len(finals)} runs of the chosen "
                    "settings on the full training split")
                records += _run_phase(finals, study, strategy, shard, rerun_changed, log)
    return records


def check_report_only(study):
    """`--report_only` needs some of this grid's runs in the output dir; a report of an empty
    dir, or of this grid over another grid's runs, would replace that dir's report with an
    all-pending one. Raises ConfigError (one line) before anything is written."""
    if any(os.path.isdir(spec.config.model_dir) for spec in study.runs):
        return
    runs_dir = os.path.join(study.output_dir, layout.STUDY_RUNS)
    others = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    if others:
        raise ConfigError(f"--report_only: {runs_dir} holds none of this grid's "
                          f"{len(study.runs)} runs but others (e.g. {others[0]!r}): give the "
                          "flags the study ran with (--preset, --variants, --seeds, "
                          "--coefficients, ...)")
    raise ConfigError(f"--report_only: no runs of this study in {study.output_dir}: train "
                      "them first (the same command without --report_only)")


def collect(study, log=print):
    """The records of every run of `study` that its output dir holds ("pending" for the rest);
    phase 2's once phase 1 is complete. Measures the signal propagation plots if the output dir
    lacks them (`signal_propagation`)."""
    check_reuse(study)
    _try_signal_propagation(study, log)
    for spec in study.runs:
        problem = read_study_record(spec)[1]
        if problem:
            log(f"bnreg-study: {os.path.join(spec.config.model_dir, layout.STUDY_RECORD)} "
                f"{problem}; reported as pending: repeat the study without --report_only to "
                "rebuild it")
    records = [_others(spec) for spec in study.runs]
    for record in records:
        record.pop("skipped", None)
    if study.protocol == "paper":
        finals = final_runs(study, records)
        if finals is not None:
            check_reuse(study, False, finals)
            records += [{k: v for k, v in _others(spec).items() if k != "skipped"}
                        for spec in finals]
    return records


def shard_names(study, records, shard):
    """The names of the runs shard `(I, N)` trains: its share of each phase."""
    index, count = shard
    names = {spec.name for spec in study.runs[index::count]}
    finals = final_runs(study, records) if study.protocol == "paper" else None
    return names | {spec.name for spec in (finals or [])[index::count]}

"""What a study knows of its runs: each run dir's `study.json` record, read back and checked
against the config asked (`check_reuse`), and how a record is said (`describe`).

bnreg's own files are read back as untrusted input: a `study.json` that is not the record bnreg
writes for that run (not an object, no or another status, another run's name, fields of the
wrong type) is treated as absent (the run is trained again, resuming from its checkpoint, and
the record rebuilt), with a line naming it; so is a finished run whose `results.json` is not
bnreg's (`finished_problem`)."""
import csv
import json
import os
import shutil
import time

from bnreg_tf.files import json_kind
from bnreg_tf.run import inputs, layout, rundir
from bnreg_tf.run.config import ConfigError
from bnreg_tf.study.variants import VARIANTS


_NUMBER = (int, float)
_OK_FIELDS = {"seconds": _NUMBER, "steps": int, "val_accuracy": _NUMBER + (type(None),),
              "test_accuracy": _NUMBER + (type(None),), "curves": (dict, type(None))}


def record_problem(record, spec):
    """Why `record` (parsed study.json) is not the record bnreg writes for `spec`, or None."""
    if not isinstance(record, dict):
        return f"holds {json_kind(record)}, not a record"
    if "status" not in record:
        return "has no status"
    if record["status"] not in ("ok", "failed"):
        return f"has status {record['status']!r}, not 'ok' or 'failed'"
    if record.get("run") != spec.name:
        return (f"is the record of run {record['run']!r}, not {spec.name!r}" if "run" in record
                else "has no run name")
    fields = _OK_FIELDS if record["status"] == "ok" else {"error": str}
    for name, kinds in fields.items():
        value = record.get(name, KeyError)
        if value is KeyError and record["status"] == "ok" and name == "test_accuracy":
            continue   # tuning runs are not scored on test
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"has no valid {name!r}"
    return None


def read_study_record(spec):
    """`(record, problem)`: the run's study.json (None if absent or unusable) and why it could
    not be used (None if it could, or was absent)."""
    path = os.path.join(spec.config.model_dir, layout.STUDY_RECORD)
    if not os.path.exists(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        return None, f"unreadable ({type(error).__name__})"
    found = record_problem(record, spec)
    return (None, found) if found else (record, None)


def _study_record(spec, log=None):
    """The run's usable study.json record or None; `log` gets a line when one was unusable."""
    record, found = read_study_record(spec)
    if found and log:
        log(f"bnreg-study: {os.path.join(spec.config.model_dir, layout.STUDY_RECORD)} {found}; "
            "the run is finished again and its record rebuilt")
    return record


def finished_problem(spec):
    """Why a run recorded as finished cannot be reused (its results.json is not bnreg's), or
    None: then the run is finished again (it resumes at its final evaluation and export)."""
    path = os.path.join(spec.config.model_dir, layout.RESULTS)
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except FileNotFoundError:
        return f"{path} is missing"
    except (ValueError, UnicodeDecodeError, OSError) as error:
        return f"{path} is unreadable ({type(error).__name__})"
    if not isinstance(results, dict) or not isinstance(results.get("steps"), int) or \
            not isinstance(results.get("eval_accuracy"), _NUMBER):
        return f"{path} is not bnreg's results"
    return None


def _finished(spec):
    """The stored record of a run that finished (ok) or failed (to be retried), else None."""
    return _study_record(spec)


def changed_runs(study, runs=None):
    """The runs (default: the planned ones) whose dir holds a config.json of another config:
    [(spec, field, old, new)]."""
    changed = []
    for spec in study.runs if runs is None else runs:
        previous = rundir.read_config(spec.config.model_dir)
        difference = previous and rundir.first_difference(previous, spec.config)
        if difference:
            changed.append((spec, *difference))
    return changed


def check_reuse(study, rerun_changed=False, runs=None):
    """Refuses (one line) to reuse or resume a run trained with another config, unless
    `rerun_changed`; returns the names of the runs that will be retrained from scratch."""
    changed = changed_runs(study, runs)
    if changed and not rerun_changed:
        spec, field, old, new = changed[0]
        more = f" (and {len(changed) - 1} more runs)" if len(changed) > 1 else ""
        raise ConfigError(
            f"run {spec.name} in {study.output_dir} was trained with --{field}={old!r}, now "
            f"{new!r} is asked{more}; use a new --output_dir, or --rerun_changed to retrain them")
    return [spec.name for spec, *_ in changed]


def _replace(spec, output_dir, log):
    """Moves a changed run's files to `<output_dir>/replaced/<run>-<time>/` (nothing is lost)."""
    target = os.path.join(output_dir, layout.STUDY_REPLACED,
                          f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(target, exist_ok=True)
    for entry in os.listdir(spec.config.model_dir):
        if entry != layout.LOCK:
            shutil.move(os.path.join(spec.config.model_dir, entry), os.path.join(target, entry))
    log(f"bnreg-study: {spec.name} had another config; its files moved to {target}")


def _record(spec):
    config = spec.config
    return {"run": spec.name, "phase": spec.phase, "variant": spec.variant, "seed": spec.seed,
            "coefficient": spec.coefficient,
            "coefficient_field": VARIANTS[spec.variant]["coefficient"] or "",
            "learning_rate": config.learning_rate,
            "holdout": config.holdout,
            "train_examples": inputs.plan(config)[1].train_examples,
            "model_dir": config.model_dir}


def _others(spec):
    finished = _finished(spec)
    if finished is None:
        return {**_record(spec), "status": "pending"}
    return {**finished, "skipped": True} if finished["status"] == "ok" else finished


def describe(record):
    """A record as the study's progress line says it."""
    if record["status"] == "ok":
        if record.get("skipped"):
            return "skipped (finished before with the same config)"
        test = record.get("test_accuracy")
        return (f"test acc {test:.4f}, " if test is not None else "") + \
            f"{record['seconds']:.0f} s"
    if record["status"] == "busy":
        return f"busy: {record['error']}"
    return f"FAILED: {record['error']}"


def _curves(model_dir, results):
    """Per-epoch val accuracy and probe norms from log.csv, with the values at init first."""
    path = os.path.join(model_dir, layout.LOG)
    if not os.path.exists(path):   # a non-chief worker writes no log
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    initial = results.get("initial_norms") or {}
    return {
        "epoch": [0] + [int(r["epoch"]) for r in rows],   # log.csv counts epochs from 1
        # No holdout (--noholdout, the paper protocol's final runs): no per-epoch accuracy.
        "val_accuracy": [None] + [float(r["val_accuracy"]) if r.get("val_accuracy") else None
                                  for r in rows],
        "embedding_norm_sq": [initial.get("probe_embedding_norm_sq")] +
                             [float(r["probe_embedding_norm_sq"]) for r in rows],
        "output_norm_sq": [initial.get("probe_output_norm_sq")] +
                          [float(r["probe_output_norm_sq"]) for r in rows],
    }

"""The deconstruction study (paper Tables 1-4, Figures 2-3): a grid of variants x seeds x coefficients.

`make_study` turns the grid flags into a `Study` (every run's config checked, the data found and
the grid's flags validated before anything is written); `run_study` trains and scores its runs
under the process's one strategy; `collect` reads back what an output dir holds (`--report_only`).

Two protocols (`PROTOCOLS`): `holdout` trains every setting of the grid on the training split
minus the holdout and scores it on test; `paper` (section 4 of the paper) tunes each variant's
grid (coefficients x learning rates x tuning seeds) on the holdout in phase 1, chooses per variant
the best median holdout accuracy (`selection`), and in phase 2 retrains that setting with every
seed on the full training split (`final_runs`), scored on test. Run names say phase and setting:
`tune_fixup_el2_c0.1_lr0.1_s0`, `final_fixup_el2_c0.1_lr0.1_s3` (holdout protocol: no prefix).

Each run goes through the same code as the binaries: `trainer.train` (as `bnreg-train`), then
`evaluate.score` on the exported SavedModel's test split (as `bnreg-eval`), plus CIFAR-10-C on
CIFAR-10 (tuning runs are not exported or scored on test). Runs live in
`<output_dir>/runs/<run name>/`:
- a run is claimed with the run dir's lock (`rundir.RunLock`) before it trains, so shards,
  repeated invocations or hosts sharing a file system never train it twice at the same time;
- a run with `study.json` is finished and reused only if its `config.json` equals the config
  asked (else ConfigError naming the run and field, or `rerun_changed` moves it to `replaced/`);
- an interrupted run resumes from its checkpoint; a failed one is recorded (its `study.json` says
  so, so other shards know phase 1 is done), the others go on, and the next invocation retries it;
- `shard=(I, N)` takes every N-th run from the I-th of each phase: N processes (one per GPU, or an
  array job) split the grid, and `collect` merges their results. Phase 2 is planned by whichever
  process finds phase 1 complete; a shard that finds it incomplete stops after its share.
The signal propagation plots at initialisation (Brock et al. 2021a) are measured once per norm
mode, not per run, into `<output_dir>/signal_propagation.json` (`signal_propagation`).
"""
import dataclasses
import json
import math
import os
import shutil
import time
import traceback

import numpy as np

from bnreg_tf.files import write_atomically
from bnreg_tf.run import preemption, rundir
from bnreg_tf.run import inputs, preflight
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.models import model_entry
from bnreg_tf.run.presets import STUDY_PRESETS, StudyPreset, preset

# The paper's ablation variants (docs/references.md §2.1). `coefficient` names the config field
# that a coefficient sweep sets for the variant (None: the variant has no coefficient).
VARIANTS = {
    "batchnorm": dict(changes=dict(norm="batchnorm"), coefficient=None),
    "fixup": dict(changes=dict(norm="fixup"), coefficient=None),
    "fixup_kl": dict(changes=dict(norm="fixup_standardize"), coefficient="standardization_kl"),
    "fixup_el2": dict(changes=dict(norm="fixup"), coefficient="embedding_l2"),
    "fixup_fl2": dict(changes=dict(norm="fixup"), coefficient="functional_l2"),
    "single_bn": dict(changes=dict(norm="single_bn"), coefficient=None),
    "single_bn_fixup": dict(changes=dict(norm="fixup_single_bn"), coefficient=None),
    "fixup_dropout": dict(changes=dict(norm="fixup"), coefficient="dropout"),
    # The same penalties on the preset's own normalisation (EfficientNet keeps its BatchNorm).
    "el2": dict(changes={}, coefficient="embedding_l2"),
    "fl2": dict(changes={}, coefficient="functional_l2"),
    "dropout": dict(changes={}, coefficient="dropout"),
    # Beyond the paper: the normalizer-free lineage (issue 18; resnet/norm.py MODES).
    # SkipInit (De & Smith 2020), NF-ResNet (Brock et al. 2021a), and NF-ResNet with adaptive
    # gradient clipping (Brock et al. 2021b), whose coefficient is AGC's clipping threshold.
    "skipinit": dict(changes=dict(norm="skipinit"), coefficient=None),
    "skipinit_el2": dict(changes=dict(norm="skipinit"), coefficient="embedding_l2"),
    "nf_resnet": dict(changes=dict(norm="nf_resnet"), coefficient=None),
    "nf_resnet_agc": dict(changes=dict(norm="nf_resnet"), coefficient="agc"),
    "nf_resnet_el2": dict(changes=dict(norm="nf_resnet"), coefficient="embedding_l2"),
}


PROTOCOLS = {
    # Every run of the grid trains on the training split minus the holdout, is scored on test.
    "holdout": "every setting trained on the training split minus the holdout, scored on the "
               "test split",
    # The paper's (section 4; docs/references.md §3.6): tune each variant's grid on the holdout
    # (phase 1), retrain the chosen setting on the full training split with every seed and score
    # it on test (phase 2). EfficientNet's early stopping keeps the holdout in phase 2 too.
    "paper": "phase 1 tunes each variant's grid on the holdout; phase 2 retrains the chosen "
             "setting on the full training split with every seed and scores it on the test split",
}
PENALTY_FIELDS = ("standardization_kl", "embedding_l2", "functional_l2", "dropout")
# Config fields a variant's coefficient can set: the penalties and AGC's clipping threshold.
# A run gets only its own variant's (the others are 0: off).
COEFFICIENT_FIELDS = PENALTY_FIELDS + ("agc",)
@dataclasses.dataclass(frozen=True)
class RunSpec:
    name: str
    variant: str
    seed: int
    coefficient: float       # 0 when the variant has none
    config: object
    phase: str = "holdout"   # "holdout" (holdout protocol), "tune" or "final" (paper protocol)

    @property
    def learning_rate(self):
        return self.config.learning_rate


def _run_name(phase, variant, coefficient, learning_rate, seed, name_rate):
    """`[tune_|final_]<variant>[_c<coef>][_lr<lr>]_s<seed>`: the phase and the whole setting."""
    prefix = "" if phase == "holdout" else f"{phase}_"
    coefficient = f"_c{coefficient:g}" if VARIANTS[variant]["coefficient"] else ""
    rate = f"_lr{learning_rate:g}" if name_rate else ""
    return f"{prefix}{variant}{coefficient}{rate}_s{seed}"


def _spec(base, variant, coefficient, learning_rate, seed, phase, output_dir, name_rate):
    field = VARIANTS[variant]["coefficient"]
    # Each variant adds its one mechanism: the other penalties (and Dropout) are off.
    changes = {name: 0.0 for name in COEFFICIENT_FIELDS if name != field}
    changes.update(VARIANTS[variant]["changes"])
    name = _run_name(phase, variant, coefficient, learning_rate, seed, name_rate)
    changes.update(seed=seed, learning_rate=learning_rate,
                   model_dir=os.path.join(output_dir, "runs", name))
    if phase == "tune":   # tuning runs are judged on the holdout only: no export, no test score
        changes.update(holdout=True, export=False)
    elif phase == "final":   # the full training split, unless early stopping needs the holdout
        changes.update(holdout=base.early_stopping, export=True)
    if field:
        changes[field] = coefficient
    return RunSpec(name, variant, seed, coefficient, base.replace(**changes), phase)


def grid_of(study_preset, variant, base, sweep, explicit):
    """A variant's coefficients: the sweep, else its flag given explicitly (`explicit`: the
    coefficient flags given, `{field: value}`), else the preset's grid, else the base config's."""
    field = VARIANTS[variant]["coefficient"]
    if field is None:
        return (0.0,)
    if sweep:
        return tuple(sweep)
    if field in explicit:
        return (explicit[field],)
    if field not in study_preset.coefficients:
        return (getattr(base, field),)
    return tuple(study_preset.coefficients[field])


def plan(base, study, variants, seeds, sweep, output_dir, explicit=None, learning_rates=(),
         protocol="holdout", tuning_seeds=(0,)):
    """The RunSpecs planned up front: every run of the holdout protocol, or the paper protocol's
    phase 1 (each variant's grid x learning rates x tuning seeds, on the holdout)."""
    rates = tuple(learning_rates) or (base.learning_rate,)
    name_rate = len(rates) > 1 or protocol == "paper"
    phase = "tune" if protocol == "paper" else "holdout"
    runs = []
    for variant in variants:
        for coefficient in grid_of(study, variant, base, sweep, explicit or {}):
            for rate in rates:
                for seed in (tuning_seeds if protocol == "paper" else seeds):
                    runs.append(_spec(base, variant, coefficient, rate, seed, phase, output_dir,
                                      name_rate))
    return runs


@dataclasses.dataclass(frozen=True)
class Study:
    """One study: its preset, the base training config and the planned runs (under the paper
    protocol, phase 1's; phase 2's follow from their results: `final_runs`)."""

    name: str
    preset: StudyPreset
    base: object
    variants: tuple
    seeds: tuple
    sweep: tuple
    output_dir: str
    runs: tuple
    protocol: str = "holdout"
    learning_rates: tuple = ()
    tuning_seeds: tuple = (0,)


def _list(flag, values, parse=str):
    """A grid flag's values: not empty, no duplicates, each parsed."""
    if values is None:
        return None
    if not values or any(not str(v).strip() for v in values):
        raise ConfigError(f"--{flag}: expected a non-empty comma-separated list, got "
                          f"{','.join(values)!r}")
    try:
        parsed = [parse(v) for v in values]
    except ValueError:
        raise ConfigError(f"--{flag}: expected comma-separated numbers, got {','.join(values)!r}") \
            from None
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--{flag}: lists {', '.join(duplicates) or 'a value'} twice; each "
                          "run would be counted twice")
    return parsed


def parse_shard(text):
    """`"I/N"` -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/8), got {text!r}") \
            from None
    return index, count


def make_study(name, given, variants=None, seeds=None, coefficients=None,
               output_dir="reports/study", protocol=None, learning_rates=None, tuning_seeds=None):
    """The checked grid of study preset `name` with the explicitly given run flags `given`.

    `variants`, `seeds`, `coefficients`, `learning_rates`: the grid flags as lists of strings
    (None: not given); `protocol` ("holdout" or "paper") and `tuning_seeds` (how many seeds
    phase 1 uses) default to the preset's.
    Raises ConfigError (one line) for an unknown preset, an empty or duplicated list, a negative
    seed, a coefficient no chosen variant uses or a bad run config (`check_data`: missing data).
    """
    if name not in STUDY_PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(STUDY_PRESETS)}, got {name!r}")
    chosen = STUDY_PRESETS[name]
    if "model_dir" in given:
        raise ConfigError("--model_dir: bnreg-study puts each run under --output_dir/runs/")
    for field in ("holdout", "export"):
        if field in given:
            raise ConfigError(f"--{field}: bnreg-study sets each run's training split and export "
                              "by --protocol (holdout: the holdout; paper: tuning on the "
                              "holdout, final runs on the full training split)")
    variants = _list("variants", variants) or list(chosen.variants)
    for variant in variants:
        if variant not in VARIANTS:
            raise ConfigError(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
    seeds = _list("seeds", seeds, int) or list(chosen.seeds)
    if any(not 0 <= seed < 2 ** 32 for seed in seeds):
        raise ConfigError(f"--seeds: expected integers in [0, 2^32), got "
                          f"{','.join(map(str, seeds))!r}")
    sweep = _list("coefficients", coefficients, float)
    if sweep and any(not (math.isfinite(c) and c >= 0) for c in sweep):
        raise ConfigError(f"--coefficients: expected finite numbers >= 0, got "
                          f"{','.join(coefficients)!r}")
    used = {VARIANTS[v]["coefficient"] for v in variants} - {None}
    if sweep and not used:
        raise ConfigError(f"--coefficients: none of the variants {', '.join(variants)} has a "
                          "coefficient to sweep")
    for field in sorted(used):
        if sweep and field in given:
            raise ConfigError(f"--{field}: give either --{field} or --coefficients (the sweep "
                              f"sets {field} of the variants that use it)")
    for field in COEFFICIENT_FIELDS:
        if field in given and field not in used and given[field]:
            users = [v for v, d in VARIANTS.items() if d["coefficient"] == field]
            raise ConfigError(f"--{field}={given[field]:g}: no chosen variant uses it (it is the "
                              f"coefficient of {', '.join(users)})")
    protocol = protocol or chosen.protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    rates = _list("learning_rates", learning_rates, float)
    if rates and any(not (math.isfinite(r) and r > 0) for r in rates):
        raise ConfigError(f"--learning_rates: expected finite numbers > 0, got "
                          f"{','.join(learning_rates)!r}")
    if rates and "learning_rate" in given:
        raise ConfigError("--learning_rate: give either --learning_rate or --learning_rates")
    rates = tuple(rates or (() if "learning_rate" in given else chosen.learning_rates))
    tuning_seeds = chosen.tuning_seeds if tuning_seeds is None else tuning_seeds
    if tuning_seeds < 1:
        raise ConfigError(f"--tuning_seeds: expected an integer >= 1, got {tuning_seeds}")
    if tuning_seeds != chosen.tuning_seeds and protocol != "paper":
        raise ConfigError("--tuning_seeds: only the paper protocol has a tuning phase "
                          "(--protocol=paper)")
    output_dir = os.path.abspath(output_dir)
    # A coefficient flag sets its variants' coefficient, never the base run's (where it may not
    # apply: KL needs its variant's norm mode).
    explicit = {field: given[field] for field in COEFFICIENT_FIELDS if field in given}
    base = preset(chosen.training_preset).replace(
        **{**chosen.changes, **{k: v for k, v in given.items() if k not in explicit},
           "holdout": True, "export": True, "model_dir": "<per run>"})
    runs = plan(base, chosen, variants, seeds, sweep, output_dir, explicit, rates, protocol,
                tuple(range(tuning_seeds)))
    if protocol == "paper":   # phase 2's configs are checked now too, one per variant
        rate = rates[0] if rates else base.learning_rate
        runs_to_check = runs + [_spec(base, v, grid_of(chosen, v, base, sweep, explicit)[0],
                                      rate, seeds[0], "final", output_dir, True)
                                for v in variants]
    else:
        runs_to_check = runs
    names = [spec.name for spec in runs]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise ConfigError(f"--coefficients/--learning_rates: values too close to tell apart in "
                          f"run names ({clash[0]}); use values that differ in 6 digits")
    for spec in runs_to_check:
        try:
            preflight.check(spec.config)
        except ConfigError as error:
            raise ConfigError(f"{error} (run {spec.name})") from None
    return Study(name, chosen, base, tuple(variants), tuple(seeds), tuple(sweep or ()),
                 output_dir, tuple(runs), protocol, rates, tuple(range(tuning_seeds)))


def selection(study, records):
    """The paper protocol's choice per variant from phase 1's records.

    Returns `{"complete": bool, "finished": k, "total": n, "variants": {variant: {"settings":
    [{"coefficient", "learning_rate", "accuracies", "failed", "median"}], "choice": (coefficient,
    learning_rate) or None}}}`. The choice is the best median holdout accuracy over the tuning
    seeds; ties go to the smaller coefficient, then to the smaller learning rate (the paper's
    default 0.1 before the larger 0.2: the more conservative setting). A setting whose every run
    failed (diverged) is not eligible. Phase 1 is complete when every tuning run has finished or
    failed (not pending or busy).
    """
    tune = [r for r in records if r.get("phase") == "tune"]
    finished = [r for r in tune if r["status"] in ("ok", "failed")]
    result = {"complete": len(finished) == len(tune) and bool(tune), "finished": len(finished),
              "total": len(tune), "variants": {}}
    for variant in study.variants:
        settings = {}
        for record in tune:
            if record["variant"] == variant:
                key = (record["coefficient"], record["learning_rate"])
                entry = settings.setdefault(key, {"coefficient": key[0], "learning_rate": key[1],
                                                  "accuracies": [], "failed": 0, "pending": 0})
                if record["status"] == "ok" and record.get("val_accuracy") is not None:
                    entry["accuracies"].append(record["val_accuracy"])
                elif record["status"] == "failed":
                    entry["failed"] += 1
                else:
                    entry["pending"] += 1
        for entry in settings.values():
            entry["median"] = float(np.median(entry["accuracies"])) if entry["accuracies"] \
                else None
        eligible = [e for e in settings.values() if e["median"] is not None]
        choice = min(eligible, key=lambda e: (-e["median"], e["coefficient"], e["learning_rate"])) \
            if eligible and result["complete"] else None
        result["variants"][variant] = {
            "settings": sorted(settings.values(),
                               key=lambda e: (e["coefficient"], e["learning_rate"])),
            "choice": (choice["coefficient"], choice["learning_rate"]) if choice else None}
    return result


def final_runs(study, records):
    """Phase 2 of the paper protocol: the chosen setting of each variant with every seed, on the
    full training split. None while phase 1 is incomplete (other shards, failures retried)."""
    chosen = selection(study, records)
    if not chosen["complete"]:
        return None
    runs = []
    for variant in study.variants:
        choice = chosen["variants"][variant]["choice"]
        if choice is None:
            continue   # every setting diverged: reported in the Selection section
        coefficient, rate = choice
        runs += [_spec(study.base, variant, coefficient, rate, seed, "final", study.output_dir,
                       True) for seed in study.seeds]
    return runs


def check_data(study):
    """Every split a run reads (train, holdout, test) is there: one line naming what is missing.

    Reading data initialises TensorFlow's devices: call it after the strategy is made.
    """
    preflight.read_splits(study.base, inputs.plan(study.base)[1])   # train, holdout and test


def _study_record(spec):
    path = os.path.join(spec.config.model_dir, "study.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        raise ConfigError(f"{path}: unreadable; delete it to score that run again") from None


def _finished(spec):
    """The stored record of a run that finished (ok) or failed (to be retried), else None."""
    record = _study_record(spec)
    return record if record and record.get("status") in ("ok", "failed") else None


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
    target = os.path.join(output_dir, "replaced", f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(target, exist_ok=True)
    for entry in os.listdir(spec.config.model_dir):
        if entry != rundir.LOCK_NAME:
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


def run_one(spec, strategy, output_dir, rerun_changed=False, log=print):
    """Claims, trains and scores one run; returns its record (also written to `study.json`).

    Status: "ok" (trained now, or "skipped": finished before with the same config), "failed"
    (the error is recorded; the study goes on), or "busy" (another process holds the run).
    """
    from bnreg_tf.run.strategies import is_chief

    chief = is_chief(strategy)
    lock = rundir.RunLock(spec.config.model_dir, log) if chief else None
    try:
        if lock:
            lock.acquire()
    except rundir.RunDirBusy as error:
        return {**_record(spec), "status": "busy", "error": str(error)}
    try:
        finished = _study_record(spec)   # read again under the lock: another process may be done
        previous = rundir.read_config(spec.config.model_dir)
        if previous and rundir.first_difference(previous, spec.config):
            if not rerun_changed:
                raise ConfigError(f"run {spec.name} has another config; use --rerun_changed")
            if chief:
                _replace(spec, output_dir, log)
            finished = None
        if finished is not None and finished["status"] == "ok":
            return {**finished, "skipped": True}
        return _train_and_score(spec, strategy, chief)
    finally:
        if lock:
            lock.release()


def _train_and_score(spec, strategy, chief):
    import keras

    from bnreg_tf.data import pipeline
    from bnreg_tf.run import evaluate, trainer

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
            loaded = evaluate.load_saved_model(results["export"])
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
    except preemption.Preempted:
        raise
    except Exception as error:  # a failed run is reported; the study goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0],
                      traceback=traceback.format_exc(limit=5))
    finally:
        keras.backend.clear_session()
    record["seconds"] = time.time() - start
    if chief:   # a failed run's record too: other shards see phase 1 as done; it is retried
        write_atomically(os.path.join(spec.config.model_dir, "study.json"),
                                json.dumps(record, indent=2))
    return record


def _others(spec):
    finished = _finished(spec)
    if finished is None:
        return {**_record(spec), "status": "pending"}
    return {**finished, "skipped": True} if finished["status"] == "ok" else finished


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
    from bnreg_tf.run.strategies import is_chief

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
    runs_dir = os.path.join(study.output_dir, "runs")
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
    import csv

    path = os.path.join(model_dir, "log.csv")
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


SIGNAL_PROPAGATION_FILE = "signal_propagation.json"
SIGNAL_PROPAGATION_EXAMPLES = 64   # images per probe (BatchNorm normalises with their statistics)


def study_norm_modes(study):
    """The norm modes of the study's variants, in variant order, each once."""
    return list(dict.fromkeys(VARIANTS[v]["changes"].get("norm", study.base.norm)
                              for v in study.variants))


def _signal_propagation_key(study):
    base = study.base
    return {"model": base.model, "dataset": base.dataset, "data_dir": base.data_dir,
            "image_size": base.image_size, "activation": base.activation,
            "seed": study.seeds[0], "examples": SIGNAL_PROPAGATION_EXAMPLES}


def _stored_modes(study):
    """`{mode: {input: rows}}` of `signal_propagation.json` if it was measured for this study's
    model, data, image size, activation, first seed and probe size; else (or unreadable) {}."""
    try:
        with open(os.path.join(study.output_dir, SIGNAL_PROPAGATION_FILE)) as f:
            stored = json.load(f)
        return dict(stored["modes"]) if stored["key"] == _signal_propagation_key(study) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_signal_propagation(study):
    """The stored signal propagation statistics of the study's norm modes, `{mode: {input:
    rows}}`, or None while `signal_propagation.json` lacks one of them."""
    stored, modes = _stored_modes(study), study_norm_modes(study)
    return {mode: stored[mode] for mode in modes} if all(m in stored for m in modes) else None


def _measure_signal_propagation(study, modes):
    """`{mode: {"gaussian": rows, "data": rows}}` for `modes`, built as the runs build their
    network (the study's first seed) and probed with the paper's N(0, 1) batch and with the
    same number of the study's evaluation images (`SignalPropagation`)."""
    import keras

    from bnreg_tf.nn.signal_propagation import SignalPropagation, gaussian_probe
    from bnreg_tf.run.models import build_network, native_image_size

    config = study.base.replace(seed=study.seeds[0], model_dir="", standardization_kl=0.0,
                                embedding_l2=0.0, functional_l2=0.0, dropout=0.0)
    spec, splits = inputs.plan(config)
    image_size = native_image_size(config, spec)
    preprocessing = inputs.preprocessing_for(config, image_size, spec, splits)
    images = next(iter(inputs.eval_dataset(
        config, preprocessing, splits.validation or splits.test, SIGNAL_PROPAGATION_EXAMPLES,
        limit=SIGNAL_PROPAGATION_EXAMPLES)))[0].numpy()
    probes = {"gaussian": gaussian_probe(images.shape[1:], len(images)), "data": images}
    measured = {}
    for mode in modes:
        keras.utils.set_random_seed(config.seed)   # as trainer.build_run, before the network
        network = build_network(config.replace(norm=mode), spec, image_size)
        measured[mode] = {name: SignalPropagation(network, probe).measure()
                          for name, probe in probes.items()}
        keras.backend.clear_session()
    return measured


def signal_propagation(study, log=print):
    """The study's signal propagation plots at initialisation (Brock et al. 2021a, section 2),
    once per norm mode of its variants, not per run: `{mode: {"gaussian": rows, "data": rows}}`
    (rows: `SignalPropagation.measure()`'s), or None for EfficientNet studies.

    Kept in `<output_dir>/signal_propagation.json` (written atomically) and read back from there:
    a repeated invocation or `--report_only` measures only what the file lacks (a mode of a
    variant added since; everything when the model, data, image size, activation or first
    seed changed). The report draws it (`report.figure_signal_propagation`).
    """
    if model_entry(study.base.model).family != "resnet":
        log(f"bnreg-study: no signal propagation plot for {study.base.model} (measured for the "
            "ResNet/WRN families only)")
        return None
    kept = _stored_modes(study)
    missing = [mode for mode in study_norm_modes(study) if mode not in kept]
    if missing:
        start = time.time()
        kept.update(_measure_signal_propagation(study, missing))
        path = os.path.join(study.output_dir, SIGNAL_PROPAGATION_FILE)
        os.makedirs(study.output_dir, exist_ok=True)
        write_atomically(path, json.dumps(
            {"key": _signal_propagation_key(study), "modes": kept}, indent=1) + "\n")
        log(f"bnreg-study: signal propagation at initialisation of {', '.join(missing)} in "
            f"{path} ({time.time() - start:.1f} s)")
    return {mode: kept[mode] for mode in study_norm_modes(study)}


def _try_signal_propagation(study, log):
    """`signal_propagation`, whose failure is logged in one line: the runs and the report come
    first (the report then says the plots are missing)."""
    try:
        signal_propagation(study, log)
    except preemption.Preempted:
        raise
    except Exception as error:  # noqa: BLE001 - a diagnostic must not stop the study
        log(f"bnreg-study: signal propagation not measured: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}")

"""The deconstruction study (paper Tables 1-4, Figures 2-3): a grid of variants x seeds x coefficients.

`make_study` turns the grid flags into a `Study` (every run's config checked, the data found and
the grid's flags validated before anything is written); `run_study` trains and scores its runs
under the process's one strategy; `collect` reads back what an output dir holds (`--report_only`).

Each run goes through the same code as the binaries: `trainer.train` (as `bnreg-train`) with the
paper's validation holdout as its evaluation split, then `evaluate.score` on the exported
SavedModel's test split (as `bnreg-eval`), plus CIFAR-10-C on CIFAR-10. Runs live in
`<output_dir>/runs/<run name>/`:
- a run is claimed with the run dir's lock (`rundir.RunLock`) before it trains, so shards,
  repeated invocations or hosts sharing a file system never train it twice at the same time;
- a run with `study.json` is finished and reused only if its `config.json` equals the config
  asked (else ConfigError naming the run and field, or `rerun_changed` moves it to `replaced/`);
- an interrupted run resumes from its checkpoint; a failed one is recorded and the others go on;
- `shard=(I, N)` takes every N-th run from the I-th: N processes (one per GPU, or an array job)
  split the grid, and `collect` merges their results.
"""
import dataclasses
import json
import math
import os
import shutil
import time
import traceback

from bnreg_tf import preemption, rundir
from bnreg_tf.config import ConfigError, validate

# The paper's ablation variants (REFERENCE.md section 2). `coefficient` names the config field
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
}


@dataclasses.dataclass(frozen=True)
class StudyPreset:
    """A study: the training preset, which variants and seeds, and each penalty's coefficient."""

    training_preset: str
    variants: tuple
    seeds: tuple
    coefficients: dict       # config field -> default coefficient
    changes: dict = dataclasses.field(default_factory=dict)   # applied to the training preset


PENALTY_FIELDS = ("standardization_kl", "embedding_l2", "functional_l2", "dropout")
PAPER_VARIANTS = ("batchnorm", "fixup", "fixup_kl", "fixup_el2", "fixup_fl2", "single_bn",
                  "single_bn_fixup", "fixup_dropout")
STUDY_PRESETS = {
    # Offline default: WRN-10-1 on the 8x8 digits, 3 seeds, every variant; about 4 minutes on 2
    # CPU cores. Coefficients are the bnreg-demo's (EL2/FL2 0.5); KL 0.01 because 0.1 diverged
    # at this learning rate (loss NaN by step 4); Dropout 0.5 as in the paper's Table 3.
    "default": StudyPreset("digits", PAPER_VARIANTS, (0, 1, 2),
                           dict(standardization_kl=0.01, embedding_l2=0.5, functional_l2=0.5,
                                dropout=0.5)),
    # The paper's grids (median of 10 seeds on CIFAR-10/SVHN, mean of 2 on ImageNet). The
    # coefficients are starting points (assumed, REFERENCE.md gives none): sweep them with
    # --coefficients as the paper's Figure 3 does.
    "paper_cifar10": StudyPreset("wrn28_10_cifar10", PAPER_VARIANTS, tuple(range(10)),
                                 dict(standardization_kl=1e-4, embedding_l2=0.1,
                                      functional_l2=0.1, dropout=0.5)),
    "paper_svhn": StudyPreset("wrn28_10_svhn", PAPER_VARIANTS, tuple(range(10)),
                              dict(standardization_kl=1e-4, embedding_l2=0.1, functional_l2=0.1,
                                   dropout=0.5)),
    "paper_imagenet_resnet50": StudyPreset(
        "resnet50_imagenet", ("batchnorm", "fixup", "fixup_el2", "fixup_fl2", "single_bn",
                              "single_bn_fixup"), (0, 1),
        dict(embedding_l2=0.1, functional_l2=0.1)),
    "paper_imagenet_efficientnet_b8": StudyPreset(
        "efficientnet_b8_imagenet", ("batchnorm", "el2", "fl2", "dropout"),
        (0, 1), dict(embedding_l2=0.1, functional_l2=0.1, dropout=0.5), dict(dropout=0.0)),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    name: str
    variant: str
    seed: int
    coefficient: float       # NaN-free; 0 when the variant has none
    config: object


def _run_name(variant, coefficient, seed, swept):
    if swept and VARIANTS[variant]["coefficient"]:
        return f"{variant}_c{coefficient:g}_s{seed}"
    return f"{variant}_s{seed}"


def plan(base, study, variants, seeds, sweep, output_dir, explicit=()):
    """The RunSpecs of the grid. A coefficient comes from the sweep, else from an explicitly
    given flag (`explicit` names them), else from the study preset."""
    runs = []
    for variant in variants:
        field = VARIANTS[variant]["coefficient"]
        if field is None:
            coefficients = [0.0]
        elif sweep:
            coefficients = list(sweep)
        elif field in explicit or field not in study.coefficients:
            coefficients = [getattr(base, field)]
        else:
            coefficients = [study.coefficients[field]]
        # Each variant adds its one mechanism: the other penalties (and Dropout) are off.
        changes = {name: 0.0 for name in PENALTY_FIELDS if name != field}
        changes.update(VARIANTS[variant]["changes"])
        for coefficient in coefficients:
            for seed in seeds:
                name = _run_name(variant, coefficient, seed, bool(sweep))
                config_changes = {**changes, "seed": seed,
                                  "model_dir": os.path.join(output_dir, "runs", name)}
                if field:
                    config_changes[field] = coefficient
                runs.append(RunSpec(name, variant, seed, coefficient,
                                    base.replace(**config_changes)))
    return runs


@dataclasses.dataclass(frozen=True)
class Study:
    """One study: its preset, the base training config and the planned runs."""

    name: str
    preset: StudyPreset
    base: object
    variants: tuple
    seeds: tuple
    sweep: tuple
    output_dir: str
    runs: tuple


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
               output_dir="reports/study"):
    """The checked grid of study preset `name` with the explicitly given run flags `given`.

    `variants`, `seeds`, `coefficients`: the grid flags as lists of strings (None: not given).
    Raises ConfigError (one line) for an unknown preset, an empty or duplicated list, a negative
    seed, a coefficient no chosen variant uses or a bad run config (`check_data`: missing data).
    """
    from bnreg_tf.presets import preset

    if name not in STUDY_PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(STUDY_PRESETS)}, got {name!r}")
    chosen = STUDY_PRESETS[name]
    if "model_dir" in given:
        raise ConfigError("--model_dir: bnreg-study puts each run under --output_dir/runs/")
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
    for field in PENALTY_FIELDS:
        if field in given and field not in used and given[field]:
            users = [v for v, d in VARIANTS.items() if d["coefficient"] == field]
            raise ConfigError(f"--{field}={given[field]:g}: no chosen variant uses it (it is the "
                              f"coefficient of {', '.join(users)})")
    output_dir = os.path.abspath(output_dir)
    base = preset(chosen.training_preset).replace(
        **{**chosen.changes, **given, "holdout": True, "export": True, "model_dir": "<per run>"})
    runs = plan(base, chosen, variants, seeds, sweep, output_dir, set(given))
    for spec in runs:
        try:
            validate(spec.config)
        except ConfigError as error:
            raise ConfigError(f"{error} (run {spec.name})") from None
    return Study(name, chosen, base, tuple(variants), tuple(seeds), tuple(sweep or ()),
                 output_dir, tuple(runs))


def check_data(study):
    """Every split a run reads (train, holdout, test) is there: one line naming what is missing.

    Reading data initialises TensorFlow's devices: call it after the strategy is made.
    """
    from bnreg_tf.data import catalog

    config = study.base
    train_split, eval_split, _, _ = catalog.split_plan(config.dataset, True)
    _, test_split, _, _ = catalog.split_plan(config.dataset, False)
    for split in dict.fromkeys((train_split, eval_split, test_split)):
        catalog.load(config.dataset, split, config.data_dir, config.download)


def _study_record(spec):
    path = os.path.join(spec.config.model_dir, "study.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        raise ConfigError(f"{path}: unreadable; delete it to score that run again") from None


def changed_runs(study):
    """The runs whose dir holds a config.json of another config: [(spec, field, old, new)]."""
    changed = []
    for spec in study.runs:
        previous = rundir.read_config(spec.config.model_dir)
        difference = previous and rundir.first_difference(previous, spec.config)
        if difference:
            changed.append((spec, *difference))
    return changed


def check_reuse(study, rerun_changed=False):
    """Refuses (one line) to reuse or resume a run trained with another config, unless
    `rerun_changed`; returns the names of the runs that will be retrained from scratch."""
    changed = changed_runs(study)
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
    return {"run": spec.name, "variant": spec.variant, "seed": spec.seed,
            "coefficient": spec.coefficient, "model_dir": spec.config.model_dir}


def run_one(spec, strategy, output_dir, rerun_changed=False, log=print):
    """Claims, trains and scores one run; returns its record (also written to `study.json`).

    Status: "ok" (trained now, or "skipped": finished before with the same config), "failed"
    (the error is recorded; the study goes on), or "busy" (another process holds the run).
    """
    from bnreg_tf.strategies import is_chief

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
        if finished is not None:
            return {**finished, "skipped": True}
        return _train_and_score(spec, strategy, chief)
    finally:
        if lock:
            lock.release()


def _train_and_score(spec, strategy, chief):
    import keras

    from bnreg_tf import evaluate, trainer
    from bnreg_tf.data import catalog, pipeline

    start = time.time()
    record = _record(spec)
    try:
        config = validate(spec.config)
        results = trainer.train(config, strategy, log=lambda *_: None, verbose=0)
        record.update(status="ok", val_accuracy=results["eval_accuracy"],
                      curves=_curves(config.model_dir, results), steps=results["steps"])
        if results["export"]:   # the chief's; other workers only train
            loaded = evaluate.load_saved_model(results["export"])
            _, test_split, _, _ = catalog.split_plan(config.dataset, False)
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
    if record["status"] == "ok" and chief:
        rundir.write_atomically(os.path.join(spec.config.model_dir, "study.json"),
                                json.dumps(record, indent=2))
    return record


def run_study(study, strategy, shard=(0, 1), rerun_changed=False, log=print):
    """Trains and scores this shard's runs of `study` under `strategy` (the process's one).

    Returns a record per run of the whole grid: this shard's outcomes, the finished runs of
    others, and "pending" for the rest. SIGTERM/SIGINT stop after the current run's checkpoint
    (`preemption.Preempted`).
    """
    check_reuse(study, rerun_changed)
    index, count = shard
    mine = {spec.name for spec in study.runs[index::count]}
    records, done = [], 0
    with preemption.stop_signals(strategy):
        for spec in study.runs:
            if spec.name not in mine:
                finished = _study_record(spec)
                records.append({**finished, "skipped": True} if finished else
                               {**_record(spec), "status": "pending"})
                continue
            preemption.raise_if_received(f"before run {spec.name}")
            record = run_one(spec, strategy, study.output_dir, rerun_changed, log)
            records.append(record)
            done += 1
            log(f"[{done}/{len(mine)}] {spec.name}: {describe(record)}")
    return records


def collect(study):
    """The records of every run of `study` that its output dir holds ("pending" for the rest)."""
    check_reuse(study)
    records = []
    for spec in study.runs:
        finished = _study_record(spec)
        records.append(finished if finished else {**_record(spec), "status": "pending"})
    return records


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
        "val_accuracy": [None] + [float(r["val_accuracy"]) for r in rows],
        "embedding_norm_sq": [initial.get("probe_embedding_norm_sq")] +
                             [float(r["probe_embedding_norm_sq"]) for r in rows],
        "output_norm_sq": [initial.get("probe_output_norm_sq")] +
                          [float(r["probe_output_norm_sq"]) for r in rows],
    }

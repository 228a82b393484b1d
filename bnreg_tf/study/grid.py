"""The study's grid: which runs a study is (`make_study`, every run's config checked and the
grid's flags validated before anything is written), their names and configs (`RunSpec`).

Run names say phase and setting: `tune_fixup_el2_c0.1_lr0.1_s0`, `final_fixup_el2_c0.1_lr0.1_s3`
(holdout protocol: no prefix). Runs live in `<output_dir>/runs/<run name>/`.
"""
import dataclasses
import math
import os

from bnreg_tf.run import layout, preflight
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.presets import STUDY_PRESETS, StudyPreset, preset
from bnreg_tf.study.variants import COEFFICIENT_FIELDS, PROTOCOLS, VARIANTS


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
                   model_dir=os.path.join(output_dir, layout.STUDY_RUNS, name))
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


def _check_run_flags(given):
    if "model_dir" in given:
        raise ConfigError("--model_dir: bnreg-study puts each run under --output_dir/runs/")
    for field in ("holdout", "export"):
        if field in given:
            raise ConfigError(f"--{field}: bnreg-study sets each run's training split and export "
                              "by --protocol (holdout: the holdout; paper: tuning on the "
                              "holdout, final runs on the full training split)")


def _check_grid(chosen, given, variants, seeds, coefficients):
    """(variants, seeds, sweep) of the grid flags, each checked (one-line ConfigError)."""
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
    return variants, seeds, sweep


def _check_protocol(chosen, given, protocol, learning_rates, tuning_seeds):
    """(protocol, learning-rate grid, tuning seeds), each checked (one-line ConfigError)."""
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
    return protocol, rates, tuning_seeds


def _check_runs(runs, also_checked):
    """Run names tell settings apart, and every run's config passes the run's preflight."""
    names = [spec.name for spec in runs]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise ConfigError(f"--coefficients/--learning_rates: values too close to tell apart in "
                          f"run names ({clash[0]}); use values that differ in 6 digits")
    for spec in [*runs, *also_checked]:
        try:
            preflight.check(spec.config)
        except ConfigError as error:
            raise ConfigError(f"{error} (run {spec.name})") from None


def make_study(name, given, variants=None, seeds=None, coefficients=None,
               output_dir="reports/study", protocol=None, learning_rates=None, tuning_seeds=None):
    """The checked grid of study preset `name` with the explicitly given run flags `given`.

    `variants`, `seeds`, `coefficients`, `learning_rates`: the grid flags as lists of strings
    (None: not given); `protocol` ("holdout" or "paper") and `tuning_seeds` (how many seeds
    phase 1 uses) default to the preset's.
    Raises ConfigError (one line) for an unknown preset, an empty or duplicated list, a negative
    seed, a coefficient no chosen variant uses or a run config that fails the run's preflight.
    """
    if name not in STUDY_PRESETS:
        raise ConfigError(f"--preset: expected one of {', '.join(STUDY_PRESETS)}, got {name!r}")
    chosen = STUDY_PRESETS[name]
    _check_run_flags(given)
    variants, seeds, sweep = _check_grid(chosen, given, variants, seeds, coefficients)
    protocol, rates, tuning_seeds = _check_protocol(chosen, given, protocol, learning_rates,
                                                    tuning_seeds)
    if not output_dir:
        raise ConfigError("--output_dir: expected a directory path, got ''")
    output_dir = os.path.abspath(output_dir)
    # A coefficient flag sets its variants' coefficient, never the base run's (where it may not
    # apply: KL needs its variant's norm mode).
    explicit = {field: given[field] for field in COEFFICIENT_FIELDS if field in given}
    base = preset(chosen.training_preset).replace(
        **{**chosen.changes, **{k: v for k, v in given.items() if k not in explicit},
           "holdout": True, "export": True, "model_dir": "<per run>"})
    runs = plan(base, chosen, variants, seeds, sweep, output_dir, explicit, rates, protocol,
                tuple(range(tuning_seeds)))
    finals = []
    if protocol == "paper":   # phase 2's configs are checked now too, one per variant
        rate = rates[0] if rates else base.learning_rate
        finals = [_spec(base, v, grid_of(chosen, v, base, sweep, explicit)[0], rate, seeds[0],
                        "final", output_dir, True) for v in variants]
    _check_runs(runs, finals)
    return Study(name, chosen, base, tuple(variants), tuple(seeds), tuple(sweep or ()),
                 output_dir, tuple(runs), protocol, rates, tuple(range(tuning_seeds)))

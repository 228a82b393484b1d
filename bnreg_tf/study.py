"""The deconstruction study (paper Tables 1-4, Figures 2-3): a grid of variants x seeds x coefficients.

Each run goes through the same code as the binaries: `trainer.train` (as `bnreg-train`) with the
paper's validation holdout as its evaluation split, then `evaluate.score` on the exported
SavedModel's test split (as `bnreg-eval`), plus CIFAR-10-C on CIFAR-10. Runs live in
`<output_dir>/runs/<run name>/`; a run with `study.json` is finished and skipped when the command
is repeated, an interrupted one resumes from its checkpoint, and a failed one is recorded with
its error while the others go on.
"""
import dataclasses
import json
import os
import time
import traceback

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
        if variant not in VARIANTS:
            raise ConfigError(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
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


def run_one(spec):
    """Trains and scores one run; returns its record (also written to `study.json`)."""
    import keras

    from bnreg_tf import evaluate, trainer
    from bnreg_tf.data import catalog, pipeline

    record_path = os.path.join(spec.config.model_dir, "study.json")
    if os.path.exists(record_path):
        with open(record_path) as f:
            return {**json.load(f), "skipped": True}
    start = time.time()
    record = {"run": spec.name, "variant": spec.variant, "seed": spec.seed,
              "coefficient": spec.coefficient, "model_dir": spec.config.model_dir}
    try:
        config = validate(spec.config)
        results = trainer.train(config, log=lambda *_: None, verbose=0)
        loaded = evaluate.load_saved_model(results["export"])
        _, test_split, _, _ = catalog.split_plan(config.dataset, False)
        batches = pipeline.raw_dataset(config.dataset, test_split, config.data_dir,
                                       config.download, config.eval_batch_size)
        scores = evaluate.score(loaded, batches, 0.5, 5, config.seed)
        record.update(
            status="ok", test_accuracy=scores["accuracy"], val_accuracy=results["eval_accuracy"],
            dropout_accuracy=scores["dropout_accuracy"], dropout_drop=scores["dropout_drop"],
            embedding_norm_sq=scores["embedding_norm_sq"], output_norm_sq=scores["output_norm_sq"],
            curves=_curves(config.model_dir, results), steps=results["steps"])
        if config.dataset == "cifar10":
            record["cifar10_c"] = evaluate.cifar10_c(loaded, config.data_dir,
                                                     config.eval_batch_size)["mean"]
    except Exception as error:  # a failed run is reported; the study goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0],
                      traceback=traceback.format_exc(limit=5))
    finally:
        keras.backend.clear_session()
    record["seconds"] = time.time() - start
    if record["status"] == "ok":
        trainer.write_atomically(record_path, json.dumps(record, indent=2))
    return record


def _curves(model_dir, results):
    """Per-epoch val accuracy and probe norms from log.csv, with the values at init first."""
    import csv

    with open(os.path.join(model_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    initial = results.get("initial_norms") or {}
    return {
        "epoch": [0] + [int(r["epoch"]) + 1 for r in rows],
        "val_accuracy": [None] + [float(r["val_accuracy"]) for r in rows],
        "embedding_norm_sq": [initial.get("probe_embedding_norm_sq")] +
                             [float(r["probe_embedding_norm_sq"]) for r in rows],
        "output_norm_sq": [initial.get("probe_output_norm_sq")] +
                          [float(r["probe_output_norm_sq"]) for r in rows],
    }

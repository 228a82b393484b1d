"""The paper protocol's choice of each variant's setting on the holdout (phase 1) and the runs
that retrain it (phase 2; paper section 4, docs/references.md §3.6)."""
import numpy as np

from bnreg_tf.study.grid import _spec


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

"""The study's variants and protocols (paper section 4, Table 1; docs/references.md §2.1, §3.6).

A variant is a norm mode and at most one coefficient: `changes` (applied to the study's
training preset) and `coefficient`, the config field a coefficient grid sets for it (None: none).
Each penalty of the table (`bnreg_tf.nn.PENALTIES`) gives `fixup_<label>` on Fixup (on the norm
mode the penalty needs, e.g. `fixup_standardize` for KL) and, where any norm mode allows it,
`<label>` on the preset's own normalisation (EfficientNet keeps its BatchNorm).
"""
from bnreg_tf.nn.penalty_table import PENALTIES


def _penalty_variants(prefix):
    return {f"{prefix}{row.label.lower()}": dict(
        changes=dict(norm=row.norms[0] if row.norms else "fixup") if prefix else {},
        coefficient=row.name)
        for row in PENALTIES.values() if prefix or not row.norms}


VARIANTS = {
    "batchnorm": dict(changes=dict(norm="batchnorm"), coefficient=None),
    "fixup": dict(changes=dict(norm="fixup"), coefficient=None),
    **_penalty_variants("fixup_"),
    "single_bn": dict(changes=dict(norm="single_bn"), coefficient=None),
    "single_bn_fixup": dict(changes=dict(norm="fixup_single_bn"), coefficient=None),
    "fixup_dropout": dict(changes=dict(norm="fixup"), coefficient="dropout"),
    **_penalty_variants(""),
    "dropout": dict(changes={}, coefficient="dropout"),
    # Beyond the paper: the normalizer-free lineage (issue 18; resnet/norm.py MODES).
    # SkipInit (De & Smith 2020), NF-ResNet (Brock et al. 2021a), and NF-ResNet with adaptive
    # gradient clipping (Brock et al. 2021b), whose coefficient is AGC's clipping threshold;
    # each with the reference's stochastic depth (keep probability 0.9, docs/references.md §6.10).
    "skipinit": dict(changes=dict(norm="skipinit", survival_prob=0.9), coefficient=None),
    "skipinit_el2": dict(changes=dict(norm="skipinit", survival_prob=0.9),
                         coefficient="embedding_l2"),
    "nf_resnet": dict(changes=dict(norm="nf_resnet", survival_prob=0.9), coefficient=None),
    "nf_resnet_agc": dict(changes=dict(norm="nf_resnet", survival_prob=0.9), coefficient="agc"),
    "nf_resnet_el2": dict(changes=dict(norm="nf_resnet", survival_prob=0.9),
                          coefficient="embedding_l2"),
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

# Config fields a variant's coefficient can set: the penalties, Dropout and AGC's clipping
# threshold. A run gets only its own variant's (the others are 0: off).
PENALTY_FIELDS = (*PENALTIES, "dropout")
COEFFICIENT_FIELDS = PENALTY_FIELDS + ("agc",)
# Table 4's row names (the EfficientNet comparison): a penalty on the preset's own norm by label.
TABLE_4_ROWS = {"batchnorm": "no Dropout", "dropout": "Dropout",
                **{row.label.lower(): row.label for row in PENALTIES.values() if not row.norms}}

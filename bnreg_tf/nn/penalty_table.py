"""The penalties, one row each: the one table that the config, the builders, `regularize`, the
progress lines and the study read (paper sections 2-3; docs/references.md §1).

A row says what a penalty is called (its config field, flag, `regularize` keyword and logged
metric), its pure function, the identity layer that adds `coefficient * function` in training,
where that layer attaches, its label in reports, its flag's help and the norm modes a run may
combine it with. Adding a penalty touches four files: the function (`penalties.py`), the layer
(`layers.py`), its row here and its test; see docs/architecture.md.
"""
import dataclasses

from bnreg_tf.nn import layers, penalties

# Where a penalty layer attaches: on the embedding (the classifier's input, before Dropout), on
# the logits, or at every norm site (where BatchNorm sits or would sit).
SITES = ("embedding", "logits", "norm_sites")


@dataclasses.dataclass(frozen=True)
class Penalty:
    """One penalty (see the module docstring)."""

    name: str            # config field, --flag, regularize() keyword, layer and metric name
    label: str           # short name in reports and layer names at norm sites ("<layer>_kl")
    function: object     # the pure function on tensors (`bnreg_tf.nn.penalties`)
    layer: type          # the `layers.PenaltyLayer` subclass that adds it to the loss
    site: str            # one of SITES
    help: str            # the flag's help text
    norms: tuple = ()    # the norm modes a run may combine it with; () = any

    def __post_init__(self):
        if self.site not in SITES:
            raise ValueError(f"penalty {self.name!r}: site must be one of {SITES}")
        if not issubclass(self.layer, layers.PenaltyLayer):
            raise ValueError(f"penalty {self.name!r}: its layer must be a PenaltyLayer")

    def layer_name(self, site_layer_name=None):
        """The name of the layer that adds it: its own name, or `<layer>_<label>` at the norm
        site after layer `site_layer_name`."""
        if self.site == "norm_sites":
            return f"{site_layer_name}_{self.label.lower()}"
        return self.name


PENALTIES = {row.name: row for row in (
    Penalty("embedding_l2", "EL2", penalties.embedding_l2, layers.EmbeddingL2, "embedding",
            "Embedding L2 coefficient [loss weight]"),
    Penalty("functional_l2", "FL2", penalties.functional_l2, layers.FunctionalL2, "logits",
            "Functional L2 coefficient [loss weight]"),
    Penalty("standardization_kl", "KL", penalties.standardization_kl, layers.StandardizationKL,
            "norm_sites", "KL standardization coefficient [loss weight] (with "
            "--norm=fixup_standardize)", norms=("fixup_standardize", "none")),
)}

"""absl flags mirroring every RunConfig field, and the one place a config is made from them.

Each field becomes `--<field>` (bool fields also `--no<field>`) with no default of its own:
`config_from_flags` starts from `--preset` and overrides exactly the flags given.
Every flag belongs to a help group (`--help` lists them by group, `bnreg_tf.cli.help`).
"""
import dataclasses

from absl import flags

from bnreg_tf.run.config import RunConfig
from bnreg_tf.run.models import model_names
from bnreg_tf.run.presets import PRESETS, preset

GROUP_ORDER = ("preset", "data", "model", "penalties", "optimisation", "execution",
               "evaluation", "study", "output")
_GROUPS = {"preset": "preset", "export_only": "output", "output_dir": "output",
           "variants": "study", "seeds": "study", "coefficients": "study"}


def set_group(group, *names):
    """Lists the flags `names` under `group` in `--help`."""
    for name in names:
        _GROUPS[name] = group


def flag_group(name):
    """The help group of flag `name` ("other" when none was set)."""
    if name in _GROUPS:
        return _GROUPS[name]
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    return fields[name].metadata["group"] if name in fields else "other"


_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_run_flags(flag_values=flags.FLAGS, default_preset="digits", with_preset=True):
    """Defines `--preset` (unless `with_preset=False`) and one flag per RunConfig field."""
    if with_preset:
        flags.DEFINE_string("preset", default_preset,
                            f"Paper experiment to start from [name]: {', '.join(PRESETS)}; "
                            "every other flag overrides it",
                            flag_values=flag_values)
    for field in dataclasses.fields(RunConfig):
        kind = {"bool": bool, "int": int, "float": float, "str": str}.get(field.type, field.type)
        default = getattr(PRESETS[default_preset], field.name)
        text = field.metadata["help"]
        if field.name == "model":
            text += f"; one of {', '.join(model_names())}"
        _DEFINE[kind](field.name, None, f"{text} (preset default: {default!r})",
                      flag_values=flag_values)


def given_run_fields(flag_values=flags.FLAGS):
    """`{field: value}` of the RunConfig flags given on the command line."""
    return {field.name: flag_values[field.name].value for field in dataclasses.fields(RunConfig)
            if flag_values[field.name].present}


def config_from_flags(flag_values=flags.FLAGS, **forced):
    """The preset with every explicitly given flag applied (a RunConfig checks itself)."""
    return preset(flag_values.preset).replace(**{**given_run_fields(flag_values), **forced})

"""`--help` / `-h` (the binary's own flags by group) and `--helpfull` (absl's full list).

The binaries parse their flags in `bnreg_tf.cli.errors.run_main`, outside `absl.app`, so the help
flags are answered there, before parsing, for every binary alike; both exit 0.
Each flag of a binary is listed under one group: RunConfig fields carry theirs
(`bnreg_tf.run.config`); other flags are placed with `bnreg_tf.run.flags.set_group`.
"""
import sys
import textwrap

from bnreg_tf.run.flags import GROUP_ORDER, flag_group

SHORT = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")
FULL = ("--helpfull", "-helpfull")
XML = ("--helpxml", "-helpxml")
LIBRARY_MODULES = ("absl", "tensorflow", "keras", "tensorboard", "tensorflow_datasets", "jax")


def requested(argv):
    """"short", "full", "xml" or None, from the arguments before a bare `--`."""
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in SHORT:
            return "short"
        if arg in FULL:
            return "full"
        if arg in XML:
            return "xml"
    return None


def own_flags(flag_values):
    """The flags the binary defines itself (not absl's logging flags and the like)."""
    own = []
    for module, defined in flag_values.flags_by_module_dict().items():
        if not module.split(".")[0] in LIBRARY_MODULES:
            own += [flag for flag in defined if flag not in own]
    return own


def _describe(flag):
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flag.help or ""
    if "default:" not in text and "(default" not in text and "required" not in text:
        text += f" (default: {'unset' if flag.default is None else repr(flag.default)})"
    return name, text


def short_help(name, doc, flag_values):
    """The binary's docstring, then its own flags under their groups."""
    lines = [(doc or name).strip(), "",
             f"Usage: {name} [--flag=value ...]   Every value can be given as --flag=value; "
             "--helpfull lists all flags, absl's included.", ""]
    groups = {}
    for flag in own_flags(flag_values):
        groups.setdefault(flag_group(flag.name), []).append(flag)
    order = [g for g in GROUP_ORDER if g in groups] + sorted(set(groups) - set(GROUP_ORDER))
    for group in order:
        lines.append(f"{group}:")
        for flag in groups[group]:
            title, text = _describe(flag)
            lines.append(f"  {title}")
            lines += textwrap.wrap(text, 96, initial_indent="      ",
                                   subsequent_indent="      ")
        lines.append("")
    return "\n".join(lines)


def print_help(kind, name, doc, flag_values, stream=None):
    stream = stream or sys.stdout
    if kind == "short":
        stream.write(short_help(name, doc, flag_values) + "\n")
    elif kind == "full":
        stream.write(f"{(doc or name).strip()}\n\n{flag_values.get_help()}\n")
    else:
        flag_values.write_help_in_xml_format(stream)
    stream.flush()

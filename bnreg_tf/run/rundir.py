"""A run directory's rules: one writer, its config as its identity, foreign dirs left alone.

- One writer: `bnreg_tf.run.runlock.RunLock`, an exclusive lock on `<dir>/bnreg.lock`.
- `check_model_dir`: the dir can be written, holds nothing foreign, and its `config.json` (the
  run's identity) equals the config asked, except for the fields that say where and how it runs.
- `resolve_revision`: `--revision=0` (the default) is the run dir's own revision when it holds
  a run, the newest for a new one (`bnreg_tf.nn.revisions`): old runs resume as they computed.
- `remove_leftovers`: what a kill or a full disk left half-written (`bnreg_tf.files.write_atomically`
  writes every file so that nothing else can be), every path checked to lie in the dir.
- Nothing outside the run dir is ever written or removed: `dirguard` refuses (one line naming
  it) a link among bnreg's names that leads out of the dir.
"""
import dataclasses
import os
import shutil

from bnreg_tf.nn import revisions
from bnreg_tf.run import dirguard, layout
from bnreg_tf.run.config import ConfigError, RunConfig
# Fields that may differ when a run is resumed: where data/outputs live and how it is executed.
RESUMABLE_FIELDS = ("data_dir", "download", "export", "model_dir", "strategy", "tpu",
                    "virtual_cpus", "eval_batch_size", "checkpoint_steps", "compilation",
                    "worker_timeout")


def check_writable(path, flag):
    """Creates directory `path` if needed and proves a file can be written there (one-line error).

    The probe file is removed on every way out (a full disk, a signal); nothing else is written.
    """
    if not path:
        raise ConfigError(f"{flag}: expected a directory path, got ''")
    probe = os.path.join(path, f".bnreg-write-test-{os.getpid()}")
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"{flag}={path}: exists and is not a directory")
        os.makedirs(path, exist_ok=True)
        try:
            with open(probe, "w") as f:
                f.write("ok")
        finally:
            if os.path.lexists(probe):
                os.remove(probe)
    except OSError as error:
        raise ConfigError(f"{flag}={path}: cannot write there "
                          f"({error.strerror or type(error).__name__})") from None


def check_output_file(path, flag):
    """Checks that file `path` can be written: its directory (created if needed) takes a file,
    and its name fits the file system (so a long name fails before the work, not after)."""
    if not path:
        raise ConfigError(f"{flag}: expected a file path, got ''")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"{flag}={path}: is a directory; expected a file path")
    try:
        check_writable(directory, flag)
    except ConfigError as error:
        detail = str(error).split(": ", 1)[1]
        raise ConfigError(f"{flag}={path}: {detail}") from None
    limit = os.pathconf(directory, "PC_NAME_MAX")
    name = os.fsencode(os.path.basename(path))
    if len(name) > limit:
        raise ConfigError(f"{flag}={path}: the file name is {len(name)} bytes; this file system "
                          f"takes at most {limit}: choose a shorter name")


def read_config(model_dir):
    """The RunConfig of `model_dir/config.json`, None without one; ConfigError if unreadable."""
    path = os.path.join(model_dir, layout.CONFIG)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return RunConfig.from_json(f.read())
    except (ValueError, TypeError, OSError) as error:
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: unreadable ({detail}); restore it or use a new "
                          "--model_dir") from None


def resolve_revision(config):
    """`config` with `revision` 0 replaced: the revision of the run `config.model_dir` holds
    (1 for a config.json written before the field existed), else the newest."""
    if config.revision:
        return config
    previous = read_config(config.model_dir) if config.model_dir else None
    return config.replace(revision=previous.revision if previous else revisions.LATEST)


def first_difference(previous, config):
    """(field, old, new) of the first field that makes `config` a different run, or None.
    `revision` 0 asks for the run's own revision, whatever it is (`resolve_revision`)."""
    for field in dataclasses.fields(RunConfig):
        if field.name in RESUMABLE_FIELDS or (field.name == "revision" and not config.revision):
            continue
        old, new = getattr(previous, field.name), getattr(config, field.name)
        if old != new:
            return field.name, old, new
    return None


def _leftover(name):
    """A name only an interrupted write of bnreg leaves (write_atomically's staging file, the
    export's staging dir, the write probe of a killed process)."""
    return name.endswith(".partial") or name.startswith(".bnreg-write-test-")


def check_model_dir(config, writable=True, compare=True):
    """Raises ConfigError unless `config.model_dir` can hold this run; True if it holds it already.

    Refuses a non-empty dir without bnreg's config.json (never writes into someone else's files),
    checkpoints without config.json (their config is unknown: `--init_from` branches from them),
    bnreg's names of the wrong kind or linked out of the dir (`dirguard.check_run_dir`), and
    (with `compare`) a config.json of a different run. Writes nothing but a removed probe.
    """
    model_dir = config.model_dir
    if writable:
        check_writable(model_dir, "--model_dir")
    elif not os.path.isdir(model_dir):
        return False
    dirguard.check_run_dir(model_dir)
    previous = read_config(model_dir)
    if previous is None:
        # study.json alone: the study's record of a run that failed before it wrote anything
        entries = {name for name in os.listdir(model_dir) if not _leftover(name)}
        entries -= {layout.LOCK, layout.STUDY_RECORD}
        if layout.CHECKPOINTS in entries:
            raise ConfigError(
                f"--model_dir={model_dir} holds checkpoints but no config.json, so the run they "
                f"belong to is unknown; start a new --model_dir with --init_from={model_dir}")
        if entries:
            raise ConfigError(
                f"--model_dir={model_dir} is not empty and holds no bnreg config.json "
                f"({len(entries)} entries, e.g. {sorted(entries)[0]!r}); use an empty or new dir")
        return False
    difference = compare and first_difference(previous, config)
    if difference:
        name, old, new = difference
        raise ConfigError(
            f"--model_dir={model_dir} holds a run with a different config (--{name}={old!r} "
            f"there, {new!r} asked); repeat that run's flags, or branch it: "
            f"--init_from={model_dir} --model_dir=NEW_DIR starts a new run from its weights")
    return True


def _remove(model_dir, path):
    """Removes `path` (a leftover) after checking it lies in `model_dir`; a symbolic link is
    removed as a link (what it points to is never touched)."""
    dirguard.check_inside(model_dir, os.path.dirname(path))
    if os.path.islink(path) or not os.path.isdir(path):
        os.remove(path)
    else:
        dirguard.check_inside(model_dir, path)
        shutil.rmtree(path)


def remove_leftovers(model_dir, log=print):
    """Removes what a kill or a full disk left half-written: `*.partial` files and dirs, old
    write probes, `checkpoints/*_temp` and `best/*_temp` (early stopping's checkpoint), and puts
    back `export.previous` when a kill came between the two renames of an export swap.

    Every path is checked to lie in `model_dir` first (`dirguard`); a leftover that is a symbolic
    link is removed as a link, never followed. Returns the relative names removed."""
    found = []
    for root in (model_dir, os.path.join(model_dir, layout.CHECKPOINTS),
                 os.path.join(model_dir, layout.BEST_DIR)):
        if not os.path.isdir(root):
            continue
        dirguard.check_inside(model_dir, root)
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if _leftover(name) or (root != model_dir and name.endswith("_temp")):
                _remove(model_dir, path)
                found.append(os.path.relpath(path, model_dir))
    export = os.path.join(model_dir, layout.EXPORT)
    previous = f"{export}.previous"
    if os.path.lexists(previous):  # killed while swapping in a new export: keep the older one
        if os.path.lexists(export):
            _remove(model_dir, previous)
        else:
            dirguard.check_inside(model_dir, previous)
            os.replace(previous, export)
        found.append("export.previous")
    if found:
        log(f"bnreg: removed leftovers of an interrupted write: {', '.join(sorted(found))}")
    return found

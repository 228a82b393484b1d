"""An export's `dataset.json` and `class_names.txt`, read back as untrusted input by `bnreg-eval`
(`bnreg_tf.run.evaluate.dataset_record`): one line naming the file and what to do when they are
not what `bnreg-train` writes (`bnreg_tf.run.export`), or when a split they name lies outside
the dataset's splits."""
import json
import os
import re

from bnreg_tf.files import json_kind
from bnreg_tf.run import layout
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.export import read_class_names

_SPLIT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d*):(\d*)\])?$")


def _record_problem(record):
    """Why `record` (parsed dataset.json) is not what bnreg-train writes, or None."""
    if not isinstance(record, dict):
        return f"holds {json_kind(record)}, not bnreg's record"
    if not isinstance(record.get("dataset"), str) or not record["dataset"]:
        return "has no dataset name"
    if not isinstance(record.get("data_dir", ""), str):
        return "has a data_dir that is not a path"
    splits = record.get("splits")
    if not isinstance(splits, dict) or not isinstance(splits.get("test"), str):
        return "has no splits with a test split"
    for role, split in splits.items():
        if split is not None and (not isinstance(split, str) or not all(
                _SPLIT.match(part) for part in split.split("+"))):
            return f"has a {role} split {split!r} that is not a split bnreg writes"
    names, count = record.get("class_names"), record.get("num_classes")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1 or not isinstance(
            names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
        return "has no list of num_classes class names"
    return None


def read(path):
    """The export's `dataset.json` (dataset, data_dir, splits, class names), or {} if absent.

    Read back as untrusted: ConfigError (one line naming the file and what to do) for a missing
    `--saved_model` dir, a record that is not what bnreg-train writes, or a class_names.txt
    that does not name the same classes (`export.read_class_names`)."""
    if not os.path.isdir(path):
        raise ConfigError(f"--saved_model={path}: no such directory")
    record_path = os.path.join(path, layout.DATASET_RECORD)
    if not os.path.isfile(record_path):
        return {}
    redo = ("; export the run again (bnreg-train --export_only --model_dir=RUN), or give "
            "--dataset (and --data_dir)")
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{record_path}: unreadable ({type(error).__name__}){redo}") from None
    problem = _record_problem(record)
    names_path = os.path.join(path, layout.CLASS_NAMES)
    if problem is None and os.path.isfile(names_path) and \
            read_class_names(names_path) != record["class_names"]:
        problem = f"names other classes than {layout.CLASS_NAMES}"
    if problem:
        raise ConfigError(f"{record_path}: {problem}{redo}")
    return record


def check_split(spec, split, where):
    """ConfigError unless every part `name[a:b]` of `split` names a split of `spec` within
    its size (a dataset.json's split, before any data is read)."""
    sizes = {"train": spec.train_examples, spec.holdout_split: spec.holdout_examples,
             spec.test_split: spec.test_examples}
    for part in split.split("+"):
        name, start, stop = _SPLIT.match(part).groups()
        size = sizes.get(name)
        begin, end = int(start or 0), int(stop) if stop else size
        if size is None or not 0 <= begin < (end if end is not None else 0) <= size:
            raise ConfigError(f"{where}: split {split!r} is not within {spec.name}'s splits "
                              f"({', '.join(f'{k} {v}' for k, v in sizes.items() if k)}); "
                              "export the run again, or give --dataset (and --data_dir)")

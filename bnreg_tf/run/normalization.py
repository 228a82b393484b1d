"""`normalization.json`, read back as untrusted input (`bnreg_tf.run.inputs.normalization_stats`).

bnreg writes the per-channel pixel statistics of the training split with what they were computed
on (dataset, data dir, split, number of images), a `check` (the statistics of the first
`CHECK_EXAMPLES` images, cheap to compute again) and a `sha256` of all of it. Read back:

- not what bnreg writes (not JSON, a list, no `std`, a NaN, a std below 1 (bnreg clamps it to
  1), the wrong number of channels, values edited so that the sha256 no longer matches): while
  the run has no checkpoint it is recomputed, with a line; once checkpoints were trained with
  it, one line (ConfigError) asks to restore it or move it aside (it is then recomputed: the
  same numbers if the data has not changed);
- what bnreg wrote: the check is recomputed from the data; a difference means the data changed
  under the run: one line. A moved `--data_dir` (a resumable flag) is followed once verified.
  Files of older bnreg versions (no check, no sha256) are checked for their form only.
"""
import hashlib
import json
import math
import os

from bnreg_tf.files import json_kind, write_atomically
from bnreg_tf.run import layout
from bnreg_tf.run.checkpoints import checkpoint_paths
from bnreg_tf.run.config import ConfigError

CHECK_EXAMPLES = 256


def _digest(record):
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _numbers(values, channels, low, high):
    return (isinstance(values, list) and len(values) == channels and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and low <= v <= high for v in values))


def _stats_problem(record, channels, what=""):
    if not _numbers(record.get("mean"), channels, 0, 255):
        return f"{what}mean is not {channels} finite pixel value(s) in 0..255"
    if not _numbers(record.get("std"), channels, 1, 255):
        return f"{what}std is not {channels} finite value(s) in 1..255 (bnreg's are >= 1)"
    examples = record.get("examples")
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
        return f"{what}examples is not a count of images"
    return None


def problem(stored, key, channels):
    """Why `stored` (parsed JSON) is not the normalization.json bnreg wrote for `key` (the
    dataset and split) with `channels` channels, or None."""
    if not isinstance(stored, dict):
        return f"holds {json_kind(stored)}, not bnreg's statistics"
    for name in ("dataset", "split"):
        if stored.get(name) != key[name]:
            return f"was computed for {name}={stored.get(name)!r}, not {key[name]!r}"
    found = _stats_problem(stored, channels)
    if found:
        return found
    if "check" in stored and (not isinstance(stored["check"], dict) or
                              _stats_problem(stored["check"], channels, "check's ")):
        return "its check is not bnreg's"
    if "sha256" in stored and stored["sha256"] != _digest(stored):
        return "its values were edited (its sha256 does not match them)"
    return None


def _check(statistics):
    mean, std, images = statistics(CHECK_EXAMPLES)
    return {"examples": images, "mean": mean, "std": std}


def _same(a, b):
    return a["examples"] == b["examples"] and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
        for name in ("mean", "std") for x, y in zip(a[name], b[name]))


def _parse(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"unreadable ({(str(error).splitlines() or [''])[0][:80]})"


def read(path, key, channels, statistics, log=print):
    """The stored record when it can be used as is (dict with mean and std), else None (absent,
    or not bnreg's while the run has no checkpoint: then it is recomputed, with a line).

    `statistics(limit)` -> `(mean, std, images)` of the first `limit` training images. Raises
    ConfigError (one line naming the file) when the file does not fit and checkpoints exist."""
    if not os.path.exists(path):
        return None
    stored, found = _parse(path)
    found = found or problem(stored, key, channels)
    if found:
        checkpoints = checkpoint_paths(os.path.join(os.path.dirname(path), layout.CHECKPOINTS))
        if checkpoints:
            raise ConfigError(
                f"{path}: {found}; this run's checkpoints were trained with the statistics it "
                "held: restore the file, or move it aside to have them computed again from the "
                "training data (the same numbers if the data has not changed)")
        log(f"bnreg: {path}: {found}; recomputed from the training split")
        return None
    if "check" in stored:
        now = _check(statistics)
        if not _same(now, stored["check"]):
            raise ConfigError(
                f"{path}: the training data is not the data these statistics were computed on "
                f"(first {now['examples']} images: mean {stored['check']['mean']} then, "
                f"{now['mean']} now); restore that data, or start a new --model_dir")
    if stored.get("data_dir") != key["data_dir"]:   # moved data, verified above
        write(path, key, stored["mean"], stored["std"], stored["examples"], statistics)
    return stored


def write(path, key, mean, std, images, statistics):
    """Writes the record of `mean`, `std` over `images` images, with its check and sha256."""
    record = {**key, "mean": list(mean), "std": list(std), "examples": images,
              "check": _check(statistics)}
    record["sha256"] = _digest(record)
    write_atomically(path, json.dumps(record, indent=2) + "\n")

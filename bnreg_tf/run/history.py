"""The run's per-epoch history, kept whole: `log.csv`, and a copy inside every checkpoint.

`RunHistory` holds log.csv's rows (header first) and is saved in each checkpoint (it is small);
`EpochLog` writes log.csv from it after every epoch, all at once (`write_atomically`: a kill
never leaves half a row). On resume `EpochLog.prepare` makes log.csv the checkpoint's history:

- log.csv as the checkpoint's history says it: kept;
- rows beyond the checkpoint (a kill after the epoch's row and before its checkpoint): dropped
  (they run again), with a line;
- deleted, truncated mid-row, header-only, rows missing, repeated or edited: rebuilt from the
  checkpoint's history, with a line naming the damage;
- a checkpoint of an older bnreg (no history inside, or one that lacks epochs): the rows
  beyond it are dropped, a log that is not bnreg's is refused (one line, as before), and rows
  that are missing or repeated are named in one line (they cannot be rebuilt).

Every checkpoint at an epoch's end is saved after that epoch's row (`callbacks.Checkpointer` and
`preemption.StopOnSignal` leave an epoch's last step to `on_epoch_end`), so its history is whole.
"""
import csv
import io
import json
import os

import keras
import tensorflow as tf

from bnreg_tf.files import write_atomically


class RunHistory(tf.train.experimental.PythonState):
    """log.csv's rows as strings, header first; `rows` is None until restored from a checkpoint
    that holds it (a checkpoint of an older bnreg does not) or until training starts."""

    def __init__(self):
        self.rows = None

    def serialize(self):
        return json.dumps(self.rows or [])

    def deserialize(self, string_value):
        text = string_value.decode() if isinstance(string_value, bytes) else string_value
        rows = json.loads(text)
        if not (isinstance(rows, list) and all(isinstance(r, list) for r in rows)):
            raise ValueError("a checkpoint's history is not a list of rows")
        self.rows = [[str(v) for v in row] for row in rows]


def read_rows(path):
    """log.csv's rows (lists of strings); [] if absent. Raises ValueError if unreadable."""
    if not os.path.exists(path):
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [row for row in csv.reader(f) if row]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(str(error)) from None


def _epochs(rows):
    """The epoch numbers of a log's data rows; ValueError if it is not bnreg's."""
    if rows and rows[0][:2] != ["epoch", "step"]:
        raise ValueError("no epoch and step columns")
    return [int(row[0]) for row in rows[1:]]


def check_epoch_log(path):
    """Raises ConfigError (one line naming the file) unless `path` is absent or a bnreg log.csv."""
    from bnreg_tf.run.config import ConfigError

    try:
        _epochs(read_rows(path))
    except ValueError:
        raise ConfigError(f"{path}: not a bnreg log (unreadable rows); move it aside to resume "
                          "(a new one is started)") from None


def _write(path, rows):
    if not rows:
        if os.path.lexists(path):
            os.remove(path)
        return
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    write_atomically(path, text.getvalue())


def _damage(found, expected):
    """How log.csv `found` (rows, or None if unreadable) differs from the history `expected`."""
    if found is None:
        return "was unreadable"
    if not found:
        return "was missing"
    have = len(found) - 1
    if have < len(expected) - 1:
        return f"held {have} of the {len(expected) - 1} epoch rows (cut or deleted rows)"
    return "held rows that differ from the checkpoint's (repeated or edited rows)"


class EpochLog(keras.callbacks.Callback):
    """`log.csv`: one row per epoch, `epoch` counted from 1 and the global `step` at its end,
    then every log value (sorted); the whole history is also in `history` (checkpointed)."""

    def __init__(self, path, steps_per_epoch, history, log=print):
        super().__init__()
        self.path, self.steps_per_epoch = path, int(steps_per_epoch)
        self.history, self.log = history, log
        self.keys = None

    def prepare(self, start_step, checkpoint=None):
        """Before training from `start_step` (restored from `checkpoint`): makes log.csv and
        the history agree (module docstring); says in one line what it dropped or rebuilt. At
        step 0 whatever log.csv held is dropped without a line (the trainer says it, when it
        shows progress)."""
        done = int(start_step) // self.steps_per_epoch
        name = os.path.basename(checkpoint) if checkpoint else "none"
        if start_step and not self._complete(self.history.rows, done):
            self._legacy(done)   # an older bnreg's checkpoint (or a history that lacks epochs)
        elif not start_step:
            self.history.rows = []
            _write(self.path, [])
        else:
            self._reconcile(list(self.history.rows), done, name)
        rows = self.history.rows or []
        self.keys = [k for k in rows[0] if k not in ("epoch", "step")] if rows else None

    @staticmethod
    def _complete(rows, done):
        """Whether `rows` (a checkpoint's history) holds exactly the epochs 1..done."""
        try:
            return rows is not None and _epochs(rows) == list(range(1, done + 1))
        except (ValueError, IndexError):
            return False

    def _reconcile(self, expected, done, name):
        try:
            found = read_rows(self.path)
        except ValueError:
            found = None
        self.history.rows = expected
        if found == expected or (not found and not expected):
            return
        header = bool(found) and found[0][:2] == ["epoch", "step"]
        extra = (found or [])[len(expected) if expected else 1:]
        if header and found[:len(expected)] == expected and extra and all(
                row[0].isdigit() and int(row[0]) > done for row in extra):
            self.log(f"bnreg: {self.path}: dropped the rows of epochs "
                     f"{', '.join(row[0] for row in extra)}, beyond checkpoint {name} (they run "
                     "again)")
        elif not expected:
            self.log(f"bnreg: {self.path}: not the log of checkpoint {name}, which has no epoch "
                     "done yet; started anew")
        else:
            self.log(f"bnreg: {self.path} {_damage(found, expected)}; rebuilt its "
                     f"{len(expected) - 1} rows from checkpoint {name}")
        _write(self.path, expected)

    def _legacy(self, done):
        """A checkpoint without history (older bnreg): keep what log.csv has up to it."""
        check_epoch_log(self.path)
        rows = read_rows(self.path)
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= done] if rows else []
        if len(kept) != len(rows):
            _write(self.path, kept)
        epochs = _epochs(kept)
        if epochs != list(range(1, done + 1)):
            self.log(f"bnreg: {self.path} holds epochs {epochs or 'none'} of 1..{done}; its "
                     "checkpoint predates the history bnreg keeps in checkpoints, so they "
                     "cannot be rebuilt")
        self.history.rows = kept

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.keys is None:
            self.keys = sorted(logs)
        step = int(self.model.optimizer.iterations.numpy())
        row = [str(epoch + 1), str(step)] + [_text(logs.get(key, "")) for key in self.keys]
        rows = self.history.rows or [["epoch", "step", *self.keys]]
        self.history.rows = rows + [row]
        _write(self.path, self.history.rows)


def _text(value):
    """A log value as log.csv has always written it (a float's repr, else its text)."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)

"""Runs a binary's main: stop signals, help, then flags, then `main()`, so that bad input ends in
one line on stderr and exit status 2."""
import errno
import math
import os
import sys

from absl import flags

from bnreg_tf.files import WriteFailed
from bnreg_tf.run.callbacks import NonFiniteLoss
from bnreg_tf.cli import help as cli_help
from bnreg_tf.run.config import ConfigError
from bnreg_tf.data.catalog import DataError
from bnreg_tf.run import stop
from bnreg_tf.run.stop import EXIT_STATUS as PREEMPTED_STATUS, Preempted

GRACE_FLAG = "stop_grace_secs"
# What to do about an OSError of the machine, by errno (anything else: "fix it").
_REMEDIES = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (a quota is full)",
             errno.EROFS: "make the file system writable", errno.EACCES: "make it writable",
             errno.EPERM: "make it writable", errno.EIO: "fix the disk or mount"}


def _fail(name, message, status=2):
    stop.reported(status)
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(status)


def _define_grace(flag_values):
    """`--stop_grace_secs`, every binary's: how long a stop signal may wait for the step."""
    if GRACE_FLAG in flag_values:
        return
    from bnreg_tf.run.flags import set_group

    flags.DEFINE_float(
        GRACE_FLAG, stop.DEFAULT_GRACE,
        "After SIGTERM/SIGINT, the most a step (and its checkpoint) may take before the binary "
        "exits anyway, naming the last checkpoint [seconds] (default 120; under a 30 s notice "
        "(GCE Spot, Kubernetes, Slurm) 25 lets the line out before the kill; BUILD_NOTES)",
        flag_values=flag_values)
    set_group("execution", GRACE_FLAG)


def _apply_grace(flag_values):
    seconds = flag_values[GRACE_FLAG].value
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--{GRACE_FLAG}: expected a number of seconds > 0, got {seconds!r}")
    stop.set_grace(seconds)


def _os_error_line(error):
    where = f"{error.filename}: " if error.filename else ""
    remedy = _REMEDIES.get(error.errno, "fix it")
    return (f"{where}{error.strerror}; what was saved before is intact: {remedy} and repeat "
            "the command")


def run_main(main, argv=None, name=None, flag_values=flags.FLAGS):
    """Answers help, parses flags, calls `main()`, maps expected failures to exit codes.

    From its first line SIGTERM/SIGINT are bnreg's (`bnreg_tf.run.stop.install`): one line,
    status 75, within `--stop_grace_secs`.
    `--help`/`-h` print the binary's own flags by group, `--helpfull` absl's full list (exit 0).
    2: a bad flag (any parse error), file or dataset (one line naming it); 1: a non-finite loss
    (the message names the last good checkpoint) or a write the machine refused (a full disk:
    one line naming what failed and what is intact); 75: stopped by SIGTERM/SIGINT (repeat the
    command to resume). Anything else is a bug and keeps its traceback.
    """
    argv = list(sys.argv if argv is None else argv)
    name = name or os.path.basename(argv[0])
    stop.install(name)
    try:
        _define_grace(flag_values)
        _run_mapped(main, argv, name, flag_values)
    finally:
        stop.uninstall()


def _run_mapped(main, argv, name, flag_values):
    try:
        _parse_and_run(main, argv, name, flag_values)
    except (ConfigError, DataError) as error:
        _fail(name, str(error).strip().splitlines()[0])
    except (NonFiniteLoss, WriteFailed) as error:
        _fail(name, str(error).strip().splitlines()[0], 1)
    except OSError as error:
        if error.errno is None:
            raise
        # The machine, not the input: a full disk, a lost mount. One line; what was saved stays.
        _fail(name, _os_error_line(error), 1)
    except Preempted as error:
        stop.reported(PREEMPTED_STATUS)
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(PREEMPTED_STATUS)


def _parse_and_run(main, argv, name, flag_values):
    wanted = cli_help.requested(argv)
    if wanted:
        module = sys.modules.get(getattr(main, "__module__", ""), None)
        doc = (getattr(module, "__doc__", "") or "").strip().split("\n\n")[0]
        cli_help.print_help(wanted, name, doc, flag_values)
        sys.exit(0)
    try:
        extra = flag_values(argv)
    except (flags.Error, ValueError) as error:  # absl raises both (`--noexport=1`: ValueError)
        lines = str(error).strip().splitlines()
        _fail(name, lines[0] if lines else f"cannot parse the flags ({type(error).__name__})")
    if len(extra) > 1:
        _fail(name, f"unexpected arguments {extra[1:]}; every option is a --flag")
    _apply_grace(flag_values)
    status = main() or 0
    stop.reported(status)
    sys.exit(status)

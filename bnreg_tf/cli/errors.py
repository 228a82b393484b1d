"""Runs a binary's main: help, then flags, then `main()`, so that bad input ends in one line on
stderr and exit status 2."""
import os
import sys

from absl import flags

from bnreg_tf.run.callbacks import NonFiniteLoss
from bnreg_tf.cli import help as cli_help
from bnreg_tf.run.config import ConfigError
from bnreg_tf.data.catalog import DataError
from bnreg_tf.run.preemption import EXIT_STATUS as PREEMPTED_STATUS, Preempted


def _fail(name, message, status=2):
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(status)


def run_main(main, argv=None, name=None, flag_values=flags.FLAGS):
    """Answers help, parses flags, calls `main()`, maps expected failures to exit codes.

    `--help`/`-h` print the binary's own flags by group, `--helpfull` absl's full list (exit 0).
    2: a bad flag (any parse error), file or dataset (one line naming it); 1: a non-finite loss
    (the message names the last good checkpoint); 75: stopped by SIGTERM/SIGINT after saving a
    checkpoint (repeat the command to resume). Anything else is a bug and keeps its traceback.
    """
    argv = list(sys.argv if argv is None else argv)
    name = name or os.path.basename(argv[0])
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
    try:
        sys.exit(main() or 0)
    except (ConfigError, DataError) as error:
        _fail(name, str(error).strip().splitlines()[0])
    except NonFiniteLoss as error:
        _fail(name, error, 1)
    except OSError as error:
        if error.errno is None:
            raise
        # The machine, not the input: a full disk, a lost mount. One line; what was saved stays.
        _fail(name, f"{str(error.filename) + ': ' if error.filename else ''}{error.strerror}; "
              "nothing written is lost: free space (or fix the mount) and repeat the command", 1)
    except Preempted as error:
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(PREEMPTED_STATUS)

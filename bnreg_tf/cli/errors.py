"""Runs a binary's main so that bad input ends in one line on stderr and exit status 2."""
import os
import sys

from absl import flags

from bnreg_tf.callbacks import NonFiniteLoss
from bnreg_tf.config import ConfigError
from bnreg_tf.data.catalog import DataError
from bnreg_tf.preemption import EXIT_STATUS as PREEMPTED_STATUS, Preempted


def run_main(main, argv=None, name=None, flag_values=flags.FLAGS):
    """Parses flags, calls `main()`, maps expected failures to exit codes.

    2: a bad flag, file or dataset, or a model dir in use (one line naming it); 1: a non-finite
    loss (the message names the last good checkpoint); 75: stopped by SIGTERM/SIGINT after saving
    a checkpoint (repeat the command to resume). Anything else is a bug and keeps its traceback.
    """
    argv = list(sys.argv if argv is None else argv)
    name = name or os.path.basename(argv[0])
    try:
        extra = flag_values(argv)
    except flags.Error as error:
        message = str(error).strip().splitlines()[0]
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(2)
    if len(extra) > 1:
        print(f"{name}: error: unexpected arguments {extra[1:]}; every option is a --flag",
              file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main() or 0)
    except (ConfigError, DataError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except Preempted as error:
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(PREEMPTED_STATUS)

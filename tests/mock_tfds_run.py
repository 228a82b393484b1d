"""Runs a bnreg binary with `tfds.testing.mock_data` active (tests only).

    python tests/mock_tfds_run.py NUM_EXAMPLES (MODULE | path/to/script.py) [flags...]
"""
import runpy
import sys

import tensorflow_datasets as tfds


def main():
    count, target, *args = sys.argv[1:]
    sys.argv = [target, *args]
    with tfds.testing.mock_data(num_examples=int(count)):
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""`--init_from=DIR`: branch a run. A new run (its own --model_dir, any hyperparameters) starts
from the network weights of DIR's latest checkpoint, with a fresh optimizer and step 0.

Only the network's variables are read (weights and BatchNorm statistics, the raw weights where
the recipe also keeps an average); optimizer slots and the step counter stay behind. The new
run's own checkpoints take over as soon as it has one, so a resumed branch never re-reads DIR.
"""
import os

from bnreg_tf.run import layout
from bnreg_tf.run.config import ConfigError


def source_checkpoint(config):
    """The checkpoint prefix `--init_from` names; ConfigError (one line) when there is none."""
    import tensorflow as tf

    source = config.init_from
    if os.path.abspath(source) == os.path.abspath(config.model_dir or ""):
        raise ConfigError(f"--init_from={source}: is --model_dir itself; a run resumes from its "
                          "own checkpoints without --init_from")
    directory = os.path.join(source, layout.CHECKPOINTS)
    from bnreg_tf.run.checkpoints import checkpoint_paths

    found = checkpoint_paths(directory)   # the files themselves, should the index be lost
    latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    latest = latest or (found[-1] if found else None)
    if latest is None:
        raise ConfigError(f"--init_from={source}: expected the --model_dir of a bnreg run with a "
                          f"checkpoint (found none in {directory})")
    return latest


def restore_init_from(config, network):
    """Loads `config.init_from`'s latest network weights into `network`; returns the prefix.

    Raises ConfigError when the checkpoint does not fit the network (another --model or
    --dataset): every variable of `network` must be found with its shape.
    """
    import tensorflow as tf

    latest = source_checkpoint(config)
    checkpoint = tf.train.Checkpoint(network=network)
    try:
        status = checkpoint.read(latest).expect_partial()  # the optimizer stays behind
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        detail = str(error).strip().splitlines()[0][:160]
        raise ConfigError(f"--init_from={config.init_from}: its checkpoint does not fit "
                          f"--model={config.model} on --dataset={config.dataset} ({detail})") \
            from None
    return latest

"""`--init_from=DIR`: branch a run. A new run (its own --model_dir, any hyperparameters) starts
from the network weights of DIR's latest checkpoint, with a fresh optimizer and step 0.

The weights are matched by their names (`layer/variable`, Keras' variable paths, which every
checkpoint stores beside each value), never by the position of a layer in the object graph: so
a penalty layer (EL2, FL2, KL) or Dropout can be added or removed between the two runs, which
moves every later layer in the graph. Every learned weight and BatchNorm statistic of the new
network must be in the checkpoint with its shape, and every one of the checkpoint's must be in
the network; only random-number state (Dropout's and stochastic depth's seed generators) may
be on one side alone. Anything else is another architecture, norm or class count: one line
naming the first layer that differs and both shapes. The raw weights are read where the recipe
also keeps an average; optimizer slots, the step counter and the epoch's metrics stay behind.
The new run's own checkpoints take over as soon as it has one, so a resumed branch never
re-reads DIR.
"""
import os

from bnreg_tf.run import layout
from bnreg_tf.run.config import ConfigError

# Where a network variable is found in a bnreg checkpoint's object graph: under the network,
# or (found first, breadth-first) as a variable the optimizer updates or averages.
_NETWORK_KEYS = ("network/", "optimizer/_trainable_variables/", "optimizer/_average_sources/")
_RANDOM_STATE = "seed_generator_state"


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


def checkpoint_weights(prefix):
    """`(reader, {variable name: checkpoint key})` of the network variables in `prefix`."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    names = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.checkpoint_key.startswith(_NETWORK_KEYS):
                names.setdefault(attribute.full_name, attribute.checkpoint_key)
    return reader, names


class Mismatch(ValueError):
    """The checkpoint's network differs from this one at `name` (a variable path)."""

    def __init__(self, name, detail):
        super().__init__(f"{name} {detail}")
        self.name, self.detail = name, detail


def match_weights(network, reader, names):
    """`(pairs, new, unused)`: the (variable, key) pairs to restore, the network's variables
    the checkpoint lacks and the checkpoint's names the network lacks (random-number state
    only); `Mismatch` at the first learned weight or statistic that differs."""
    shapes = reader.get_variable_to_shape_map()
    pairs, new = [], []
    for variable in network.variables:
        key = names.get(variable.path)
        if key is None:
            if not variable.path.endswith(_RANDOM_STATE):
                raise Mismatch(variable.path, f"{tuple(variable.shape)} here, not in the "
                               "checkpoint")
            new.append(variable.path)
        elif tuple(shapes[key]) != tuple(variable.shape):
            raise Mismatch(variable.path, f"{tuple(shapes[key])} in the checkpoint, "
                           f"{tuple(variable.shape)} here")
        else:
            pairs.append((variable, key))
    here = {variable.path for variable in network.variables}
    unused = [name for name in names if name not in here]
    for name in unused:
        if not name.endswith(_RANDOM_STATE):
            raise Mismatch(name, f"{tuple(shapes[names[name]])} in the checkpoint, not here")
    return pairs, new, unused


def restore_init_from(config, network):
    """Loads `config.init_from`'s latest network weights into `network` by name (module
    docstring); returns `(checkpoint prefix, one line saying what was restored)`.

    Raises ConfigError (one line, no TensorFlow warning) when the checkpoint holds another
    architecture, norm or class count."""
    latest = source_checkpoint(config)
    try:
        reader, names = checkpoint_weights(latest)
    except Exception as error:  # a corrupt or unreadable checkpoint: NotFound, DataLoss, ...
        detail = " ".join(str(error).split())[:160] or type(error).__name__
        raise ConfigError(f"--init_from={config.init_from}: cannot read {latest} ({detail})") \
            from None
    try:
        pairs, new, unused = match_weights(network, reader, names)
    except Mismatch as error:
        raise ConfigError(f"--init_from={config.init_from}: its network is not the one of "
                          f"--model={config.model} --norm={config.norm} on --dataset="
                          f"{config.dataset}: layer {error.name.rsplit('/', 1)[0]} differs "
                          f"({error.name}: {error.detail})") from None
    for variable, key in pairs:
        variable.assign(reader.get_tensor(key))
    note = (f"bnreg: --init_from: {len(pairs)} of {len(network.variables)} network variables "
            f"restored by name from {latest}; not restored (new here): "
            f"{', '.join(new) or 'none'}; not used (only in the checkpoint): "
            f"{', '.join(unused) or 'none'}")
    return latest, note

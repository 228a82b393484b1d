"""`make_strategy(kind)`: the tf.distribute strategies the binaries run under (`--strategy`)."""
import tensorflow as tf

from bnreg_tf.config import ConfigError

KINDS = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(kind, tpu=""):
    """Returns the strategy; raises ConfigError (one line) when the hardware is not there."""
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multi_worker":
        import json
        import os

        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy=multi_worker: expected the TF_CONFIG environment "
                              "variable describing the cluster and this task, found none")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise ConfigError("--strategy=multi_worker: TF_CONFIG is not valid JSON") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else "no TPU"
            raise ConfigError(f"--strategy=tpu (--tpu={tpu!r}): no TPU reachable ({detail})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"--strategy: expected one of {', '.join(KINDS)}, got {kind!r}")


def split_cpu(count):
    """Makes `count` logical CPU devices; must run before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise ConfigError(f"--virtual_cpus={count}: TensorFlow's devices are already "
                              "initialised in this process") from None


def check_batch_split(strategy, batch_size, flag="batch_size"):
    """Global batch must split evenly over the replicas; returns the per-replica batch."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(f"--{flag}={batch_size} does not split evenly over {replicas} replicas; "
                          f"use a multiple of {replicas}")
    return batch_size // replicas


def is_chief(strategy):
    """True on the one process that writes logs, config, results and the export."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_scratch_dir(strategy):
    """Where a non-chief worker writes what must be written but is not kept."""
    import tempfile

    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"bnreg-{resolver.task_type}-{resolver.task_id}-")

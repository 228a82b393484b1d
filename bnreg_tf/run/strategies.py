"""How a process runs: its tf.distribute strategy, its precision and its compilation, in one place.

The binaries make the strategy once, first, before TensorFlow initialises its devices (the CPU
split of `--virtual_cpus` and MultiWorkerMirroredStrategy both require that), and pass it to every
run of the process (`trainer.train`, `trainer.build_run`, `trainer.export_from_checkpoint`,
`study.run_study`). A second MirroredStrategy in one process collides with the first one's
collective instance keys ("Shape mismatch in the collective instance"), so there is never more
than one.

Compilation (`jit_compile`), measured on this project's machines:
- CPU: plain graph mode. XLA made training steps 4-8x slower (EfficientNet-B0, ResNet-50 at
  64 px, 2-core AVX-512 CPU), and Keras's `"auto"` also turns it off there.
- MirroredStrategy with more than one replica: off. XLA there failed (a variable placed on
  another device).
- One GPU or a TPU: on.
Precision: float32 on CPU, mixed_bfloat16 on TPU, mixed_float16 on GPU (`--precision=auto`).
"""
import json
import os
import socket
import threading

import tensorflow as tf

from bnreg_tf.run import rendezvous

from bnreg_tf.run.config_checks import STRATEGIES as KINDS
from bnreg_tf.run.config import ConfigError
# Logical CPU devices beyond this many per core only slow a CPU test run down (and TensorFlow
# takes minutes to set up tens of thousands of them): `--virtual_cpus` is bounded by it.
MAX_VIRTUAL_CPUS_PER_CORE = 8
RESOLVE_SECONDS = 10.0   # TF_CONFIG's host names, all together


def make_strategy(kind, tpu="", virtual_cpus=0, worker_timeout=600):
    """Returns the strategy; raises ConfigError (one line) when the hardware is not there.

    `virtual_cpus` > 0 first splits the CPU into that many logical devices (for `mirrored` on a
    CPU machine); it must come before anything initialises TensorFlow's devices.
    `worker_timeout`: seconds `multi_worker` waits for every task of TF_CONFIG to come up
    (`bnreg_tf.run.rendezvous`: TensorFlow itself waits for ever, deaf to SIGTERM).
    """
    if kind not in KINDS:
        raise ConfigError(f"--strategy: expected one of {', '.join(KINDS)}, got {kind!r}")
    if virtual_cpus:
        split_cpu(virtual_cpus)
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
        own, peers = _addresses(check_tf_config(os.environ.get("TF_CONFIG")))
        rendezvous.meet(own, peers, worker_timeout)   # TensorFlow's own wait has no bound
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as error:  # resolvers raise ValueError, RuntimeError, OpError, HTTP errors
        lines = str(error).strip().splitlines()
        detail = lines[0][:160] if lines else type(error).__name__
        raise ConfigError(f"--strategy=tpu (--tpu={tpu!r}): no TPU reachable ({detail})") from None


def strategy_for(config):
    """`make_strategy` from a RunConfig's --strategy, --tpu and --virtual_cpus."""
    return make_strategy(config.strategy, config.tpu, config.virtual_cpus,
                         config.worker_timeout)


def check_tf_config(text):
    """Validates TF_CONFIG for --strategy=multi_worker: a cluster of >= 2 tasks given as
    `host:port` strings whose hosts resolve, and this task in it (an integer index)."""
    prefix = "--strategy=multi_worker: TF_CONFIG"
    if not text:
        raise ConfigError("--strategy=multi_worker: expected the TF_CONFIG environment "
                          "variable describing the cluster and this task, found none")
    try:
        spec = json.loads(text)
    except ValueError:
        raise ConfigError(f"{prefix} is not valid JSON") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise ConfigError(f"{prefix} needs a \"cluster\" mapping each role (chief, worker) to "
                          "a list of host:port addresses")
    for role, addresses in cluster.items():
        for address in addresses:
            _check_address(prefix, role, address)
    if sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")) < 2:
        raise ConfigError(f"{prefix}'s cluster has fewer than 2 tasks; use --strategy=mirrored "
                          "or default on one machine")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ConfigError(f"{prefix}'s task type must be one of {sorted(cluster)}, got "
                          f"{task.get('type') if isinstance(task, dict) else task!r}")
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(f"{prefix}'s task index {index!r} is not an integer")
    if not 0 <= index < len(cluster[task["type"]]):
        raise ConfigError(f"{prefix}'s task index {index!r} is outside the "
                          f"{len(cluster[task['type']])} {task['type']} task(s) of the cluster")
    _check_hosts(prefix, [a.rsplit(":", 1)[0] for v in cluster.values() for a in v])
    return spec


def _addresses(spec):
    """`(this task's address, the other chief and worker tasks' addresses)`."""
    task = spec["task"]
    own = spec["cluster"][task["type"]][task.get("index", 0)]
    return own, [address for role in ("chief", "worker")
                 for address in spec["cluster"].get(role, []) if address != own]


def _check_address(prefix, role, address):
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{prefix}: {role} address {address!r} is not a \"host:port\" string "
                          "(e.g. \"10.0.0.2:2222\")")


def _check_hosts(prefix, hosts, seconds=RESOLVE_SECONDS):
    """Every host resolves within `seconds` in all (name resolution has no timeout of its own:
    it runs in a daemon thread that is abandoned when the time is up)."""
    failed, done = [], threading.Event()

    def resolve():
        for host in dict.fromkeys(hosts):
            try:
                socket.getaddrinfo(host.strip("[]"), None)
            except OSError as error:
                failed.append(f"{host} ({error.strerror or error})")
        done.set()

    threading.Thread(target=resolve, daemon=True).start()
    if not done.wait(seconds):
        raise ConfigError(f"{prefix}: its hosts did not resolve within {seconds:g} s (no "
                          "name service?)")
    if failed:
        raise ConfigError(f"{prefix}: cannot resolve {failed[0]}")


def split_cpu(count):
    """Makes `count` logical CPU devices; must run before TensorFlow initialises its devices."""
    limit = MAX_VIRTUAL_CPUS_PER_CORE * (os.cpu_count() or 1)
    if not 1 <= count <= limit:
        raise ConfigError(f"--virtual_cpus={count}: expected 1..{limit} "
                          f"({MAX_VIRTUAL_CPUS_PER_CORE} per core of this host), or 0 for none")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise ConfigError(f"--virtual_cpus={count}: TensorFlow's devices are already "
                              "initialised in this process; make the strategy first") from None


def check_batch_split(strategy, batch_size, flag="batch_size"):
    """Global batch must split evenly over the replicas; returns the per-replica batch."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(f"--{flag}={batch_size} does not split evenly over {replicas} replicas; "
                          f"use a multiple of {replicas}")
    return batch_size // replicas


def choose_jit_compile(strategy=None):
    """The `jit_compile` bnreg uses under `strategy` (default: the current one), per the table above."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if strategy.num_replicas_in_sync > 1:
        return False
    return bool(tf.config.list_logical_devices("GPU"))


def jit_compile(compilation, strategy):
    """`--compilation`: xla, graph, or auto (`choose_jit_compile`)."""
    if compilation == "xla":
        return True
    if compilation == "graph":
        return False
    return choose_jit_compile(strategy)


def precision_policy(precision, strategy):
    """`--precision`: the Keras mixed-precision policy name; `auto` picks it per device."""
    if precision != "auto":
        return precision
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    return "float32"


def set_precision(precision, strategy):
    """Sets the global Keras policy for the models built next; returns its name."""
    import keras

    policy = precision_policy(precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def is_chief(strategy):
    """True on the one process that writes logs, config, results and the export."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker(strategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def is_multi_worker(strategy):
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def worker_scratch_dir(strategy):
    """Where a non-chief worker writes what must be written but is not kept."""
    import tempfile

    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"bnreg-{resolver.task_type}-{resolver.task_id}-")

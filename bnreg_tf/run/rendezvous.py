"""The tasks of a multi-worker cluster meet before TensorFlow connects them, within a bound.

`tf.distribute.MultiWorkerMirroredStrategy()` waits in C++ for every task of TF_CONFIG to
connect, for ever: neither SIGTERM nor a Python watchdog thread stopped it (observed: 14
minutes, then SIGKILL; docs/references.md §8.14). So each task first listens on its own TF_CONFIG
port with a plain socket and connects to every other chief/worker address, retrying, until all
answer or `seconds` have passed (then one line naming the missing ones). A peer answers either
from this rendezvous or from its TensorFlow server, which takes the same port once the peer's
rendezvous is over; so tasks started minutes apart meet as soon as the last one is up.
"""
import socket
import time

from bnreg_tf.run.config import ConfigError

RETRY_SECONDS = 0.5


def _listen(port):
    """A socket listening on `port` on every interface (IPv6 and IPv4 where possible)."""
    try:
        server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    except OSError:
        server, address = socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("", port)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
    server.listen(64)
    return server


def _answers(address, timeout):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def meet(own, peers, seconds, flag="--worker_timeout"):
    """Returns once every address of `peers` accepts a connection; ConfigError (one line)
    after `seconds`, or when `own` (this task's host:port) cannot be listened on."""
    try:
        server = _listen(int(own.rpartition(":")[2]))
    except OSError as error:
        raise ConfigError(f"--strategy=multi_worker: cannot listen on this task's TF_CONFIG "
                          f"address {own} ({error.strerror or error}); is another task or "
                          "process using it?") from None
    deadline = time.monotonic() + seconds
    waiting = list(peers)
    try:
        while waiting:
            waiting = [address for address in waiting if not _answers(address, RETRY_SECONDS)]
            if waiting and time.monotonic() >= deadline:
                raise ConfigError(
                    f"--strategy=multi_worker: {len(waiting)} of the {len(peers)} other tasks "
                    f"of TF_CONFIG did not come up within {flag}={seconds:g} s "
                    f"({', '.join(waiting[:3])}{', ...' if len(waiting) > 3 else ''}); start "
                    f"every task, or raise {flag}")
            if waiting:
                time.sleep(RETRY_SECONDS)
    finally:
        server.close()

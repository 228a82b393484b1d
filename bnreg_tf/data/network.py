"""`--download` without a network fails in seconds, not minutes.

TensorFlow Datasets retries DNS and HTTP for minutes on a machine without network before it
fails (docs/references.md §8.10; issue 26 saw 3.5 minutes and 60 lines of progress bars).
Before a download starts, `check_reachable` resolves and connects to TFDS's host (its GCS
bucket `gs://tfds-data` is served by storage.googleapis.com; or the proxy that HTTPS_PROXY
names) within `PROBE_SECONDS`; then `stall_timeout` bounds each socket wait of the download.
"""
import contextlib
import os
import socket
import threading
import urllib.parse

from bnreg_tf.data.spec import DataError

TFDS_HOST = ("storage.googleapis.com", 443)
PROBE_SECONDS = 10.0      # resolving and connecting to the host, together
STALL_SECONDS = 120.0     # a download that receives nothing for this long fails


def _target():
    """`(host, port, what)`: the HTTPS proxy when one is set, else TFDS's host."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}")
        if parsed.hostname:
            return parsed.hostname, parsed.port or 3128, "the proxy in HTTPS_PROXY"
    return TFDS_HOST[0], TFDS_HOST[1], "TFDS's download host"


def _connect(host, port, seconds, outcome):
    try:
        with socket.create_connection((host, port), timeout=seconds):
            outcome.append(None)
    except OSError as error:
        outcome.append(error.strerror or str(error) or type(error).__name__)


def check_reachable(name="NAME", flag="--download", seconds=PROBE_SECONDS):
    """DataError (one line) unless the download host answers within `seconds`.

    Name resolution has no timeout of its own, so the probe runs in a daemon thread that is
    abandoned (never waited for) when the time is up."""
    host, port, what = _target()
    outcome = []
    thread = threading.Thread(target=_connect, args=(host, port, seconds, outcome), daemon=True)
    thread.start()
    thread.join(seconds)
    if outcome and outcome[0] is None:
        return
    reason = outcome[0] if outcome else f"no answer within {seconds:g} s"
    raise DataError(f"{flag}: the network is unreachable ({what} {host}:{port}: {reason}); "
                    f"prepare {name} on a machine with network (`tfds build {name} "
                    "--data_dir=DIR`) and copy DIR here, then train with --data_dir=DIR and "
                    "without --download")


@contextlib.contextmanager
def stall_timeout(seconds=STALL_SECONDS):
    """Inside the block, a socket that waits longer than `seconds` fails (TFDS's requests
    downloads set no timeout of their own)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)

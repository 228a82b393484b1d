"""Flags and environment (issue 26): every crash, traceback, hang and silent acceptance the field
found is one stderr line with exit status 2, within a bounded time, and nothing is written; and
bnreg-demo answers --help/--helpfull like the other binaries. Subprocesses of the binaries."""
import json
import os
import socket
import sys
import time

import pytest

from tests import binaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--epochs=1", "--steps_per_epoch=2", "--batch_size=8", "--eval_batch_size=8",
         "--norm_probe_size=8"]
BOUND_SECONDS = 90   # start-up (~10-20 s on the 2-core CI machine) plus every stated timeout


def run(args, env=None, timeout=BOUND_SECONDS):
    start = time.monotonic()
    result = binaries.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout,
                            env={**os.environ, "BNREG_QUIET": "1", **(env or {})})
    result.seconds = time.monotonic() - start
    return result


def refused(result, start):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIN = [
    (["--batch_size=1000000000"], "--batch_size=1000000000: 1000000000 images of 8x8x1 need at "
     "least 3.96 TiB"),                                             # was SIGSEGV
    (["--eval_batch_size=1000000000"], "--eval_batch_size=1000000000: 1000000000 images"),
    (["--learning_rate=1e308"], "--learning_rate: expected a finite number >= 0 (at most 3.4e38"),
    (["--image_size=100000"], "--batch_size=8 at --image_size=100000: 8 images of "
     "100000x100000x1 need at least"),
    (["--model=wrn16_100000"], "--model=wrn16_100000: 1.71e+15 parameters need"),
    (["--model=wrn6000004_1"], "--model=wrn6000004_1: depth 6000004 means about 2.1e+07 layers"),
    (["--image_size=1"], "--image_size: expected 0 (the data's or model's size) or at least 8"),
    (["--decay_epochs=inf"], "--decay_epochs: expected finite epochs, got 'inf'"),
    (["--randaugment_magnitude=1000"], "--randaugment_magnitude: expected a magnitude in [0, 30]"),
    (["--data_dir={tmp}"], "--data_dir: expected no --data_dir with --dataset=digits"),
    (["--skip_bad_images"], "--skip_bad_images: expected --dataset=folder"),
    (["--worker_timeout=0"], "--worker_timeout: expected an integer >= 1"),
]


@pytest.mark.parametrize("flags,start", TRAIN, ids=[flags[0] for flags, _ in TRAIN])
def test_train_flags(tmp_path, flags, start):
    model_dir = str(tmp_path / "run")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    result = run(["bnreg_tf.cli.train", f"--model_dir={model_dir}", *QUICK, *flags])
    refused(result, f"bnreg-train: error: {start}")
    assert not os.path.exists(model_dir) and result.seconds < BOUND_SECONDS


def test_download_without_network_fails_fast(tmp_path):
    """The proxy a download goes through refuses connections: what a machine without network
    sees, on any machine (the test never reaches the network)."""
    model_dir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
    result = run(["bnreg_tf.cli.train", "--dataset=mnist", "--download", f"--data_dir={data_dir}",
                  f"--model_dir={model_dir}", *QUICK],
                 env={"HTTPS_PROXY": f"http://127.0.0.1:{_free_port()}"})
    line = refused(result, "bnreg-train: error: --download: the network is unreachable (the "
                           "proxy in HTTPS_PROXY 127.0.0.1:")
    assert "`tfds build mnist --data_dir=DIR`" in line and "%" not in result.stdout
    assert not os.path.exists(model_dir) and result.seconds < 60


def test_missing_data_names_tfds_data_dir_and_keeps_whole_words(tmp_path):
    data_dir = str(tmp_path / "tfds")
    os.makedirs(data_dir)
    result = run(["bnreg_tf.cli.train", "--dataset=mnist", f"--model_dir={tmp_path / 'run'}",
                  *QUICK], env={"TFDS_DATA_DIR": data_dir})
    line = refused(result, f"bnreg-train: error: --dataset=mnist (--data_dir={data_dir} from "
                           "TFDS_DATA_DIR): cannot read split 'train' (no prepared copy in "
                           f"{data_dir}); prepare it once with `tfds build mnist "
                           f"--data_dir={data_dir}`")
    assert "tensorflow_datasets" not in line


TF_CONFIGS = [
    ({"cluster": {"worker": [1, 2]}, "task": {"type": "worker", "index": 0}},
     "TF_CONFIG: worker address 1 is not a \"host:port\" string"),
    ({"cluster": {"worker": ["nosuchhost.invalid:1234", "127.0.0.1:{port}"]},
      "task": {"type": "worker", "index": 1}}, "TF_CONFIG: cannot resolve nosuchhost.invalid"),
    ({"cluster": {"worker": ["127.0.0.1:{port}", "127.0.0.1:{other}"]},
      "task": {"type": "worker", "index": True}}, "TF_CONFIG's task index True is not an integer"),
]


@pytest.mark.parametrize("tf_config,start", TF_CONFIGS, ids=["integer", "unresolvable", "bool"])
def test_bad_tf_config(tmp_path, tf_config, start):
    text = json.dumps(tf_config).replace("{port}", str(_free_port())).replace(
        "{other}", str(_free_port()))
    model_dir = str(tmp_path / "run")
    result = run(["bnreg_tf.cli.train", "--strategy=multi_worker", f"--model_dir={model_dir}",
                  *QUICK], env={"TF_CONFIG": text})
    refused(result, f"bnreg-train: error: --strategy=multi_worker: {start}")
    assert not os.path.exists(model_dir)


def test_a_peer_that_never_comes_up_is_waited_for_a_stated_time(tmp_path):
    own, peer = _free_port(), _free_port()
    text = json.dumps({"cluster": {"worker": [f"127.0.0.1:{own}", f"127.0.0.1:{peer}"]},
                       "task": {"type": "worker", "index": 0}})
    model_dir = str(tmp_path / "run")
    result = run(["bnreg_tf.cli.train", "--strategy=multi_worker", "--worker_timeout=3",
                  f"--model_dir={model_dir}", *QUICK], env={"TF_CONFIG": text})
    refused(result, "bnreg-train: error: --strategy=multi_worker: 1 of the 1 other tasks of "
                    "TF_CONFIG did not come up within --worker_timeout=3 s "
                    f"(127.0.0.1:{peer}); start every task, or raise --worker_timeout")
    assert not os.path.exists(model_dir) and result.seconds < 60


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("eval") / "run")
    result = run(["bnreg_tf.cli.train", f"--model_dir={model_dir}", *QUICK], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(model_dir, "export")


EVAL = [
    (["--max_examples=-5"], "--max_examples: expected an integer >= 0 (0 = all), got -5"),
    (["--seed=-1"], "--seed: expected an integer in [0, 2^32), got -1"),
    (["--dropout_draws=100000000000"], "--dropout_draws: expected 1..1000 masks"),
    (["--dataset=digits", "--data_dir={tmp}"], "--data_dir: expected no --data_dir with "
                                               "--dataset=digits"),
]


@pytest.mark.parametrize("flags,start", EVAL, ids=[flags[0] for flags, _ in EVAL])
def test_eval_flags(export, tmp_path, flags, start):
    output = str(tmp_path / "eval.json")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    result = run(["bnreg_tf.cli.evaluate", f"--saved_model={export}", f"--output={output}",
                  *flags])
    refused(result, f"bnreg-eval: error: {start}")
    assert not os.path.exists(output)


@pytest.mark.parametrize("flags,start", [
    (["--shard=5/8"], "--shard=5/8: this grid has 4 runs per phase, so shards 4..7 of 8 have "
                      "nothing to do; use at most 4 shards"),
    (["--batch_size=1000000000"], "--batch_size=1000000000: 1000000000 images of 8x8x1"),
], ids=["empty shard", "batch"])
def test_study_flags(tmp_path, flags, start):
    output = str(tmp_path / "study")
    result = run(["bnreg_tf.cli.study", f"--output_dir={output}", "--variants=batchnorm,fixup",
                  "--seeds=0,1", *flags])
    refused(result, f"bnreg-study: error: {start}")
    assert not os.path.exists(output)


@pytest.mark.parametrize("flag", ["--help", "-h", "--helpfull"])
def test_demo_answers_help_like_the_other_binaries(flag):
    result = run(["bnreg_tf.cli.demo", flag])
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    assert result.stdout.startswith("`bnreg-demo`: the smallest real run")   # nothing before
    assert "--epochs" in result.stdout and "--batch_size" in result.stdout
    assert ("--verbosity" in result.stdout) == (flag == "--helpfull")   # absl's: full list only

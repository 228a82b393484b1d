"""TensorFlow and JAX give the same numbers for the same weights (issue 24): weights written on
one backend (`.weights.h5` and `.keras`) load on the other with the same outputs, both ways, and
`fit` with the penalties takes the same first step. The other backend runs in a subprocess
(`tests/any_backend/cross.py`, `exchange`) while this one works; float32 on CPU."""
import json

import numpy as np
import pytest

from tests.any_backend import cross
from tests.any_backend.helpers import backend, finish, other_backend, rel_err, start_on

pytestmark = pytest.mark.cross_backend
RTOL = 1e-5   # relative to the largest logit: float32 through a few dozen layers


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`ours`: this backend's files, loaded and trained from on both backends; `theirs`: the
    other backend's files, loaded here."""
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")
    cross.save(str(ours))
    process = start_on(other_backend(), "tests.any_backend.cross", "exchange", ours, theirs,
                       cwd=ours)
    cross.fit(str(ours))   # while the other backend loads, trains and saves
    assert finish(process)["backend"] == other_backend()
    cross.load(str(theirs))
    return ours, theirs


def assert_same_logits(got, expected, what):
    scale = np.abs(expected).max()
    assert scale > 0.1, what   # weights off their init: the logits carry signal
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


@pytest.mark.parametrize("direction", ["theirs_loaded_here", "ours_loaded_there"])
@pytest.mark.parametrize("kind", ["h5", "keras"])
@pytest.mark.parametrize("name", cross.MODELS)
def test_weights_saved_on_one_backend_load_on_the_other(folders, name, kind, direction):
    ours, theirs = folders
    folder, loaded_on = (theirs, backend()) if direction == "theirs_loaded_here" \
        else (ours, other_backend())
    expected = np.load(folder / f"{name}.expected.npy")
    got = np.load(folder / f"{name}.{kind}.{loaded_on}.npy")
    assert_same_logits(got, expected, f"{name}.{kind} loaded on {loaded_on}")


@pytest.mark.parametrize("name", cross.FIT_MODELS)
def test_fit_takes_the_same_first_step_with_the_penalties(folders, name):
    ours, _ = folders
    here, there = (json.loads((ours / f"{name}.fit.{b}.json").read_text())
                   for b in (backend(), other_backend()))
    assert set(here["history"]) == set(there["history"]) and "loss" in here["history"]
    penalties = [key for key in here["history"] if key != "loss"]
    assert penalties and all(here["history"][key] > 0 for key in penalties)
    for key, value in there["history"].items():
        assert rel_err(here["history"][key], value) < 1e-5, (name, key)
    assert_same_logits(np.array(here["logits_after"]), np.array(there["logits_after"]),
                       f"{name}: logits after the step")

"""`benchmarks/jax_step.py` (issue 24, item 6) measures a real training step: on JAX (a
subprocess, from the TensorFlow pass), two of its steps equal two of `model.fit`'s on the same
weights, and its table compares each model with the one named for it in the same run."""
import pytest

from tests.any_backend.helpers import run_module_on

pytestmark = pytest.mark.cross_backend


def test_the_benchmarks_step_is_kerass_training_step_and_its_table_compares(tmp_path):
    result = run_module_on("jax", "tests.any_backend.jax_step_check", cwd=tmp_path)
    assert result["backend"] == "jax"
    assert result["moved"] > 1e-3        # the steps changed the weights
    assert result["worst"] < 1e-5        # ... exactly as Keras' own step does
    assert set(result["rates"]) == {"a/float32", "a/mixed_bfloat16", "b/float32",
                                    "b/mixed_bfloat16"}
    assert all(rate > 0 for rate in result["rates"].values())
    rows = result["table"].splitlines()[2:]
    assert len(rows) == 4 and all(row.startswith("| model ") for row in rows)
    ratio = result["rates"]["a/float32"] / result["rates"]["b/float32"]
    assert rows[0].split("|")[4].strip() == f"{ratio:.2f}x" and rows[2].split("|")[4].strip() == ""

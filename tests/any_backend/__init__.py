"""Tests of the building blocks and the model code that run on any Keras 3 backend (issue 24).

The README's test command runs them on TensorFlow with every other test; `.ci/run` runs this
directory a second time with `KERAS_BACKEND=jax`, less the tests marked `cross_backend`: those
compare the two backends (the other one in a subprocess), so the TensorFlow pass has already
made exactly the same comparison. Nothing here imports TensorFlow at module level: on
TensorFlow the helpers import it when asked for a gradient.
"""

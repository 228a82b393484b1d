"""What the any-backend tests share: NumPy float64 references, a gradient on the current
backend, and a Python subprocess on the other backend (issue 24)."""
import json
import os
import subprocess
import sys

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKENDS = ("tensorflow", "jax")
TIMEOUT = 420   # seconds for one subprocess


def backend():
    return keras.backend.backend()


def other_backend():
    """The backend the cross-backend tests compare with: JAX from TensorFlow, else TensorFlow."""
    return "jax" if backend() == "tensorflow" else "tensorflow"


def rel_err(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)


def np_mean_sq_norm(x):
    """EL2/FL2 in float64: `E_batch ||x||^2 / width` (docs/references.md §1.2-1.3)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return np.mean(np.sum(x**2, axis=1)) / x.shape[1]


def np_kl(x, eps):
    """The KL standardization loss in float64 (docs/references.md §1.4)."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    return 0.5 * np.sum(mu**2 + var - np.log(var + eps) - 1.0)


def np_kl_gradient(x, eps):
    """d KL / dx in closed form: `mu / N + (1 - 1 / (s^2 + eps)) (x - mu) / N`, float64."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    n, mu, var = x.size / x.shape[-1], x.mean(axis=axes), x.var(axis=axes)
    return mu / n + (1 - 1 / (var + eps)) * (x - mu) / n


def np_cross_entropy(logits, labels):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(log_p[np.arange(len(labels)), labels])


def value_and_gradient(function, x, jit=False):
    """`function(x)` and its gradient with respect to `x` on the current backend, as NumPy;
    `jit` compiles it (`jax.jit`, `tf.function(jit_compile=True)`)."""
    if backend() == "jax":
        import jax

        step = jax.value_and_grad(function)
        value, grad = (jax.jit(step) if jit else step)(jax.numpy.asarray(x))
    elif backend() == "tensorflow":
        import tensorflow as tf

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = function(x)
            return value, tape.gradient(value, x)

        value, grad = (tf.function(step, jit_compile=True) if jit else step)(tf.constant(x))
    else:
        raise NotImplementedError(f"no gradient helper for the {backend()} backend")
    return float(value), keras.ops.convert_to_numpy(grad)


def forward(model, x, training=False):
    """`model(x, training=training)`; on JAX compiled as one function of the weights
    (`stateless_call` under `jax.jit`): an eager call there compiles every op apart, ~20 s for
    a DenseNet121 against ~2 s."""
    if backend() != "jax":
        return model(x, training=training)
    import jax

    def call(trainable, non_trainable, inputs):
        return model.stateless_call(trainable, non_trainable, inputs, training=training)[0]

    return jax.jit(call)([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables], x)


def loss_gradients(model, x, labels):
    """Gradients of cross-entropy + the model's `add_loss` terms (training mode) with respect to
    `model.trainable_variables`, as NumPy, on the current backend."""

    def loss(outputs, extra):
        data = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            labels, outputs["logits"], from_logits=True))
        return data + sum(extra)

    if backend() == "jax":
        import jax

        fixed = [v.value for v in model.non_trainable_variables]

        def of(trainable):
            outputs, _, extra = model.stateless_call(trainable, fixed, x, training=True,
                                                     return_losses=True)
            return loss(outputs, extra)

        grads = jax.jit(jax.grad(of))([v.value for v in model.trainable_variables])
    elif backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            value = loss(outputs, model.losses)
        grads = tape.gradient(value, model.trainable_variables)
    else:
        raise NotImplementedError(f"no gradient helper for the {backend()} backend")
    return [None if g is None else keras.ops.convert_to_numpy(g) for g in grads]


def start_on(backend_name, module, *args, cwd):
    """Starts `python -m module *args` with `KERAS_BACKEND=backend_name` in `cwd` (the
    repository on the path), so that this process can work meanwhile; see `finish`."""
    env = {**os.environ, "KERAS_BACKEND": backend_name, "PYTHONPATH": ROOT,
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=TIMEOUT):
    """Waits for a `start_on` process; returns the JSON it printed last, or fails the test with
    the end of its stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def run_module_on(backend_name, module, *args, cwd):
    """`python -m module *args` on `backend_name`, waited for; returns the JSON it printed last."""
    return finish(start_on(backend_name, module, *args, cwd=cwd))

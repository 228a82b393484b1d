"""Training-step throughput on Keras' JAX backend (issue 24, item 6): bnreg's ResNet-50 and
EfficientNet-B0 against keras.applications' ResNet50 and EfficientNetB0, float32 and
mixed_bfloat16, in alternating rounds of one run.

    KERAS_BACKEND=jax python -m benchmarks.jax_step [--batch_size 128] [--image_size 224]
        [--steps 20] [--rounds 3] [--models bnreg_resnet50,keras_resnet50,...]
        [--precisions float32,mixed_bfloat16] [--output reports/jax_step.md]

It needs only JAX, Keras and bnreg's building blocks and model code, never TensorFlow, so it
runs on a machine whose image has JAX with CUDA and nothing else (carry keras, namex, optree and
this repository). The step is what a JAX user of Keras writes (Keras' guide "Writing a training
loop from scratch in JAX"): `model.stateless_call` (with the models' `add_loss` terms) and
`optimizer.stateless_apply` under one `jax.jit`, the state donated, SGD with momentum 0.9,
sparse cross-entropy on the logits, synthetic data already on the device (the input pipeline is
not what is measured). Every model has its reference Dropout and stochastic depth and no
penalty. Each cell is compiled first; then each round times `--steps` steps of every cell in
turn, and the table keeps each cell's best round (the others ran between, so drift is shared).
"""
import argparse
import os
import sys
import time

if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

import efficientnet
import resnet

PRECISIONS = ("float32", "mixed_bfloat16")


def _app(builder, **kw):
    return lambda size, classes: builder(weights=None, input_shape=(size, size, 3),
                                         classes=classes, classifier_activation=None, **kw)


# name: (label, builder(image_size, num_classes) -> keras.Model, the model it is compared with)
MODELS = {
    "bnreg_resnet50": ("bnreg ResNet-50 (batchnorm)", lambda size, classes: resnet.resnet50(
        num_classes=classes, input_shape=(size, size, 3), norm="batchnorm", seed=0),
        "keras_resnet50"),
    "keras_resnet50": ("keras.applications ResNet50", _app(keras.applications.ResNet50), None),
    "bnreg_efficientnet_b0": ("bnreg EfficientNet-B0", lambda size, classes:
                              efficientnet.build_model("b0", num_classes=classes,
                                                       input_shape=(size, size, 3), seed=0),
                              "keras_efficientnet_b0"),
    "keras_efficientnet_b0": ("keras.applications EfficientNetB0",
                              _app(keras.applications.EfficientNetB0), None),
}


def logits_of(outputs):
    """bnreg's models return `{"logits", "embedding"}`; keras.applications' the logits."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs


class Cell:
    """One model in one precision: its compiled step and its state, on the default device."""

    def __init__(self, model, batch_size, learning_rate=0.1, seed=0):
        import jax

        self.model = model
        self.optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9)
        self.optimizer.build(model.trainable_variables)
        size, classes = model.input_shape[1], logits_of(model.output).shape[-1]
        rng = np.random.default_rng(seed)
        self.x = jax.device_put(rng.normal(size=(batch_size, size, size, 3)).astype(np.float32))
        self.y = jax.device_put(rng.integers(0, classes, batch_size).astype(np.int32))
        self.state = ([v.value for v in model.trainable_variables],
                      [v.value for v in model.non_trainable_variables],
                      [v.value for v in self.optimizer.variables])
        self._step = jax.jit(self._train_step, donate_argnums=0)
        self.batch_size = batch_size

    def _loss(self, trainable, non_trainable, x, y):
        outputs, non_trainable, losses = self.model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True)
        logits = keras.ops.cast(logits_of(outputs), "float32")
        data = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
        return data + sum(losses), non_trainable

    def _train_step(self, state, x, y):
        import jax

        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = jax.value_and_grad(self._loss, has_aux=True)(
            trainable, non_trainable, x, y)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_variables)

    def run(self, steps):
        """`steps` training steps; returns the last loss (a float, so the device has finished)."""
        loss = None
        for _ in range(steps):
            loss, self.state = self._step(self.state, self.x, self.y)
        return float(loss)

    def write_back(self):
        """The state into the Keras variables (for checking a step against `model.fit`)."""
        trainable, non_trainable, optimizer_variables = self.state
        for variable, value in zip(self.model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(self.model.non_trainable_variables, non_trainable):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, optimizer_variables):
            variable.assign(value)


def build_cell(builder, precision, image_size, batch_size, num_classes):
    """The model built under `precision`'s dtype policy, and its compiled step."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = builder(image_size, num_classes)
    finally:
        keras.config.set_dtype_policy(previous)
    return Cell(model, batch_size)


def measure(names, precisions, image_size, batch_size, steps, rounds, num_classes=1000,
            models=MODELS, log=print):
    """{(name, precision): images/s} over `rounds` alternating rounds (each cell's best), and
    {(name, precision): the first compiled step's seconds}."""
    cells, compile_seconds = {}, {}
    for name in names:
        for precision in precisions:
            start = time.perf_counter()
            cell = build_cell(models[name][1], precision, image_size, batch_size, num_classes)
            loss = cell.run(1)
            compile_seconds[name, precision] = time.perf_counter() - start
            if not np.isfinite(loss):
                raise FloatingPointError(f"{name} {precision}: non-finite loss {loss}")
            cells[name, precision] = cell
            log(f"  built and compiled {name} {precision} in "
                f"{compile_seconds[name, precision]:.1f} s")
    rates = {key: 0.0 for key in cells}
    for round_number in range(rounds):
        for key, cell in cells.items():
            start = time.perf_counter()
            cell.run(steps)
            rate = steps * batch_size / (time.perf_counter() - start)
            rates[key] = max(rates[key], rate)
        log(f"  round {round_number + 1}/{rounds} done")
    return rates, compile_seconds


def device_name():
    import jax

    device = jax.devices()[0]
    return device.device_kind if device.platform == "gpu" else device.platform.upper()


def table(rates, compile_seconds, names, precisions, models=MODELS):
    """Markdown rows: images/s per cell, bnreg's ratio to keras.applications in the same run."""
    lines = ["| model | precision | images/s | vs keras.applications | first step (s) |",
             "|---|---|---:|---:|---:|"]
    for name in names:
        label, _, compared = models[name]
        for precision in precisions:
            rate = rates[name, precision]
            ratio = (f"{rate / rates[compared, precision]:.2f}x"
                     if compared and (compared, precision) in rates else "")
            lines.append(f"| {label} | {precision} | {rate:.1f} | {ratio} "
                         f"| {compile_seconds[name, precision]:.1f} |")
    return "\n".join(lines)


def _choices(parser, flag, text, allowed):
    chosen = [c for c in text.split(",") if c]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        parser.error(f"--{flag}: expected a comma-separated subset of {', '.join(allowed)}, "
                     f"got {text!r}")
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--output", default="reports/jax_step.md")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        parser.error(f"Keras runs on {keras.backend.backend()!r} here: run it with "
                     "KERAS_BACKEND=jax")
    for flag in ("batch_size", "image_size", "steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}: expected an integer >= 1, got {getattr(args, flag)}")
    names = _choices(parser, "models", args.models, MODELS)
    precisions = _choices(parser, "precisions", args.precisions, PRECISIONS)
    start = time.time()
    rates, compile_seconds = measure(names, precisions, args.image_size, args.batch_size,
                                     args.steps, args.rounds, log=lambda s: print(s, file=sys.stderr))
    text = (f"### Training step on JAX, {device_name()}, batch {args.batch_size} at "
            f"{args.image_size} px (best of {args.rounds} alternating rounds of {args.steps} "
            f"steps)\n\nCommand: KERAS_BACKEND=jax python -m benchmarks.jax_step "
            f"{' '.join(sys.argv[1:] if argv is None else argv)}".rstrip()
            + f"\n\n{table(rates, compile_seconds, names, precisions)}\n\n"
            f"({(time.time() - start) / 60:.1f} min)\n")
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()

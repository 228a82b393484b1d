"""EfficientNet recipe: TF1 RMSProp + weight average vs NumPy float64, LR schedule, preprocessing."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet import input_pipeline as pp, optim
from bnreg_tf.run import inputs

LR, RHO, MOMENTUM, EPS, DECAY, BN_MOMENTUM = 0.05, 0.9, 0.9, 1e-3, 0.9999, 0.9


def _model(seed, with_bn):
    inputs = keras.Input((5,))
    x = inputs
    if with_bn:  # normalises a fixed batch: a constant input to Dense, moving stats still move
        x = keras.layers.BatchNormalization(center=False, scale=False, momentum=BN_MOMENTUM,
                                            epsilon=1e-3, name="bn")(x)
    outputs = keras.layers.Dense(3, name="dense", kernel_initializer=keras.initializers
                                 .GlorotUniform(seed))(x)
    return keras.Model(inputs, outputs)


def _numpy_run(x, y, kernel, bias, steps, with_bn):
    """float64 reference: MSE on Dense(BN(x)), TF1 RMSProp (ms starts at 1), reference EMA."""
    x = x.astype(np.float64)
    mean, var = x.mean(0), x.var(0)
    moving = [np.zeros(5), np.ones(5)]
    xn = (x - mean) / np.sqrt(var + 1e-3) if with_bn else x
    params = [kernel.astype(np.float64), bias.astype(np.float64)]
    ms = [np.ones_like(p) for p in params]
    mom = [np.zeros_like(p) for p in params]
    shadows = [p.copy() for p in params] + ([m.copy() for m in moving] if with_bn else [])
    for t in range(1, steps + 1):
        residual = xn @ params[0] + params[1] - y           # loss = mean(residual^2)
        grads = [2 * xn.T @ residual / residual.size, 2 * residual.sum(0) / residual.size]
        for i, g in enumerate(grads):
            ms[i] = RHO * ms[i] + (1 - RHO) * g**2
            mom[i] = MOMENTUM * mom[i] + LR * g / np.sqrt(ms[i] + EPS)
            params[i] = params[i] - mom[i]
        if with_bn:
            moving = [BN_MOMENTUM * moving[0] + (1 - BN_MOMENTUM) * mean,
                      BN_MOMENTUM * moving[1] + (1 - BN_MOMENTUM) * var]
        decay = min(DECAY, (1 + t) / (10 + t))
        sources = params + (moving if with_bn else [])
        shadows = [a - (1 - decay) * (a - v) for a, v in zip(shadows, sources)]
    return params, moving, shadows


def _keras_run(x, y, steps, with_bn, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = _model(7, with_bn)
        optimizer = optim.ReferenceRMSprop(LR, RHO, MOMENTUM, EPS, average_decay=DECAY)
        optimizer.track_average(optim.average_sources(model))
        model.compile(optimizer, loss="mse", jit_compile=False)
    kernel, bias = (w.numpy().copy() for w in model.get_layer("dense").weights)
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    return model, optimizer, kernel, bias


@pytest.mark.parametrize("with_bn", [False, True])
def test_rmsprop_and_average_match_numpy(rng, with_bn):
    x = rng.normal(size=(16, 5)).astype(np.float32) * 3 + 1
    y = rng.normal(size=(16, 3)).astype(np.float32)
    model, optimizer, kernel, bias = _keras_run(x, y, 4, with_bn)
    params, moving, shadows = _numpy_run(x, y, kernel, bias, 4, with_bn)
    dense = model.get_layer("dense")
    for got, want in zip(dense.weights, params):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    sources = optim.average_sources(model)
    assert len(sources) == (4 if with_bn else 2)
    if with_bn:
        bn = model.get_layer("bn")
        np.testing.assert_allclose(bn.moving_mean.numpy(), moving[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), moving[1], rtol=1e-5)
    with optimizer.averaged_weights():
        for got, want in zip(sources, shadows):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    # Restored afterwards, and the first update would blow up under Keras' zero-initialised ms.
    np.testing.assert_allclose(dense.kernel.numpy(), params[0], rtol=1e-4, atol=1e-6)
    assert int(optimizer.iterations.numpy()) == 4


def test_average_decay_warms_up():
    optimizer = optim.ReferenceRMSprop(average_decay=0.9999)
    np.testing.assert_allclose([float(optimizer.average_decay_at(t)) for t in (1, 10, 1000, 10**6)],
                               [2 / 11, 11 / 20, 1001 / 1010, 0.9999], rtol=1e-6)


def test_rmsprop_average_under_mirrored_strategy_matches_one_device(rng, mirrored):
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.normal(size=(16, 3)).astype(np.float32)
    single, single_opt, _, _ = _keras_run(x, y, 3, False)
    multi, multi_opt, _, _ = _keras_run(x, y, 3, False, strategy=mirrored)
    for a, b in zip(single.weights, multi.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(single_opt._averages, multi_opt._averages):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_a_keras_file_keeps_the_average_and_training_goes_on_exactly(rng, tmp_path):
    """`.keras` round trip of an averaging ReferenceRMSprop: the step, ms, mom and the averages
    (BN statistics included) come back once `track_average` names the sources again, and one
    more step of the loaded model equals one more step of the original; a second save of the
    loaded optimizer stores the same layout."""
    x = rng.normal(size=(16, 5)).astype(np.float32) * 3 + 1
    y = rng.normal(size=(16, 3)).astype(np.float32)
    model, optimizer, _, _ = _keras_run(x, y, 3, True)
    model.save(tmp_path / "a.keras")
    loaded = keras.saving.load_model(tmp_path / "a.keras")
    assert int(loaded.optimizer.iterations.numpy()) == 3
    loaded.optimizer.track_average(optim.average_sources(loaded))
    for a, b in zip(optimizer._averages, loaded.optimizer._averages):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.save(tmp_path / "b.keras")
    again = keras.saving.load_model(tmp_path / "b.keras")
    again.optimizer.track_average(optim.average_sources(again))
    for trained in (model, loaded, again):
        trained.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for other in (loaded, again):
        for a, b in zip(model.weights, other.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
        for a, b in zip(optimizer._averages, other.optimizer._averages):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="other shapes"):
        reloaded = keras.saving.load_model(tmp_path / "a.keras")
        reloaded.optimizer.track_average(reloaded.trainable_variables)


def test_track_average_misuse_is_rejected():
    with pytest.raises(ValueError, match="average_decay"):
        optim.ReferenceRMSprop().track_average([])
    with pytest.raises(ValueError, match="average_decay must be in"):
        optim.ReferenceRMSprop(average_decay=1.5)
    with pytest.raises(ValueError, match="no averaged weights"):
        with optim.ReferenceRMSprop().averaged_weights():
            pass


def test_schedule_at_chosen_steps_counts_epochs_in_examples():
    """utils.build_learning_rate with steps_per_epoch = 1,281,167 / 2048 (a fraction): decay every
    2.4 * 625.57 = 1501.37 steps, unrounded; warm-up over int(5 * 625.57) = 3127 steps."""
    steps_per_epoch = 1_281_167 / 2048
    schedule = optim.WarmupExponentialDecay(0.016, 2048, steps_per_epoch)
    peak = 0.016 * 2048 / 256
    decay_steps, warmup_steps = 2.4 * steps_per_epoch, 3127
    assert schedule.peak == pytest.approx(0.128)
    assert schedule.decay_steps == pytest.approx(1501.3676, abs=1e-4)
    assert schedule.warmup_steps == warmup_steps
    for step in (0, 1000, 3126, 3127, 3128, 4503, 4504, 4505, 100_000, 218_948):
        want = (peak * step / warmup_steps if step < warmup_steps
                else peak * 0.97 ** math.floor(step / decay_steps))
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5), step
    # Rounding the decay period to int(2.4 * 625) = 1500 steps would decay one step early here.
    assert math.floor(4504 / decay_steps) == 2 and 4504 // 1500 == 3
    config = schedule.get_config()
    assert optim.WarmupExponentialDecay(**config).get_config() == config


def test_efficientnet_presets_schedule_one_pass_of_the_training_split():
    from bnreg_tf.run import schedules
    from bnreg_tf.run.presets import preset

    config = preset("efficientnet_b8_imagenet")
    train_examples = inputs.plan(config)[1].train_examples   # what bnreg-train passes
    schedule = schedules.make_schedule(config, (1_281_167 - 25_022) // 2048, train_examples)
    assert schedule.steps_per_epoch == (1_281_167 - 25_022) / 2048  # the holdout is not trained on
    fixed = schedules.make_schedule(config.replace(steps_per_epoch=50), steps_per_epoch=50)
    assert fixed.steps_per_epoch == 50 and fixed.decay_steps == pytest.approx(120)
    assert config.randaugment_variant == "reference"
    assert preset("efficientnet_b0_imagenet").randaugment_variant == "reference"


def test_weight_decay_loss_and_exclusions(rng):
    import efficientnet
    model = efficientnet.build_model("b0", num_classes=10, input_shape=(32, 32, 3))
    chosen = optim.non_batchnorm_variables(model)
    bn_ids = {id(v) for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)
              for v in layer.trainable_variables}
    assert len(chosen) + len(bn_ids) == len(model.trainable_variables)
    assert not any(id(v) in bn_ids for v in chosen)
    want = 1e-5 * sum(0.5 * np.sum(v.numpy().astype(np.float64) ** 2) for v in chosen)
    assert float(optim.weight_decay_loss(chosen, 1e-5)) == pytest.approx(want, rel=1e-5)


def _image(rng, height, width):
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def cubic_kernel(distance, a=-0.75):
    """Cubic convolution (Keys 1981) with TF1's a = -0.75."""
    d = np.abs(distance)
    return np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                    np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))


def np_resize_bicubic_tf1(image, size):
    """TF1 resize_bicubic in float64: output pixel o samples input o * (n / size) (no half-pixel
    centres), the fraction quantised to 1/1024 (TF's kernel table), taps clamped to the edge."""
    out = image.astype(np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        position = np.arange(size, dtype=np.float32) * np.float32(n / size)  # float32, as TF
        base = np.floor(position).astype(np.int64)
        fraction = np.rint((position - base).astype(np.float64) * 1024) / 1024
        taps = base[:, None] + np.arange(-1, 3)[None, :]
        weights = cubic_kernel(fraction[:, None] - np.arange(-1, 3)[None, :])
        gathered = np.take(out, np.clip(taps, 0, n - 1), axis=axis)  # [.., size, 4, ..]
        shape = [1] * gathered.ndim
        shape[axis], shape[axis + 1] = size, 4
        out = (gathered * weights.reshape(shape)).sum(axis=axis + 1)
    return out


def test_resize_is_tf1_resize_bicubic(rng):
    image = _image(rng, 13, 17)
    ours = pp.resize_bicubic(image, 24).numpy()
    raw = tf.raw_ops.ResizeBicubic(images=image[None], size=[24, 24], align_corners=False,
                                   half_pixel_centers=False)[0].numpy()
    np.testing.assert_array_equal(ours, raw)
    np.testing.assert_allclose(ours, np_resize_bicubic_tf1(image, 24), atol=2e-4)
    # TF2's resize (half-pixel centres, a = -0.5) is a different image.
    tf2 = tf.image.resize(image, [24, 24], method="bicubic").numpy()
    assert np.abs(tf2 - ours).max() > 5


def test_eval_preprocess_is_the_reference_center_crop(rng):
    image = _image(rng, 300, 400)
    out = pp.preprocess(image, False, 224).numpy()
    side = int(224 / 256 * 300)  # 262
    top, left = (300 - side + 1) // 2, (400 - side + 1) // 2
    want = np_resize_bicubic_tf1(image[top:top + side, left:left + side], 224)
    want = (want - np.array(pp.MEAN_RGB)) / np.array(pp.STDDEV_RGB)
    np.testing.assert_allclose(out, want, atol=1e-4)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    # The crop keeps 0.875 of the short side at every size: 672 / (672 + 96) for B8.
    window = pp.center_crop_window(tf.constant([700, 900, 3]), 672).numpy()
    assert window.tolist() == [(700 - 612 + 1) // 2, (900 - 612 + 1) // 2, 612, 612]


def test_train_crop_is_resized_with_tf1_resize_bicubic(rng):
    image = _image(rng, 60, 90)
    seed = tf.constant([5, 9], tf.int64)
    out = pp.preprocess(image, True, 32, None, seed).numpy()
    window_seed = tf.random.experimental.stateless_split(seed, 3)[0]
    y, x, h, w = pp.random_crop_window(tf.shape(image), window_seed).numpy()
    assert (h, w) != (60, 90)  # a sampled window, not the centre-crop fallback
    want = np_resize_bicubic_tf1(image[y:y + h, x:x + w], 32)
    want = (want - np.array(pp.MEAN_RGB)) / np.array(pp.STDDEV_RGB)
    error = min(np.abs(out - want).max(), np.abs(out - want[:, ::-1]).max())  # flipped or not
    assert error < 1e-4


def test_normalize_matches_imagenet_statistics():
    pixel = np.array([[[0.485 * 255, 0.456 * 255, 0.406 * 255]]], np.float32)
    np.testing.assert_allclose(pp.normalize(pixel).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(pp.normalize(pixel + np.array(pp.STDDEV_RGB, np.float32)).numpy(),
                               1.0, atol=1e-5)


def test_train_crop_windows_follow_the_reference_constraints():
    shape = tf.constant([200, 300, 3])
    areas, ratios = [], []
    for i in range(200):
        y, x, h, w = pp.random_crop_window(shape, tf.constant([i, 1], tf.int64)).numpy()
        assert 0 <= y and y + h <= 200 and 0 <= x and x + w <= 300
        areas.append(h * w / 60000)
        ratios.append(w / h)
    full = [a == 1.0 for a in areas]
    picked = [(a, r) for a, r, f in zip(areas, ratios, full) if not f]
    assert picked, "the sampler never found a window"
    assert all(0.08 - 0.01 <= a <= 1.0 for a, _ in picked)
    assert all(3 / 4 - 0.05 <= r <= 4 / 3 + 0.05 for _, r in picked)


def test_train_preprocess_is_deterministic_and_in_range(rng):
    image = _image(rng, 64, 80)
    seed = tf.constant([3, 4], tf.int64)
    first = pp.preprocess(image, True, 32, ("randaugment", 2, 28), seed).numpy()
    again = pp.preprocess(image, True, 32, ("randaugment", 2, 28), seed).numpy()
    np.testing.assert_array_equal(first, again)
    dataset = tf.data.Dataset.from_tensors(image).map(
        lambda im: pp.preprocess(im, True, 32, ("randaugment", 2, 28), seed))
    np.testing.assert_array_equal(next(iter(dataset)).numpy(), first)
    low = (0 - np.array(pp.MEAN_RGB)) / np.array(pp.STDDEV_RGB)
    high = (255 - np.array(pp.MEAN_RGB)) / np.array(pp.STDDEV_RGB)
    assert first.shape == (32, 32, 3) and np.all(np.isfinite(first))
    assert np.all(first >= low - 1e-4) and np.all(first <= high + 1e-4)
    other = pp.preprocess(image, True, 32, ("randaugment", 2, 28), tf.constant([5, 6], tf.int64))
    assert not np.array_equal(other.numpy(), first)


def test_preprocess_rejects_bad_input(rng):
    with pytest.raises(ValueError, match="uint8"):
        pp.preprocess(np.zeros((8, 8, 3), np.float32), False, 8)
    with pytest.raises(ValueError, match="unknown augmentation"):
        pp.preprocess(_image(rng, 8, 8), True, 8, ("autoaugment", 1, 1))


def test_randaugment_variant_flag_reaches_the_pipeline_and_is_validated():
    from absl import flags

    from bnreg_tf.run import flags as run_flags
    from bnreg_tf.run.config import ConfigError, validate
    from bnreg_tf.run.inputs import preprocessing_for

    values = flags.FlagValues()
    run_flags.define_run_flags(values)
    values(["bnreg-train", "--preset=efficientnet_b0_imagenet", "--randaugment_variant=corrected",
            "--model_dir=/tmp/unused"])
    config = run_flags.config_from_flags(values)
    assert config.randaugment_variant == "corrected"
    assert preprocessing_for(config, 224).randaugment == (2, 10, "corrected")
    with pytest.raises(ConfigError, match=r"^--randaugment_variant: expected one of reference, "
                                          r"corrected, got 'pil'$"):
        validate(config.replace(randaugment_variant="pil"))

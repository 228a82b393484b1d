"""NumPy float64 ports of the normalizer-free references (google-deepmind/deepmind-research
`nfnets/`), written from reading their code, for tests/test_reference_exact.py (issue 25).

- `nf_resnet_forward`: `nf_resnet.NF_ResNet.__call__` with `NFResBlock` (`base.WSConv2D`,
  `base.nonlinearities["relu"]` = relu * 1.7139588594436646), eval mode: stem WS conv, 3x3/2
  SAME max pool, blocks `out * skip_gain * alpha + shortcut` on `relu(x) * gamma * beta`, then
  `mean(relu(out) * gamma)` over H, W and the linear classifier.
- `skipinit_block`: `skipinit_resnet.NFResBlock` (pre-activation, no alpha, beta or gamma).
- `decayed_and_clipped`: `experiment.py`'s and `experiment_nfnets.py`'s parameter predicates
  (weight decay: not `name in ['scale', 'offset', 'b'] or 'gain' in name or 'bias' in name`;
  AGC: not (`'linear' in module` among the weights)), on Haiku's (module, name) pairs.
The weights are passed in as `{name: array}` in Keras' layouts (HWIO kernels, [in, out] dense).
"""
import numpy as np

REFERENCE_RELU_GAMMA = 1.7139588594436646   # nfnets/base.py nonlinearities["relu"]


def same_pads(size, kernel, stride):
    """TF/JAX "SAME" padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv(x, w, stride=1, bias=None):
    """NHWC x HWIO convolution with SAME padding, float64."""
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = x.shape
    (pt, pb), (pl, pr) = same_pads(h, kh, stride), same_pads(wd, kw, stride)
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = -(-h // stride), -(-wd // stride)
    out = np.zeros((n, oh, ow, cout))
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += patch @ w[i, j]
    return out if bias is None else out + bias


def standardize(w, gain, eps=1e-4):
    """`base.WSConv2D.standardize_weight`: per output channel over the fan-in axes."""
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    var = w.var(axis=(0, 1, 2), keepdims=True)
    fan_in = np.prod(w.shape[:-1])
    scale = 1.0 / np.sqrt(np.maximum(var * fan_in, eps)) * gain
    return w * scale - mean * scale


def max_pool_same(x, size=3, stride=2):
    """`hk.max_pool` with SAME padding (padded with -inf)."""
    n, h, w, c = x.shape
    (pt, pb), (pl, pr) = same_pads(h, size, stride), same_pads(w, size, stride)
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    oh, ow = -(-h // stride), -(-w // stride)
    return np.max([padded[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
                   for i in range(size) for j in range(size)], axis=0)


def ws_conv(weights, name, x, stride=1):
    w = standardize(weights[f"{name}/kernel"], weights[f"{name}/gain"])
    return conv(x, w, stride, weights[f"{name}/bias"])


def nf_resnet_forward(weights, x, stages=(3, 4, 6, 3), widths=(256, 512, 1024, 2048),
                      alpha=0.2, gamma=REFERENCE_RELU_GAMMA):
    """(pool, logits) of the reference NF-ResNet (bottleneck blocks) in eval mode; `weights`
    keyed by bnreg's layer names (`stem_conv`, `stage{s}_block{b}_conv{1,2,3}`, `_shortcut`,
    `_branch_gain`, `classifier`), which are the reference's initial_conv, conv0/conv1/conv2,
    conv_shortcut, skip_gain and linear."""
    act = lambda v: np.maximum(v, 0.0) * gamma  # noqa: E731
    out = max_pool_same(ws_conv(weights, "stem_conv", x, 2))
    expected_std, channels = 1.0, out.shape[-1]
    for stage, (depth, width, stride) in enumerate(zip(stages, widths, (1, 2, 2, 2)), start=1):
        for index in range(depth):
            name, step = f"stage{stage}_block{index}", stride if index == 0 else 1
            beta = 1.0 / expected_std
            h = act(out) * beta
            shortcut = ws_conv(weights, f"{name}_shortcut", h, step) \
                if step > 1 or channels != width else out
            h = ws_conv(weights, f"{name}_conv1", h)
            h = ws_conv(weights, f"{name}_conv2", act(h), step)
            h = ws_conv(weights, f"{name}_conv3", act(h))
            out = h * weights[f"{name}_branch_gain/value"] * alpha + shortcut
            channels = width
            if index == 0:
                expected_std = 1.0
            expected_std = (expected_std ** 2 + alpha ** 2) ** 0.5
    pool = act(out).mean(axis=(1, 2))
    return pool, pool @ weights["classifier/kernel"] + weights["classifier/bias"]


def skipinit_block(weights, name, x, stride, projection):
    """`skipinit_resnet.NFResBlock.__call__` (eval): `relu`, plain biased convolutions."""
    h = np.maximum(x, 0.0)
    c = lambda layer, v, s=1: conv(v, weights[f"{name}_{layer}/kernel"], s,  # noqa: E731
                                   weights[f"{name}_{layer}/bias"])
    shortcut = c("shortcut", h, stride) if projection else x
    h = c("conv3", np.maximum(c("conv2", np.maximum(c("conv1", h), 0.0), stride), 0.0))
    return h * weights[f"{name}_branch_gain/value"] + shortcut


def decayed_and_clipped(module, name):
    """(weight-decayed, AGC-clipped) of the Haiku parameter `module/name` in the references."""
    gain_or_bias = name in ("scale", "offset", "b") or "gain" in name or "bias" in name
    final_linear = not gain_or_bias and "linear" in module and "squeeze_excite" not in module
    return not gain_or_bias, not final_linear

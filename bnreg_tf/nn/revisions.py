"""Revisions of what bnreg computes, so that a run keeps computing what it was started with.

A run's `config.json` names its revision (`RunConfig.revision`); a `config.json` written before
the field existed is revision 1 (`bnreg_tf.run.config.LEGACY_VALUES`), and a run dir is always
resumed at its own revision. Builders and the training step take `revision=` (default `LATEST`).

- 1: everything up to issue 25.
- 2 (issue 25, "reference-exact, second pass"; docs/references.md §5.11, §6):
  - `nf_resnet`: the activation carries gamma (`nf.ScaledReLU` / `nf.ScaledSwish`), with the
    reference's ReLU constant 1.7139588594436646 (was: the closed form 1.7128586 inside each
    convolution's kernel), so the pooled embedding is the reference's; weight-standardized
    kernels start from an untruncated N(0, 1 / fan_in) (was: truncated).
  - `skipinit`: the reference's pre-activation ResNet v1 block and Haiku's default conv init,
    truncated normal with std parameter 1 / sqrt(fan_in) (was: post-activation, He fan-out).
  - `--weight_decay_exclude=batchnorm_and_bias` also exempts every variable whose name contains
    "gain" (the skip gains), as `nfnets/experiment.py` (was: decayed).
  - AGC leaves out the classifier's kernel only; its bias is clipped (was: kernel and bias).
  - `--survival_prob` gives the ResNet family stochastic depth (was: EfficientNet only).
  - ImageNet is read as JPEG bytes and only the crop window is decoded (was: decoded whole).
"""
LATEST = 2
REVISIONS = (1, 2)


def check(revision):
    """`revision` as an int, or ValueError when bnreg has no such revision."""
    if revision not in REVISIONS:
        raise ValueError(f"revision must be one of {REVISIONS}; got {revision!r}")
    return int(revision)

"""Cost of each penalty on a training step: none vs EL2 vs FL2 vs KL standardization.

Issue 7's benchmark. One model per penalty, measured in alternating rounds in the same run
(`timing.interleaved_throughput`), through `model.fit` (the trainer's loop) with the penalty
layers' `add_loss` and per-layer metrics. "none" and the EL2/FL2 rows share the Fixup
network; KL needs the Fixup variant with a KL layer at every norm site (`fixup_standardize`),
so its row is compared with that network without the KL layers (coefficient 0 leaves the
layers out).
"""
from bnreg_tf.run import models
from benchmarks.timing import interleaved_throughput

CASES = (("none", dict(norm="fixup")),
         ("EL2", dict(norm="fixup", embedding_l2=0.1)),
         ("FL2", dict(norm="fixup", functional_l2=0.1)),
         ("none (KL's network)", dict(norm="fixup_standardize")),
         ("KL standardization", dict(norm="fixup_standardize", standardization_kl=0.1)))


def rows(image_size=64, batch_size=32, steps=10):
    """Yields `(model, penalty, images/s, slowdown vs its "none")` rows."""
    for name, shape, classes in (("wrn16_4", (32, 32, 3), 10),
                                 ("resnet50", (image_size, image_size, 3), 1000)):
        models = [models.build(name, num_classes=classes, input_shape=shape, **kwargs)
                  for _, kwargs in CASES]
        rates = interleaved_throughput(models, batch_size, classes, steps)
        for index, ((label, _), rate) in enumerate(zip(CASES, rates)):
            reference = rates[3] if index >= 3 else rates[0]
            yield f"{name} ({shape[0]} px)", label, rate, reference / rate - 1

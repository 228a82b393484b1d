"""What a run asks of the machine, checked before anything is built: one line with the size asked
for instead of a crash, an out-of-memory traceback or a build that never ends.

- WRN depth: `wrn<depth>_<width>` is bounded to depth `MAX_WRN_DEPTH` (He et al. 2016 trained
  the deepest ResNet of the literature, 1001 layers, on CIFAR-10); Keras builds about 80 layers
  a second on this project's CPU (wrn196_1: 680 layers in 8.1 s), so a depth in the millions
  would build for hours before the first step.
- WRN width: the parameters (counted as `resnet.wide_resnet` builds them: 3x3 convs, 1x1
  projections, the classifier) times 12 bytes (float32 weights, gradients and momentum) must
  fit in the machine's memory.
- A batch: one training batch per replica of float32 inputs and the first layer's 16 output
  channels (every model here has at least 16) must fit in memory, and so must an evaluation
  batch. A lower bound of what a step needs, so it refuses only impossible requests
  (`--batch_size=1000000000`, `--image_size=100000`) and never a run that would fit; a batch
  between this bound and what the step really needs still fails in TensorFlow's allocator.
  (A sum of every layer's output shape was tried and dropped: it counts tensors that
  TensorFlow fuses or frees, and it would have refused runs nobody had measured to fail.)
Memory is the host's RAM, or the container's limit (cgroup) when lower; an accelerator's own
memory is smaller still, so the check is lenient there.
"""
import os

from bnreg_tf.run.config import ConfigError

MAX_WRN_DEPTH = 1000
LAYERS_PER_SECOND = 80          # Keras functional build on the project's 2-core CPU
BYTES_PER_PARAMETER = 12        # float32 weight + gradient + momentum
FIRST_LAYER_CHANNELS = 16
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_bytes():
    """The memory this process may use: physical RAM, or the cgroup limit when lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def size_text(count):
    """`12.3 GiB`-style text of a byte count."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if count < 1024 or unit == "EiB":
            return f"{count:.3g} {unit}" if unit != "bytes" else f"{count:.0f} bytes"
        count /= 1024
    return f"{count:.3g} EiB"


def wrn_parameters(spec, channels, num_classes):
    """Trainable parameters of WRN-d-k as `resnet.build_wide_resnet` builds it (convs without
    bias, BN scale and shift, classifier with bias; Fixup's scalars are negligible)."""
    total, previous = 9 * channels * 16, 16
    for group, width in enumerate(spec.widths):
        for block in range(spec.blocks_per_group):
            inputs = previous if block == 0 else width
            total += 9 * inputs * width + 9 * width * width + 2 * (inputs + width)
            if inputs != width or (block == 0 and group > 0):
                total += inputs * width
        previous = width
    return total + 2 * previous + (previous + 1) * num_classes


def check_wrn(name, wrn, channels, num_classes, memory=None):
    """ConfigError (one line) for a WRN too deep to build or too wide to fit in memory."""
    if wrn.depth > MAX_WRN_DEPTH:
        layers = 7 * 3 * wrn.blocks_per_group
        hours = layers / LAYERS_PER_SECOND / 3600
        raise ConfigError(f"--model={name}: depth {wrn.depth} means about {layers:.3g} layers, "
                          f"about {hours:.3g} hours of building before the first step; bnreg "
                          f"builds WRNs up to depth {MAX_WRN_DEPTH}")
    memory = memory or memory_bytes()
    parameters = wrn_parameters(wrn, channels, num_classes)
    if parameters * BYTES_PER_PARAMETER > memory:
        raise ConfigError(f"--model={name}: {parameters:.3g} parameters need "
                          f"{size_text(parameters * BYTES_PER_PARAMETER)} to train (float32 "
                          f"weights, gradients and momentum), more than this machine's "
                          f"{size_text(memory)} of memory; use a smaller width")


def check_batch(flag, images, image_size, channels, memory=None):
    """ConfigError (one line) when `images` inputs of `image_size` px and their first layer's
    outputs cannot fit in memory (a lower bound of a step's need)."""
    memory = memory or memory_bytes()
    asked = images * image_size * image_size * (channels + FIRST_LAYER_CHANNELS) * 4
    if asked > memory:
        raise ConfigError(f"{flag}: {images} images of {image_size}x{image_size}x{channels} "
                          f"need at least {size_text(asked)} (float32 inputs and the first "
                          f"layer's {FIRST_LAYER_CHANNELS} channels), more than this machine's "
                          f"{size_text(memory)} of memory")


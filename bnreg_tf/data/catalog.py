"""The datasets bnreg trains on, as a table, and how each one's splits are read.

Holdouts follow the paper (REFERENCE.md section 3): the last 5,000 CIFAR-10 training images,
the last 3,257 of SVHN's 73,257 core images (no "extra"), and 25,022 ImageNet training images for
early stopping. With `holdout=True` training uses the rest and evaluation uses the holdout; with
`holdout=False` training uses the whole train split and evaluation the test split.
`digits` (scikit-learn, offline) keeps its fixed train / validation / test split, its
validation split playing the holdout.
"""
import dataclasses
import os

from bnreg_tf.data import digits


class DataError(RuntimeError):
    """Data that cannot be read; the message is one line saying how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    tfds_name: str
    num_classes: int
    image_size: int          # native training resolution (ImageNet: the crop size)
    channels: int
    train_examples: int      # the full training split
    holdout_examples: int
    test_split: str          # what "test" means for this dataset
    test_examples: int
    augment: str             # default augmentation of the paper's recipe


DATASETS = {
    "digits": DatasetSpec("digits", 10, 8, 1, 1437, 180, "test", 360, "none"),
    "cifar10": DatasetSpec("cifar10", 10, 32, 3, 50_000, 5_000, "test", 10_000, "crop_flip"),
    "svhn_cropped": DatasetSpec("svhn_cropped", 10, 32, 3, 73_257, 3_257, "test", 26_032, "crop"),
    "imagenet2012": DatasetSpec("imagenet2012", 1000, 224, 3, 1_281_167, 25_022, "validation",
                                50_000, "goyal"),
}

CIFAR10_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "frosted_glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic", "pixelate",
    "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)

IMAGENET_INSTRUCTIONS = (
    "ImageNet is a manual download: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
    "{manual}, then run `tfds build imagenet2012 --data_dir={data_dir} --manual_dir={manual}` once")


def split_plan(name, holdout):
    """`(train_split, eval_split, train_examples, eval_examples)` as TFDS split strings."""
    spec = DATASETS[name]
    if name == "digits":
        if holdout:
            return "train", "validation", digits.DIGITS_SPLITS["train"], spec.holdout_examples
        return "train+validation", "test", spec.train_examples, spec.test_examples
    if holdout:
        kept = spec.train_examples - spec.holdout_examples
        return f"train[:{kept}]", f"train[{kept}:]", kept, spec.holdout_examples
    return "train", spec.test_split, spec.train_examples, spec.test_examples


def manual_dir(data_dir):
    return os.path.join(os.path.expanduser(data_dir or "~/tensorflow_datasets"), "downloads",
                        "manual")


def load(name, split, data_dir="", download=False):
    """An unbatched dataset of `{"image": uint8 [H, W, C], "label": int64}` for `split`.

    `digits` comes from scikit-learn; everything else from TFDS. Missing TFDS data raises
    DataError at once (never a download attempt unless `download=True`).
    """
    if name == "digits":
        import tensorflow as tf

        parts = [digits.digits_dataset(part) for part in split.split("+")]
        dataset = parts[0]
        for part in parts[1:]:
            dataset = dataset.concatenate(part)
        return dataset.map(lambda ex: {"image": ex["image"], "label": ex["label"]},
                           num_parallel_calls=tf.data.AUTOTUNE)
    return load_tfds(name, split, data_dir, download)


def load_tfds(tfds_name, split, data_dir="", download=False):
    import tensorflow_datasets as tfds

    data_dir = data_dir or None
    kwargs = {}
    if download and tfds_name.startswith("imagenet2012"):
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir(data_dir))}
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about empty folders first
    try:
        dataset = tfds.load(tfds_name, split=split, data_dir=data_dir, download=download,
                            **kwargs)
    except Exception as error:  # tfds raises AssertionError, FileNotFoundError, ...
        where = data_dir or "~/tensorflow_datasets"
        if tfds_name.startswith("imagenet2012"):
            hint = IMAGENET_INSTRUCTIONS.format(manual=manual_dir(data_dir), data_dir=where)
        else:
            hint = (f"prepare it once with `tfds build {tfds_name.split('/')[0]} --data_dir={where}` "
                    "on a machine with network, or pass --download")
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise DataError(f"--dataset={tfds_name} (--data_dir={where}): cannot read split "
                        f"{split!r} ({first_line}); {hint}") from None
    finally:
        absl_logging.set_verbosity(verbosity)
    return dataset.map(lambda ex: {"image": ex["image"], "label": ex["label"]})

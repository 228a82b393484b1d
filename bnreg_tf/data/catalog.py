"""The datasets bnreg trains on: one table for the paper's, TFDS's own info for any other.

`--dataset` is one of
- a name in `DATASETS` (the paper's datasets, docs/references.md §3.5, and the offline digits):
  exact splits and holdouts: the last 5,000 CIFAR-10 training images, the last 3,257 of SVHN's
  73,257 core images (no "extra"), 25,022 ImageNet training images; digits keeps its fixed
  train / validation / test split, its validation split playing the holdout. Adding a dataset
  with known statistics is one entry here;
- any other TFDS image-classification name (`fashion_mnist`, `cifar100`, `oxford_flowers102`):
  classes, image shape and splits come from the builder's info; the holdout is the last
  `--holdout_examples` (else `--holdout_fraction`) of the training split; a dataset without a
  test split uses its validation split, else a test share carved off the training split's end;
- `folder` with `--data_dir=DIR`: `DIR/train/<class>/*.{jpg,png}` and optionally
  `DIR/test/<class>/*` (`bnreg_tf.data.folder`), carved like a TFDS dataset without test split.

A training split is laid out `[train | holdout | carved test]`. With `holdout=True` (the
default) training uses the first part and validation the holdout; with `holdout=False` training
also uses the holdout and there is no validation. The test split is scored once, at the end.
"""
import contextlib
import functools
import os
import re

from bnreg_tf.data import digits, folder, network
from bnreg_tf.data.spec import (IMAGENET_NORMALIZATION, DataError, DatasetSpec, Splits,
                                default_recipe)


DATASETS = {
    "digits": DatasetSpec("digits", 10, 8, 1, 1257, 180, "test", 360, "none",
                          ((77.9,), (95.8,)), holdout_split="validation", source="digits"),
    "cifar10": DatasetSpec("cifar10", 10, 32, 3, 50_000, 5_000, "test", 10_000, "crop_flip",
                           ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7))),
    "svhn_cropped": DatasetSpec("svhn_cropped", 10, 32, 3, 73_257, 3_257, "test", 26_032, "crop",
                                ((111.6, 113.2, 120.6), (50.5, 51.3, 50.2))),
    "imagenet2012": DatasetSpec("imagenet2012", 1000, 224, 3, 1_281_167, 25_022, "validation",
                                50_000, "goyal", IMAGENET_NORMALIZATION, variable_size=True,
                                encoded_jpeg=True),
}
FOLDER = folder.NAME

CIFAR10_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "frosted_glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic", "pixelate",
    "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)

IMAGENET_INSTRUCTIONS = (
    "ImageNet is a manual download: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
    "{manual}, then run `tfds build imagenet2012 --data_dir={data_dir} --manual_dir={manual}` once")


def _share(total, holdout_examples, holdout_fraction, flag_name, dataset):
    count = holdout_examples or round(holdout_fraction * total)
    if not 0 < count < total:
        raise DataError(f"--{flag_name}: {dataset} has {total} training examples; a holdout of "
                        f"{count} leaves none to train on (or is empty)")
    return count


def plan_splits(spec, holdout=True, holdout_examples=0, holdout_fraction=0.1):
    """The `Splits` of `spec`: the paper's where it has them, else carved (module docstring)."""
    if spec.holdout_split:
        if holdout:
            return Splits("train", spec.train_examples, spec.holdout_split,
                          spec.holdout_examples, spec.test_split, spec.test_examples)
        return Splits(f"train+{spec.holdout_split}", spec.train_examples + spec.holdout_examples,
                      None, 0, spec.test_split, spec.test_examples)
    total = spec.train_examples
    flag = "holdout_examples" if holdout_examples else "holdout_fraction"
    test, test_examples, end = spec.test_split, spec.test_examples, total
    if not test:
        test_examples = _share(total, holdout_examples, holdout_fraction, flag, spec.name)
        end = total - test_examples
        test = f"train[{end}:]"
    held = spec.holdout_examples or _share(end, holdout_examples, holdout_fraction, flag,
                                           spec.name)
    if not holdout:
        return Splits("train" if end == total else f"train[:{end}]", end, None, 0, test,
                      test_examples)
    kept = end - held
    if kept <= 0:
        raise DataError(f"--{flag}: {spec.name} keeps no training examples after the holdout")
    return Splits(f"train[:{kept}]", kept, f"train[{kept}:{'' if end == total else end}]", held,
                  test, test_examples)


def plan(name, data_dir="", download=False, holdout=True, holdout_examples=0,
         holdout_fraction=0.1):
    """`(DatasetSpec, Splits)` of `--dataset=name`: the one data planner (training, evaluation
    and the study all plan here). The paper's datasets keep their split; the holdout flags are
    for the others."""
    dataset = spec(name, data_dir, download)
    if name in DATASETS and (holdout_examples or holdout_fraction != 0.1):
        raise DataError(f"--holdout_examples/--holdout_fraction: {name} keeps the paper's split "
                        f"({dataset.holdout_examples} held out); these flags are for other "
                        "datasets")
    return dataset, plan_splits(dataset, holdout, holdout_examples, holdout_fraction)


def _where(data_dir):
    """The data dir TFDS reads: --data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"


def manual_dir(data_dir):
    return os.path.join(os.path.expanduser(_where(data_dir)), "downloads", "manual")


@functools.lru_cache(maxsize=None)
def spec(name, data_dir="", download=False):
    """The DatasetSpec of `--dataset=name`: the table's, a folder's or a TFDS builder's."""
    if name in DATASETS:
        return DATASETS[name]
    if name == FOLDER:
        return folder.folder_spec(data_dir)
    return _tfds_spec(name, data_dir, download)


def _tfds_spec(name, data_dir, download):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as error:  # DatasetNotFoundError, bad config names, ...
        raise DataError(f"--dataset: {name!r} is neither one of {', '.join(DATASETS)}, "
                        f"'{FOLDER}' nor a TFDS dataset ({_reason(error)})") from None
    info = builder.info
    keys = info.supervised_keys or ("image", "label")
    image_key, label_key = (keys if isinstance(keys[0], str) else ("image", "label"))[:2]
    features = info.features
    image = features[image_key] if image_key in features else None
    label = features[label_key] if label_key in features else None
    if not (isinstance(image, tfds.features.Image) and
            isinstance(label, tfds.features.ClassLabel)):
        raise DataError(f"--dataset={name}: not an image-classification dataset (bnreg needs an "
                        f"Image feature and a ClassLabel feature, found {list(features)})")
    height, width, channels = image.shape
    if channels not in (1, 3):
        raise DataError(f"--dataset={name}: images have {channels} channels; bnreg trains on "
                        "1 (grey) or 3 (RGB)")
    splits = {split: info.splits[split].num_examples for split in info.splits}
    if not splits:  # not prepared yet (or mocked): count what can be read
        if not download:
            _load_tfds(name, "train", data_dir, download, image_key, label_key)
        splits = {split: _count(name, split, data_dir, download, image_key, label_key)
                  for split in ("train", "test")}
    if "train" not in splits:
        raise DataError(f"--dataset={name}: has no 'train' split (splits: {sorted(splits)})")
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else ""
    image_size, augment, variable = default_recipe(height, width, channels)
    return DatasetSpec(name, label.num_classes, image_size, channels, splits["train"], 0,
                       test_split, splits.get(test_split, 0), augment, None, variable,
                       image_key=image_key, label_key=label_key,
                       class_names=tuple(label.names))


def _count(name, split, data_dir, download, image_key, label_key):
    dataset = _load_tfds(name, split, data_dir, download, image_key, label_key)
    return int(dataset.reduce(0, lambda count, _: count + 1))


_NOT_PREPARED = re.compile(r"could not find data in (\S+?)\.?(\s|$)")


def _reason(error, limit=160):
    """What a TFDS error says, in a few whole words: its first sentence, cut at a word."""
    text = " ".join(str(error).split())
    missing = _NOT_PREPARED.search(text)
    if missing:
        return f"no prepared copy in {missing.group(1)}"
    if not text:
        return type(error).__name__
    sentence = re.split(r"(?<=[.!?])\s", text)[0]
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit].rsplit(" ", 1)[0] + " ..."


def load(name, split, data_dir="", download=False, encoded=False):
    """An unbatched dataset of `{"image": uint8 [H, W, C], "label": int64}` for `split`.

    `digits` comes from scikit-learn, `folder` from image files; everything else from TFDS.
    Missing data raises DataError at once (never a download attempt unless `download=True`).
    `encoded=True` (a dataset whose spec has `encoded_jpeg`, ImageNet) gives each image as its
    JPEG's bytes, a string scalar, undecoded (TFDS `SkipDecoding`), as the EfficientNet reference
    reads ImageNet: the preprocessing decodes only its crop window.
    """
    if encoded and not (name in DATASETS and DATASETS[name].encoded_jpeg):
        raise DataError(f"--dataset={name}: not stored as JPEG files bnreg reads as bytes")
    import tensorflow as tf

    if name == "digits":
        parts = [digits.digits_dataset(part) for part in split.split("+")]
        dataset = parts[0]
        for part in parts[1:]:
            dataset = dataset.concatenate(part)
        return dataset.map(lambda ex: {"image": ex["image"], "label": ex["label"]},
                           num_parallel_calls=tf.data.AUTOTUNE)
    if name == FOLDER:
        return folder.load(data_dir, split)
    if name in DATASETS or "/" in name:
        return _load_tfds(name, split, data_dir, download, encoded=encoded)
    dataset = spec(name, data_dir, download)
    return _load_tfds(name, split, data_dir, download, dataset.image_key, dataset.label_key)


def _check_network(name, data_dir):
    """With --download, a dataset that is not prepared yet needs the network (unless its files
    are a manual download, as ImageNet's): fail in seconds when there is none
    (`network.check_reachable`)."""
    import tensorflow_datasets as tfds

    try:
        with _quiet_absl():   # tfds warns about an empty variant folder
            builder = tfds.builder(name, data_dir=data_dir or None)
            needs_network = not (builder.is_prepared() or
                                 getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
    except Exception:  # an unknown name: the load itself says so
        return
    if needs_network:
        network.check_reachable(name.split("/")[0])


@contextlib.contextmanager
def _quiet_absl():
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


def _load_tfds(tfds_name, split, data_dir="", download=False, image_key="image",
               label_key="label", encoded=False):
    import tensorflow_datasets as tfds

    if download:
        _check_network(tfds_name, data_dir)
    data_dir = data_dir or None
    kwargs = {"decoders": {image_key: tfds.decode.SkipDecoding()}} if encoded else {}
    if download and tfds_name.startswith("imagenet2012"):
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir(data_dir))}
    try:   # quiet: tfds warns about empty folders first
        with _quiet_absl(), network.stall_timeout():
            dataset = tfds.load(tfds_name, split=split, data_dir=data_dir, download=download,
                                **kwargs)
    except Exception as error:  # tfds raises AssertionError, FileNotFoundError, ...
        where = _where(data_dir)
        if tfds_name.startswith("imagenet2012"):
            hint = IMAGENET_INSTRUCTIONS.format(manual=manual_dir(data_dir), data_dir=where)
        else:
            hint = (f"prepare it once with `tfds build {tfds_name.split('/')[0]} --data_dir={where}` "
                    "on a machine with network, or pass --download")
        source = "" if data_dir or not os.environ.get("TFDS_DATA_DIR") else " from TFDS_DATA_DIR"
        raise DataError(f"--dataset={tfds_name} (--data_dir={where}{source}): cannot read split "
                        f"{split!r} ({_reason(error)}); {hint}") from None
    return dataset.map(lambda ex: {"image": ex[image_key], "label": ex[label_key]})

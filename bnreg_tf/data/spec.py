"""What a run needs to know about a dataset (`DatasetSpec`), how its splits are planned
(`Splits`), the default recipe of a dataset the paper does not cover, and `DataError`."""
import dataclasses


class DataError(RuntimeError):
    """Data that cannot be read; the message is one line saying how to fix it."""


# Per-channel mean and std of the training images on the 0..255 scale.
IMAGENET_NORMALIZATION = ((0.485 * 255, 0.456 * 255, 0.406 * 255),
                          (0.229 * 255, 0.224 * 255, 0.225 * 255))
SMALL_IMAGE = 64          # images up to this side train at their size with pad-and-crop
LARGE_IMAGE_SIZE = 224    # images above it, or of varying size: random-resized crops of this


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a run needs to know about a dataset."""

    name: str                 # the --dataset value (a TFDS name, or "folder")
    num_classes: int
    image_size: int           # native training resolution (ImageNet: the crop size)
    channels: int
    train_examples: int       # the whole training split
    holdout_examples: int     # the paper's holdout; 0 = none given (use the holdout flags)
    test_split: str           # "test", "validation", or "" = carved off the training split
    test_examples: int
    augment: str              # default augmentation of the recipe
    normalization: tuple = None   # (mean, std) per channel; None = from the training split
    variable_size: bool = False   # images differ in size (a raw batch holds one image)
    holdout_split: str = ""   # a split of its own playing the holdout (digits)
    source: str = "tfds"      # tfds, digits or folder
    image_key: str = "image"
    label_key: str = "label"
    class_names: tuple = ()
    encoded_jpeg: bool = False    # stored as JPEG files, readable as bytes (catalog.load)
    recipe_note: str = ""      # why this size and augmentation (image folders)
    skipped: tuple = ()        # ((file, reason), ...): bad image files left out (folders)
    dropped_classes: tuple = ()   # empty class folders left out (folders)
    ignored_files: int = 0     # files of class folders that are not images by their name


def default_recipe(height, width, channels):
    """`(image_size, augment, variable_size)` for a dataset the paper does not cover.

    Small images of one size (side <= 64) train at their size with 4-px pad-and-crop, plus
    flips for colour images (grey ones are often characters, which flips would corrupt); larger
    or varying images take ImageNet's recipe: random-resized crops of 224 px and flips.
    """
    if height and width and max(height, width) <= SMALL_IMAGE:
        return max(height, width), "crop_flip" if channels == 3 else "crop", height != width
    if height and width and height == width:
        return height, "goyal", False
    return LARGE_IMAGE_SIZE, "goyal", True


@dataclasses.dataclass(frozen=True)
class Splits:
    """The split strings of one run and their sizes; `validation` is None without holdout."""

    train: str
    train_examples: int
    validation: str
    validation_examples: int
    test: str
    test_examples: int

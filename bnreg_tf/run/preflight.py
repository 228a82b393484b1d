"""The one preflight of a run: everything checked before anything is written, beyond what a
`RunConfig` checks by itself (`config.validate`, which touches no file, data or model).

`check` (used by `bnreg-train`, `run_imagenet.py` and every run of `bnreg-study`): the model
and its norm mode (the model table), `--model_dir`, `--init_from`'s checkpoint, the data plan
(dataset spec and splits) and what the data allows. `preflight` adds the strategy's batch split
and reads every split the run will read, so that missing data fails before the first write.
An image folder's one pass over its files (`bnreg_tf.data.folder_scan`) happens when the data
is planned; its bad files and empty classes are refused here unless --skip_bad_images /
--drop_empty_classes allow them. What the machine cannot hold (a WRN too deep or too wide, a
batch too large: `bnreg_tf.run.resources`) is refused before anything is built.
Each failure is one `ConfigError` line naming the flag or file.
"""
from bnreg_tf.data import folder
from bnreg_tf.data.spec import DataError
from bnreg_tf.run import inputs, resources
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.models import check_model, native_image_size, wrn_spec
from bnreg_tf.run.strategies import check_batch_split
from bnreg_tf.run.warm_start import source_checkpoint


def check(config):
    """`(DatasetSpec, Splits)` of a run whose model, model dir, warm start and data fit."""
    check_model(config)
    if not config.model_dir:
        raise ConfigError("--model_dir: expected a directory path, got ''")
    if config.init_from:
        source_checkpoint(config)
    try:
        spec, splits = inputs.plan(config)   # an unknown name, a folder without train/, ...
        if spec.source == "folder":
            folder.check(config.data_dir, config.skip_bad_images, config.drop_empty_classes)
    except DataError as error:
        raise ConfigError(str(error)) from None
    if config.augment == "randaugment" and spec.channels != 3:
        raise ConfigError(f"--augment: expected an RGB dataset for randaugment, got "
                          f"{config.dataset!r} ({spec.channels} channel)")
    wrn = wrn_spec(config.model)
    if wrn is not None:
        resources.check_wrn(config.model, wrn, spec.channels, spec.num_classes)
    return spec, splits


def check_batches(config, spec, strategy):
    """A training batch per replica, and an evaluation batch, fit in memory (`resources`);
    TensorFlow allocates a whole evaluation batch even when the split is smaller (observed)."""
    size = native_image_size(config, spec)
    given = f" at --image_size={config.image_size}" if config.image_size else ""
    for flag in ("batch_size", "eval_batch_size"):
        per_replica = check_batch_split(strategy, getattr(config, flag), flag)
        resources.check_batch(f"--{flag}={getattr(config, flag)}{given}", per_replica, size,
                              spec.channels)


def read_splits(config, splits):
    """Opens every split the run reads (train, holdout, test): missing data fails here, once."""
    for split in dict.fromkeys((splits.train, splits.validation, splits.test)):
        if split:
            inputs.load(config, split)


def preflight(config, strategy):
    """`check`, the batch sizes against `strategy`'s replicas, and `read_splits`."""
    spec, splits = check(config)
    check_batches(config, spec, strategy)
    read_splits(config, splits)
    return spec, splits

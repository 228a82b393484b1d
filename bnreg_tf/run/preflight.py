"""The one preflight of a run: everything checked before anything is written, beyond what a
`RunConfig` checks by itself (`config.validate`, which touches no file, data or model).

`check` (used by `bnreg-train`, `run_imagenet.py` and every run of `bnreg-study`): the model
and its norm mode (the model table), `--model_dir`, `--init_from`'s checkpoint, the data plan
(dataset spec and splits) and what the data allows. `preflight` adds the strategy's batch split
and reads every split the run will read, so that missing data fails before the first write.
An image folder's one pass over its files (`bnreg_tf.data.folder_scan`) happens when the data
is planned; its bad files and empty classes are refused here unless --skip_bad_images /
--drop_empty_classes allow them.
Each failure is one `ConfigError` line naming the flag or file.
"""
from bnreg_tf.data import folder
from bnreg_tf.data.spec import DataError
from bnreg_tf.run import inputs
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.models import check_model
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
    return spec, splits


def read_splits(config, splits):
    """Opens every split the run reads (train, holdout, test): missing data fails here, once."""
    for split in dict.fromkeys((splits.train, splits.validation, splits.test)):
        if split:
            inputs.load(config, split)


def preflight(config, strategy):
    """`check`, the batch sizes against `strategy`'s replicas, and `read_splits`."""
    spec, splits = check(config)
    check_batch_split(strategy, config.batch_size)
    check_batch_split(strategy, config.eval_batch_size, "eval_batch_size")
    read_splits(config, splits)
    return spec, splits

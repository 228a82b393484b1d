"""The names of the files bnreg writes, defined once.

A run directory (`--model_dir`, written by `bnreg_tf.run.trainer`):

    config.json          the resolved RunConfig: the run's identity (rundir.check_model_dir)
    bnreg.lock           the one writer's lock (runlock.RunLock)
    checkpoints/         tf.train.CheckpointManager: model, optimizer, the epoch's metrics
    log.csv              one row per epoch (callbacks.EpochLog)
    tensorboard/         train/ and validation/ scalars, HParams (callbacks.TensorBoardLog)
    normalization.json   per-channel statistics of datasets without published ones (inputs)
    initial_norms.json   NormMonitor's values at initialisation
    best/, best.json     early stopping's best checkpoint (early_stopping)
    results.json         the holdout's and the test split's scores, norms, export path
    export/              the SavedModel, with dataset.json and class_names.txt (export)
    study.json           the study's record of the run (bnreg_tf.study.runner)

A study's output dir (`--output_dir`): runs/<run name>/, replaced/, report.md, results.csv,
results.json, coefficients.csv, the figures, signal_propagation.json/.csv.
"""
CONFIG = "config.json"
LOCK = "bnreg.lock"
CHECKPOINTS = "checkpoints"
LOG = "log.csv"
TENSORBOARD = "tensorboard"
NORMALIZATION = "normalization.json"
INITIAL_NORMS = "initial_norms.json"
BEST_DIR = "best"
BEST_FILE = "best.json"
RESULTS = "results.json"
EXPORT = "export"
DATASET_RECORD = "dataset.json"
CLASS_NAMES = "class_names.txt"
STUDY_RECORD = "study.json"

STUDY_RUNS = "runs"
STUDY_REPLACED = "replaced"
REPORT = "report.md"
RESULTS_CSV = "results.csv"
COEFFICIENTS_CSV = "coefficients.csv"
NORM_CURVES_PNG = "norm_curves.png"
COEFFICIENTS_PNG = "coefficients.png"
SIGNAL_PROPAGATION = "signal_propagation.json"
SIGNAL_PROPAGATION_CSV = "signal_propagation.csv"
SIGNAL_PROPAGATION_PNG = "signal_propagation.png"

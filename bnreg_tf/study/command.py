"""`bnreg-study`'s flow, from its flags (a `Request`) to an exit status: the grid, the runs of this
shard (or, with `--report_only`, what the output dir holds), and the report."""
import dataclasses
import time

from bnreg_tf.run import inputs, preflight, rundir
from bnreg_tf.run.config import ConfigError
from bnreg_tf.run.strategies import is_chief
from bnreg_tf.study import grid as grid_lib
from bnreg_tf.study import report, runner
from bnreg_tf.study.records import check_reuse
from bnreg_tf.study.selection import final_runs, selection


@dataclasses.dataclass(frozen=True)
class Request:
    """What `bnreg-study` was asked: the study preset, the run flags given explicitly, the grid
    flags (lists of strings, None when not given), the shard `I/N`, and the command line."""

    preset: str
    given: dict
    variants: list = None
    seeds: list = None
    coefficients: list = None
    output_dir: str = "reports/study"
    protocol: str = None
    learning_rates: list = None
    tuning_seeds: int = None
    shard: str = "0/1"
    report_only: bool = False
    rerun_changed: bool = False
    command: str = "bnreg-study"


def _train(grid, request, shard, initialize_devices):
    """Trains this shard's runs; returns (records, strategy, start time)."""
    check_reuse(grid, request.rerun_changed)
    strategy = initialize_devices(grid.base)   # first: the data checks initialise devices
    runner.check_data(grid)
    preflight.check_batches(grid.base, inputs.plan(grid.base)[0], strategy)
    rundir.check_writable(grid.output_dir, "--output_dir")
    phase = " of phase 1 (tuning on the holdout)" if grid.protocol == "paper" else ""
    print(f"bnreg-study: {len(grid.runs[shard[0]::shard[1]])} of {len(grid.runs)} runs"
          f"{phase} ({len(grid.variants)} variants) of {grid.preset.training_preset} on "
          f"{_data_name(grid.base)} into {grid.output_dir}, protocol {grid.protocol}",
          flush=True)
    start = time.time()
    records = runner.run_study(grid, strategy, shard, request.rerun_changed,
                               log=lambda line: print(line, flush=True))
    return records, strategy, start


def _data_name(config):
    return f"{config.dataset} ({config.data_dir})" if config.data_dir else config.dataset


def check_shard(grid, shard):
    """ConfigError (one line) when shard `(I, N)` holds no run of the grid in either phase
    (phase 2 has one run per variant and seed), so it would have nothing to do."""
    index, count = shard
    finals = len(grid.variants) * len(grid.seeds) if grid.protocol == "paper" else 0
    if index < len(grid.runs) or index < finals:
        return
    most = max(len(grid.runs), finals)
    raise ConfigError(f"--shard={index}/{count}: this grid has {most} runs per phase, so "
                      f"shards {most}..{count - 1} of {count} have nothing to do; use at most "
                      f"{most} shards")


def run(request, initialize_devices):
    """The whole command; `initialize_devices(config)` makes the process's one strategy (the
    binary's). Returns the exit status: 1 when one of this shard's runs failed or was busy."""
    shard = grid_lib.parse_shard(request.shard)
    grid = grid_lib.make_study(request.preset, request.given, request.variants, request.seeds,
                               request.coefficients, request.output_dir, request.protocol,
                               request.learning_rates, request.tuning_seeds)
    check_shard(grid, shard)
    if request.report_only:
        runner.check_report_only(grid)
        records, strategy, start = runner.collect(grid), None, time.time()
    else:
        records, strategy, start = _train(grid, request, shard, initialize_devices)
    mine = [r for r in records if r["run"] in runner.shard_names(grid, records, shard)]
    failed = any(r["status"] in ("failed", "busy") for r in mine)
    waiting = grid.protocol == "paper" and final_runs(grid, records) is None
    if waiting and not request.report_only:
        chosen = selection(grid, records)
        print(f"bnreg-study: shard {request.shard}: phase 1 share done; phase 2 is planned once "
              f"every phase-1 run has finished ({chosen['finished']} of {chosen['total']} now): "
              "repeat this command when the other shards are done")
    if strategy is not None and not is_chief(strategy):
        return 1 if failed else 0
    if shard[1] > 1 and not request.report_only:
        if not waiting:
            print(f"bnreg-study: shard {request.shard} done; when every shard is, merge with the "
                  "same flags and --report_only (without --shard)")
        return 1 if failed else 0
    header = report.header(grid, request.command, records, time.time() - start,
                           request.report_only)
    path = report.write_report(records, grid.output_dir, header, grid)
    print()
    print(report.main_table(records))
    print(f"\nbnreg-study: report in {path}")
    return 1 if failed else 0

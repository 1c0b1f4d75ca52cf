"""``mlflow-pipeline``: the pipeline as a Hydra app (``-m`` sweeps with multirun), or a
subcommand (cli.commands). Parses, calls the engine, prints.

``--dry-run`` (or ``--plan``) prints, per stage, cache hit or miss and why, running nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mlflow_pipeline.cli.commands import SUBCOMMANDS
from mlflow_pipeline.cli.common import (
    EXPECTED_ERRORS,
    exit_code,
    fail,
    job_prefix,
    prefix_job_logs,
    reported,
    store_fault,
)
from mlflow_pipeline.cli.help import print_help, unknown_subcommand
from mlflow_pipeline.cli.startup import freeze_at_exit, frozen_imports
from mlflow_pipeline.cli.summary import print_summary
from mlflow_pipeline.config import CONF_DIR, check_config, load_config, require_extra
from mlflow_pipeline.engine.alerts import alert_failure
from mlflow_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from mlflow_pipeline.engine.sweep import FailedJob

log = logging.getLogger(__name__)

DRY_RUN_FLAGS = ("--dry-run", "--plan")
SWEEP_FLAGS = ("-m", "--multirun")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> float | FailedJob | None:
    """One pipeline run; in a sweep, returns the job's objective (see engine.sweep), or
    FailedJob."""
    from mlflow_pipeline.engine.runner import run_pipeline
    from mlflow_pipeline.engine.sweep import FailedJob, objective, record_failed_job, sweep_run_of
    from mlflow_pipeline.store.tracking import resolve_tracking

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    prefix = ""
    if multirun:  # parallel jobs interleave their lines: say whose each one is
        prefix = job_prefix(hydra_cfg.job.num)
        prefix_job_logs(hydra_cfg.job.num)
    alerted: list[BaseException] = []  # errors already told to the alert hook, with their run

    def on_failure(error: BaseException, run_id: str, experiment_id: str) -> None:
        alerted.append(error)
        alert_failure(cfg, error, pipeline_run_id=run_id, experiment_id=experiment_id)

    def job_failed(error: BaseException, sweep_run_id: str | None = None) -> FailedJob:
        """A sweep job's end: a FAILED job run unless its pipeline run (which called
        on_failure) says it already; the other jobs go on, main() exits 1 at the end."""
        if error not in alerted:
            record_failed_job(str(hydra_cfg.sweep.dir), overrides, error, sweep_run_id)
        return FailedJob.of(error, hydra_cfg.sweeper)

    try:
        check_config(cfg)
    except EXPECTED_ERRORS as exc:
        fail(exc, prefix)
        alert_failure(cfg, exc)
        if multirun:
            return job_failed(exc)
        raise SystemExit(1) from None

    parent = None
    try:
        if multirun:  # the sweep run this job nests under
            parent = sweep_run_of(resolve_tracking(cfg).uri, str(hydra_cfg.sweep.dir))
        result = run_pipeline(
            cfg,
            overrides,
            parent_run_id=parent,
            role="job" if multirun else None,
            on_failure=on_failure,
        )
    except EXPECTED_ERRORS as exc:
        fail(exc, prefix)
        if exc not in alerted:
            alert_failure(cfg, exc)
        if multirun:
            return job_failed(exc, parent)
        raise SystemExit(1) from None
    except Exception as exc:  # a bug (alert, then keep its traceback) or the store failing
        if exc not in alerted:
            alert_failure(cfg, exc)
        bug = store_fault(exc) is None
        if bug and not multirun:
            raise
        if bug:  # a job's (a project stage's): its traceback in the log, the sweep goes on
            log.error("%s", exc, exc_info=exc)
        fail(exc, prefix)
        if multirun:
            return job_failed(exc, parent)
        raise SystemExit(1) from None
    print_summary(result, prefix)
    return objective(result, cfg) if multirun else None


def main() -> None:
    """``mlflow-pipeline [--dry-run] [-m] [overrides]`` or ``mlflow-pipeline SUBCOMMAND ...``
    (reproduce, score, serve, simulate, schedule, promote, audit, example-data).
    Ctrl-C: one line, exit 130."""
    with reported():
        _main()


def _main() -> None:
    subcommand = SUBCOMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
    if subcommand is not None:
        raise SystemExit(subcommand(sys.argv[2:]))
    if sys.argv[1:2] in (["--help"], ["-h"], ["help"]):
        print_help()
        raise SystemExit(0)
    if sys.argv[1:2] == ["--hydra-help"]:
        sys.argv[1] = "--help"  # Hydra's own help, as `--hydra-help` promises
    error = unknown_subcommand(sys.argv[1], sorted(SUBCOMMANDS)) if len(sys.argv) > 1 else None
    if error:
        print(f"mlflow-pipeline: error: {error}", file=sys.stderr)
        raise SystemExit(2)
    freeze_at_exit()
    with frozen_imports():
        import sklearn  # noqa: F401  (every pipeline run's stages import it)

        from mlflow_pipeline.engine.sweep import SweepFailed

    args = sys.argv[1:]
    try:
        _check_extras(args)
    except ConfigError as exc:
        fail(exc)
        raise SystemExit(1) from None
    if any(flag in args for flag in DRY_RUN_FLAGS):
        raise SystemExit(dry_run([a for a in args if a not in DRY_RUN_FLAGS]))
    try:
        _hydra_app()
    except SweepFailed as failed:
        print(f"mlflow-pipeline: {failed}", file=sys.stderr)
        raise SystemExit(1) from None


def _check_extras(args: list[str]) -> None:
    """Hydra's own error for a launcher or sweeper plugin that is not installed names no fix:
    say which extra brings it."""
    if any(a.startswith(("search=", "hydra/sweeper=optuna")) for a in args):
        require_extra("hydra_plugins.hydra_optuna_sweeper", "optuna", "a hyperparameter search")
    if any(a.startswith("hydra/launcher=ray") for a in args):
        require_extra("hydra_plugins.hydra_ray_launcher", "ray", "the Ray launcher")


def dry_run(overrides: list[str]) -> int:
    """``--dry-run``: plan one pipeline run of these overrides; runs nothing."""
    from mlflow_pipeline.engine.plan import describe_plan, plan

    if any(a in SWEEP_FLAGS for a in overrides):
        # Launcher workers (joblib, Ray, SLURM) would not see the flag and run for real.
        fail(ConfigError("--dry-run plans one pipeline run: drop -m and plan one job's overrides"))
        return 1
    return exit_code(lambda: print(describe_plan(plan(load_config(overrides)))))


if __name__ == "__main__":
    main()

"""``python -m mlflow_pipeline.cli main|<stage>|score ...``: what the MLproject entry points
call. Parses the entry point's parameters, calls the engine, prints."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from mlflow_pipeline.cli.common import EXPECTED_ERRORS, LOG_FORMAT, fail, reported, store_fault
from mlflow_pipeline.cli.startup import started_by_runner
from mlflow_pipeline.config import PROJECT_ROOT, load_config, split_overrides, unquote_parameter
from mlflow_pipeline.engine.alerts import alert_failure
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.store.tracking import record_error
from mlflow_pipeline.tags import Env

SWEEP_FLAGS = ("-m", "--multirun")


def split_options(hydra_options: str, *, sweep_allowed: bool = False) -> list[str]:
    """Hydra overrides from one MLproject parameter; ``-m`` only where a sweep can run."""
    options = split_overrides(unquote_parameter(hydra_options))
    if not sweep_allowed and any(o in SWEEP_FLAGS for o in options):
        raise ConfigError("hydra_options: a sweep (-m) runs from the main entry point only")
    return options


def steps_override(steps: str) -> list[str]:
    """``all`` or a comma list -> a Hydra override for ``steps``."""
    if not steps or steps.strip() == "all":
        return []
    names = [s.strip() for s in steps.split(",") if s.strip()]
    return [f"steps=[{','.join(names)}]"]


def project_main(argv: list[str] | None = None) -> int:
    """Body of the MLproject entry points: ``main`` (whole pipeline), one stage, or ``score``.
    Ctrl-C: one line, exit 130 (said by the runner, for a stage it started)."""
    args = sys.argv[1:] if argv is None else argv
    with reported(announce_interrupt=not started_by_runner(args)):
        return _project_main(argv)
    return 1  # unreachable: reported() re-raises or exits


def _project_main(argv: list[str] | None) -> int:
    # `mlflow run` hands its run over in MLFLOW_RUN_ID; MLflow deletes the variable at the
    # first start_run(), so it is read here, before anything runs.
    mlflow_run_id = os.environ.get(Env.RUN_ID) or None
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["score"]:
        from mlflow_pipeline.cli.commands import score_main

        return score_main(argv[1:], run_id=mlflow_run_id)
    parser = argparse.ArgumentParser(prog="python -m mlflow_pipeline.cli")
    parser.add_argument("entry_point", help="main, or the name of a stage of the pipeline")
    parser.add_argument("--steps", default="all")
    parser.add_argument("--hydra-options", default="")
    parser.add_argument("--pipeline-run-id", default="")
    parser.add_argument("--upstream-run-id", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    cfg = None
    # A stage entry point started by the runner (runner=projects) leaves alerts to that runner.
    alerts_here = args.entry_point == "main" or not args.pipeline_run_id
    try:
        overrides = split_options(args.hydra_options, sweep_allowed=args.entry_point == "main")
        if any(o in SWEEP_FLAGS for o in overrides):
            return _sweep(overrides + steps_override(args.steps), mlflow_run_id)
        if args.entry_point == "main":
            overrides += steps_override(args.steps)
        cfg = load_config(overrides)
        mlflow_run_id = _own_store(cfg, mlflow_run_id)
        _run_entry_point(args, cfg, overrides, mlflow_run_id)
    except EXPECTED_ERRORS as exc:
        if alerts_here or not mlflow_run_id:  # else the runner says it, read from the run
            fail(exc)
        if mlflow_run_id:  # the run `mlflow run` made for us shows why it failed
            record_error(mlflow_run_id, exc)
        if alerts_here:
            alert_failure(cfg, exc, pipeline_run_id=mlflow_run_id)
        return 1
    except Exception as exc:  # a bug (alert, then keep its traceback) or the store failing
        if alerts_here:
            alert_failure(cfg, exc, pipeline_run_id=mlflow_run_id)
        if store_fault(exc) is None:
            raise
        fail(exc)
        return 1
    return 0


def _own_store(cfg: DictConfig, mlflow_run_id: str | None) -> str | None:
    """``mlflow run <project>`` from another directory hands over a run in that directory's
    default store: the project's runs go to its own store instead (unless tracking.uri says
    otherwise), as a new run there. Returns the run to resume, if any."""
    from mlflow_pipeline.store.tracking import is_other_default_store

    given = os.environ.get(Env.TRACKING_URI)
    root = Path(cfg.tracking.root or PROJECT_ROOT)
    if not mlflow_run_id or cfg.tracking.uri or not is_other_default_store(given, root):
        return mlflow_run_id
    for name in (Env.TRACKING_URI, Env.RUN_ID, Env.EXPERIMENT_ID):  # all about that store
        os.environ.pop(name, None)
    print(
        f"mlflow-pipeline: note: `mlflow run` made run {mlflow_run_id} in {given}; this project "
        f"keeps its runs in its own store at {root} (set tracking.uri, or "
        "MLFLOW_TRACKING_URI to a server, to use another store)",
        file=sys.stderr,
    )
    return None


def _run_entry_point(
    args: argparse.Namespace, cfg: object, overrides: list[str], mlflow_run_id: str | None
) -> None:
    from mlflow_pipeline.cli.summary import print_summary
    from mlflow_pipeline.engine.projects import run_stage_project
    from mlflow_pipeline.engine.runner import run_pipeline

    if args.entry_point == "main":
        print_summary(run_pipeline(cfg, overrides, run_id=mlflow_run_id))
        return
    run_stage_project(
        args.entry_point,
        cfg,
        run_id=mlflow_run_id,
        pipeline_run_id=args.pipeline_run_id or None,
        upstream_run_id=args.upstream_run_id or None,
    )


def _sweep(overrides: list[str], mlflow_run_id: str | None) -> int:
    """``mlflow run . -P hydra_options="-m ..."``: the Hydra multirun in a child process, with
    the run ``mlflow run`` made as the sweep run (so the jobs nest under it in the UI)."""
    # Hydra's parser wants -m before the overrides.
    rest = [o for o in overrides if o not in SWEEP_FLAGS]
    if mlflow_run_id:
        rest.append(f"+hydra.callbacks.sweep_run.parent_run_id={mlflow_run_id}")
    # The child must not resume that run itself: the sweep callback adopts it.
    env = {k: v for k, v in os.environ.items() if k != Env.RUN_ID}
    command = [sys.executable, "-m", "mlflow_pipeline.cli.app", "-m", *rest]
    return subprocess.run(command, env=env, check=False).returncode

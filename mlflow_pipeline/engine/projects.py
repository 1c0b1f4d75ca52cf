"""runner.mode=projects: every stage through ``mlflow.projects.run`` of its entry point in the
project's MLproject (one per stage), and the body of such an entry point (one stage on its own).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.projects import ExecutionException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import PROJECT_MARKER, PROJECT_ROOT, hydra_quote
from mlflow_pipeline.engine.inputs import resolve_inputs
from mlflow_pipeline.engine.pipeline import load_pipeline
from mlflow_pipeline.engine.result import PipelineResult, collect
from mlflow_pipeline.engine.services import run_context
from mlflow_pipeline.engine.spec import Stage
from mlflow_pipeline.engine.stage import Handoff, RunContext, cache_decision, record_hit, run_stage
from mlflow_pipeline.errors import ConfigError, StageError
from mlflow_pipeline.redaction import redact_overrides
from mlflow_pipeline.store.tracking import (
    activate,
    ensure_experiment,
    reap_dead_runs,
    resolve_tracking,
    retry_transient,
)
from mlflow_pipeline.tags import Env, Runs

log = logging.getLogger(__name__)


def run_as_projects(
    stages: list[Stage],
    cfg: DictConfig,
    overrides: list[str],
    ctx: RunContext,
    result: PipelineResult,
) -> None:
    """Each stage as ``mlflow.projects.run(<project>, entry_point=<stage>)``, nested under the
    pipeline run. The cache is decided here first: a hit costs a look-up, not a project run
    (~8 s of process start)."""
    # `python` in each entry point's command must be this interpreter (env_manager=local).
    bin_dir = os.path.dirname(sys.executable)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    hydra_options = " ".join(secrets_via_environment(cfg, _pinned_overrides(cfg, overrides)))
    launcher_log = logging.getLogger("mlflow.projects")
    if not any(isinstance(f, _DropCancelNotice) for f in launcher_log.filters):
        launcher_log.addFilter(_DropCancelNotice())
    for stage in stages:
        started = time.perf_counter()
        available = resolve_inputs(stage, cfg, ctx, {})
        decision = retry_transient(cache_decision, stage, cfg, ctx, available, what="cache")
        if decision.hit:
            log.info(decision.describe())
            ctx.decisions[stage.name] = decision
            collect(result, ctx.pipeline, record_hit(stage, ctx, decision, available))
            ctx.durations[stage.name] = time.perf_counter() - started
            continue
        project = entry_points_project()
        log.info("stage %s: running entry point '%s' of %s", stage.name, stage.name, project)
        run_id = _run_entry_point(stage, cfg, ctx, hydra_options, project)
        ctx.stage_runs[stage.name] = run_id
        ctx.decisions[stage.name] = decision
        ctx.durations[stage.name] = time.perf_counter() - started  # its process's start included
        collect(result, ctx.pipeline, {d.name: Handoff(run_id=run_id) for d in stage.outputs})


def entry_points_project() -> Path:
    """The MLproject whose entry points run the stages: the project's, else (running from a
    directory outside any project) this checkout's. Raises ConfigError when there is none."""
    for root in (PROJECT_ROOT, Path(__file__).resolve().parents[2]):
        if (root / PROJECT_MARKER).is_file():
            return root
    raise ConfigError(
        "runner=projects runs each stage as an MLproject entry point: run it inside a project "
        "(mlflow-pipeline init makes one with an entry point per stage)"
    )


def _run_entry_point(
    stage: Stage, cfg: DictConfig, ctx: RunContext, hydra_options: str, project: Path
) -> str:
    """``mlflow run <project> -e <stage>`` nested under the pipeline run; its run id."""
    try:
        submitted = mlflow.projects.run(
            uri=str(project),
            entry_point=stage.name,
            parameters={
                "hydra_options": hydra_options,
                "pipeline_run_id": ctx.pipeline_run_id,
                "upstream_run_id": ctx.upstream_run_id or "",
            },
            experiment_id=ctx.experiment_id,
            env_manager=cfg.runner.env_manager,
            run_name=stage.name,
            synchronous=True,
        )
    except (ExecutionException, MlflowException) as exc:
        raise StageError(_failed_stage_message(ctx, stage.name, exc), stage=stage.name) from exc
    except KeyboardInterrupt:
        # MLflow's launcher marks the run it cancels FAILED: an interrupted run is KILLED.
        _mark_killed(ctx, stage.name)
        raise
    return submitted.run_id


def _mark_killed(ctx: RunContext, stage_name: str) -> None:
    """The newest run of stage ``stage_name`` in this pipeline run, KILLED (best effort)."""
    try:
        run = _newest_stage_run(ctx, stage_name)
        if run is not None and run.info.status in ("FAILED", "RUNNING"):
            ctx.client.set_terminated(run.info.run_id, "KILLED")
    except Exception as exc:  # the store may be the reason of the interrupt
        log.debug("could not mark the interrupted %s run KILLED: %s", stage_name, exc)


def _newest_stage_run(ctx: RunContext, stage_name: str) -> Any:
    runs = ctx.client.search_runs(
        [ctx.experiment_id],
        f"tags.`{Runs.PIPELINE_RUN}` = '{ctx.pipeline_run_id}' "
        f"and tags.`{Runs.STAGE}` = '{stage_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


class _DropCancelNotice(logging.Filter):
    """MLflow's "=== Run (ID ...) interrupted, cancelling run ===": the CLI says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "interrupted, cancelling run" not in record.getMessage()


def _pinned_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The overrides that reproduce ``cfg`` in an entry point's process, which may run in
    another directory: relative data paths and the tracking store pinned as absolute."""
    tracking = resolve_tracking(cfg)
    pinned = [*overrides, f"tracking.uri={hydra_quote(tracking.uri)}"]
    pinned.append(
        f"tracking.root={hydra_quote(str(Path(cfg.tracking.root or PROJECT_ROOT).resolve()))}"
    )
    for key in ("path", "schema"):
        value = cfg.data.get(key)
        if value:
            pinned.append(f"data.{key}={hydra_quote(str(Path(value).resolve()))}")
    return pinned


def secrets_via_environment(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """``overrides`` with each one holding a secret replaced by ``key='${oc.env:NAME}'``, its
    value put in this process's environment as NAME (MLFLOW_PIPELINE_SECRET_<n>): the entry
    point's process inherits it and resolves it, and MLflow logs the interpolation as the
    parameter, not the secret."""
    pinned = []
    for override in overrides:
        key = override.split("=", 1)[0]
        value = OmegaConf.select(cfg, key.lstrip("+~").strip())
        if redact_overrides([override])[0] == override or not isinstance(value, str):
            pinned.append(override)
            continue
        name = f"{Env.SECRET_PREFIX}{sum(k.startswith(Env.SECRET_PREFIX) for k in os.environ)}"
        os.environ[name] = value
        pinned.append(f"{key}='${{oc.env:{name}}}'")
    return pinned


def _failed_stage_message(ctx: RunContext, stage_name: str, exc: Exception) -> str:
    """The failed stage run's own error (its ``pipeline.error`` tag), else MLflow's."""
    run = _newest_stage_run(ctx, stage_name)
    if run is not None and run.data.tags.get(Runs.ERROR):
        return run.data.tags[Runs.ERROR]
    return f"project run failed: {exc}"


def run_stage_project(
    stage_name: str,
    cfg: DictConfig,
    *,
    run_id: str | None,
    pipeline_run_id: str | None,
    upstream_run_id: str | None,
) -> dict[str, Handoff]:
    """Run one stage on its own (the body of the MLproject entry point ``<stage>``).

    Nests under ``pipeline_run_id`` when given and reads inputs from it, else from
    ``upstream_run_id``, else from the newest FINISHED runs of the producing stages.
    """
    pipeline = load_pipeline(cfg)
    stage = pipeline.stage_named(stage_name)
    tracking = resolve_tracking(cfg)
    activate(tracking)
    client = retry_transient(MlflowClient)
    if run_id:
        experiment_id = client.get_run(run_id).info.experiment_id
    elif pipeline_run_id:
        experiment_id = client.get_run(pipeline_run_id).info.experiment_id
    else:
        experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, tracking)
    if not pipeline_run_id:  # inside a pipeline, the pipeline run did this already
        retry_transient(lambda: reap_dead_runs(client, experiment_id))
    ctx = run_context(
        client,
        cfg,
        pipeline,
        experiment_id=experiment_id,
        pipeline_run_id=pipeline_run_id,
        runner_mode="projects",
        upstream_run_id=upstream_run_id or cfg.runner.upstream_run_id,
    )
    available = resolve_inputs(stage, cfg, ctx, {})
    return run_stage(stage, cfg, ctx, available, run_id=run_id)

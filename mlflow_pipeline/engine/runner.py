"""Runs a declared pipeline as one pipeline run with a child run per stage.

Two strategies give the same run tree (the same child runs, artifacts and registry outcome):
``in_process`` runs every stage in this process, handing frames over in memory;
``projects`` (engine.projects) runs each stage through ``mlflow.projects.run``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import flatten, resolved_yaml
from mlflow_pipeline.engine import noop
from mlflow_pipeline.engine.alerts import alert_drift
from mlflow_pipeline.engine.inputs import resolve_inputs
from mlflow_pipeline.engine.pipeline import load_pipeline, selected_stages
from mlflow_pipeline.engine.projects import run_as_projects
from mlflow_pipeline.engine.result import (
    PipelineResult,
    cache_summary,
    collect,
    flag_drift,
    producer_of,
)
from mlflow_pipeline.engine.services import run_context
from mlflow_pipeline.engine.spec import Stage
from mlflow_pipeline.engine.stage import Handoff, RunContext, run_stage
from mlflow_pipeline.errors import DriftError
from mlflow_pipeline.interrupt import acknowledge, checkpoint, interrupted_by, watched
from mlflow_pipeline.redaction import (
    redact_logs,
    redact_overrides,
    redact_url,
    redacted,
    secrets_of,
)
from mlflow_pipeline.store.artifacts import save_text
from mlflow_pipeline.store.tracking import (
    activate,
    code_version,
    end_active_run,
    end_own_runs,
    end_runs_down_to,
    ensure_experiment,
    owner_tags,
    reap_dead_runs,
    record_error,
    resolve_tracking,
    retry_transient,
)
from mlflow_pipeline.tags import Cache, Env, MLflow, Runs, Sweep

log = logging.getLogger(__name__)

# Top-level config keys not logged as params of the pipeline run.
UNLOGGED = ("steps", "pipeline")
# Config that does not change what a run computes: left out of its name's key.
NOT_IN_RUN_KEY = ("steps", "tracking", "runner", "cache", "alerts")
# Called with (error, pipeline run id, experiment id) when a pipeline run fails.
OnFailure = Callable[[BaseException, str, str], None]


def run_pipeline(
    cfg: DictConfig,
    overrides: list[str] | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    role: str | None = None,
    on_failure: OnFailure | None = None,
) -> PipelineResult:
    """Run ``cfg.steps`` of ``cfg.pipeline`` as one pipeline run with a child run per stage.

    ``run_id`` resumes a run created for us (``mlflow run .``); ``parent_run_id`` nests the
    pipeline run (a sweep job under its sweep run). ``role`` is the run's part in a sweep
    (``shared``, ``job``: leaves the pipeline's register stage to the sweep, ``register``).
    ``on_failure`` is called with the error and the failed run before it is re-raised.
    Raises PipelineError after marking the pipeline run FAILED; KeyboardInterrupt (Ctrl-C,
    never lost: ``interrupt``) after marking the runs KILLED.
    """
    with watched():
        return _run_pipeline(cfg, overrides, run_id, parent_run_id, role, on_failure)


def _run_pipeline(
    cfg: DictConfig,
    overrides: list[str] | None,
    run_id: str | None,
    parent_run_id: str | None,
    role: str | None,
    on_failure: OnFailure | None,
) -> PipelineResult:
    redact_logs(secrets_of(cfg))
    # A plain run may leave a no-op stamp for the next one (engine/noop.py); the old one goes
    # now, since this run may change what it vouched for.
    plain = not (run_id or parent_run_id or role) and cfg.runner.mode == "in_process"
    stamp = noop.stamp_path(cfg) if plain and cfg.cache.get("fast_noop", False) else None
    if stamp is not None:
        with contextlib.suppress(OSError):  # a store that cannot exist: activate() says why
            stamp.unlink(missing_ok=True)
    pipeline = load_pipeline(cfg)
    tracking = resolve_tracking(cfg)
    if stamp is not None and f"sqlite:///{noop.store_of(cfg)}" != tracking.uri:
        stamp = None  # the stamp must describe the store this run writes to
    activate(tracking)
    client = retry_transient(MlflowClient)
    stages = selected_stages(pipeline, cfg)
    if role == "job":
        stages = [s for s in stages if s.name != pipeline.register_stage]
    if run_id:
        experiment_id = retry_transient(lambda: client.get_run(run_id).info.experiment_id)
    elif parent_run_id:  # a sweep job: next to its sweep run, whatever data it uses
        experiment_id = retry_transient(lambda: client.get_run(parent_run_id).info.experiment_id)
    else:
        experiment_id = retry_transient(
            lambda: ensure_experiment(client, cfg.tracking.experiment_name, tracking)
        )
    retry_transient(lambda: reap_dead_runs(client, experiment_id))
    # A store locked by parallel sweep jobs refuses the insert as a whole: safe to retry.
    pipeline_run_id = retry_transient(
        lambda: _start_pipeline_run(
            cfg,
            stages,
            overrides,
            experiment_id,
            run_id=run_id,
            parent_run_id=parent_run_id,
            role=role,
        )
    )
    result = PipelineResult(pipeline_run_id, experiment_id, pipeline)
    uri = redact_url(tracking.uri)
    log.info(
        "pipeline run %s (experiment %s, model %s) at %s",
        pipeline_run_id,
        experiment_id,
        OmegaConf.select(cfg, "registry.model_name"),
        uri,
    )
    try:
        written = redacted(cfg)  # secrets never leave memory
        # The pipeline's declaration is in config.yaml; as params it would drown the rest.
        params = {k: v for k, v in flatten(written).items() if k.split(".")[0] not in UNLOGGED}
        mlflow.log_params(params)
        save_text(client, pipeline_run_id, "config.yaml", resolved_yaml(written))
        ctx = run_context(
            client,
            cfg,
            pipeline,
            experiment_id=experiment_id,
            pipeline_run_id=pipeline_run_id,
            runner_mode=cfg.runner.mode,
            upstream_run_id=cfg.runner.upstream_run_id,
        )
        try:
            RUNNERS[cfg.runner.mode](stages, cfg, overrides or [], ctx, result)
            checkpoint()  # a Ctrl-C swallowed in the last stage still ends the run as KILLED
        finally:
            _finish(cfg, ctx, result)
    except BaseException as exc:
        interrupted = interrupted_by(exc)
        if interrupted:
            acknowledge()  # no redelivery raises in the clean-up below
        if on_failure is not None:
            on_failure(exc, pipeline_run_id, experiment_id)
        record_error(pipeline_run_id, exc)
        end_runs_down_to(pipeline_run_id, exc)
        if interrupted:
            end_own_runs(client, experiment_id)
            if not isinstance(exc, KeyboardInterrupt):  # a Ctrl-C another error replaced
                raise KeyboardInterrupt from exc
        raise
    end_active_run()
    if stamp is not None and _rerun_is_noop(stages, cfg, ctx):
        with contextlib.suppress(OSError):  # best effort: without it the next run is exact
            noop.write_stamp(cfg, pipeline_run_id, experiment_id, stamp)
    return result


def _rerun_is_noop(stages: list[Stage], cfg: DictConfig, ctx: RunContext) -> bool:
    """Would the same run now be all cache hits? Every stage stored its outputs (or reused
    stored ones), and nothing a stage reads from outside changed during this run (a promotion
    changes the champion the profile compares with)."""
    for stage in stages:
        decision = ctx.decisions.get(stage.name)
        if decision is None or not (decision.hit or decision.status == "miss"):
            return False
        if stage.context is not None:
            before = {n: c.key for n, c in ctx.contexts.get(stage.name, {}).items()}
            now = {n: c.key for n, c in stage.context(cfg, ctx.services).items()}
            if before != now:
                return False
    return True


def _start_pipeline_run(
    cfg: DictConfig,
    stages: list[Stage],
    overrides: list[str] | None,
    experiment_id: str,
    *,
    run_id: str | None,
    parent_run_id: str | None,
    role: str | None,
) -> str:
    """Start (or resume, ``run_id``) the pipeline run; returns its id."""
    tags = {
        Runs.KIND: "pipeline",
        Runs.STEPS: ",".join(s.name for s in stages),
        Runs.RUNNER_MODE: cfg.runner.mode,
        Runs.OVERRIDES: " ".join(redact_overrides(overrides or [])),
        **code_version(),
        **owner_tags(),
    }
    if role:
        tags[Sweep.ROLE] = role
    tags[MLflow.RUN_NAME] = run_name(cfg)
    if run_id:
        # start_run(run_id=...) leaves $MLFLOW_RUN_ID set (`mlflow run` sets it), and the first
        # stage's start_run would then resume this run instead of starting a child run.
        os.environ.pop(Env.RUN_ID, None)
        return mlflow.start_run(run_id=run_id, tags=tags).info.run_id
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=tags[MLflow.RUN_NAME],
        parent_run_id=parent_run_id,
        tags=tags,
    )
    return run.info.run_id


def _finish(cfg: DictConfig, ctx: RunContext, result: PipelineResult) -> None:
    """The cache summary on the pipeline run, and the drift alert (policy warn), once: from the
    run that computed the drift result, not from the runs that reuse it."""
    result.stage_run_ids.update(ctx.stage_runs)
    result.decisions.update(ctx.decisions)
    result.durations.update(ctx.durations)
    mlflow.set_tag(Cache.SUMMARY, cache_summary(ctx.decisions))
    scored_by = ctx.stage_runs.get(ctx.pipeline.metrics_stage or "")
    if scored_by:
        # The pipeline run carries its score, so MLflow's compare and parallel-coordinates
        # views relate the config (its params) to the metrics across runs and sweep jobs.
        metrics = ctx.client.get_run(scored_by).data.metrics
        result.metrics = {k: v for k, v in metrics.items() if not _bookkeeping(k)}
        if result.metrics:
            mlflow.log_metrics(result.metrics)
    drift_stage = producer_of(ctx.pipeline, ctx.pipeline.drift_output)
    decision = result.decisions.get(drift_stage) if drift_stage else None
    alert_drift(
        cfg,
        result.drift,
        pipeline_run_id=result.pipeline_run_id,
        experiment_id=result.experiment_id,
        computed=decision is not None and not decision.hit,
    )


def _bookkeeping(metric: str) -> bool:
    """Metrics every stage run logs about itself, not about the model."""
    return metric in ("wall_time_s", "peak_rss_mb") or metric.startswith("rows.")


def run_name(cfg: DictConfig) -> str:
    """``<model>-<data>-<key>``: what a pipeline run trains on what, and a short digest of its
    config (runs with the same name ran the same config)."""
    relevant = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()
                if k not in NOT_IN_RUN_KEY}  # fmt: skip
    key = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()
    model = OmegaConf.select(cfg, "model.name") or "model"
    data = OmegaConf.select(cfg, "data.name") or "data"
    return f"{model}-{data}-{key[:6]}"


def run_in_process(
    stages: list[Stage],
    cfg: DictConfig,
    overrides: list[str],
    ctx: RunContext,
    result: PipelineResult,
) -> None:
    """Every stage in this process; frames are handed to the next stage in memory."""
    available: dict[str, Handoff] = {}
    for done, stage in enumerate(stages, 1):
        available.update(resolve_inputs(stage, cfg, ctx, available))
        try:
            outputs = run_stage(stage, cfg, ctx, available)
        except DriftError as exc:
            flag_drift(result, exc.drift)
            raise
        available.update(outputs)
        collect(result, ctx.pipeline, outputs)
        release(available, stages[done:])


def release(available: dict[str, Handoff], remaining: list[Stage]) -> None:
    """Forget the datasets no remaining stage reads: a 10M-row raw frame is not held in
    memory through training once validate has read it."""
    needed = {d.name for s in remaining for d in (*s.inputs, *s.schema_inputs)}
    for name in [n for n in available if n not in needed]:
        del available[name]


# runner.mode -> how the stages run.
RUNNERS: dict[str, Callable[..., None]] = {
    "in_process": run_in_process,
    "projects": run_as_projects,
}

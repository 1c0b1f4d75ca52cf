"""What a pipeline run offers its stages: the run context, with the services stages ask for by
name (``Stage.services``): ``registry``, ``pipeline_run_id``, ``stage_run_id`` and ``lineage``."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.engine.spec import Pipeline
from mlflow_pipeline.engine.stage import RunContext, RunService, StageCall
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.store import lineage


def run_context(
    client: MlflowClient,
    cfg: DictConfig,
    pipeline: Pipeline,
    *,
    experiment_id: str,
    pipeline_run_id: str | None,
    runner_mode: str,
    upstream_run_id: str | None = None,
) -> RunContext:
    """The context every stage of one pipeline run (or one stage run on its own) shares."""
    return RunContext(
        client=client,
        pipeline=pipeline,
        experiment_id=experiment_id,
        pipeline_run_id=pipeline_run_id,
        runner_mode=runner_mode,
        upstream_run_id=upstream_run_id,
        services=services(client, cfg, pipeline_run_id),
    )


def services(client: MlflowClient, cfg: DictConfig, pipeline_run_id: str | None) -> dict[str, Any]:
    """The services of a run. A stage run on its own (no pipeline run) is its own pipeline run
    for the registry's tags."""
    return {
        "registry": ModelRegistry.from_config(client, cfg),
        "pipeline_run_id": (
            pipeline_run_id if pipeline_run_id is not None else RunService(_own_run_id)
        ),
        "stage_run_id": RunService(_own_run_id),
        "lineage": RunService(_lineage),
    }


def _own_run_id(call: StageCall) -> str:
    return call.run_id


def _lineage(call: StageCall) -> dict[str, Any]:
    """The lineage of this very stage run: every run its inputs came from, back to the first
    stage."""
    return lineage.collect(
        call.ctx.client,
        {d.name: call.available[d.name].run_id for d in call.stage.reads},
        call.cfg,
        pipeline_run_id=call.ctx.pipeline_run_id,
        record_run_id=call.run_id,
        stage_runs=call.ctx.stage_runs,
    )

"""What a pipeline run produced, as the runners collect it and the terminal shows it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import mlflow

from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.spec import Pipeline
from mlflow_pipeline.engine.stage import Handoff
from mlflow_pipeline.tags import Runs


@dataclass
class PipelineResult:
    pipeline_run_id: str
    experiment_id: str
    pipeline: Pipeline | None = None
    # Stage name -> its run in this pipeline run (computed, or a cache hit).
    stage_run_ids: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, cache.CacheDecision] = field(default_factory=dict)
    # The pipeline's promotion decision and drift result (Pipeline.promotion_output,
    # drift_output), when the stages that make them ran or were reused.
    promotion: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    # Stage name -> wall seconds; the metrics of the pipeline's metrics stage.
    durations: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def collect(result: PipelineResult, pipeline: Pipeline, outputs: dict[str, Handoff]) -> None:
    """Keep the promotion decision and the drift result for the summary; flag drift."""
    if pipeline.promotion_output in outputs:
        text = _text(pipeline, pipeline.promotion_output, outputs)
        result.promotion = json.loads(text)
    if pipeline.drift_output in outputs:
        flag_drift(result, json.loads(_text(pipeline, pipeline.drift_output, outputs)))


def _text(pipeline: Pipeline, name: str, outputs: dict[str, Handoff]) -> str:
    handoff = outputs[name]
    if handoff.value is not None:
        return handoff.value
    # reused from an earlier run
    [dataset] = [d for d in pipeline.producers()[name].outputs if d.name == name]
    return mlflow.artifacts.load_text(f"runs:/{handoff.run_id}/{dataset.filename or name}")


def producer_of(pipeline: Pipeline, dataset: str | None) -> str | None:
    producer = pipeline.producers().get(dataset) if dataset else None
    return producer.name if producer else None


def flag_drift(result: PipelineResult, drift: dict[str, Any]) -> None:
    """Flag the pipeline run: tag pipeline.drift (detected | none | not checked)."""
    result.drift = drift
    status = (
        "not checked"
        if not drift.get("checked")
        else ("detected" if drift.get("detected") else "none")
    )
    mlflow.set_tag(Runs.DRIFT, status)
    if drift.get("detected"):
        mlflow.set_tag(Runs.DRIFTED, ",".join(drift.get("drifted", []))[:5000])


def cache_summary(decisions: dict[str, cache.CacheDecision]) -> str:
    return " ".join(f"{name}={d.status}" for name, d in decisions.items())


def describe(result: PipelineResult) -> str:
    """A few lines for the terminal: where the runs are, what the cache did, and what happened
    to the model."""
    lines = [f"pipeline run {result.pipeline_run_id} finished (experiment {result.experiment_id})"]
    if result.decisions:
        hits = [n for n, d in result.decisions.items() if d.hit]
        ran = [n for n, d in result.decisions.items() if not d.hit]
        lines.append(
            f"cache: {len(hits)} hit(s) [{', '.join(hits)}], {len(ran)} ran [{', '.join(ran)}]"
        )
    if result.drift is not None:
        from mlflow_pipeline.data.drift import summary

        lines.append(summary(result.drift))
    if result.promotion:
        register_stage = result.pipeline.register_stage if result.pipeline else None
        lines += _describe_promotion(result.promotion, result.decisions.get(register_stage))
    return "\n".join(lines)


def _describe_promotion(promo: dict[str, Any], register: cache.CacheDecision | None) -> list[str]:
    if register is not None and register.hit:
        return [
            f"register: reused run {register.source_run_id}; nothing registered, no alias "
            f"moved ({promo['model_name']} v{promo['version']} came from that run)"
        ]
    lines = []
    if promo.get("moved_outside"):
        lines.append(
            f"found alias move(s) made outside mlflow-pipeline: "
            f"{'; '.join(promo['moved_outside'])} (recorded in {promo['audit_experiment']})"
        )
    champion = promo["champion_version_after"]
    verdict = "promoted to champion" if promo["promote"] else "not promoted"
    score = ""
    if promo.get("champion_score") is None and promo.get("challenger_score") is not None:
        score = f"; {promo['metric']}={promo['challenger_score']:.6g}"
    # A duplicate's reason says it was not registered again (identical to vN).
    done = "registered " if promo.get("registered", True) else ""
    lines.append(
        f"{done}{promo['model_name']} v{promo['version']}: {verdict} "
        f"({promo['reason']}{score}); champion is v{champion}"
    )
    return lines

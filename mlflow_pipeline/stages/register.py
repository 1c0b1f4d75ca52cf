"""register: register the challenger and move ``champion`` only when the rule says so.

The rule (registry/promotion.py ``judge``): no champion yet, or the challenger beats the
champion, both scored on the current test set, by at least ``promotion.min_delta`` (and by
more than zero) on ``promotion.metric``. The registry is written only through the
``ModelRegistry`` handed in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import promotion_metric
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.registry.audit import KIND_PIPELINE, Move, Why, current_user
from mlflow_pipeline.registry.model_registry import ModelRegistry, lineage_json, lineage_tags
from mlflow_pipeline.registry.promotion import (
    PromotionDecision,
    judge,
    move_alias_with_rollback,
    recorded_promotion,
)
from mlflow_pipeline.reports.promotion import promotion_report
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.evaluate import model_metrics
from mlflow_pipeline.tags import Promotion

STAGE = "register"


def register(
    cfg: DictConfig,
    model: TrainedModel,
    test: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    registry: ModelRegistry,
    pipeline_run_id: str,
    stage_run_id: str,
    lineage: dict[str, Any],
) -> dict[str, str]:
    """Register the challenger, apply the rule, tag the version with the decision and its
    lineage.

    Idempotent: a model already registered (a rerun after a crash in this stage) is not
    registered again, and a version that already holds ``champion`` stays there.
    Returns ``{"promotion": JSON report, "lineage": JSON, "promotion_report": HTML}``.
    Raises StageError when the model was never logged.
    """
    metric, greater_is_better = promotion_metric(cfg)
    challenger_score = _challenger_score(model, metrics, metric)
    # Moves made in the UI since the last record go into the audit trail before ours.
    outside = registry.reconcile(detected_by=pipeline_run_id)
    existing = registry.version_of(model.uri)
    champion = registry.champion()
    champion_score, scoring_error = _champion_score(registry, champion, test, cfg, metric)
    decision = judge(
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_score=challenger_score,
        champion_score=champion_score,
        # MLflow gives versions as int from a SQL store and as str over REST: one type here.
        champion_version=str(champion.version) if champion is not None else None,
        min_delta=cfg.promotion.min_delta,
    )
    decision, reason, promoted_before = _standing_decision(
        decision, scoring_error, existing, champion
    )
    tags = _version_tags(decision, reason, pipeline_run_id, lineage)
    version = _registered(registry, model.uri, existing, tags)
    why = _why(decision, reason, pipeline_run_id, stage_run_id)
    _move_aliases(registry, version.version, decision, why, promoted_before=promoted_before)
    report = _report(registry, decision, reason, str(version.version), outside)
    return {
        "promotion": json.dumps(report, indent=2),
        "lineage": lineage_json(lineage),
        "promotion_report": promotion_report(report),
    }


def _challenger_score(model: TrainedModel, metrics: pd.DataFrame, metric: str) -> float:
    """The challenger's ``metric`` from evaluate's metrics. Raises StageError when the model
    was never logged or evaluate did not compute the metric."""
    if not model.uri:
        raise StageError(
            "the trained model has no MLflow URI; was train's run logged?", stage=STAGE
        )
    scores = dict(zip(metrics["metric"], metrics["value"], strict=True))
    if metric not in scores:
        raise StageError(f"promotion.metric '{metric}' was not computed by evaluate", stage=STAGE)
    return float(scores[metric])


def _champion_score(
    registry: ModelRegistry, champion: Any, test: pd.DataFrame, cfg: DictConfig, metric: str
) -> tuple[float | None, str | None]:
    """The champion's ``metric`` re-scored on this test set (None: no champion), or None and
    why it could not be scored."""
    if champion is None:
        return None, None
    try:
        return model_metrics(registry.load(champion.version), test, cfg)[metric], None
    except Exception as exc:  # any failure to score means: do not replace it blindly
        return None, f"{type(exc).__name__}: {exc}"


def _standing_decision(
    decision: PromotionDecision, scoring_error: str | None, existing: Any, champion: Any
) -> tuple[PromotionDecision, str, bool]:
    """The decision that stands, its reason, and whether the run that registered this very
    model promoted it already (a rerun after a crash in this stage: its aliases moved then)."""
    reason = decision.reason + (f" ({scoring_error})" if scoring_error else "")
    already_champion = (
        existing is not None and champion is not None and existing.version == champion.version
    )
    recorded = recorded_promotion(existing, decision) if already_champion else None
    if recorded is not None:
        # Its decision stands (comparing the champion with itself would record "not promoted").
        return recorded, recorded.reason, True
    if already_champion:
        reason = f"v{existing.version} (this model) is already the champion"
    return decision, reason, False


def _version_tags(
    decision: PromotionDecision, reason: str, pipeline_run_id: str, lineage: dict[str, Any]
) -> dict[str, str]:
    """The registered version's tags: the decision, its scores, and the lineage."""
    return {
        Promotion.DECISION: "promoted" if decision.promote else "not_promoted",
        Promotion.REASON: reason[:5000],
        Promotion.METRIC: decision.metric,
        Promotion.CHALLENGER_SCORE: repr(decision.challenger_score),
        Promotion.CHAMPION_SCORE: repr(decision.champion_score),
        Promotion.CHAMPION_VERSION: str(decision.champion_version),
        Promotion.PIPELINE_RUN: pipeline_run_id,
        **lineage_tags(lineage),
    }


def _registered(
    registry: ModelRegistry, model_uri: str, existing: Any, tags: dict[str, str]
) -> Any:
    """The version of ``model_uri``, registered now unless ``existing``, tagged ``tags``."""
    if existing is None:
        return registry.register(model_uri, tags)
    registry.tag_version(existing.version, tags)
    return existing


def _move_aliases(
    registry: ModelRegistry,
    version: str,
    decision: PromotionDecision,
    why: Why,
    *,
    promoted_before: bool,
) -> None:
    """``challenger`` to ``version``; then, when the rule promotes it, ``champion`` too and
    ``rollback`` to the champion it replaces (a recorded promotion moved them already)."""
    decided = "promoted" if decision.promote else "not promoted"
    challenger_why = replace(why, reason=f"registered by this run; {decided}: {why.reason}")
    registry.move_alias(registry.aliases.challenger, version, challenger_why)
    if decision.promote and not promoted_before:
        move_alias_with_rollback(
            registry,
            registry.aliases.champion,
            version,
            why,
            rollback_reason=f"the champion before v{version}: {why.reason}",
        )


def _why(decision: PromotionDecision, reason: str, pipeline_run_id: str, stage_run_id: str) -> Why:
    """The audit record of this stage's alias moves: the rule, its reason and both scores."""
    return Why(
        kind=KIND_PIPELINE,
        actor="mlflow-pipeline register stage",
        user=current_user(),
        reason=reason,
        pipeline_run=pipeline_run_id,
        stage_run=stage_run_id,
        metric=decision.metric,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
    )


def _report(
    registry: ModelRegistry,
    decision: PromotionDecision,
    reason: str,
    version: str,
    outside: list[Move],
) -> dict[str, Any]:
    """The promotion report (promotion.json and the HTML report's input)."""
    return {
        **asdict(decision),
        "reason": reason,
        "model_name": registry.name,
        "version": version,
        "champion_version_after": version if decision.promote else decision.champion_version,
        # Moves made outside mlflow-pipeline since the last record, recorded by this run.
        "moved_outside": [move.title for move in outside],
        "audit_experiment": registry.audit.experiment,
    }

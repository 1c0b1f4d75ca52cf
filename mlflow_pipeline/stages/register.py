"""register: register the challenger and move ``champion`` only when the rule says so.

The rule: no champion yet, or the challenger beats the champion, both scored on the current
test set, by at least ``promotion.min_delta`` (and by more than zero) on ``promotion.metric``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import promotion_metric
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.registry import model_registry as reg
from mlflow_pipeline.registry.audit import KIND_PIPELINE, Why, current_user
from mlflow_pipeline.reports.promotion import promotion_report
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.evaluate import score
from mlflow_pipeline.store.lineage import to_json as lineage_json
from mlflow_pipeline.store.lineage import version_tags as lineage_tags
from mlflow_pipeline.tags import Promotion

STAGE = "register"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    greater_is_better: bool
    challenger_score: float
    champion_score: float | None = None
    champion_version: str | None = None


def decide(
    *,
    metric: str,
    greater_is_better: bool,
    challenger_score: float,
    champion_score: float | None,
    champion_version: str | None,
    min_delta: float,
) -> Decision:
    """The champion/challenger rule as a pure function of the two scores."""
    common = dict(
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_score=challenger_score,
        champion_score=champion_score,
        champion_version=champion_version,
    )
    if champion_version is None:
        return Decision(promote=True, reason="no champion yet", **common)
    if champion_score is None:
        return Decision(
            promote=False,
            reason=f"champion v{champion_version} could not be scored on the current test set",
            **common,
        )
    gain = challenger_score - champion_score
    if not greater_is_better:
        gain = -gain
    direction = "higher" if greater_is_better else "lower"
    if gain > 0 and gain >= min_delta:
        return Decision(
            promote=True,
            reason=(
                f"challenger {metric}={challenger_score:.6g} beats champion "
                f"v{champion_version} {metric}={champion_score:.6g} by {gain:.6g} "
                f"({direction} is better, min_delta={min_delta})"
            ),
            **common,
        )
    return Decision(
        promote=False,
        reason=(
            f"challenger {metric}={challenger_score:.6g} does not beat champion "
            f"v{champion_version} {metric}={champion_score:.6g} by more than 0 and at least "
            f"min_delta={min_delta} ({direction} is better; gain {gain:.6g})"
        ),
        **common,
    )


def register(
    cfg: DictConfig,
    model: TrainedModel,
    test: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    registry: reg.ModelRegistry,
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
    if not model.uri:
        raise StageError(
            "the trained model has no MLflow URI; was train's run logged?", stage=STAGE
        )
    metric, greater_is_better = promotion_metric(cfg)
    scores = dict(zip(metrics["metric"], metrics["value"], strict=True))
    if metric not in scores:
        raise StageError(f"promotion.metric '{metric}' was not computed by evaluate", stage=STAGE)
    # Moves made in the UI since the last record go into the audit trail before ours.
    outside = registry.reconcile(detected_by=pipeline_run_id)
    existing = registry.version_of(model.uri)
    champion = registry.champion()
    champion_score = None
    scoring_error = None
    if champion is not None:
        try:
            champion_score = score(registry.load(champion.version), test, cfg)[metric]
        except Exception as exc:  # any failure to score means: do not replace it blindly
            scoring_error = f"{type(exc).__name__}: {exc}"
    decision = decide(
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_score=float(scores[metric]),
        champion_score=champion_score,
        # MLflow gives versions as int from a SQL store and as str over REST: one type here.
        champion_version=str(champion.version) if champion is not None else None,
        min_delta=cfg.promotion.min_delta,
    )
    reason = decision.reason + (f" ({scoring_error})" if scoring_error else "")
    already_champion = (
        existing is not None and champion is not None and existing.version == champion.version
    )
    recorded = _recorded_promotion(existing, decision) if already_champion else None
    if recorded is not None:
        # A run that crashed in this stage registered and promoted this very model: its
        # decision stands (comparing the champion with itself would record "not promoted").
        decision, reason = recorded, recorded.reason
    elif already_champion:
        reason = f"v{existing.version} (this model) is already the champion"
    tags = {
        Promotion.DECISION: "promoted" if decision.promote else "not_promoted",
        Promotion.REASON: reason[:5000],
        Promotion.METRIC: metric,
        Promotion.CHALLENGER_SCORE: repr(decision.challenger_score),
        Promotion.CHAMPION_SCORE: repr(decision.champion_score),
        Promotion.CHAMPION_VERSION: str(decision.champion_version),
        Promotion.PIPELINE_RUN: pipeline_run_id,
        **lineage_tags(lineage),
    }
    if existing is None:
        version = registry.register(model.uri, tags)
    else:
        version = existing
        registry.tag_version(version.version, tags)
    why = _why(decision, reason, pipeline_run_id, stage_run_id)
    challenger_why = replace(why, reason=f"registered by this run; {_decided(decision)}: {reason}")
    registry.move_alias(registry.aliases.challenger, version.version, challenger_why)
    if decision.promote and recorded is None:  # a recorded promotion moved its aliases already
        registry.move_alias(registry.aliases.champion, version.version, why)
        if champion is not None:
            registry.move_alias(
                registry.aliases.rollback,
                champion.version,
                replace(why, reason=f"the champion before v{version.version}: {reason}"),
            )
    champion_after = str(version.version) if decision.promote else decision.champion_version
    report = {
        **asdict(decision),
        "reason": reason,
        "model_name": registry.name,
        "version": str(version.version),
        "champion_version_after": champion_after,
        # Moves made outside mlflow-pipeline since the last record, recorded by this run.
        "moved_outside": [move.title for move in outside],
        "audit_experiment": registry.audit.experiment,
    }
    return {
        "promotion": json.dumps(report, indent=2),
        "lineage": lineage_json(lineage),
        "promotion_report": promotion_report(report),
    }


def _decided(decision: Decision) -> str:
    return "promoted" if decision.promote else "not promoted"


def _why(decision: Decision, reason: str, pipeline_run_id: str, stage_run_id: str) -> Why:
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


def _recorded_promotion(existing: Any, decision: Decision) -> Decision | None:
    """The promotion recorded on ``existing`` (a version that holds ``champion``) by the run
    that registered it, if that run promoted it; else None."""
    tags = existing.tags or {}
    if tags.get(Promotion.DECISION) != "promoted":
        return None

    def value(key: str) -> str | None:
        text = tags.get(key)
        return None if text in (None, "None") else text

    score = value(Promotion.CHAMPION_SCORE)
    return Decision(
        promote=True,
        reason=tags.get(Promotion.REASON) or decision.reason,
        metric=decision.metric,
        greater_is_better=decision.greater_is_better,
        challenger_score=decision.challenger_score,
        champion_score=float(score) if score else None,
        champion_version=value(Promotion.CHAMPION_VERSION),
    )

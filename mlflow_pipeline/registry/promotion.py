"""Promotion: the champion/challenger rule, and the one way ``champion`` moves (``rollback``
follows it to the version it leaves), used by the register stage and ``mlflow-pipeline promote``.

The rule: no champion yet, or the challenger beats the champion, both scored on the current
test set, by at least ``min_delta`` (and by more than zero) on the promotion metric.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mlflow.tracking import MlflowClient

from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.registry.audit import KIND_CLI, Move, Why, current_user
from mlflow_pipeline.registry.model_registry import (
    RESERVED_ALIAS,
    ModelRegistry,
    resolve_version,
)
from mlflow_pipeline.tags import Promotion


@dataclass(frozen=True)
class PromotionDecision:
    """What the rule decided, from which scores (versions as strings)."""

    promote: bool
    reason: str
    metric: str
    greater_is_better: bool
    challenger_score: float
    champion_score: float | None = None
    champion_version: str | None = None


def judge(
    *,
    metric: str,
    greater_is_better: bool,
    challenger_score: float,
    champion_score: float | None,
    champion_version: str | None,
    min_delta: float,
) -> PromotionDecision:
    """The champion/challenger rule as a pure function of the two scores. A champion that
    could not be scored (``champion_score`` None) is kept."""
    common = dict(
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_score=challenger_score,
        champion_score=champion_score,
        champion_version=champion_version,
    )
    if champion_version is None:
        return PromotionDecision(promote=True, reason="no champion yet", **common)
    if champion_score is None:
        return PromotionDecision(
            promote=False,
            reason=f"champion v{champion_version} could not be scored on the current test set",
            **common,
        )
    gain = challenger_score - champion_score
    if not greater_is_better:
        gain = -gain
    direction = "higher" if greater_is_better else "lower"
    if gain > 0 and gain >= min_delta:
        return PromotionDecision(
            promote=True,
            reason=(
                f"challenger {metric}={challenger_score:.6g} beats champion "
                f"v{champion_version} {metric}={champion_score:.6g} by {gain:.6g} "
                f"({direction} is better, min_delta={min_delta})"
            ),
            **common,
        )
    return PromotionDecision(
        promote=False,
        reason=(
            f"challenger {metric}={challenger_score:.6g} does not beat champion "
            f"v{champion_version} {metric}={champion_score:.6g} by more than 0 and at least "
            f"min_delta={min_delta} ({direction} is better; gain {gain:.6g})"
        ),
        **common,
    )


def recorded_promotion(existing: Any, decision: PromotionDecision) -> PromotionDecision | None:
    """The promotion recorded on ``existing`` (a version that holds ``champion``) by the run
    that registered it, if that run promoted it; else None."""
    tags = existing.tags or {}
    if tags.get(Promotion.DECISION) != "promoted":
        return None

    def value(key: str) -> str | None:
        text = tags.get(key)
        return None if text in (None, "None") else text

    score = value(Promotion.CHAMPION_SCORE)
    return PromotionDecision(
        promote=True,
        reason=tags.get(Promotion.REASON) or decision.reason,
        metric=decision.metric,
        greater_is_better=decision.greater_is_better,
        challenger_score=decision.challenger_score,
        champion_score=float(score) if score else None,
        champion_version=value(Promotion.CHAMPION_VERSION),
    )


def move_alias_with_rollback(
    registry: ModelRegistry,
    alias: str,
    version: str,
    why: Why,
    *,
    rollback_reason: str | None,
) -> list[Move]:
    """Point ``alias`` at ``version`` for ``why``; when ``alias`` is the champion and it left
    a version, point the rollback alias at that version for ``why`` with ``rollback_reason``
    (None: leave rollback where it is). Returns the moves recorded in the audit trail, in
    order (none when ``alias`` is on ``version`` already). Raises RegistryError."""
    moved = registry.move_alias(alias, version, why)
    if moved is None:
        return []
    left = moved.from_version
    if alias != registry.aliases.champion or left is None or rollback_reason is None:
        return [moved]
    back = registry.move_alias(
        registry.aliases.rollback, left, replace(why, reason=rollback_reason)
    )
    return [moved] + ([back] if back else [])


@dataclass(frozen=True)
class PromotionByHand:
    """What ``promote_by_hand`` did: the moves it recorded, in order."""

    alias: str
    model_uri: str
    moves: list[Move]

    def describe(self) -> str:
        """One line per recorded move; says so when the alias was already there."""
        lines = [f"recorded {m.kind} move of {m.model} {m.title}: {m.reason}" for m in self.moves]
        if not any(m.kind == KIND_CLI and m.alias == self.alias for m in self.moves):
            lines.append(f"{self.alias} is already on {self.model_uri}: nothing moved")
        return "\n".join(lines)


def promote_by_hand(
    client: MlflowClient,
    model_uri: str,
    *,
    reason: str,
    alias: str | None = None,
    rollback: bool = True,
) -> PromotionByHand:
    """``mlflow-pipeline promote``: point ``alias`` (default: the model's champion alias) at
    the version ``model_uri`` names, as the user running it and for ``reason``, recorded in
    the audit trail.

    Moves made outside mlflow-pipeline since the last record are recorded first. Moving the
    champion also moves the rollback alias (unless ``rollback`` is False) to the version it
    leaves, as a promotion by the pipeline does. The alias names are those the pipeline
    recorded on the model (default champion/challenger/rollback). Raises ConfigError for an
    unknown model, alias or version, a reserved alias name and an empty reason.
    """
    if not reason.strip():
        raise ConfigError("promote needs --reason: the audit trail records why")
    name, version = resolve_version(client, model_uri)
    registry = ModelRegistry(client, name)
    alias = alias or registry.aliases.champion
    if RESERVED_ALIAS.match(alias) or not alias.strip():
        raise ConfigError(
            f"alias {alias!r} is reserved by MLflow ('latest', 'v<N>'): choose another name"
        )
    target = str(version.version)
    moves = registry.audit.reconcile(registry.current_aliases(alias))
    why = Why(
        kind=KIND_CLI,
        actor="mlflow-pipeline promote",
        user=current_user(),
        reason=f"{reason.strip()} (as {model_uri})",
    )
    rollback_reason = f"the {alias} before v{target}: {reason.strip()}" if rollback else None
    moves += move_alias_with_rollback(registry, alias, target, why, rollback_reason=rollback_reason)
    return PromotionByHand(alias=alias, model_uri=model_uri, moves=moves)

"""Promotion: the champion/challenger rule, and the one way aliases move (``rollback`` follows
``champion`` to the version it leaves), used by the register stage and ``mlflow-pipeline
promote``.

The rule: no champion yet, or the challenger beats the champion, both scored on the current
test set, by at least ``min_delta``, by more than zero, and by more than the noise: the lower
bound of the confidence interval of the gain (a paired bootstrap, comparison.py) is above 0.

Every promotion happens in a ``promotion_session``: under the model's promotion lock (lock.py),
after finishing a promotion a crash interrupted (plan.py), marking dead audit runs FAILED and
recording the moves made outside mlflow-pipeline. So two promotions of one model never
interleave: each reads the champion, decides and moves the aliases as one step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.interrupt import checkpoint
from mlflow_pipeline.registry.audit import KIND_CLI, Move, Why, current_user
from mlflow_pipeline.registry.comparison import Comparison
from mlflow_pipeline.registry.failpoint import failpoint
from mlflow_pipeline.registry.lock import PromotionLock
from mlflow_pipeline.registry.model_registry import (
    RESERVED_ALIAS,
    ModelRegistry,
    resolve_version,
)
from mlflow_pipeline.registry.plan import Finished, Step, alias_steps, carry_out, finish_interrupted
from mlflow_pipeline.tags import Promotion

DEFAULT_LOCK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PromotionDecision:
    """What the rule decided, from which scores (versions as strings) and which comparison."""

    promote: bool
    reason: str
    metric: str
    greater_is_better: bool
    challenger_score: float
    champion_score: float | None = None
    champion_version: str | None = None
    comparison: Comparison | None = None


def judge(
    *,
    metric: str,
    greater_is_better: bool,
    challenger_score: float,
    champion_score: float | None,
    champion_version: str | None,
    min_delta: float,
    comparison: Comparison | None,
) -> PromotionDecision:
    """The champion/challenger rule as a pure function of the two scores and the paired
    bootstrap ``comparison`` of them. A champion that could not be scored (``champion_score``
    None) is kept; so is one compared without an estimate of the noise."""
    common = dict(
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_score=challenger_score,
        champion_score=champion_score,
        champion_version=champion_version,
        comparison=comparison,
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
    versus = (
        f"challenger {metric}={challenger_score:.6g} %s champion v{champion_version} "
        f"{metric}={champion_score:.6g}"
    )
    terms = f"{'higher' if greater_is_better else 'lower'} is better, min_delta={min_delta}"
    noise = comparison.describe() if comparison is not None else "no estimate of the noise"
    if gain <= 0 or gain < min_delta:
        short = "by more than 0" if gain <= 0 else f"by at least min_delta={min_delta}"
        return PromotionDecision(
            promote=False,
            reason=f"{versus % 'does not beat'} {short} (gain {gain:.6g}; {terms}; {noise})",
            **common,
        )
    if comparison is None or not comparison.estimated or comparison.low <= 0:
        includes = " includes 0" if comparison is not None and comparison.estimated else ""
        return PromotionDecision(
            promote=False,
            reason=f"{versus % 'does not beat'} beyond the noise: gain {gain:.6g}, but "
            f"{noise}{includes} ({terms})",
            **common,
        )
    return PromotionDecision(
        promote=True,
        reason=f"{versus % 'beats'} by {gain:.6g}, beyond the noise: {noise} ({terms})",
        **common,
    )


def recorded_promotion(version: object, decision: PromotionDecision) -> PromotionDecision | None:
    """The promotion recorded on ``version`` (one that holds ``champion``) by the run that
    decided about it, if that run promoted it; else None."""
    tags = getattr(version, "tags", None) or {}
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


@dataclass
class PromotionSession:
    """A promotion in progress under the model's lock: ``move`` makes alias moves as a plan
    a crash cannot leave half-done. ``finished``: the interrupted promotion this session
    finished first (None: there was none); ``outside``: the moves made outside mlflow-pipeline
    that it recorded; ``reaped``: the dead audit runs it marked FAILED."""

    registry: ModelRegistry
    lock: PromotionLock
    finished: Finished | None = None
    outside: list[Move] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Raises RegistryError unless the lock is still held (before a write), and
        KeyboardInterrupt if Ctrl-C came and was swallowed on the way (``interrupt``)."""
        checkpoint()
        self.lock.check()

    def move(self, steps: list[Step]) -> list[Move]:
        return carry_out(self.registry, steps, self.lock)


@contextmanager
def promotion_session(
    registry: ModelRegistry,
    *,
    holder: str,
    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    detected_by: str | None = None,
    extra_alias: str | None = None,
) -> Iterator[PromotionSession]:
    """Hold the promotion lock of ``registry``'s model for the block (``holder`` says who, in
    the lock and a waiter's messages). On entry: finish an interrupted promotion, mark dead
    audit runs FAILED, record moves made outside mlflow-pipeline of the managed aliases and
    ``extra_alias`` (``detected_by``: the run that found them). Raises RegistryError (the
    lock not acquired within ``timeout_s``, store errors)."""
    with PromotionLock(registry.client, registry.name, holder=holder, timeout_s=timeout_s) as lock:
        failpoint("locked")
        session = PromotionSession(registry, lock)
        session.finished = finish_interrupted(registry, lock)
        session.reaped = registry.audit.reap()
        lock.check()
        session.outside = registry.audit.reconcile(
            registry.current_aliases(extra_alias), detected_by=detected_by
        )
        yield session


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
    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> PromotionByHand:
    """``mlflow-pipeline promote``: point ``alias`` (default: the model's champion alias) at
    the version ``model_uri`` names, as the user running it and for ``reason``, recorded in
    the audit trail, in a promotion session (the lock; see ``promotion_session``).

    Moves made outside mlflow-pipeline since the last record are recorded first. Moving the
    champion also moves the rollback alias (unless ``rollback`` is False) to the version it
    leaves, as a promotion by the pipeline does. The alias names are those the pipeline
    recorded on the model (default champion/challenger/rollback). Raises ConfigError for an
    unknown model, alias or version, a reserved alias name and an empty reason; RegistryError
    when the lock is not acquired within ``timeout_s``.
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
    user = current_user()
    why = Why(
        kind=KIND_CLI,
        actor="mlflow-pipeline promote",
        user=user,
        reason=f"{reason.strip()} (as {model_uri})",
    )
    rollback_reason = f"the {alias} before v{target}: {reason.strip()}" if rollback else None
    holder = f"mlflow-pipeline promote by {user}"
    with promotion_session(
        registry, holder=holder, timeout_s=timeout_s, extra_alias=alias
    ) as session:
        moves = [*(session.finished.moves if session.finished else []), *session.outside]
        steps = alias_steps(
            registry,
            alias,
            target,
            why,
            rollback_reason=rollback_reason,
            current=registry.current_aliases(alias),
        )
        moves += session.move(steps)
    return PromotionByHand(alias=alias, model_uri=model_uri, moves=moves)

"""register: register the challenger (once per model content) and move ``champion`` only when
the rule says so.

The rule (registry/promotion.py ``judge``): no champion yet, or the challenger beats the
champion, both scored on the current test set, by at least ``promotion.min_delta``, by more
than zero and beyond the noise (the lower bound of a paired bootstrap confidence interval of
the gain is above zero). Everything from reading the champion to the last alias move happens
in one promotion session, under the model's lock. The registry is written only through the
``ModelRegistry`` handed in.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import promotion_metric
from mlflow_pipeline.errors import PipelineError, StageError
from mlflow_pipeline.registry.audit import KIND_PIPELINE, Move, Why, current_user
from mlflow_pipeline.registry.comparison import (
    CommonGround,
    Comparison,
    Predictions,
    check_settings,
    common_ground,
    paired_bootstrap,
    score_of,
)
from mlflow_pipeline.registry.model_registry import ModelRegistry, lineage_json, lineage_tags
from mlflow_pipeline.registry.overlap import (
    TrainingOverlap,
    same_training_data,
    shares_columns,
    training_overlap,
)
from mlflow_pipeline.registry.plan import Step, alias_steps
from mlflow_pipeline.registry.promotion import (
    PromotionDecision,
    PromotionSession,
    judge,
    promotion_session,
    recorded_promotion,
)
from mlflow_pipeline.reports.promotion import promotion_report
from mlflow_pipeline.schemas import TrainedModel
from mlflow_pipeline.stages.evaluate import metrics_of, predict
from mlflow_pipeline.stages.train import model_columns
from mlflow_pipeline.tags import Promotion, Registry

STAGE = "register"


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on the current test set: its score and predictions, or why it
    could not be scored. ``ground``: when the test set's labels differ from the classes the
    champion (or the challenger) knows, the rows and classes both were compared on; then
    ``predictions`` are the champion's on those rows and ``challenger_score`` is the
    challenger's score there (the same definition of the metric for both)."""

    score: float | None = None
    predictions: Predictions | None = None
    error: str | None = None
    ground: CommonGround | None = None
    challenger_score: float | None = None
    # Test values of the champion's categorical features that it never saw, said in words.
    unseen: str | None = None


@dataclass(frozen=True)
class Standing:
    """The decision that stands for this model and why; ``promoted_before``: the run that
    registered this very model promoted it already (its moves are made); ``takes_over``: the
    register run (killed) whose decision about this model this run completes;
    ``duplicate_of``: the version of another run holding the same model."""

    decision: PromotionDecision
    reason: str
    promoted_before: bool = False
    takes_over: str | None = None
    duplicate_of: Any = None


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
    """Register the challenger unless the same model (content digest) is registered already,
    apply the rule, tag the version with the decision and its lineage, move the aliases.

    Idempotent and safe to run concurrently: under the model's promotion lock; a promotion a
    crash interrupted is finished first; a model already registered (by a crashed attempt, or
    by another run) is not registered again, and a version that already holds ``champion``
    stays there. Returns ``{"promotion": JSON report, "lineage": JSON, "promotion_report":
    HTML}``. Raises StageError when the model was never logged, RegistryError when the
    registry fails or the lock is not acquired in ``promotion.lock_timeout_s``.
    """
    metric, greater_is_better = promotion_metric(cfg)
    # The challenger's predictions are needed to compare it with a champion (or to score it
    # when evaluate could not): made once, when first needed; with no champion, never.
    challenger = functools.cache(partial(_predictions, model.estimator, test, cfg))
    challenger_score = _challenger_score(model, metrics, metric, test[cfg.data.target], challenger)
    # Which test rows the champion trained on: found once per champion version, before the
    # lock for the champion seen now (reused when it still is the champion under the lock).
    overlaps: dict[str, tuple[TrainingOverlap | None, str | None]] = {}

    def overlap_with(champion: Any) -> tuple[TrainingOverlap | None, str | None]:
        if champion is None:
            return None, None
        if str(champion.version) not in overlaps:
            found = _training_overlap(registry, champion, lineage, test, cfg)
            overlaps[str(champion.version)] = found
        return overlaps[str(champion.version)]

    seen_now = _champion_now(registry)
    if seen_now is not None:
        challenger()  # before the lock, not while other promotions wait for it
        overlap_with(seen_now)
    check_settings(cfg.promotion.confidence, cfg.promotion.resamples)
    digest = registry.content_digest(model.uri)
    holder = f"register run {stage_run_id} of pipeline run {pipeline_run_id}"
    with promotion_session(
        registry,
        holder=holder,
        timeout_s=float(cfg.promotion.lock_timeout_s),
        detected_by=pipeline_run_id,
    ) as session:
        # Read under the lock: no other promotion of this model moves anything until we are done.
        existing = registry.version_with(digest, model.uri)
        champion = registry.champion()
        champion_version = str(champion.version) if champion is not None else None
        overlap, unchecked = overlap_with(champion)
        compared, compared_challenger = test, challenger
        if overlap is not None:  # only the test rows the champion did not train on
            compared = test[overlap.rows]
            compared_challenger = functools.cache(lambda: overlap.of(challenger()))
        scored = _champion_score(
            registry, champion_version, compared, cfg, metric, compared_challenger, overlap
        )
        if overlap is not None and scored.error is None and scored.challenger_score is None:
            scored = _challenger_on(scored, model, compared, compared_challenger(), cfg, metric)
        decision = judge(
            metric=metric,
            greater_is_better=greater_is_better,
            challenger_score=_first(scored.challenger_score, challenger_score),
            champion_score=scored.score,
            champion_version=champion_version,
            min_delta=cfg.promotion.min_delta,
            comparison=_comparison(
                cfg, metric, greater_is_better, compared, compared_challenger, scored
            ),
        )
        if scored.error is None:  # on what both were compared
            notes = [n for n in (unchecked, overlap and overlap.note) if n]
            notes += [scored.ground.note] if scored.ground is not None else []
            notes += [scored.unseen] if scored.unseen else []
            if notes:
                decision = replace(decision, reason=f"{'; '.join(notes)}: {decision.reason}")
        standing = _standing(registry, decision, scored.error, existing, champion_version)
        tags = _version_tags(standing, digest, pipeline_run_id, stage_run_id, lineage)
        session.check()
        version = _registered(registry, model.uri, existing, standing, tags, digest)
        why = _why(standing, pipeline_run_id, stage_run_id)
        moves = session.move(_steps(registry, version, standing, why))
        report = _report(
            registry, session, standing, version, digest, moves, scored.ground, overlap, unchecked
        )
    return {
        "promotion": json.dumps(report, indent=2),
        "lineage": lineage_json(lineage),
        "promotion_report": promotion_report(report),
    }


def _champion_now(registry: ModelRegistry) -> Any:
    """A look before the lock (what counts is read under it): None when there is no champion
    or the registry cannot say; the lock's own read then reports why."""
    try:
        return registry.champion()
    except Exception:
        return None


def _challenger_score(
    model: TrainedModel,
    metrics: pd.DataFrame,
    metric: str,
    y_true: pd.Series,
    challenger: Callable[[], Predictions],
) -> float:
    """The challenger's ``metric`` from evaluate's metrics; for a classifier one of whose
    classes is not in the test set (evaluate then has no roc_auc), the metric as the champion
    gets it on changed labels (``score_of``: one-vs-rest weighted by the classes present).
    Raises StageError when the model was never logged or the metric cannot be computed."""
    if not model.uri:
        raise StageError(
            "the trained model has no MLflow URI; was train's run logged?", stage=STAGE
        )
    scores = dict(zip(metrics["metric"], metrics["value"], strict=True))
    if metric in scores:
        return float(scores[metric])
    ground = common_ground(y_true.to_numpy(), challenger().classes)
    if ground is not None:
        try:
            score = score_of(metric, y_true.to_numpy(), ground.of(challenger()), ground.labels)
        except PipelineError:
            score = float("nan")
        if np.isfinite(score):
            return score
    raise StageError(f"promotion.metric '{metric}' was not computed by evaluate", stage=STAGE)


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)


def _predictions(estimator: Any, test: pd.DataFrame, cfg: DictConfig) -> Predictions:
    # The columns the model was fitted on (the champion's may differ from today's features).
    columns = model_columns(estimator, cfg, test)
    missing = [str(c) for c in columns if c not in test.columns]
    if missing:
        raise StageError(
            f"the test set has no column {', '.join(map(repr, missing))}, which the model was "
            "trained with",
            stage=STAGE,
        )
    y_pred, proba = predict(estimator, test[columns], cfg)
    return Predictions(y_pred, proba, getattr(estimator, "classes_", None))


def _training_overlap(
    registry: ModelRegistry,
    champion: Any,
    lineage: dict[str, Any],
    test: pd.DataFrame,
    cfg: DictConfig,
) -> tuple[TrainingOverlap | None, str | None]:
    """The test rows either model trained on (None: none, no champion, or both models trained
    on the same data), and why that could not be checked (None: it was)."""
    if champion is None:
        return None, None
    kinds = {str(name): str(d.kind) for name, d in cfg.pipeline.datasets.items()}
    unchecked = "not checked which test rows the champion trained on ({})"
    try:
        reference = registry.lineage_of(champion)
        if same_training_data(reference, lineage, kinds):
            return None, None
        frames = registry.training_frames(reference, kinds)
        if not frames:
            why = f"v{champion.version}'s lineage names no training frame this pipeline declares"
            return None, unchecked.format(why)
        if not shares_columns(test, frames):
            return None, unchecked.format("its training data has no column of the test set")
        return training_overlap(test, frames, registry.training_frames(lineage, kinds)), None
    except Exception as exc:  # unreadable lineage or data: compared on every row, and said so
        return None, unchecked.format(exc)


def _challenger_on(
    scored: ChampionScore,
    model: TrainedModel,
    test: pd.DataFrame,
    predictions: Predictions,
    cfg: DictConfig,
    metric: str,
) -> ChampionScore:
    """``scored`` with the challenger's score on ``test`` (the rows the champion did not train
    on), computed as the champion's was; an error when the metric is undefined there."""
    y_true = test[cfg.data.target]
    scores = metrics_of(model.estimator, y_true, predictions.y_pred, predictions.proba, cfg)
    score = scores.get(metric)
    if score is None or not np.isfinite(score) or not np.isfinite(scored.score):
        return ChampionScore(
            error=f"{metric} is undefined on the {len(test)} test rows the champion did not "
            "train on"
        )
    return replace(scored, challenger_score=float(score))


def _champion_score(
    registry: ModelRegistry,
    champion_version: str | None,
    test: pd.DataFrame,
    cfg: DictConfig,
    metric: str,
    challenger: Callable[[], Predictions],
    overlap: TrainingOverlap | None = None,
) -> ChampionScore:
    """The champion's ``metric`` and predictions on this test set (empty: no champion), or
    why it could not be scored.

    When the test set's labels are not the classes the champion and the challenger know,
    both are scored on the rows whose label both know, with one definition of the metric
    (``registry.comparison.common_ground`` and ``score_of``), and the result says so."""
    if champion_version is None:
        return ChampionScore()
    challenger()  # made before the lock unless a champion appeared since: its errors are its own
    if overlap is not None and not overlap.compared:
        return ChampionScore(error=overlap.note)
    try:
        estimator = registry.load(
            champion_version, allow_unsafe=cfg.registry.get("allow_unsafe_models", False)
        )
        predictions = _predictions(estimator, test, cfg)
        y_true = test[cfg.data.target]
        where = "the test set" if overlap is None else "the test rows the champion did not train on"
        unseen = unseen_categories_note(estimator, test, where)
        ground = common_ground(
            y_true.to_numpy(), predictions.classes, challenger().classes, where=where
        )
        if ground is not None:
            scored = _on_common_ground(ground, metric, y_true.to_numpy(), challenger(), predictions)
            return replace(scored, unseen=unseen)
        scores = metrics_of(estimator, y_true, predictions.y_pred, predictions.proba, cfg)
        return ChampionScore(scores[metric], predictions, unseen=unseen)
    except StageError as exc:  # said in words already
        return ChampionScore(error=str(exc.args[0]) if exc.args else str(exc))
    except Exception as exc:  # any failure to score means: do not replace it blindly
        return ChampionScore(error=f"{type(exc).__name__}: {exc}")


def known_categories(model: Any) -> dict[str, list[Any]]:
    """The categories each categorical feature's encoder learnt in ``model`` (a fitted
    scikit-learn Pipeline / ColumnTransformer): ``{column: categories_}``, for every fitted
    step with ``categories_`` that a ColumnTransformer gave named columns."""
    found: dict[str, list[Any]] = {}

    def walk(part: Any, columns: Any = None, depth: int = 0) -> None:
        if depth > 10:
            return
        if hasattr(part, "transformers_"):
            for _, transformer, selected in part.transformers_:
                if not isinstance(transformer, str):
                    walk(transformer, selected, depth + 1)
        elif hasattr(part, "steps"):
            for _, step in part.steps:
                walk(step, columns, depth + 1)
        elif hasattr(part, "categories_") and columns is not None:
            names = getattr(part, "feature_names_in_", None)
            if names is None:
                names = [columns] if isinstance(columns, str) else list(columns)
            for name, categories in zip(names, part.categories_, strict=False):
                found[str(name)] = list(categories)

    walk(model)
    return found


def unseen_categories_note(model: Any, test: pd.DataFrame, where: str) -> str | None:
    """``the test set has values the champion never saw (column 'origin': 'Korea' (79
    row(s)))``, or None: the champion scores such a value as its encoder scores any unknown
    one, and the comparison should say so."""
    parts = []
    for column, categories in known_categories(model).items():
        if column not in test.columns:
            continue
        values = test[column].dropna()
        unseen = values[~values.isin(categories)]
        if len(unseen):
            counts = unseen.astype(str).value_counts()
            shown = ", ".join(f"{v!r} ({n} row(s))" for v, n in counts.head(3).items())
            more = f" and {len(counts) - 3} more" if len(counts) > 3 else ""
            parts.append(f"column {column!r}: {shown}{more}")
    if not parts:
        return None
    has = "has" if where == "the test set" else "have"
    return f"{where} {has} values the champion never saw ({'; '.join(parts)})"


def _on_common_ground(
    ground: CommonGround,
    metric: str,
    y_true: np.ndarray,
    challenger: Predictions,
    champion: Predictions,
) -> ChampionScore:
    """Both models scored on ``ground``'s rows and classes, or why they cannot be."""
    y = y_true[ground.rows]
    if not ground.compared:
        return ChampionScore(error=ground.note, ground=ground)
    scores = [score_of(metric, y, ground.of(p), ground.labels) for p in (challenger, champion)]
    if not all(np.isfinite(scores)):
        undefined = (
            f"{ground.note}, on which {metric} is undefined "
            f"(classes present: {', '.join(repr(c) for c in ground.as_dict()['labels'])})"
        )
        return ChampionScore(error=undefined, ground=ground)
    return ChampionScore(
        score=scores[1],
        predictions=ground.of(champion),
        ground=ground,
        challenger_score=scores[0],
    )


def _comparison(
    cfg: DictConfig,
    metric: str,
    greater_is_better: bool,
    test: pd.DataFrame,
    challenger_of: Callable[[], Predictions],
    champion: ChampionScore,
) -> Comparison | None:
    """The paired bootstrap of challenger against champion on the test rows (those of the
    common ground when the labels changed; None: no champion predictions, or the metric has
    no bootstrap for these predictions)."""
    if champion.predictions is None:
        return None
    y_true = test[cfg.data.target].to_numpy()
    challenger = challenger_of()
    ground = champion.ground
    if ground is not None:
        y_true, challenger = y_true[ground.rows], ground.of(challenger)
    try:
        return paired_bootstrap(
            metric,
            y_true,
            challenger,
            champion.predictions,
            greater_is_better=greater_is_better,
            confidence=float(cfg.promotion.confidence),
            resamples=int(cfg.promotion.resamples),
            seed=int(cfg.seed or 0),
            labels=ground.labels if ground is not None else None,
        )
    except PipelineError:
        return None


def _standing(
    registry: ModelRegistry,
    decision: PromotionDecision,
    scoring_error: str | None,
    existing: Any,
    champion_version: str | None,
) -> Standing:
    """The decision that stands. ``existing``: the version already holding this model.

    Registered by a register run that was killed (or by this pipeline run), this run takes
    its decision over: a recorded promotion stands (comparing the champion with itself would
    say "not promoted"). Registered by another run, that version is this run's challenger:
    nothing is registered again."""
    reason = decision.reason + (f" ({scoring_error})" if scoring_error else "")
    if existing is None:
        return Standing(decision, reason)
    version = str(existing.version)
    takes_over = registry.decided_by_a_dead_run(existing)
    is_champion = version == champion_version
    if takes_over is not None:
        recorded = recorded_promotion(existing, decision) if is_champion else None
        if recorded is not None:
            return Standing(recorded, recorded.reason, promoted_before=True, takes_over=takes_over)
        if is_champion:
            reason = f"v{version} (this model) is already the champion"
        return Standing(decision, reason, takes_over=takes_over)
    same = f"identical to v{version} (content digest {_short(existing)}): not registered again"
    if is_champion:
        return Standing(
            decision, f"{same}; v{version} is already the champion", duplicate_of=existing
        )
    return Standing(decision, f"{same}; {reason}", duplicate_of=existing)


def _short(version: Any) -> str:
    text = (version.tags or {}).get(Registry.CONTENT_DIGEST) or "the same model source"
    return text[:19] + "…" if text.startswith("sha256:") else text


def _version_tags(
    standing: Standing,
    digest: str,
    pipeline_run_id: str,
    stage_run_id: str,
    lineage: dict[str, Any],
) -> dict[str, str]:
    """The registered version's tags: its content digest, the decision, its scores and
    interval, and the lineage."""
    decision = standing.decision
    tags = {
        Registry.CONTENT_DIGEST: digest,
        Promotion.DECISION: "promoted" if decision.promote else "not_promoted",
        Promotion.REASON: standing.reason[:5000],
        Promotion.METRIC: decision.metric,
        Promotion.CHALLENGER_SCORE: repr(decision.challenger_score),
        Promotion.CHAMPION_SCORE: repr(decision.champion_score),
        Promotion.CHAMPION_VERSION: str(decision.champion_version),
        Promotion.PIPELINE_RUN: pipeline_run_id,
        Promotion.STAGE_RUN: stage_run_id,
        **lineage_tags(lineage),
    }
    comparison = decision.comparison
    if comparison is not None and comparison.estimated:
        tags[Promotion.GAIN_INTERVAL] = (
            f"{comparison.gain:.6g} [{comparison.low:.6g}, {comparison.high:.6g}] at "
            f"{comparison.confidence:.0%} ({comparison.resamples} resamples)"
        )
    return tags


def _registered(
    registry: ModelRegistry,
    model_uri: str,
    existing: Any,
    standing: Standing,
    tags: dict[str, str],
    digest: str,
) -> str:
    """The version holding this model: registered now with ``tags`` unless ``existing``.
    An existing version is tagged ``tags`` when this run completes a killed run's decision
    about it; the version of another run only gets the decision when this run promotes it
    (its lineage stays the lineage of the run that registered it)."""
    if existing is None:
        return str(registry.register(model_uri, tags).version)
    version = str(existing.version)
    if standing.takes_over is not None:
        registry.tag_version(version, tags)
    elif standing.decision.promote:
        registry.tag_version(version, {k: v for k, v in tags.items() if _decision_tag(k)})
    elif (existing.tags or {}).get(Registry.CONTENT_DIGEST) != digest:
        registry.tag_version(version, {Registry.CONTENT_DIGEST: digest})
    return version


def _decision_tag(key: str) -> bool:
    return key.startswith("promotion.") or key in (Promotion.PIPELINE_RUN, Promotion.STAGE_RUN)


def _steps(registry: ModelRegistry, version: str, standing: Standing, why: Why) -> list[Step]:
    """``challenger`` to ``version``; then, when the rule promotes it, ``champion`` too and
    ``rollback`` to the champion it replaces (a recorded promotion moved them already)."""
    decision = standing.decision
    decided = "promoted" if decision.promote else "not promoted"
    challenger_why = replace(why, reason=f"registered by this run; {decided}: {why.reason}")
    if standing.duplicate_of is not None:
        challenger_why = replace(why, reason=f"{decided}: {why.reason}")
    current = registry.current_aliases()
    steps = alias_steps(
        registry,
        registry.aliases.challenger,
        version,
        challenger_why,
        rollback_reason=None,
        current=current,
    )
    if decision.promote and not standing.promoted_before:
        steps += alias_steps(
            registry,
            registry.aliases.champion,
            version,
            why,
            rollback_reason=f"the champion before v{version}: {why.reason}",
            current=current,
        )
    return steps


def _why(standing: Standing, pipeline_run_id: str, stage_run_id: str) -> Why:
    """The audit record of this stage's alias moves: the rule, its reason and both scores."""
    decision = standing.decision
    return Why(
        kind=KIND_PIPELINE,
        actor="mlflow-pipeline register stage",
        user=current_user(),
        reason=standing.reason,
        pipeline_run=pipeline_run_id,
        stage_run=stage_run_id,
        metric=decision.metric,
        challenger_score=decision.challenger_score,
        champion_score=decision.champion_score,
    )


def _report(
    registry: ModelRegistry,
    session: PromotionSession,
    standing: Standing,
    version: str,
    digest: str,
    moves: list[Move],
    ground: CommonGround | None = None,
    overlap: TrainingOverlap | None = None,
    unchecked: str | None = None,
) -> dict[str, Any]:
    """The promotion report (promotion.json and the HTML report's input)."""
    decision = standing.decision
    comparison = decision.comparison
    duplicate = standing.duplicate_of
    report = {
        **{k: v for k, v in asdict(decision).items() if k != "comparison"},
        "reason": standing.reason,
        "model_name": registry.name,
        "version": version,
        "champion_version_after": version if decision.promote else decision.champion_version,
        # The challenger's gain over the champion (in the metric's better direction) and its
        # confidence interval from the paired bootstrap; None without a champion to compare.
        "comparison": comparison.as_dict() if comparison is not None else None,
        # When the test set's labels differ from the classes the models know: what differs
        # and on which rows and classes both were compared (None: the same labels).
        "labels": ground.as_dict() if ground is not None else None,
        # When this run trained on other data than the champion: the test rows the champion
        # trained on, left out of the comparison (None: none; "note" alone: not checked).
        "training_overlap": overlap.as_dict()
        if overlap is not None
        else ({"note": unchecked} if unchecked else None),
        "content_digest": digest,
        # False: the same model was registered by another run as this version already.
        "registered": duplicate is None,
        "duplicate_of": None
        if duplicate is None
        else {
            "version": str(duplicate.version),
            "pipeline_run": (duplicate.tags or {}).get(Promotion.PIPELINE_RUN),
        },
        # A killed register run whose decision about this model this run completed.
        "takes_over": standing.takes_over,
        "moves": [move.title for move in moves],
        # A promotion a crash interrupted, finished by this run before its own.
        "finished_interrupted": session.finished.describe() if session.finished else None,
        # Moves made outside mlflow-pipeline since the last record, recorded by this run.
        "moved_outside": [move.title for move in session.outside],
        "audit_experiment": registry.audit.experiment,
    }
    return report

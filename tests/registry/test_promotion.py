"""Promotion: the champion/challenger rule (a pure function of the scores and the interval of
the gain), and ``promote_by_hand`` on a real SQLite registry (champion, then rollback,
audited, under the promotion lock)."""

from __future__ import annotations

import mlflow
import pytest

from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.registry.audit import Why, current_user
from mlflow_pipeline.registry.comparison import Comparison
from mlflow_pipeline.registry.lock import PromotionLock
from mlflow_pipeline.registry.model_registry import Aliases, ModelRegistry, audit_of
from mlflow_pipeline.registry.plan import alias_steps, carry_out
from mlflow_pipeline.registry.promotion import judge, promote_by_hand
from tests.helpers import alias_version
from tests.registry.helpers import two_versions

MODEL = "breast_cancer"


def interval(gain: float, low: float, high: float, higher: bool = True) -> Comparison:
    return Comparison(
        metric="roc_auc" if higher else "rmse",
        greater_is_better=higher,
        gain=gain,
        low=low,
        high=high,
        confidence=0.95,
        resamples=1000,
        defined=1000,
        rows=114,
        seed=42,
    )


def rule(
    challenger: float,
    champion: float | None,
    *,
    higher: bool = True,
    min_delta: float = 0.0,
    low: float | None = None,
):
    """The rule; the interval of the gain is [low, 2 * gain - low] (default: gain/2 either
    side)."""
    gain = 0.0 if champion is None else (challenger - champion) * (1 if higher else -1)
    low = gain / 2 if low is None else low
    return judge(
        metric="roc_auc" if higher else "rmse",
        greater_is_better=higher,
        challenger_score=challenger,
        champion_score=champion,
        champion_version=None if champion is None else "3",
        min_delta=min_delta,
        comparison=None if champion is None else interval(gain, low, 2 * gain - low, higher),
    )


def test_first_model_is_promoted():
    decision = rule(0.1, None)
    assert decision.promote is True
    assert decision.reason == "no champion yet"
    assert decision.champion_version is None


@pytest.mark.parametrize(
    ("challenger", "champion", "higher", "min_delta", "promote"),
    [
        (0.95, 0.90, True, 0.0, True),  # better
        (0.85, 0.90, True, 0.0, False),  # worse
        (0.90, 0.90, True, 0.0, False),  # a tie never replaces the champion
        (0.91, 0.90, True, 0.05, False),  # better, but by less than min_delta
        (0.75, 0.50, True, 0.25, True),  # exactly min_delta is enough
        (40.0, 50.0, False, 0.0, True),  # rmse: lower is better
        (55.0, 50.0, False, 0.0, False),
        (49.0, 50.0, False, 2.0, False),
        (47.0, 50.0, False, 2.0, True),
    ],
)
def test_rule(challenger: float, champion: float, higher: bool, min_delta: float, promote: bool):
    decision = rule(challenger, champion, higher=higher, min_delta=min_delta)
    assert decision.promote is promote
    assert decision.champion_version == "3"
    assert decision.challenger_score == challenger
    assert f"min_delta={min_delta}" in decision.reason
    assert ("beats champion v3" in decision.reason) is promote
    assert ("higher is better" if higher else "lower is better") in decision.reason


@pytest.mark.parametrize(
    ("low", "promote", "says"),
    [
        (0.01, True, "beyond the noise: 95% CI of the gain [0.01, 0.09]"),
        (
            0.0,
            False,
            "challenger roc_auc=0.95 does not beat champion v3 roc_auc=0.9 beyond the noise",
        ),
        (
            -0.02,
            False,
            "95% CI of the gain [-0.02, 0.12] (1000 paired bootstrap resamples of "
            "114 test rows) includes 0",
        ),
    ],
)
def test_a_gain_within_the_noise_is_not_promoted(low: float, promote: bool, says: str):
    decision = rule(0.95, 0.90, low=low)
    assert decision.promote is promote
    assert says in decision.reason
    assert decision.comparison.low == low


def test_a_gain_whose_noise_could_not_be_estimated_is_not_promoted():
    common = dict(
        metric="roc_auc",
        greater_is_better=True,
        challenger_score=0.95,
        champion_score=0.90,
        champion_version="3",
        min_delta=0.0,
    )
    assert judge(**common, comparison=None).promote is False
    undefined = interval(0.05, float("nan"), float("nan"))
    decision = judge(**common, comparison=undefined)
    assert decision.promote is False
    assert "no 95% interval: roc_auc was undefined in 0 of 1000" in decision.reason


def test_champion_that_cannot_be_scored_is_kept():
    decision = judge(
        metric="roc_auc",
        greater_is_better=True,
        challenger_score=1.0,
        champion_score=None,
        champion_version="2",
        min_delta=0.0,
        comparison=None,
    )
    assert decision.promote is False
    assert decision.reason == "champion v2 could not be scored on the current test set"


def test_promote_by_hand_moves_champion_and_rollback_with_who_and_why(tracking_store):
    client = tracking_store.client()
    two_versions(client, MODEL)
    promotion = promote_by_hand(client, f"models:/{MODEL}@challenger", reason="v2 is better on Q4")
    moves = promotion.moves
    assert [(m.alias, m.from_version, m.to_version, m.kind) for m in moves] == [
        ("champion", "1", "2", "cli"),
        ("rollback", None, "1", "cli"),
    ]
    assert moves[0].user == current_user()
    assert moves[0].actor == "mlflow-pipeline promote"
    assert moves[0].reason == f"v2 is better on Q4 (as models:/{MODEL}@challenger)"
    assert alias_version(client, MODEL, "champion") == "2"
    assert alias_version(client, MODEL, "rollback") == "1"
    # Again: nothing moves, nothing is recorded.
    again = promote_by_hand(client, f"models:/{MODEL}/2", reason="again")
    assert again.moves == []
    assert again.describe() == f"champion is already on models:/{MODEL}/2: nothing moved"


def test_promote_by_hand_records_a_ui_move_first(tracking_store):
    client = tracking_store.client()
    two_versions(client, MODEL)
    client.set_registered_model_alias(MODEL, "champion", "2")  # as the UI does
    moves = promote_by_hand(client, f"models:/{MODEL}/1", reason="back to v1").moves
    assert [(m.alias, m.from_version, m.to_version, m.kind) for m in moves] == [
        ("champion", "1", "2", "external"),
        ("champion", "2", "1", "cli"),
        ("rollback", None, "2", "cli"),
    ]


@pytest.mark.parametrize(
    ("uri", "reason", "match"),
    [
        (f"models:/{MODEL}/9", "x", r"models:/breast_cancer/9: no such model version"),
        (f"models:/{MODEL}@nope", "x", r"no such model version"),
        (f"models:/{MODEL}/1", "  ", r"promote needs --reason"),
        ("breast_cancer", "x", r"is not a registered model URI"),
        (f"models:/{MODEL}/2 latest", "x", r"alias 'latest' is reserved by MLflow"),
        (f"models:/{MODEL}/2 V3", "x", r"alias 'V3' is reserved by MLflow"),
    ],
)
def test_promote_by_hand_refuses_clearly(tracking_store, uri, reason, match):
    client = tracking_store.client()
    two_versions(client, MODEL)
    uri, _, alias = uri.partition(" ")
    with pytest.raises(ConfigError, match=match):
        promote_by_hand(client, uri, reason=reason, alias=alias or None)
    assert alias_version(client, MODEL, "champion") == "1"


def test_promote_and_audit_use_the_alias_names_the_pipeline_recorded(tracking_store):
    client = tracking_store.client()
    registry = ModelRegistry(client, MODEL, Aliases("prod", "candidate", "previous"), "a")
    for _ in range(2):
        with mlflow.start_run():
            mlflow.log_text("x", "model/x.txt")
            registry.register(mlflow.get_artifact_uri("model"), {})
    registry.move_alias("prod", "1", Why(kind="pipeline", actor="t", user="ci", reason="r"))
    moves = promote_by_hand(client, f"models:/{MODEL}/2", reason="now").moves
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [
        ("prod", "1", "2"),
        ("previous", None, "1"),
    ]
    assert audit_of(client, MODEL).splitlines()[-1] == ("now: prod v2, candidate none, previous v1")
    assert ModelRegistry(client, MODEL).audit.experiment == "a"


def test_only_a_champion_move_takes_rollback_along(tracking_store):
    client = tracking_store.client()
    two_versions(client, MODEL)
    registry = ModelRegistry(client, MODEL)
    why = Why(kind="cli", actor="t", user="ci", reason="r")

    def move(alias: str, version: str, rollback_reason: str | None):
        with PromotionLock(client, MODEL, holder="test") as lock:
            steps = alias_steps(registry, alias, version, why, rollback_reason=rollback_reason)
            return carry_out(registry, steps, lock)

    moves = move("challenger", "1", rollback_reason="x")
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [("challenger", "2", "1")]
    moves = move("champion", "2", rollback_reason=None)
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [("champion", "1", "2")]
    moves = move("champion", "1", rollback_reason="back")
    assert [(m.alias, m.to_version, m.reason) for m in moves] == [
        ("champion", "1", "r"),
        ("rollback", "2", "back"),
    ]
    assert alias_version(client, MODEL, "rollback") == "2"
    assert move("champion", "1", rollback_reason="back") == []  # there already: no plan

"""Alias moves that survive a crash, on a real SQLite registry: a promotion killed at any point
(a real SIGKILL of a real process) is finished by the next one, ending where an uninterrupted
promotion ends, with the trail complete and recording the pipeline's (or the user's) own
moves as theirs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from mlflow_pipeline.registry.audit import KIND_EXTERNAL, Why
from mlflow_pipeline.registry.lock import PromotionLock, lock_name
from mlflow_pipeline.registry.model_registry import ModelRegistry, audit_of
from mlflow_pipeline.registry.plan import Plan, _write_plan, alias_steps, finish_interrupted
from mlflow_pipeline.registry.promotion import promote_by_hand, promotion_session
from mlflow_pipeline.tags import Audit, Env, Registry
from tests.helpers import alias_version
from tests.registry.helpers import two_versions

MODEL = "breast_cancer"
WHY = Why(kind="cli", actor="mlflow-pipeline promote", user="ci", reason="v2 is better")
# Every point of promote_by_hand's champion move (champion 1 -> 2, rollback none -> 1).
POINTS = [
    "locked",
    "planned",
    "moved.champion",
    "recording.champion",
    "recorded.champion",
    "moved.rollback",
    "recording.rollback",
    "recorded.rollback",
    "done",
]
PROMOTE = """
import sys
from mlflow.tracking import MlflowClient
from mlflow_pipeline.registry.promotion import promote_by_hand
client = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1])
promote_by_hand(client, "models:/breast_cancer/2", reason="v2 is better")
"""


@pytest.fixture
def registry(tracking_store) -> ModelRegistry:
    """Champion v1, challenger v2 (both recorded), no rollback yet."""
    client = tracking_store.client()
    two_versions(client, MODEL)
    return ModelRegistry(client, MODEL)


def promotion_steps(registry: ModelRegistry):
    return alias_steps(registry, "champion", "2", WHY, rollback_reason="the champion before v2")


def trail(registry: ModelRegistry) -> list[tuple]:
    return [(m.alias, m.from_version, m.to_version, m.kind) for m in registry.audit.moves()]


def assert_promoted(registry: ModelRegistry, kind: str = "cli") -> None:
    """The end state of the promotion, whatever happened on the way."""
    client = registry.client
    assert alias_version(client, MODEL, "champion") == "2"
    assert alias_version(client, MODEL, "rollback") == "1"
    assert alias_version(client, MODEL, "challenger") == "2"
    assert trail(registry) == [
        ("champion", None, "1", "pipeline"),  # two_versions
        ("challenger", None, "2", "pipeline"),
        ("champion", "1", "2", kind),
        ("rollback", None, "1", kind),
    ]
    assert Registry.PLAN not in client.get_registered_model(MODEL).tags
    assert lock_name(MODEL) not in {m.name for m in client.search_registered_models()}
    experiment = registry.audit.experiment_id(create=False)
    statuses = {r.info.status for r in client.search_runs([experiment], max_results=100)}
    assert statuses == {"FINISHED"}  # no record left half-written


def finish(registry: ModelRegistry):
    with PromotionLock(registry.client, MODEL, holder="test") as lock:
        return finish_interrupted(registry, lock)


def test_nothing_to_finish(registry):
    assert finish(registry) is None


def test_a_plan_interrupted_before_any_move_is_carried_out(registry):
    plan = Plan.of(promotion_steps(registry))
    _write_plan(registry, plan)
    finished = finish(registry)
    assert [m.title for m in finished.moves] == ["champion: v1 -> v2", "rollback: none -> v1"]
    assert finished.dropped == []
    assert_promoted(registry)
    records = registry.audit.plan_records(plan.id)
    assert sorted(records) == [0, 1]
    assert records[0].data.tags[Audit.STEP] == "0"


def test_a_move_made_but_not_recorded_is_recorded_as_the_pipelines(registry):
    _write_plan(registry, Plan.of(promotion_steps(registry)))
    registry.set_alias("champion", "2")  # killed right after this
    finish(registry)
    assert_promoted(registry)
    with promotion_session(registry, holder="next run") as session:
        assert session.outside == []  # never taken for a move made outside mlflow-pipeline


def test_a_half_written_record_is_completed_in_place(registry):
    plan = Plan.of(promotion_steps(registry))
    _write_plan(registry, plan)
    registry.set_alias("champion", "2")
    experiment = registry.audit.experiment_id(create=True)
    half = registry.client.create_run(  # killed between creating the run and finishing it
        experiment,
        tags={
            Audit.MODEL: MODEL,
            Audit.ALIAS: "champion",
            Audit.FROM: "1",
            Audit.TO: "2",
            Audit.KIND: "cli",
            Audit.PLAN: plan.id,
            Audit.STEP: "0",
            "pipeline.host": socket.gethostname(),
            "pipeline.pid": "999999999",
            "pipeline.pid_started": "1.00",
        },
    )
    finished = finish(registry)
    assert finished.moves[0].run_id == half.info.run_id
    run = registry.client.get_run(half.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[Audit.COMPLETED] == "true"
    assert_promoted(registry)


def test_a_step_moved_elsewhere_meanwhile_is_dropped_not_forced(registry):
    _write_plan(registry, Plan.of(promotion_steps(registry)))
    registry.client.set_registered_model_alias(MODEL, "champion", "1")  # unchanged
    registry.client.set_registered_model_alias(MODEL, "rollback", "2")  # a human, meanwhile
    registry.set_alias("champion", "2")
    finished = finish(registry)
    assert [m.title for m in finished.moves] == ["champion: v1 -> v2"]
    assert [(s.alias, s.to_version) for s in finished.dropped] == [("rollback", "1")]
    assert "dropped (moved outside meanwhile): rollback -> v1" in finished.describe()
    assert alias_version(registry.client, MODEL, "rollback") == "2"
    with promotion_session(registry, holder="next run") as session:
        assert [(m.title, m.kind) for m in session.outside] == [
            ("rollback: none -> v2", KIND_EXTERNAL)
        ]


@pytest.mark.parametrize("point", POINTS)
def test_promote_killed_at_any_point_then_run_again_ends_promoted(registry, tracking_store, point):
    env = {**os.environ, Env.FAILPOINT: f"promotion.{point}"}
    killed = subprocess.run(
        [sys.executable, "-c", PROMOTE, tracking_store.uri], env=env, timeout=120, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    again = promote_by_hand(registry.client, f"models:/{MODEL}/2", reason="v2 is better")
    assert_promoted(registry)
    if point == "locked":  # nothing had moved: this run made the moves
        assert [m.kind for m in again.moves] == ["cli", "cli"]


def test_audit_shows_an_interrupted_promotion_as_such(registry):
    _write_plan(registry, Plan.of(promotion_steps(registry)))
    registry.set_alias("champion", "2")  # killed right after this
    lines = audit_of(registry.client, MODEL).splitlines()
    assert lines[-2] == "now: champion v2, challenger v2, rollback none"
    assert lines[-1] == (
        "interrupted promotion: champion -> v2, rollback -> v1 (a killed run's; the next "
        "register or promote of this model finishes and records it)"
    )
    assert not any(line.startswith("not recorded yet") for line in lines)
